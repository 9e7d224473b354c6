//! The hosted sparse extent header (`KDMV`, VMware "Virtual Disk Format 5.0" §"Hosted Sparse
//! Extent Header") and the stream-optimized markers, as they lie on disk (little-endian,
//! unaligned), apart from the checked [`SparseHeader`] they parse into.
//!
//! ```text
//! offset size field                 meaning
//!      0    4 magicNumber           "KDMV"
//!      4    4 version               1, 2 or 3 (3: stream-optimized with GD_AT_END)
//!      8    4 flags                 bit 0 newline test valid, 1 redundant GD, 2 zeroed-grain
//!                                   GTE (GTE 1 = zero grain), 16 compressed grains, 17 markers
//!     12    8 capacity              sectors
//!     20    8 grainSize             sectors (a power of two, at least 8 by the spec)
//!     28    8 descriptorOffset      sector of the embedded descriptor (0: none)
//!     36    8 descriptorSize        sectors
//!     44    4 numGTEsPerGT          512
//!     48    8 rgdOffset             sector of the redundant grain directory
//!     56    8 gdOffset              sector of the grain directory; all ones = GD_AT_END
//!     64    8 overHead              sectors of metadata before the first grain
//!     72    1 uncleanShutdown
//!     73    4 "\n", " ", "\r", "\n"  newline-corruption test characters
//!     77    2 compressAlgorithm     0 none, 1 deflate (zlib, RFC 1950)
//!     79  433 pad
//! ```
//!
//! A stream-optimized marker is one sector: `u64 val`, `u32 size`, `u32 type`. `size > 0`: a
//! grain marker, `val` = the grain's first sector on the disk, followed at byte 12 by `size`
//! bytes of zlib data (padded to a sector). `size == 0`: a metadata marker whose `type` is 0
//! end of stream, 1 grain table, 2 grain directory or 3 footer, and `val` = the sectors of
//! metadata that follow it.

use crate::error::{Error, Result};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// "KDMV" as the first four bytes of a hosted sparse extent.
pub const MAGIC: &[u8; 4] = b"KDMV";
/// A `gdOffset` saying "the grain directory is in the footer at the end of the stream".
pub const GD_AT_END: u64 = u64::MAX;
/// The sector size every VMDK offset counts in.
pub const SECTOR: u64 = 512;

/// Flag bit 1: the redundant grain directory is valid.
pub const FLAG_REDUNDANT_GD: u32 = 1 << 1;
/// Flag bit 2: a grain table entry of 1 means a zero grain.
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag bit 17: the extent has markers (stream-optimized).
pub const FLAG_MARKERS: u32 = 1 << 17;
/// The flags this reader knows (0, 1, 2, 16, 17); a header with others is refused.
const KNOWN_FLAGS: u32 = 1 | FLAG_REDUNDANT_GD | FLAG_ZERO_GRAIN | FLAG_COMPRESSED | FLAG_MARKERS;

/// `compressAlgorithm` 1: deflate in a zlib stream.
pub const COMPRESS_DEFLATE: u16 = 1;

/// Marker types (size 0).
pub const MARKER_EOS: u32 = 0;
/// A grain table follows.
pub const MARKER_GT: u32 = 1;
/// The grain directory follows.
pub const MARKER_GD: u32 = 2;
/// The footer (a copy of the header with the real `gdOffset`) follows.
pub const MARKER_FOOTER: u32 = 3;

/// The most sectors a grain may have (8 MiB; VMware and qemu write 128, i.e. 64 KiB). Each
/// reading thread may keep one inflated grain.
pub const MAX_GRAIN_SECTORS: u64 = 1 << 14;
/// The most entries a grain table may have (the format writes 512).
pub const MAX_GTES_PER_GT: u32 = 512;

/// The header as it lies on disk.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawHeader {
    pub magic: [u8; 4],
    pub version: U32,
    pub flags: U32,
    pub capacity: U64,
    pub grain_size: U64,
    pub descriptor_offset: U64,
    pub descriptor_size: U64,
    pub num_gtes_per_gt: U32,
    pub rgd_offset: U64,
    pub gd_offset: U64,
    pub overhead: U64,
    pub unclean_shutdown: u8,
    pub newline_test: [u8; 4],
    pub compress_algorithm: U16,
    pub pad: [u8; 433],
}

const _: () = assert!(std::mem::size_of::<RawHeader>() == 512);

/// A checked sparse extent header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    /// Sectors.
    pub capacity: u64,
    /// Sectors.
    pub grain_size: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub num_gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub overhead: u64,
    pub compressed: bool,
}

impl SparseHeader {
    /// Parses and checks 512 header bytes.
    ///
    /// # Errors
    /// A wrong magic or version, unknown flags or compression, a grain size or table size out
    /// of range, or a newline test that shows the file went through a text-mode transfer.
    pub fn parse(b: &[u8; 512]) -> Result<Self> {
        let Ok(r) = RawHeader::ref_from_bytes(&b[..]) else {
            return Err(Error::invalid("VMDK header: not 512 bytes"));
        };
        if &r.magic != MAGIC {
            return Err(Error::invalid(format!(
                "VMDK sparse header: expected magic \"KDMV\", found {}",
                crate::image::vhd::show_bytes(&r.magic)
            ))
            .with_offset(0));
        }
        let version = r.version.get();
        if !(1..=3).contains(&version) {
            return Err(Error::unsupported(format!(
                "VMDK sparse header: version {version}; this reader knows versions 1 to 3"
            ))
            .with_offset(4));
        }
        let flags = r.flags.get();
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::unsupported(format!(
                "VMDK sparse header: unknown flags 0x{:08x} (known: 0x{KNOWN_FLAGS:08x})",
                flags & !KNOWN_FLAGS
            ))
            .with_offset(8));
        }
        if flags & 1 != 0 && r.newline_test != *b"\n \r\n" {
            return Err(Error::invalid(format!(
                "VMDK sparse header: the newline test characters are {:?}, expected \"\\n \\r\\n\": \
                 the file was altered by a text-mode transfer",
                r.newline_test
            ))
            .with_offset(73));
        }
        let compress = r.compress_algorithm.get();
        let compressed = match compress {
            0 => false,
            COMPRESS_DEFLATE => true,
            other => {
                return Err(Error::unsupported(format!(
                    "VMDK sparse header: compression algorithm {other}; only 0 (none) and 1 \
                     (deflate) exist"
                ))
                .with_offset(77));
            }
        };
        // Whether grains are compressed is the algorithm field's to say (as for qemu and
        // VMware); flag bit 16 only repeats it.
        let grain_size = r.grain_size.get();
        if grain_size == 0 || grain_size > MAX_GRAIN_SECTORS || !grain_size.is_power_of_two() {
            return Err(Error::invalid(format!(
                "VMDK sparse header: grain size {grain_size} sectors; expected a power of two \
                 from 1 to {MAX_GRAIN_SECTORS}"
            ))
            .with_offset(20));
        }
        let num_gtes_per_gt = r.num_gtes_per_gt.get();
        if num_gtes_per_gt == 0 || num_gtes_per_gt > MAX_GTES_PER_GT {
            return Err(Error::invalid(format!(
                "VMDK sparse header: {num_gtes_per_gt} entries per grain table; expected 1 to \
                 {MAX_GTES_PER_GT} (the format writes 512)"
            ))
            .with_offset(44));
        }
        let capacity = r.capacity.get();
        if capacity.checked_mul(SECTOR).is_none() {
            return Err(Error::invalid(format!(
                "VMDK sparse header: capacity of {capacity} sectors does not fit in 64 bits of bytes"
            ))
            .with_offset(12));
        }
        Ok(SparseHeader {
            version,
            flags,
            capacity,
            grain_size,
            descriptor_offset: r.descriptor_offset.get(),
            descriptor_size: r.descriptor_size.get(),
            num_gtes_per_gt,
            rgd_offset: r.rgd_offset.get(),
            gd_offset: r.gd_offset.get(),
            overhead: r.overhead.get(),
            compressed,
        })
    }

    /// The grain size in bytes.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_size * SECTOR
    }

    /// The capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity * SECTOR
    }

    /// How many grains the capacity needs.
    pub fn grains(&self) -> u64 {
        self.capacity.div_ceil(self.grain_size)
    }

    /// How many grain tables (= grain directory entries) the capacity needs.
    pub fn tables(&self) -> u64 {
        self.grains().div_ceil(u64::from(self.num_gtes_per_gt))
    }

    /// `true` when grains are stream-optimized (markers before every grain).
    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// `true` when GTE 1 means a zero grain.
    pub fn zero_grains(&self) -> bool {
        self.flags & FLAG_ZERO_GRAIN != 0
    }
}

/// A stream-optimized marker (one sector's first 16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub val: u64,
    pub size: u32,
    pub kind: u32,
}

impl Marker {
    /// The marker at the start of `b` (16 bytes).
    pub fn parse(b: &[u8; 16]) -> Marker {
        let u64_at = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Marker {
            val: u64_at(0),
            size: u32_at(8),
            kind: u32_at(12),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid version-1 header for a disk of `capacity` sectors with 128-sector grains.
    pub fn header_bytes(capacity: u64, gd: u64, rgd: u64, flags: u32) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[12..20].copy_from_slice(&capacity.to_le_bytes());
        b[20..28].copy_from_slice(&128u64.to_le_bytes());
        b[44..48].copy_from_slice(&512u32.to_le_bytes());
        b[48..56].copy_from_slice(&rgd.to_le_bytes());
        b[56..64].copy_from_slice(&gd.to_le_bytes());
        b[73..77].copy_from_slice(b"\n \r\n");
        b
    }

    #[test]
    fn field_offsets_match_the_table() {
        let b = header_bytes(20480, 26, 21, 3);
        let h = SparseHeader::parse(&b).unwrap();
        assert_eq!(
            (h.capacity, h.grain_size, h.gd_offset, h.rgd_offset),
            (20480, 128, 26, 21)
        );
        assert_eq!(h.num_gtes_per_gt, 512);
        assert_eq!(h.grains(), 160);
        assert_eq!(h.tables(), 1);
    }

    #[test]
    fn bad_fields_are_refused_with_their_offset() {
        let mut b = header_bytes(20480, 26, 21, 3);
        b[20..28].copy_from_slice(&100u64.to_le_bytes());
        let e = SparseHeader::parse(&b).unwrap_err();
        assert_eq!(e.offset(), Some(20), "{e}");
        let mut b = header_bytes(20480, 26, 21, 3);
        b[75] = b'\n';
        assert!(
            SparseHeader::parse(&b)
                .unwrap_err()
                .to_string()
                .contains("text-mode")
        );
        let mut b = header_bytes(20480, 26, 21, 1 << 5);
        b[4] = 1;
        assert!(
            SparseHeader::parse(&b)
                .unwrap_err()
                .to_string()
                .contains("unknown flags")
        );
    }
}
