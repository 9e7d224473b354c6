//! The VHDX reader (MS-VHDX), in-house: the `vhdx` crate returns wrong data above 4 GiB.
//!
//! ```text
//! offset    size     structure (all little-endian; GUIDs in Windows byte order)
//!      0    64 KiB   file type identifier: "vhdxfile", creator (UTF-16)
//!  64 KiB    4 KiB   header 1: "head", CRC-32C, sequence number, file/data write GUIDs,
//! 128 KiB    4 KiB   header 2   log GUID, log version, version (1), log length, log offset
//! 192 KiB   64 KiB   region table 1: "regi", CRC-32C, entry count, entries of
//! 256 KiB   64 KiB   region table 2   (GUID, file offset, length, required)
//! regions            BAT and metadata (anywhere, 1 MiB aligned); the log
//! ```
//!
//! - The valid header (signature, CRC-32C with its checksum field zeroed, version 1) with the
//!   higher sequence number is current. A non-empty log (log GUID not zero) is replayed in memory
//!   before anything else is read (see `vhdx_log`); the file is never written.
//! - Region tables: the first valid one is used; the BAT and metadata regions are required; an
//!   unknown region marked required is refused. Regions must lie inside the file; unlike qemu we
//!   do not insist on their 1 MiB alignment, which does not change which bytes are read.
//! - Metadata: file parameters (block size 1–256 MiB, has-parent flag), virtual disk size,
//!   logical sector size (512 or 4096), physical sector size, disk id; an unknown item marked
//!   required is refused.
//! - A differencing VHDX (has-parent flag) finds its parent through the parent locator item
//!   (`relative_path` from the child's folder, then `absolute_win32_path`), checks the parent's
//!   data write GUID against `parent_linkage`, and stacks at most [`MAX_CHAIN_DEPTH`] deep.
//! - The BAT holds one 64-bit entry per payload block (state in bits 0–2, file offset in MiB in
//!   bits 20–63) and, after every `chunk ratio` = 2^23 × logical sector size / block size payload
//!   entries, one sector-bitmap entry. Payload states NOT PRESENT (0), UNDEFINED (1), ZERO (2)
//!   and UNMAPPED (3) read as zeros; FULLY PRESENT (6) reads from the file; PARTIALLY PRESENT (7)
//!   belongs to differencing disks only, where each logical sector comes from this file when its
//!   bit in the chunk's sector bitmap is set (bit n = bit n % 8 of byte n / 8) and from the parent
//!   otherwise. In a differencing disk NOT PRESENT reads the parent, and UNDEFINED and UNMAPPED,
//!   whose meaning there the specification leaves open, are refused.

use crate::error::{Error, Result, ResultExt};
use crate::image::{
    DiskImage, ExtentKind, ExtentMap, Format, RawImage, for_each_block_piece, readable,
};
use std::path::{Path, PathBuf};

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
/// "vhdxfile" at offset 0.
pub const SIGNATURE: &[u8; 8] = b"vhdxfile";
const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
const HEADER_SIZE: usize = 4096;
const REGION_TABLE_OFFSETS: [u64; 2] = [192 * KIB, 256 * KIB];
const REGION_TABLE_SIZE: usize = 64 * 1024;
/// The most region-table and metadata-table entries the format allows.
const MAX_TABLE_ENTRIES: u32 = 2047;
/// Most BAT entries we hold in memory (128 MiB of table).
const MAX_BAT_ENTRIES: u64 = 16 << 20;
/// The largest metadata region we read.
const MAX_METADATA_REGION: u64 = 16 * MIB;

/// A GUID as it lies on disk: the first three fields little-endian, the rest as written.
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// Region: the block allocation table, 2DC27766-F623-4200-9D64-115E9BFD4A08.
const BAT_REGION: [u8; 16] = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
/// Region: metadata, 8B7CA206-4790-4B9A-B8FE-575F050F886E.
const METADATA_REGION: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
/// Metadata: file parameters, CAA16737-FA36-4D43-B3B6-33F0AA44E76B.
const FILE_PARAMETERS: [u8; 16] = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
/// Metadata: virtual disk size, 2FA54224-CD1B-4876-B211-5DBED83BF4B8.
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
/// Metadata: virtual disk id, BECA12AB-B2E6-4523-93EF-C309E000C746.
const VIRTUAL_DISK_ID: [u8; 16] = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
/// Metadata: logical sector size, 8141BF1D-A96F-4709-BA47-F233A8FAAB5F.
const LOGICAL_SECTOR_SIZE: [u8; 16] = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
/// Metadata: physical sector size, CDA348C7-445D-4471-9CC9-E9885251C556.
const PHYSICAL_SECTOR_SIZE: [u8; 16] = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
/// Metadata: parent locator, A8D35F2D-B30B-454D-ABF7-D3D84834AB0C.
const PARENT_LOCATOR: [u8; 16] = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

/// Payload block states (BAT entry bits 0–2).
const PAYLOAD_NOT_PRESENT: u64 = 0;
const PAYLOAD_UNDEFINED: u64 = 1;
const PAYLOAD_ZERO: u64 = 2;
const PAYLOAD_UNMAPPED: u64 = 3;
const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// CRC-32C of a structure with its checksum field counted as zero (defined beside the log
/// replay, which the reader stands on).
pub use super::vhdx_log::crc_with_zeroed_field;

fn show_guid(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{}-{}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        hex::encode_upper(&g[8..10]),
        hex::encode_upper(&g[10..])
    )
}

/// The current header's fields we use.
#[derive(Debug, Clone)]
pub struct Header {
    /// Which copy (1 or 2) is current.
    pub copy: u8,
    /// Sequence number.
    pub sequence: u64,
    /// Data write GUID: a differencing child names its parent by it.
    pub data_write_guid: [u8; 16],
    /// Log GUID: all zero when the log is empty.
    pub log_guid: [u8; 16],
    /// Log length and offset.
    pub log_length: u32,
    /// Log offset.
    pub log_offset: u64,
}

fn parse_header(b: &[u8], at: u64, copy: u8) -> Result<Header> {
    if &b[..4] != b"head" {
        return Err(Error::invalid(format!(
            "VHDX header {copy}: expected signature \"head\", found {}",
            crate::image::vhd::show_bytes(&b[..4])
        ))
        .with_offset(at));
    }
    let stored = le32(b, 4);
    let computed = crc_with_zeroed_field(b, 4);
    if stored != computed {
        return Err(Error::invalid(format!(
            "VHDX header {copy} checksum: expected 0x{computed:08x} (CRC-32C), found 0x{stored:08x}"
        ))
        .with_offset(at + 4));
    }
    let version = u16::from_le_bytes([b[66], b[67]]);
    if version != 1 {
        return Err(Error::unsupported(format!(
            "VHDX header {copy} version: expected 1, found {version}"
        ))
        .with_offset(at + 66));
    }
    let mut log_guid = [0u8; 16];
    log_guid.copy_from_slice(&b[48..64]);
    let mut data_write_guid = [0u8; 16];
    data_write_guid.copy_from_slice(&b[32..48]);
    Ok(Header {
        copy,
        sequence: le64(b, 8),
        data_write_guid,
        log_guid,
        log_length: le32(b, 68),
        log_offset: le64(b, 72),
    })
}

/// A VHDX image.
pub struct Vhdx {
    file: Box<dyn DiskImage>,
    path: Option<PathBuf>,
    header: Header,
    size: u64,
    block_size: u64,
    logical_sector_size: u32,
    chunk_ratio: u64,
    bat: Vec<u64>,
    /// Sector-bitmap BAT entries, one per chunk (differencing disks only).
    sector_bitmaps: Vec<u64>,
    parent: Option<Box<Vhdx>>,
    log_entries: usize,
    log_bytes: u64,
}

/// How many differencing VHDX may stack before we refuse (a loop guard).
pub const MAX_CHAIN_DEPTH: usize = 16;
/// Sector-bitmap block state: present.
const SB_BLOCK_PRESENT: u64 = 6;

impl std::fmt::Debug for Vhdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vhdx")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("block_size", &self.block_size)
            .field("logical_sector_size", &self.logical_sector_size)
            .finish()
    }
}

impl Vhdx {
    /// Opens the VHDX at `path` read-only.
    ///
    /// # Errors
    /// Any damaged structure (each named with its offset), an unknown required region or
    /// metadata item, a log that cannot be replayed, or a differencing VHDX.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_at_depth(path, 0).path(path)
    }

    fn open_at_depth(path: &Path, depth: usize) -> Result<Self> {
        Self::parse_at_depth(Box::new(RawImage::open(path)?), Some(path), depth)
    }

    /// Reads a VHDX from `file`.
    ///
    /// # Errors
    /// As [`Vhdx::open`].
    pub fn parse(file: Box<dyn DiskImage>, path: Option<&Path>) -> Result<Self> {
        Self::parse_at_depth(file, path, 0)
    }

    fn parse_at_depth(file: Box<dyn DiskImage>, path: Option<&Path>, depth: usize) -> Result<Self> {
        let len = file.len();
        if len < 320 * KIB {
            return Err(Error::invalid(format!(
                "VHDX: the file is {len} bytes, too short for the headers and region tables \
                 (320 KiB)"
            )));
        }
        let mut sig = [0u8; 8];
        file.read_exact_at(&mut sig, 0)?;
        if &sig != SIGNATURE {
            return Err(Error::invalid(format!(
                "VHDX file identifier: expected \"vhdxfile\", found {}",
                crate::image::vhd::show_bytes(&sig)
            ))
            .with_offset(0));
        }

        // Headers: the valid one with the higher sequence number.
        let mut headers = Vec::new();
        let mut errors = Vec::new();
        for (i, &at) in HEADER_OFFSETS.iter().enumerate() {
            let mut b = vec![0u8; HEADER_SIZE];
            file.read_exact_at(&mut b, at)?;
            match parse_header(&b, at, i as u8 + 1) {
                Ok(h) => headers.push(h),
                Err(e) => errors.push(e),
            }
        }
        let Some(header) = headers.into_iter().max_by_key(|h| h.sequence) else {
            let e = errors.remove(0);
            return Err(Error::invalid(format!(
                "VHDX: neither header is valid ({}; {})",
                e,
                errors.first().map(|e| e.to_string()).unwrap_or_default()
            ))
            .with_offset(e.offset().unwrap_or(HEADER_OFFSETS[0])));
        };
        // A non-empty log: replay it in memory, and read everything after the headers
        // through the replayed view. The file itself is never written.
        let (file, log_entries, log_bytes): (Box<dyn DiskImage>, usize, u64) =
            if header.log_guid != [0; 16] {
                let r = super::vhdx_log::Replayed::new(
                    file,
                    header.log_offset,
                    u64::from(header.log_length),
                    &header.log_guid,
                )
                .map_err(|e| {
                    Error::invalid(format!(
                        "VHDX log (header {}): {}",
                        header.copy,
                        e.message()
                    ))
                    .with_offset(e.offset().unwrap_or(header.log_offset))
                })?;
                let (n, b) = (r.entries, r.bytes_replayed());
                (Box::new(r), n, b)
            } else {
                (file, 0, 0)
            };
        let len = file.len();

        // Region tables: one valid copy is enough; two valid copies must agree.
        let mut regions = None;
        let mut region_errors = Vec::new();
        for (i, &at) in REGION_TABLE_OFFSETS.iter().enumerate() {
            let mut b = vec![0u8; REGION_TABLE_SIZE];
            file.read_exact_at(&mut b, at)?;
            match parse_region_table(&b, at, i + 1, len) {
                Ok(r) => match regions {
                    Some(first) if first != r => {
                        return Err(Error::invalid(
                            "VHDX: both region tables are valid but place the BAT or metadata \
                             differently; refusing rather than guessing which is right",
                        )
                        .with_offset(at));
                    }
                    _ => regions = Some(r),
                },
                Err(e) => region_errors.push(e),
            }
        }
        let Some((bat_region, meta_region)) = regions else {
            let e = region_errors.remove(0);
            let off = e.offset().unwrap_or(REGION_TABLE_OFFSETS[0]);
            return Err(
                Error::invalid(format!("VHDX: neither region table is valid ({e})"))
                    .with_offset(off),
            );
        };

        let meta = parse_metadata(&*file, meta_region)?;
        let differencing = meta.has_parent;
        let block_size = u64::from(meta.block_size);
        let chunk_ratio = ((1u64 << 23) * u64::from(meta.logical_sector_size)) / block_size;
        let blocks = meta.size.div_ceil(block_size);
        // A differencing disk has a sector-bitmap entry after every chunk, the last one too.
        let entries = if blocks == 0 {
            0
        } else if differencing {
            blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else {
            blocks + (blocks - 1) / chunk_ratio
        };
        if entries > MAX_BAT_ENTRIES {
            return Err(Error::limit(format!(
                "VHDX: {entries} BAT entries is more than the {MAX_BAT_ENTRIES} this tool holds \
                 in memory"
            )));
        }
        if entries * 8 > u64::from(bat_region.1) {
            return Err(Error::invalid(format!(
                "VHDX BAT region: {} bytes, but a {}-byte disk in {block_size}-byte blocks needs \
                 {entries} entries ({} bytes)",
                bat_region.1,
                meta.size,
                entries * 8
            ))
            .with_offset(bat_region.0));
        }
        let mut raw = vec![0u8; (entries * 8) as usize];
        file.read_exact_at(&mut raw, bat_region.0)?;
        // Structures a payload or bitmap block must not overlap: their bytes are not disk data.
        let reserved = [
            ("headers and region tables", 0, MIB),
            (
                "block allocation table",
                bat_region.0,
                u64::from(bat_region.1),
            ),
            ("metadata region", meta_region.0, u64::from(meta_region.1)),
            ("log", header.log_offset, u64::from(header.log_length)),
        ];
        let overlaps = |off: u64, n: u64| {
            reserved
                .iter()
                .find(|(_, s, l)| off < s.saturating_add(*l) && off.saturating_add(n) > *s)
                .map(|(what, _, _)| *what)
        };
        let mut bat = Vec::with_capacity(blocks as usize);
        let mut sector_bitmaps = Vec::new();
        for (i, e) in raw.chunks_exact(8).map(|c| le64(c, 0)).enumerate() {
            let i = i as u64;
            let at = bat_region.0 + i * 8;
            if (i + 1).is_multiple_of(chunk_ratio + 1) {
                // A sector-bitmap entry: only differencing disks use them.
                if differencing {
                    let off = (e >> 20) * MIB;
                    if e & 7 == SB_BLOCK_PRESENT
                        && (off < MIB
                            || off.checked_add(MIB).is_none_or(|end| end > len)
                            || overlaps(off, MIB).is_some())
                    {
                        return Err(Error::invalid(format!(
                            "VHDX sector bitmap {}: the BAT places it at offset {off}, outside \
                             the {len}-byte file",
                            sector_bitmaps.len()
                        ))
                        .with_offset(at));
                    }
                    sector_bitmaps.push(e);
                }
                continue;
            }
            if bat.len() as u64 == blocks {
                continue; // padding entries of the last chunk
            }
            let block = bat.len() as u64;
            let state = e & 7;
            // Bits 3–19 are reserved and zero: anything else is a damaged table.
            if e & 0xF_FFF8 != 0 {
                return Err(Error::invalid(format!(
                    "VHDX block {block}: BAT entry 0x{e:016x} has reserved bits set"
                ))
                .with_offset(at));
            }
            match state {
                PAYLOAD_NOT_PRESENT | PAYLOAD_ZERO => {}
                PAYLOAD_UNDEFINED | PAYLOAD_UNMAPPED if !differencing => {}
                PAYLOAD_UNDEFINED | PAYLOAD_UNMAPPED => {
                    // The specification leaves open whether these read as zeros or as the
                    // parent's data in a differencing disk: refuse rather than guess.
                    return Err(Error::unsupported(format!(
                        "VHDX block {block}: state {} in a differencing disk, whose contents \
                         (zeros or the parent's) the specification leaves open; refusing rather \
                         than guessing",
                        if state == PAYLOAD_UNDEFINED {
                            "UNDEFINED (1)"
                        } else {
                            "UNMAPPED (3)"
                        }
                    ))
                    .with_offset(at));
                }
                PAYLOAD_FULLY_PRESENT | PAYLOAD_PARTIALLY_PRESENT
                    if differencing || state == PAYLOAD_FULLY_PRESENT =>
                {
                    let off = (e >> 20) * MIB;
                    if off < MIB || off.checked_add(block_size).is_none_or(|end| end > len) {
                        return Err(Error::invalid(format!(
                            "VHDX block {block}: the BAT places it at offset {off}, outside the \
                             {len}-byte file"
                        ))
                        .with_offset(at));
                    }
                    if let Some(what) = overlaps(off, block_size) {
                        return Err(Error::invalid(format!(
                            "VHDX block {block}: the BAT places it at offset {off}, over the {what}"
                        ))
                        .with_offset(at));
                    }
                }
                PAYLOAD_PARTIALLY_PRESENT => {
                    return Err(Error::invalid(format!(
                        "VHDX block {block}: state PARTIALLY PRESENT (7) in a disk without a \
                         parent"
                    ))
                    .with_offset(at));
                }
                other => {
                    return Err(Error::invalid(format!(
                        "VHDX block {block}: unknown payload block state {other}"
                    ))
                    .with_offset(at));
                }
            }
            if state == PAYLOAD_PARTIALLY_PRESENT {
                let sb = sector_bitmaps_entry(&raw, block, chunk_ratio);
                if sb & 7 != SB_BLOCK_PRESENT {
                    return Err(Error::invalid(format!(
                        "VHDX block {block}: PARTIALLY PRESENT, but the sector bitmap of its \
                         chunk is not present"
                    ))
                    .with_offset(at));
                }
            }
            bat.push(e);
        }
        let parent = if differencing {
            let Some(path) = path else {
                return Err(Error::unsupported(
                    "differencing VHDX without a file path: its parent cannot be looked for",
                ));
            };
            let loc = meta.parent_locator.as_deref().ok_or_else(|| {
                Error::invalid("differencing VHDX without a parent locator metadata item")
            })?;
            let parent = open_parent(path, loc, depth)?;
            if parent.size != meta.size || parent.logical_sector_size != meta.logical_sector_size {
                return Err(Error::invalid(format!(
                    "differencing VHDX: the parent is {} bytes in {}-byte sectors, the child {} \
                     bytes in {}-byte sectors; they must match",
                    parent.size, parent.logical_sector_size, meta.size, meta.logical_sector_size
                )));
            }
            Some(Box::new(parent))
        } else {
            None
        };
        Ok(Vhdx {
            file,
            path: path.map(Path::to_path_buf),
            header,
            size: meta.size,
            block_size,
            logical_sector_size: meta.logical_sector_size,
            chunk_ratio,
            bat,
            sector_bitmaps,
            parent,
            log_entries,
            log_bytes,
        })
    }

    /// The parent's path, for a differencing disk.
    pub fn parent_path(&self) -> Option<&Path> {
        self.parent.as_ref().and_then(|p| p.path.as_deref())
    }

    /// Reads `buf` at `offset` from a PARTIALLY PRESENT block at file offset `data_at`: each
    /// logical sector from this file when its bitmap bit is set, from the parent otherwise.
    fn read_partial(&self, buf: &mut [u8], offset: u64, data_at: u64) -> Result<()> {
        let parent = self
            .parent
            .as_ref()
            .ok_or_else(|| Error::invalid("no parent"))?;
        let lss = u64::from(self.logical_sector_size);
        let block = offset / self.block_size;
        let chunk = block / self.chunk_ratio;
        let sb = self
            .sector_bitmaps
            .get(chunk as usize)
            .copied()
            .unwrap_or(0);
        let bitmap_at = (sb >> 20) * MIB;
        // Sector index within the chunk; bit n is bit n % 8 of byte n / 8 (LSB first).
        let first = (offset - chunk * self.chunk_ratio * self.block_size) / lss;
        let last =
            (offset + buf.len() as u64 - 1 - chunk * self.chunk_ratio * self.block_size) / lss;
        let mut bits = vec![0u8; (last / 8 - first / 8 + 1) as usize];
        self.file.read_exact_at(&mut bits, bitmap_at + first / 8)?;
        let present = |s: u64| bits[(s / 8 - first / 8) as usize] & (1 << (s % 8)) != 0;
        let in_block = offset % self.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let s = first + (done as u64 + offset % lss) / lss;
            let here = present(s);
            let mut e = s + 1;
            while e <= last && present(e) == here {
                e += 1;
            }
            let run_end = ((e - first) * lss - offset % lss).min(buf.len() as u64) as usize;
            let piece = &mut buf[done..run_end];
            if here {
                self.file
                    .read_exact_at(piece, data_at + in_block + done as u64)?;
            } else {
                parent.read_exact_at(piece, offset + done as u64)?;
            }
            done = run_end;
        }
        Ok(())
    }

    /// How many log entries were replayed (in memory) when the file was opened.
    pub fn log_entries_replayed(&self) -> usize {
        self.log_entries
    }

    /// How many bytes of the file the replayed log entries changed (in memory).
    pub fn log_bytes_replayed(&self) -> u64 {
        self.log_bytes
    }

    /// The current header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Logical sector size (512 or 4096).
    pub fn logical_sector_size(&self) -> u32 {
        self.logical_sector_size
    }

    /// Payload blocks per sector-bitmap block.
    pub fn chunk_ratio(&self) -> u64 {
        self.chunk_ratio
    }
}

/// The sector-bitmap BAT entry of the chunk holding payload `block`, from the raw table.
fn sector_bitmaps_entry(raw: &[u8], block: u64, chunk_ratio: u64) -> u64 {
    let chunk = block / chunk_ratio;
    let i = (chunk * (chunk_ratio + 1) + chunk_ratio) as usize * 8;
    raw.get(i..i + 8).map_or(0, |b| le64(b, 0))
}

/// VHDX parent locator type B04AEFB7-D19E-4A81-B789-25B8E9445913.
const VHDX_PARENT_LOCATOR_TYPE: [u8; 16] = guid(
    0xB04A_EFB7,
    0xD19E,
    0x4A81,
    [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13],
);

/// Decodes a parent locator item into its key/value pairs (UTF-16LE strings).
fn locator_entries(item: &[u8]) -> Result<Vec<(String, String)>> {
    if item.len() < 20 || item[..16] != VHDX_PARENT_LOCATOR_TYPE {
        return Err(Error::unsupported(
            "differencing VHDX: the parent locator is not of the VHDX type \
             (B04AEFB7-D19E-4A81-B789-25B8E9445913)",
        ));
    }
    let count = u16::from_le_bytes([item[18], item[19]]) as usize;
    let text = |off: u32, len: u16| -> Option<String> {
        let start = off as usize;
        let s = item.get(start..start.checked_add(len as usize)?)?;
        let units: Vec<u16> = s
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).ok()
    };
    let mut out = Vec::new();
    for i in 0..count {
        let e = item.get(20 + i * 12..32 + i * 12).ok_or_else(|| {
            Error::invalid(format!(
                "differencing VHDX: parent locator entry {i} lies outside the item"
            ))
        })?;
        let (ko, vo) = (le32(e, 0), le32(e, 4));
        let (kl, vl) = (
            u16::from_le_bytes([e[8], e[9]]),
            u16::from_le_bytes([e[10], e[11]]),
        );
        match (text(ko, kl), text(vo, vl)) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => {
                return Err(Error::invalid(format!(
                    "differencing VHDX: parent locator entry {i} is not valid UTF-16 inside \
                     the item"
                )));
            }
        }
    }
    Ok(out)
}

/// Finds, opens and checks the parent of the differencing VHDX at `path`: by `relative_path`
/// (from the child's folder), then `absolute_win32_path`; its data write GUID must be the
/// child's `parent_linkage` (or `parent_linkage2`).
fn open_parent(path: &Path, item: &[u8], depth: usize) -> Result<Vhdx> {
    if depth + 1 >= MAX_CHAIN_DEPTH {
        return Err(Error::unsupported(format!(
            "differencing VHDX chain deeper than {MAX_CHAIN_DEPTH}: refusing (a loop?)"
        )));
    }
    let kv = locator_entries(item)?;
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let norm = |g: &str| {
        g.trim_matches(|c| c == '{' || c == '}')
            .to_ascii_uppercase()
    };
    let linkage: Vec<String> = ["parent_linkage", "parent_linkage2"]
        .iter()
        .filter_map(|k| get(k))
        .map(|g| norm(&g))
        .collect();
    if linkage.is_empty() {
        return Err(Error::invalid(
            "differencing VHDX: the parent locator has no parent_linkage",
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tried = Vec::new();
    for key in ["relative_path", "absolute_win32_path"] {
        let Some(v) = get(key) else { continue };
        let v = v.replace('\\', "/");
        let p = Path::new(&v);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        };
        if p.exists() {
            let parent = Vhdx::open_at_depth(&p, depth + 1).path(&p)?;
            let id = show_guid(&parent.header.data_write_guid);
            if !linkage.contains(&id) {
                return Err(Error::invalid(format!(
                    "differencing VHDX: {} has data write GUID {id}, but the child expects {}",
                    p.display(),
                    linkage.join(" or ")
                )));
            }
            return Ok(parent);
        }
        tried.push(p.display().to_string());
    }
    Err(Error::invalid(format!(
        "differencing VHDX: parent {} not found; tried {}",
        linkage[0],
        if tried.is_empty() {
            "no usable path in the parent locator".to_string()
        } else {
            tried.join(", ")
        }
    )))
}

/// Parses a region table; returns the (offset, length) of the BAT and metadata regions.
fn parse_region_table(
    b: &[u8],
    at: u64,
    copy: usize,
    file_len: u64,
) -> Result<((u64, u32), (u64, u32))> {
    if &b[..4] != b"regi" {
        return Err(Error::invalid(format!(
            "VHDX region table {copy}: expected signature \"regi\", found {}",
            crate::image::vhd::show_bytes(&b[..4])
        ))
        .with_offset(at));
    }
    let stored = le32(b, 4);
    let computed = crc_with_zeroed_field(b, 4);
    if stored != computed {
        return Err(Error::invalid(format!(
            "VHDX region table {copy} checksum: expected 0x{computed:08x} (CRC-32C), found \
             0x{stored:08x}"
        ))
        .with_offset(at + 4));
    }
    let count = le32(b, 8);
    if count > MAX_TABLE_ENTRIES {
        return Err(Error::invalid(format!(
            "VHDX region table {copy}: {count} entries, at most {MAX_TABLE_ENTRIES} allowed"
        ))
        .with_offset(at + 8));
    }
    let (mut bat, mut meta) = (None, None);
    for i in 0..count as usize {
        let e = &b[16 + i * 32..16 + (i + 1) * 32];
        let mut g = [0u8; 16];
        g.copy_from_slice(&e[..16]);
        let (off, length, required) = (le64(e, 16), le32(e, 24), le32(e, 28) & 1 != 0);
        let entry_at = at + 16 + i as u64 * 32;
        if off
            .checked_add(u64::from(length))
            .is_none_or(|end| end > file_len)
        {
            return Err(Error::invalid(format!(
                "VHDX region {}: {length} bytes at offset {off} reach past the end of the \
                 {file_len}-byte file",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        }
        if (g == BAT_REGION && bat.is_some()) || (g == METADATA_REGION && meta.is_some()) {
            return Err(Error::invalid(format!(
                "VHDX region table {copy}: region {} appears twice",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        }
        if g == BAT_REGION {
            bat = Some((off, length));
        } else if g == METADATA_REGION {
            meta = Some((off, length));
        } else if required {
            return Err(Error::unsupported(format!(
                "VHDX region {} is marked required but is unknown to this tool",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        }
    }
    match (bat, meta) {
        (Some(b), Some(m)) => Ok((b, m)),
        _ => Err(Error::invalid(format!(
            "VHDX region table {copy}: the BAT and metadata regions are required, found {}",
            match (bat, meta) {
                (None, None) => "neither",
                (None, _) => "no BAT",
                _ => "no metadata",
            }
        ))
        .with_offset(at)),
    }
}

struct Metadata {
    block_size: u32,
    has_parent: bool,
    parent_locator: Option<Vec<u8>>,
    size: u64,
    logical_sector_size: u32,
}

fn parse_metadata(file: &dyn DiskImage, (at, length): (u64, u32)) -> Result<Metadata> {
    let length = u64::from(length);
    if !(64 * KIB..=MAX_METADATA_REGION).contains(&length) {
        return Err(Error::invalid(format!(
            "VHDX metadata region: {length} bytes, expected 64 KiB to {MAX_METADATA_REGION}"
        ))
        .with_offset(at));
    }
    let mut m = vec![0u8; length as usize];
    file.read_exact_at(&mut m, at)?;
    if &m[..8] != b"metadata" {
        return Err(Error::invalid(format!(
            "VHDX metadata table: expected signature \"metadata\", found {}",
            crate::image::vhd::show_bytes(&m[..8])
        ))
        .with_offset(at));
    }
    let count = u32::from(u16::from_le_bytes([m[10], m[11]]));
    if count > MAX_TABLE_ENTRIES {
        return Err(Error::invalid(format!(
            "VHDX metadata table: {count} entries, at most {MAX_TABLE_ENTRIES} allowed"
        ))
        .with_offset(at + 10));
    }
    let (mut params, mut size, mut lss, mut pss) = (None, None, None, None);
    let mut parent_locator = None;
    let mut seen = std::collections::HashSet::new();
    for i in 0..count as usize {
        let e = &m[32 + i * 32..32 + (i + 1) * 32];
        let entry_at = at + 32 + i as u64 * 32;
        let mut g = [0u8; 16];
        g.copy_from_slice(&e[..16]);
        // Two items with one id would make the file ambiguous.
        if !seen.insert(g) {
            return Err(Error::invalid(format!(
                "VHDX metadata item {} appears twice",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        }
        let (off, len, flags) = (le32(e, 16) as usize, le32(e, 20) as usize, le32(e, 24));
        let required = flags & 4 != 0;
        let Some(item) = off.checked_add(len).and_then(|end| m.get(off..end)) else {
            return Err(Error::invalid(format!(
                "VHDX metadata item {}: {len} bytes at {off} lie outside the {length}-byte region",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        };
        let need = |n: usize| -> Result<()> {
            if item.len() < n {
                return Err(Error::invalid(format!(
                    "VHDX metadata item {}: {} bytes, expected {n}",
                    show_guid(&g),
                    item.len()
                ))
                .with_offset(entry_at));
            }
            Ok(())
        };
        if g == FILE_PARAMETERS {
            need(8)?;
            params = Some((le32(item, 0), le32(item, 4)));
        } else if g == VIRTUAL_DISK_SIZE {
            need(8)?;
            size = Some(le64(item, 0));
        } else if g == LOGICAL_SECTOR_SIZE {
            need(4)?;
            lss = Some(le32(item, 0));
        } else if g == PHYSICAL_SECTOR_SIZE {
            need(4)?;
            pss = Some(le32(item, 0));
        } else if g == PARENT_LOCATOR {
            parent_locator = Some(item.to_vec());
        } else if g == VIRTUAL_DISK_ID {
            // Known; not needed for reading.
        } else if required {
            return Err(Error::unsupported(format!(
                "VHDX metadata item {} is marked required but is unknown to this tool",
                show_guid(&g)
            ))
            .with_offset(entry_at));
        }
    }
    let missing = |what: &str| {
        Error::invalid(format!(
            "VHDX metadata: the required {what} item is missing"
        ))
        .with_offset(at)
    };
    let (block_size, flags) = params.ok_or_else(|| missing("file parameters"))?;
    let size = size.ok_or_else(|| missing("virtual disk size"))?;
    let lss = lss.ok_or_else(|| missing("logical sector size"))?;
    let pss = pss.ok_or_else(|| missing("physical sector size"))?;
    if !block_size.is_power_of_two() || !(MIB as u32..=256 * MIB as u32).contains(&block_size) {
        return Err(Error::invalid(format!(
            "VHDX block size: expected a power of two from 1 MiB to 256 MiB, found {block_size}"
        ))
        .with_offset(at));
    }
    if lss != 512 && lss != 4096 {
        return Err(Error::invalid(format!(
            "VHDX logical sector size: expected 512 or 4096, found {lss}"
        ))
        .with_offset(at));
    }
    if pss != 512 && pss != 4096 {
        return Err(Error::invalid(format!(
            "VHDX physical sector size: expected 512 or 4096, found {pss}"
        ))
        .with_offset(at));
    }
    if size == 0 || size % u64::from(lss) != 0 || size > 64 << 40 {
        return Err(Error::invalid(format!(
            "VHDX virtual disk size: expected a multiple of the {lss}-byte sector up to 64 TiB, \
             found {size}"
        ))
        .with_offset(at));
    }
    Ok(Metadata {
        block_size,
        has_parent: flags & 2 != 0,
        parent_locator,
        size,
        logical_sector_size: lss,
    })
}

impl DiskImage for Vhdx {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = readable(self.size, offset, buf.len());
        for_each_block_piece(&mut buf[..n], offset, self.block_size, |piece, pos| {
            let e = self
                .bat
                .get((pos / self.block_size) as usize)
                .copied()
                .unwrap_or(0);
            let data_at = (e >> 20) * MIB;
            match (e & 7, &self.parent) {
                (PAYLOAD_FULLY_PRESENT, _) => self
                    .file
                    .read_exact_at(piece, data_at + pos % self.block_size),
                (PAYLOAD_PARTIALLY_PRESENT, Some(_)) => self.read_partial(piece, pos, data_at),
                (PAYLOAD_NOT_PRESENT, Some(p)) => p.read_exact_at(piece, pos),
                _ => {
                    piece.fill(0);
                    Ok(())
                }
            }
        })
        .map_err(|err| match &self.path {
            Some(p) => err.with_path(p),
            None => err,
        })?;
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        // A child's blocks paint over its parent's map; NOT PRESENT blocks keep the parent's.
        let mut ranges: Vec<(u64, u64, ExtentKind)> = match &self.parent {
            Some(p) => p
                .extents()?
                .iter()
                .map(|e| (e.offset, e.len, e.kind))
                .collect(),
            None => Vec::new(),
        };
        for (i, &e) in self.bat.iter().enumerate() {
            let kind = match e & 7 {
                PAYLOAD_FULLY_PRESENT | PAYLOAD_PARTIALLY_PRESENT => ExtentKind::Data,
                PAYLOAD_ZERO => ExtentKind::Zero,
                PAYLOAD_NOT_PRESENT if self.parent.is_some() => continue,
                _ => ExtentKind::Unallocated,
            };
            crate::image::push_run(
                &mut ranges,
                i as u64 * self.block_size,
                self.block_size,
                kind,
            );
        }
        Ok(ExtentMap::from_ranges(self.size, ranges))
    }

    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if self.log_entries > 0 {
            n.push(format!(
                "a pending VHDX log was replayed in memory (the file is unchanged): {} log \
                 entries, {} bytes",
                self.log_entries, self.log_bytes
            ));
        }
        if let Some(p) = &self.parent {
            n.extend(p.notes());
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_in_windows_byte_order() {
        assert_eq!(
            hex::encode(BAT_REGION),
            "6677c22d23f600429d64115e9bfd4a08",
            "2DC27766-F623-4200-9D64-115E9BFD4A08"
        );
        assert_eq!(
            show_guid(&METADATA_REGION),
            "8B7CA206-4790-4B9A-B8FE-575F050F886E"
        );
    }

    #[test]
    fn crc_skips_the_checksum_field() {
        let mut b = vec![7u8; 4096];
        let c = crc_with_zeroed_field(&b, 4);
        b[4..8].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(crc_with_zeroed_field(&b, 4), c);
        b[4..8].fill(0);
        assert_eq!(crc32c::crc32c(&b), c);
    }
}
