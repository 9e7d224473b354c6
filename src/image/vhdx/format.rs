//! VHDX on-disk constants (MS-VHDX): structure offsets and sizes, the region and metadata
//! GUIDs, BAT payload states, little-endian field readers and the CRC-32C rule.

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1 << 20;
/// "vhdxfile" at offset 0.
pub const SIGNATURE: &[u8; 8] = b"vhdxfile";
pub(super) const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
pub(super) const HEADER_SIZE: usize = 4096;
pub(super) const REGION_TABLE_OFFSETS: [u64; 2] = [192 * KIB, 256 * KIB];
pub(super) const REGION_TABLE_SIZE: usize = 64 * 1024;
/// The most region-table and metadata-table entries the format allows.
pub(super) const MAX_TABLE_ENTRIES: u32 = 2047;
/// Most BAT entries we hold in memory (128 MiB of table).
pub(super) const MAX_BAT_ENTRIES: u64 = 16 << 20;
/// The largest metadata region we read.
pub(super) const MAX_METADATA_REGION: u64 = 16 * MIB;

/// A GUID as it lies on disk: the first three fields little-endian, the rest as written.
pub(super) const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// Region: the block allocation table, 2DC27766-F623-4200-9D64-115E9BFD4A08.
pub(super) const BAT_REGION: [u8; 16] = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
/// Region: metadata, 8B7CA206-4790-4B9A-B8FE-575F050F886E.
pub(super) const METADATA_REGION: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
/// Metadata: file parameters, CAA16737-FA36-4D43-B3B6-33F0AA44E76B.
pub(super) const FILE_PARAMETERS: [u8; 16] = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
/// Metadata: virtual disk size, 2FA54224-CD1B-4876-B211-5DBED83BF4B8.
pub(super) const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
/// Metadata: virtual disk id, BECA12AB-B2E6-4523-93EF-C309E000C746.
pub(super) const VIRTUAL_DISK_ID: [u8; 16] = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
/// Metadata: logical sector size, 8141BF1D-A96F-4709-BA47-F233A8FAAB5F.
pub(super) const LOGICAL_SECTOR_SIZE: [u8; 16] = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
/// Metadata: physical sector size, CDA348C7-445D-4471-9CC9-E9885251C556.
pub(super) const PHYSICAL_SECTOR_SIZE: [u8; 16] = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
/// Metadata: parent locator, A8D35F2D-B30B-454D-ABF7-D3D84834AB0C.
pub(super) const PARENT_LOCATOR: [u8; 16] = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

/// Payload block states (BAT entry bits 0–2).
pub(super) const PAYLOAD_NOT_PRESENT: u64 = 0;
pub(super) const PAYLOAD_UNDEFINED: u64 = 1;
pub(super) const PAYLOAD_ZERO: u64 = 2;
pub(super) const PAYLOAD_UNMAPPED: u64 = 3;
pub(super) const PAYLOAD_FULLY_PRESENT: u64 = 6;
pub(super) const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;

pub(super) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(super) fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// CRC-32C of a structure with its checksum field counted as zero (defined beside the log
/// replay, which the reader stands on).
pub use super::log::crc_with_zeroed_field;

pub(super) fn show_guid(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{}-{}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        hex::encode_upper(&g[8..10]),
        hex::encode_upper(&g[10..])
    )
}
