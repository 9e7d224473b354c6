//! VHDX log replay, in memory: the user's file is never written.
//!
//! A VHDX whose header names a log (non-zero log GUID) was not closed cleanly: some metadata or
//! BAT updates may sit in the log and not yet in place. The log is a circular buffer of entries,
//! each 4 KiB-aligned:
//!
//! ```text
//! entry header (64 bytes, little-endian)
//!    0  4 "loge"            4  4 CRC-32C of the whole entry, this field zeroed
//!    8  4 entry length     12  4 tail: log offset of the first entry of this sequence
//!   16  8 sequence number  24  4 descriptor count   28 4 reserved
//!   32 16 log GUID         48  8 flushed file offset 56 8 last file offset
//! descriptors (32 bytes each, after the header, padded to 4 KiB)
//!   "zero": 4 reserved, 8 zero length, 8 file offset, 8 sequence number
//!   "desc": 4 trailing bytes, 8 leading bytes, 8 file offset, 8 sequence number
//! data sectors (4 KiB each, one per "desc", in order)
//!   "data", 4 sequence high, 4084 data, 4 sequence low
//!   → the 4 KiB written at the file offset are: leading (8) ‖ data (4084) ‖ trailing (4)
//! ```
//!
//! Replay finds the active sequence — valid entries (signature, CRC-32C, the header's log GUID,
//! sequence numbers rising by one, descriptors' sequence numbers matching) chained by their
//! lengths around the circle, whose last entry's tail points back at its first — choosing the one
//! with the highest sequence number, and applies its descriptors in order to an overlay of 4 KiB
//! pages over the file.

use crate::error::{Error, Result};
use crate::image::{DiskImage, ExtentMap, Format};
use std::collections::BTreeMap;

const PAGE: u64 = 4096;
/// Most pages the overlay may hold (a guard against hostile zero descriptors): 16M pages of
/// bookkeeping for zeros, and data pages that must each be in the log anyway.
const MAX_PAGES: usize = 16 << 20;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// One parsed log entry.
#[derive(Debug, Clone)]
struct Entry {
    /// Offset of the entry within the log.
    at: u64,
    length: u64,
    tail: u64,
    sequence: u64,
    last_file_offset: u64,
    ops: Vec<Op>,
}

#[derive(Debug, Clone)]
enum Op {
    Data { file_offset: u64, page: Box<[u8]> },
    Zero { file_offset: u64, length: u64 },
}

/// Reads and validates the entry at `at` within the log; `None` when it is not a valid entry.
fn read_entry(log: &[u8], at: u64, guid: &[u8; 16]) -> Option<Entry> {
    let size = log.len() as u64;
    let a = at as usize;
    if !at.is_multiple_of(PAGE) || at + 64 > size || &log[a..a + 4] != b"loge" {
        return None;
    }
    let length = u64::from(le32(log, a + 8));
    if length < PAGE || !length.is_multiple_of(PAGE) || length > size {
        return None;
    }
    // The entry may wrap around the end of the circular log.
    let bytes: Vec<u8> = (0..length)
        .map(|i| log[((at + i) % size) as usize])
        .collect();
    let crc = crate::image::vhdx::crc_with_zeroed_field(&bytes, 4);
    if crc != le32(&bytes, 4) || &bytes[32..48] != guid {
        return None;
    }
    let sequence = le64(&bytes, 16);
    let count = le32(&bytes, 24) as u64;
    let desc_area = (64 + count * 32).div_ceil(PAGE) * PAGE;
    if desc_area > length {
        return None;
    }
    let mut ops = Vec::new();
    let mut data_at = desc_area;
    for i in 0..count as usize {
        let d = &bytes[64 + i * 32..96 + i * 32];
        if le64(d, 24) != sequence {
            return None;
        }
        match &d[..4] {
            b"zero" => {
                let (length, file_offset) = (le64(d, 8), le64(d, 16));
                if !length.is_multiple_of(PAGE) || !file_offset.is_multiple_of(PAGE) {
                    return None;
                }
                ops.push(Op::Zero {
                    file_offset,
                    length,
                });
            }
            b"desc" => {
                if data_at + PAGE > length {
                    return None;
                }
                let s = &bytes[data_at as usize..(data_at + PAGE) as usize];
                let seq = (u64::from(le32(s, 4)) << 32) | u64::from(le32(s, 4092));
                if &s[..4] != b"data" || seq != sequence {
                    return None;
                }
                let file_offset = le64(d, 16);
                if !file_offset.is_multiple_of(PAGE) {
                    return None;
                }
                let mut page = vec![0u8; PAGE as usize];
                page[..8].copy_from_slice(&d[8..16]); // leading bytes
                page[8..4092].copy_from_slice(&s[8..4092]);
                page[4092..].copy_from_slice(&d[4..8]); // trailing bytes
                ops.push(Op::Data {
                    file_offset,
                    page: page.into_boxed_slice(),
                });
                data_at += PAGE;
            }
            _ => return None,
        }
    }
    Some(Entry {
        at,
        length,
        tail: u64::from(le32(&bytes, 12)),
        sequence,
        last_file_offset: le64(&bytes, 56),
        ops,
    })
}

/// The active sequence of the log: the valid chain with the highest sequence number whose last
/// entry's tail points at its first entry. Empty when the log holds none.
fn active_sequence(log: &[u8], guid: &[u8; 16]) -> Vec<Entry> {
    let size = log.len() as u64;
    let mut best: Vec<Entry> = Vec::new();
    let mut start = 0;
    while start < size {
        let Some(first) = read_entry(log, start, guid) else {
            start += PAGE;
            continue;
        };
        let mut chain = vec![first];
        loop {
            let last = &chain[chain.len() - 1];
            let next_at = (last.at + last.length) % size;
            match read_entry(log, next_at, guid) {
                Some(e) if e.sequence == last.sequence + 1 && chain.len() < 1 << 20 => {
                    chain.push(e)
                }
                _ => break,
            }
        }
        // Valid only if the last entry's tail is the chain's first entry (or any entry of it:
        // the tail may move forward within the chain).
        let last = &chain[chain.len() - 1];
        if let Some(pos) = chain.iter().position(|e| e.at == last.tail) {
            let seq = chain.split_off(pos);
            if seq.last().map(|e| e.sequence) > best.last().map(|e| e.sequence) {
                best = seq;
            }
        }
        start += PAGE;
    }
    best
}

/// A file with its VHDX log replayed over it, in memory.
pub struct Replayed {
    inner: Box<dyn DiskImage>,
    /// 4 KiB pages the log wrote: `Some` data or `None` zeros.
    pages: BTreeMap<u64, Option<Box<[u8]>>>,
    len: u64,
    /// Log entries applied.
    pub entries: usize,
}

impl Replayed {
    /// Replays the log at `log_offset` (`log_length` bytes) named by `guid` over `inner`.
    ///
    /// # Errors
    /// The log lies outside the file, or a replay would exceed the overlay's limit.
    pub fn new(
        inner: Box<dyn DiskImage>,
        log_offset: u64,
        log_length: u64,
        guid: &[u8; 16],
    ) -> Result<Self> {
        let file_len = inner.len();
        if log_length == 0
            || !log_length.is_multiple_of(PAGE)
            || log_length > 4 << 30
            || log_offset
                .checked_add(log_length)
                .is_none_or(|e| e > file_len)
        {
            return Err(Error::invalid(format!(
                "VHDX log: {log_length} bytes at offset {log_offset} do not fit the {file_len}-byte \
                 file in whole 4 KiB pages"
            ))
            .with_offset(log_offset));
        }
        let mut log = vec![0u8; log_length as usize];
        inner.read_exact_at(&mut log, log_offset)?;
        let seq = active_sequence(&log, guid);
        let mut pages: BTreeMap<u64, Option<Box<[u8]>>> = BTreeMap::new();
        let mut len = file_len;
        for e in &seq {
            len = len.max(e.last_file_offset);
            for op in &e.ops {
                match op {
                    Op::Data { file_offset, page } => {
                        pages.insert(*file_offset, Some(page.clone()));
                        len = len.max(file_offset + PAGE);
                    }
                    Op::Zero {
                        file_offset,
                        length,
                    } => {
                        for p in (0..*length).step_by(PAGE as usize) {
                            pages.insert(file_offset + p, None);
                        }
                        len = len.max(file_offset + length);
                    }
                }
                if pages.len() > MAX_PAGES {
                    return Err(Error::limit(format!(
                        "VHDX log: replay touches more than {MAX_PAGES} pages"
                    ))
                    .with_offset(log_offset + e.at));
                }
            }
        }
        Ok(Replayed {
            inner,
            pages,
            len,
            entries: seq.len(),
        })
    }
}

impl DiskImage for Replayed {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(usize::try_from(self.len - offset).unwrap_or(usize::MAX));
        let buf = &mut buf[..n];
        // The file's bytes (zeros past its end), then the log's pages over them.
        let got = self.inner.read_at(buf, offset)?;
        let mut done = got;
        while done < n {
            match self.inner.read_at(&mut buf[done..], offset + done as u64)? {
                0 => {
                    buf[done..].fill(0);
                    break;
                }
                k => done += k,
            }
        }
        let end = offset + n as u64;
        let first = offset / PAGE * PAGE;
        for (&p, page) in self.pages.range(first..end) {
            let (s, e) = (p.max(offset), (p + PAGE).min(end));
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            match page {
                Some(data) => dst.copy_from_slice(&data[(s - p) as usize..(e - p) as usize]),
                None => dst.fill(0),
            }
        }
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        Ok(ExtentMap::all_data(self.len))
    }

    fn format(&self) -> Format {
        Format::Raw
    }
}
