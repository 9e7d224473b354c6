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
const MIB: u64 = 1 << 20;
/// Most pages the overlay may hold (a guard against hostile zero descriptors): 1M pages, 4 GiB
/// of zeroed range, about 50 MB of bookkeeping.
const MAX_PAGES: usize = 1 << 20;
/// The largest log we read: Hyper-V and qemu write 1 MiB logs.
const MAX_LOG: u64 = 64 * MIB;
/// No file offset in a log may reach past 64 TiB (the largest VHDX plus metadata).
const MAX_FILE_OFFSET: u64 = 1 << 46;

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
    flushed_file_offset: u64,
    last_file_offset: u64,
    ops: Vec<Op>,
}

#[derive(Debug, Clone)]
enum Op {
    Data { file_offset: u64, page: Box<[u8]> },
    Zero { file_offset: u64, length: u64 },
}

/// Reads and validates the entry at `at` within the log; `None` when it is not a valid entry.
/// `forbidden` is the log's own place in the file: no descriptor may write there, nor into the
/// first MiB (the headers, already read).
fn read_entry(log: &[u8], at: u64, guid: &[u8; 16], forbidden: (u64, u64)) -> Option<Entry> {
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
    let crc = crc_with_zeroed_field(&bytes, 4);
    if crc != le32(&bytes, 4) || &bytes[32..48] != guid {
        return None;
    }
    let sequence = le64(&bytes, 16);
    let tail = u64::from(le32(&bytes, 12));
    let (flushed_file_offset, last_file_offset) = (le64(&bytes, 48), le64(&bytes, 56));
    if sequence == 0
        || !tail.is_multiple_of(PAGE)
        || tail >= size
        || flushed_file_offset > MAX_FILE_OFFSET
        || last_file_offset > MAX_FILE_OFFSET
    {
        return None;
    }
    // A write must stay inside the file's possible range, out of the headers and the log.
    let allowed = |off: u64, len: u64| {
        off.checked_add(len).is_some_and(|end| {
            end <= MAX_FILE_OFFSET
                && off >= MIB
                && (end <= forbidden.0 || off >= forbidden.0 + forbidden.1)
        })
    };
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
                if !length.is_multiple_of(PAGE)
                    || !file_offset.is_multiple_of(PAGE)
                    || !allowed(file_offset, length)
                {
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
                if !file_offset.is_multiple_of(PAGE) || !allowed(file_offset, PAGE) {
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
        tail,
        sequence,
        flushed_file_offset,
        last_file_offset,
        ops,
    })
}

/// The active sequence of the log: the valid chain with the highest sequence number whose last
/// entry's tail points at an entry of the chain (its start). Empty when the log holds none.
/// Each page is parsed at most once.
fn active_sequence(log: &[u8], guid: &[u8; 16], forbidden: (u64, u64)) -> Vec<Entry> {
    let size = log.len() as u64;
    let mut memo: std::collections::HashMap<u64, Option<Entry>> = Default::default();
    let mut entry_at = |at: u64| -> Option<Entry> {
        memo.entry(at)
            .or_insert_with(|| read_entry(log, at, guid, forbidden))
            .clone()
    };
    let mut best: Vec<Entry> = Vec::new();
    let mut covered = std::collections::HashSet::new();
    let mut start = 0;
    while start < size {
        if covered.contains(&start) {
            start += PAGE;
            continue;
        }
        let Some(first) = entry_at(start) else {
            start += PAGE;
            continue;
        };
        let mut chain = vec![first];
        loop {
            let last = &chain[chain.len() - 1];
            let next_at = (last.at + last.length) % size;
            let Some(want) = last.sequence.checked_add(1) else {
                break;
            };
            match entry_at(next_at) {
                Some(e) if e.sequence == want && chain.len() < 1 << 16 => chain.push(e),
                _ => break,
            }
        }
        for e in &chain {
            covered.insert(e.at);
        }
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

/// CRC-32C of `buf` with its 4-byte checksum field at `at` counted as zero (every VHDX
/// structure's checksum: headers, region tables, log entries).
pub fn crc_with_zeroed_field(buf: &[u8], at: usize) -> u32 {
    let c = crc32c::crc32c(&buf[..at]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &buf[at + 4..])
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
    /// Bytes of the file the replay changed (whole 4 KiB pages written or zeroed).
    pub fn bytes_replayed(&self) -> u64 {
        self.pages.len() as u64 * 4096
    }
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
            || !log_length.is_multiple_of(MIB)
            || !log_offset.is_multiple_of(MIB)
            || log_offset < MIB
            || log_length > MAX_LOG
            || log_offset
                .checked_add(log_length)
                .is_none_or(|e| e > file_len)
        {
            return Err(Error::invalid(format!(
                "VHDX log: {log_length} bytes at offset {log_offset}: expected whole MiB, at most \
                 {MAX_LOG} bytes, after the first MiB and inside the {file_len}-byte file"
            ))
            .with_offset(log_offset));
        }
        let mut log = vec![0u8; log_length as usize];
        inner.read_exact_at(&mut log, log_offset)?;
        let seq = active_sequence(&log, guid, (log_offset, log_length));
        // The log says the file was flushed to this length: a shorter file was truncated since,
        // and what it lost would read as zeros.
        if let Some(e) = seq.iter().find(|e| e.flushed_file_offset > file_len) {
            return Err(Error::invalid(format!(
                "VHDX log: entry {} says the file was flushed to {} bytes, but it is {file_len} \
                 bytes: the file was truncated",
                e.sequence, e.flushed_file_offset
            ))
            .with_offset(log_offset + e.at));
        }
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
                        // Checked before expanding: a hostile length must not run away.
                        if pages.len() as u64 + length / PAGE > MAX_PAGES as u64 {
                            return Err(Error::limit(format!(
                                "VHDX log: replay touches more than {MAX_PAGES} pages"
                            ))
                            .with_offset(log_offset + e.at));
                        }
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
