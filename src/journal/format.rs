//! The on-disk structs of a journal segment, kept apart from the domain types they parse into.
//! All integers are little-endian; the layout tables are in the [module docs](super) and a test
//! checks every offset against them.

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"E2AZJSEG";
/// The first 4 bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"JREC";
/// The only format version.
pub const VERSION: u32 = 1;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 128;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 56;
/// Length of a marker record's payload.
pub const MARKER_LEN: usize = 96;
/// The largest payload of one write record: 16 MiB.
pub const MAX_WRITE: u64 = 16 << 20;

/// Record kinds.
pub const KIND_WRITE: u8 = 1;
/// A zeroed range (TRIM / UNMAP / write-zeroes): no payload.
pub const KIND_ZERO: u8 = 2;
/// A consistency marker: a recovery point.
pub const KIND_MARKER: u8 = 3;

/// Marker consistency: crash-consistent.
pub const CONSISTENCY_CRASH: u8 = 1;
/// Marker consistency: application-consistent (VSS / fsfreeze tag).
pub const CONSISTENCY_APP: u8 = 2;
/// Marker flag: the marker carries the root digest of the whole disk.
pub const FLAG_DIGEST: u8 = 1;
/// Marker flag: the marker is a multi-VM point (group id and tag are set).
pub const FLAG_MULTI_VM: u8 = 2;

/// Segment header, 128 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct SegmentHeader {
    pub magic: [u8; 8],
    pub version: U32,
    pub header_len: U32,
    pub disk_id: [u8; 16],
    pub disk_size: U64,
    pub sector_size: U32,
    pub segment: U32,
    pub first_seq: U64,
    pub base_root: [u8; 32],
    pub created_ms: U64,
    pub reserved: [u8; 28],
    pub crc: U32,
}

/// Record header, 56 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecordHeader {
    pub magic: [u8; 4],
    pub kind: u8,
    pub flags: u8,
    pub reserved0: [u8; 2],
    pub seq: U64,
    pub time_ms: U64,
    pub offset: U64,
    pub length: U64,
    pub payload_len: U32,
    pub payload_crc: U32,
    pub reserved1: [u8; 4],
    pub header_crc: U32,
}

/// Marker payload, 96 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct MarkerPayload {
    pub consistency: u8,
    pub flags: u8,
    pub reserved: [u8; 6],
    pub group_id: [u8; 16],
    pub group_tag: U64,
    pub digest: [u8; 32],
    pub label: [u8; 32],
}

const _: () = assert!(size_of::<SegmentHeader>() == SEGMENT_HEADER_LEN);
const _: () = assert!(size_of::<RecordHeader>() == RECORD_HEADER_LEN);
const _: () = assert!(size_of::<MarkerPayload>() == MARKER_LEN);

impl SegmentHeader {
    /// The CRC-32C the header should carry: over bytes 0..124.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.as_bytes()[..SEGMENT_HEADER_LEN - 4])
    }
}

impl RecordHeader {
    /// The CRC-32C the header should carry: over bytes 0..52.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.as_bytes()[..RECORD_HEADER_LEN - 4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// The tables in the module docs, checked field by field.
    #[test]
    fn layout_matches_the_documented_tables() {
        let seg = [
            (offset_of!(SegmentHeader, magic), 0),
            (offset_of!(SegmentHeader, version), 8),
            (offset_of!(SegmentHeader, header_len), 12),
            (offset_of!(SegmentHeader, disk_id), 16),
            (offset_of!(SegmentHeader, disk_size), 32),
            (offset_of!(SegmentHeader, sector_size), 40),
            (offset_of!(SegmentHeader, segment), 44),
            (offset_of!(SegmentHeader, first_seq), 48),
            (offset_of!(SegmentHeader, base_root), 56),
            (offset_of!(SegmentHeader, created_ms), 88),
            (offset_of!(SegmentHeader, reserved), 96),
            (offset_of!(SegmentHeader, crc), 124),
        ];
        for (got, want) in seg {
            assert_eq!(got, want);
        }
        let rec = [
            (offset_of!(RecordHeader, magic), 0),
            (offset_of!(RecordHeader, kind), 4),
            (offset_of!(RecordHeader, flags), 5),
            (offset_of!(RecordHeader, reserved0), 6),
            (offset_of!(RecordHeader, seq), 8),
            (offset_of!(RecordHeader, time_ms), 16),
            (offset_of!(RecordHeader, offset), 24),
            (offset_of!(RecordHeader, length), 32),
            (offset_of!(RecordHeader, payload_len), 40),
            (offset_of!(RecordHeader, payload_crc), 44),
            (offset_of!(RecordHeader, reserved1), 48),
            (offset_of!(RecordHeader, header_crc), 52),
        ];
        for (got, want) in rec {
            assert_eq!(got, want);
        }
        let m = [
            (offset_of!(MarkerPayload, consistency), 0),
            (offset_of!(MarkerPayload, flags), 1),
            (offset_of!(MarkerPayload, reserved), 2),
            (offset_of!(MarkerPayload, group_id), 8),
            (offset_of!(MarkerPayload, group_tag), 24),
            (offset_of!(MarkerPayload, digest), 32),
            (offset_of!(MarkerPayload, label), 64),
        ];
        for (got, want) in m {
            assert_eq!(got, want);
        }
    }

    /// The module docs' three tables (segment header, record header, marker payload), read
    /// from the source: every row's offset and size must match the structs, field by field.
    #[test]
    fn documented_tables_match_the_structs() {
        let doc = include_str!("mod.rs");
        let mut tables: Vec<Vec<(usize, usize)>> = Vec::new();
        let mut in_table = false;
        for line in doc.lines() {
            let row = line.strip_prefix("//! | ").and_then(|r| {
                let mut cells = r.split(" | ");
                let off = cells.next()?.trim().parse().ok()?;
                let size = cells.next()?.trim().parse().ok()?;
                Some((off, size))
            });
            match row {
                Some(r) => {
                    if !in_table {
                        tables.push(Vec::new());
                    }
                    in_table = true;
                    if let Some(t) = tables.last_mut() {
                        t.push(r);
                    }
                }
                None => in_table = false,
            }
        }
        // Offsets of each struct's fields, in order, with each field's size.
        fn spans(offsets: &[usize], total: usize) -> Vec<(usize, usize)> {
            offsets
                .iter()
                .enumerate()
                .map(|(i, &o)| (o, offsets.get(i + 1).copied().unwrap_or(total) - o))
                .collect()
        }
        let seg = spans(
            &[
                offset_of!(SegmentHeader, magic),
                offset_of!(SegmentHeader, version),
                offset_of!(SegmentHeader, header_len),
                offset_of!(SegmentHeader, disk_id),
                offset_of!(SegmentHeader, disk_size),
                offset_of!(SegmentHeader, sector_size),
                offset_of!(SegmentHeader, segment),
                offset_of!(SegmentHeader, first_seq),
                offset_of!(SegmentHeader, base_root),
                offset_of!(SegmentHeader, created_ms),
                offset_of!(SegmentHeader, reserved),
                offset_of!(SegmentHeader, crc),
            ],
            SEGMENT_HEADER_LEN,
        );
        let rec = spans(
            &[
                offset_of!(RecordHeader, magic),
                offset_of!(RecordHeader, kind),
                offset_of!(RecordHeader, flags),
                offset_of!(RecordHeader, reserved0),
                offset_of!(RecordHeader, seq),
                offset_of!(RecordHeader, time_ms),
                offset_of!(RecordHeader, offset),
                offset_of!(RecordHeader, length),
                offset_of!(RecordHeader, payload_len),
                offset_of!(RecordHeader, payload_crc),
                offset_of!(RecordHeader, reserved1),
                offset_of!(RecordHeader, header_crc),
            ],
            RECORD_HEADER_LEN,
        );
        let mark = spans(
            &[
                offset_of!(MarkerPayload, consistency),
                offset_of!(MarkerPayload, flags),
                offset_of!(MarkerPayload, reserved),
                offset_of!(MarkerPayload, group_id),
                offset_of!(MarkerPayload, group_tag),
                offset_of!(MarkerPayload, digest),
                offset_of!(MarkerPayload, label),
            ],
            MARKER_LEN,
        );
        assert_eq!(tables, vec![seg, rec, mark]);
    }

    /// Known bytes: a record header encoded by hand equals the struct's bytes.
    #[test]
    fn record_header_bytes_are_little_endian() {
        let h = RecordHeader {
            magic: RECORD_MAGIC,
            kind: KIND_WRITE,
            flags: 0,
            reserved0: [0; 2],
            seq: 0x0102.into(),
            time_ms: 0x0A0B.into(),
            offset: 0x1000.into(),
            length: 0x200.into(),
            payload_len: 0x200.into(),
            payload_crc: 0xDEAD_BEEF.into(),
            reserved1: [0; 4],
            header_crc: 0.into(),
        };
        let b = h.as_bytes();
        assert_eq!(&b[0..4], b"JREC");
        assert_eq!(b[4], 1);
        assert_eq!(&b[8..10], &[0x02, 0x01]);
        assert_eq!(&b[16..18], &[0x0B, 0x0A]);
        assert_eq!(&b[24..27], &[0x00, 0x10, 0x00]);
        assert_eq!(&b[44..48], &[0xEF, 0xBE, 0xAD, 0xDE]);
    }
}
