//! Change journals: the replicated write stream of one disk, as the Mobility service ships it to
//! the process server, in numbered segment files.
//!
//! A journal applies to one **base image**, named by its manifest root digest
//! ([`crate::digest`]). It is an ordered list of records, each with a sequence number (1, 2, 3, …
//! with no gaps across segments), a time and checksums: **writes** (offset and data), **zeroed
//! ranges**, and **markers**. A marker is a recovery point: crash-consistent or app-consistent,
//! optionally a multi-VM point (a replication-group id and a tag that every disk of the group
//! carries for the same point), optionally with the root digest the whole disk must have there.
//! The point at a marker is the base with every write and zeroing *before* the marker applied.
//!
//! # Files
//!
//! A journal is a directory of segment files named `seg-NNNNNNNN.e2j` (the segment number, 8
//! decimal digits, from 1). Other files are ignored. Each segment is a 128-byte header followed by
//! records back to back (no padding). All integers are **little-endian**.
//!
//! ## Segment header (128 bytes)
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 8 | magic | `E2AZJSEG` |
//! | 8 | 4 | version | 1 |
//! | 12 | 4 | header length | 128 |
//! | 16 | 16 | disk id | the same in every segment of a journal |
//! | 32 | 8 | disk size | bytes, a multiple of the sector size |
//! | 40 | 4 | sector size | 512 or 4096 |
//! | 44 | 4 | segment number | as in the file name, from 1 |
//! | 48 | 8 | first sequence number | of the segment's first record |
//! | 56 | 32 | base root digest | manifest root of the base image |
//! | 88 | 8 | created | milliseconds since 1970-01-01 UTC |
//! | 96 | 28 | reserved | zero |
//! | 124 | 4 | CRC-32C | of bytes 0..124 |
//!
//! ## Record header (56 bytes), then the payload
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 4 | magic | `JREC` |
//! | 4 | 1 | kind | 1 write, 2 zero range, 3 marker |
//! | 5 | 1 | flags | 0 |
//! | 6 | 2 | reserved | zero |
//! | 8 | 8 | sequence number | previous record's + 1 |
//! | 16 | 8 | time | milliseconds since 1970-01-01 UTC, never less than the previous record's |
//! | 24 | 8 | offset | write / zero: byte offset on the disk, sector-aligned; marker: 0 |
//! | 32 | 8 | length | write / zero: bytes, sector-aligned, > 0, offset + length ≤ disk size; marker: 0 |
//! | 40 | 4 | payload length | write: = length (at most 16 MiB); zero: 0; marker: 96 |
//! | 44 | 4 | payload CRC-32C | of the payload (0 when there is none) |
//! | 48 | 4 | reserved | zero |
//! | 52 | 4 | header CRC-32C | of bytes 0..52 |
//!
//! A write's payload is its data. A marker's payload is:
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 1 | consistency | 1 crash-consistent, 2 app-consistent |
//! | 1 | 1 | flags | bit 0: digest present; bit 1: multi-VM point |
//! | 2 | 6 | reserved | zero |
//! | 8 | 16 | group id | multi-VM: the replication group (not all zero); else zero |
//! | 24 | 8 | group tag | multi-VM: the point's tag, shared by every disk of the group; else 0 |
//! | 32 | 32 | digest | the manifest root of the whole disk at this point, if flagged; else zero |
//! | 64 | 32 | label | UTF-8, zero-padded (an app-consistency tag's name, say) |
//!
//! The header CRC covers the payload CRC, so a record is checked without reading its payload,
//! and a payload is checked when it is read: building a point reads only the payloads it uses.
//! [`ScanOptions::verify_payloads`] checks every payload up front (`journal verify`, `replica
//! process`).
//!
//! # What is checked, and what a defect costs
//!
//! - **A torn last record** (the last segment ends inside a record, as a crash while appending
//!   leaves it) is reported and ignored; every point before it stays available.
//! - **A defect** — a bad magic or CRC, a gap in sequence numbers or segment numbers, a segment
//!   cut short that is not the last, time going backwards, a write that is unaligned, empty, too
//!   long or past the disk's end, an unknown kind or flag — ends the usable journal there: every
//!   point after it is unavailable, and [`Journal::unavailable`] lists those that can still be
//!   seen (in later segments), with the defect as the reason. Everything before it is kept.
//! - **A segment of another disk** (disk id, size, sector size or base differ) and a journal
//!   applied to the wrong base are errors: nothing is built from it.

mod format;
#[cfg(test)]
pub(crate) mod format_test_support {
    //! Rewrites a record header in place with a fresh CRC, to make records that are intact
    //! but invalid.
    use std::os::unix::fs::FileExt;
    pub(crate) fn patch_record(path: &std::path::Path, at: u64, f: impl Fn(&mut [u8])) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut h = [0u8; 56];
        file.read_exact_at(&mut h, at).unwrap();
        f(&mut h);
        let crc = crc32c::crc32c(&h[..52]);
        h[52..].copy_from_slice(&crc.to_le_bytes());
        file.write_all_at(&h, at).unwrap();
    }
}
mod reader;
mod writer;

pub use format::{MARKER_LEN, MAX_WRITE, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
pub(crate) use reader::list_segments;
pub use reader::{
    Defect, Journal, ScanOptions, Segment, SegmentBytes, UnavailablePoint, segment_info,
};
pub use writer::{JournalEnd, JournalWriter, WriterOptions};

pub use crate::clock::{format_duration, format_time, parse_duration, parse_time};
use crate::digest::Digest;
use serde::Serialize;

/// The file name of segment `n`.
pub fn segment_file_name(n: u32) -> String {
    format!("seg-{n:08}.e2j")
}

/// The segment number in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".e2j")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Which disk a journal belongs to and which base it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalInfo {
    /// The disk's id.
    pub disk_id: [u8; 16],
    /// The disk's size in bytes.
    pub disk_size: u64,
    /// The disk's sector size: 512 or 4096.
    pub sector_size: u32,
    /// Manifest root digest of the base image.
    pub base_root: Digest,
}

/// Crash- or app-consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Crash-consistent: what the disk held at that moment.
    Crash,
    /// Application-consistent: taken with the applications quiesced.
    App,
}

/// A marker: one recovery point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Crash- or app-consistent.
    pub consistency: Consistency,
    /// The root digest the whole disk must have at this point.
    pub digest: Option<Digest>,
    /// Multi-VM point: the replication group's id and the point's tag.
    pub group: Option<([u8; 16], u64)>,
    /// A free-form label (at most 32 bytes of UTF-8).
    pub label: String,
}

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Data written at `offset..offset + length`.
    Write,
    /// `offset..offset + length` zeroed.
    Zero,
    /// A recovery point.
    Marker,
}

/// One record of a journal, as the reader indexed it.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// Sequence number.
    pub seq: u64,
    /// Milliseconds since 1970-01-01 UTC.
    pub time_ms: u64,
    /// What it does.
    pub kind: RecordKind,
    /// Disk offset (writes and zero ranges).
    pub offset: u64,
    /// Bytes (writes and zero ranges).
    pub length: u64,
    /// Index of the segment in [`Journal::segments`].
    pub segment: u32,
    /// Where the payload starts in the segment file.
    pub payload_pos: u64,
    /// The payload's CRC-32C.
    pub payload_crc: u32,
}

/// A recovery point found in a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointRecord {
    /// The marker's sequence number: the point's id.
    pub seq: u64,
    /// Milliseconds since 1970-01-01 UTC.
    pub time_ms: u64,
    /// Index of the marker in [`Journal::records`].
    pub record: usize,
    /// The marker.
    pub marker: Marker,
}

/// The text form of a point id: `rp-` and the marker's sequence number.
pub fn point_id(seq: u64) -> String {
    PointId(seq).to_string()
}

/// A recovery point's id: its marker's sequence number, written `rp-N` at the edges (CLI,
/// JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PointId(pub u64);

impl PointId {
    /// The marker's sequence number.
    pub fn seq(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for PointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rp-{}", self.0)
    }
}

impl std::str::FromStr for PointId {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<PointId> {
        s.strip_prefix("rp-")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
            .map(PointId)
            .ok_or_else(|| {
                crate::error::Error::argument(format!(
                    "point id {s:?}: expected rp- and a marker's sequence number (rp-42)"
                ))
            })
    }
}

impl Serialize for PointId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PointId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(7), "seg-00000007.e2j");
        assert_eq!(parse_segment_file_name("seg-00000007.e2j"), Some(7));
        assert_eq!(parse_segment_file_name("seg-7.e2j"), None);
        assert_eq!(parse_segment_file_name("seg-0000000x.e2j"), None);
    }
}
