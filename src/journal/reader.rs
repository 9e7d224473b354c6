//! Reading a journal: one pass over the record headers of every segment (memory-mapped), which
//! checks the structure, indexes the records and finds the points; payloads are checked when
//! read, or up front with [`ScanOptions::verify_payloads`].

use super::format::*;
use super::{
    Consistency, JournalInfo, Marker, PointRecord, Record, RecordKind, parse_segment_file_name,
};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use zerocopy::FromBytes;

/// The bytes of one segment file: mapped, or in memory.
pub enum SegmentBytes {
    /// A read-only memory map of the file.
    Map(memmap2::Mmap),
    /// Bytes in memory (tests, fuzzing, empty files).
    Mem(Vec<u8>),
}

impl std::ops::Deref for SegmentBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SegmentBytes::Map(m) => m,
            SegmentBytes::Mem(v) => v,
        }
    }
}

/// One segment file.
pub struct Segment {
    /// The number in its file name.
    pub number: u32,
    /// Its path.
    pub path: PathBuf,
    bytes: SegmentBytes,
}

impl Segment {
    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// How to read a journal.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Check every payload's CRC now rather than when it is read.
    pub verify_payloads: bool,
    /// Records before this sequence number are already part of the base (a compacted replica):
    /// they are skipped, and segments holding only such records may be gone.
    pub start_seq: u64,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            verify_payloads: false,
            start_seq: 1,
        }
    }
}

/// Where and why a journal stops being usable (or, for a torn tail, where it ends).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Defect {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset in that file.
    pub file_offset: u64,
    /// The record's sequence number, when it could be read.
    pub seq: Option<u64>,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: at offset {}", self.path.display(), self.file_offset)?;
        if let Some(s) = self.seq {
            write!(f, ", record {s}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A point seen after a defect: it cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnavailablePoint {
    /// The marker's sequence number.
    pub seq: u64,
    /// Its time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Its consistency.
    pub consistency: Consistency,
}

/// An opened, indexed journal.
pub struct Journal {
    dir: PathBuf,
    info: JournalInfo,
    segments: Vec<Segment>,
    records: Vec<Record>,
    points: Vec<PointRecord>,
    defect: Option<Defect>,
    torn: Option<Defect>,
    unavailable: Vec<UnavailablePoint>,
    /// Per record: 0 payload not checked yet, 1 good, 2 bad.
    payload_state: Vec<AtomicU8>,
    start_seq: u64,
    last_seen_ms: u64,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("records", &self.records.len())
            .field("points", &self.points.len())
            .field("defect", &self.defect)
            .field("torn", &self.torn)
            .finish()
    }
}

fn map_file(path: &Path) -> Result<SegmentBytes> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io("opening a journal segment", e).with_path(path))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading a segment's size", e).with_path(path))?
        .len();
    if len == 0 {
        return Ok(SegmentBytes::Mem(Vec::new()));
    }
    // SAFETY: the map is read-only; a segment truncated by someone else while we read it would
    // raise SIGBUS, as for any mapped input (the journal directory is ours, not shared).
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| Error::io("mapping a journal segment", e).with_path(path))?;
    Ok(SegmentBytes::Map(map))
}

/// The segment files of `dir`, sorted by number.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Error::io("listing the journal directory", e).with_path(dir))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("listing the journal directory", e).with_path(dir))?;
        if let Some(n) = ent.file_name().to_str().and_then(parse_segment_file_name) {
            out.push((n, ent.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The disk, base and first sequence number a segment file's header gives.
///
/// # Errors
/// The file cannot be read or its header is invalid.
pub fn segment_info(path: &Path, number: u32) -> Result<(JournalInfo, u64)> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(SEGMENT_HEADER_LEN);
    std::fs::File::open(path)
        .and_then(|f| f.take(SEGMENT_HEADER_LEN as u64).read_to_end(&mut buf))
        .map_err(|e| Error::io("reading a segment header", e).with_path(path))?;
    let h =
        check_header(&buf, number).map_err(|m| Error::invalid(m).with_path(path).with_offset(0))?;
    Ok((info_of(&h), h.first_seq.get()))
}

fn info_of(h: &SegmentHeader) -> JournalInfo {
    JournalInfo {
        disk_id: h.disk_id,
        disk_size: h.disk_size.get(),
        sector_size: h.sector_size.get(),
        base_root: Digest(h.base_root),
    }
}

/// Checks a segment header; `Err` is the defect's message.
fn check_header(bytes: &[u8], number: u32) -> std::result::Result<SegmentHeader, String> {
    let Ok((h, _)) = SegmentHeader::read_from_prefix(bytes) else {
        return Err(format!(
            "segment header: expected {SEGMENT_HEADER_LEN} bytes, found {}",
            bytes.len()
        ));
    };
    if h.magic != SEGMENT_MAGIC {
        return Err(format!(
            "segment magic: expected {:?}, found {:02x?}",
            "E2AZJSEG", h.magic
        ));
    }
    if h.crc.get() != h.compute_crc() {
        return Err(format!(
            "segment header CRC-32C: expected {:08x}, found {:08x}",
            h.compute_crc(),
            h.crc.get()
        ));
    }
    if h.version.get() != VERSION || h.header_len.get() as usize != SEGMENT_HEADER_LEN {
        return Err(format!(
            "segment version {} with a {}-byte header: expected version {VERSION}, {SEGMENT_HEADER_LEN} bytes",
            h.version.get(),
            h.header_len.get()
        ));
    }
    let sector = h.sector_size.get();
    if sector != 512 && sector != 4096 {
        return Err(format!("sector size: expected 512 or 4096, found {sector}"));
    }
    if h.disk_size.get() == 0 || h.disk_size.get() % u64::from(sector) != 0 {
        return Err(format!(
            "disk size {}: expected a non-zero multiple of the {sector}-byte sector",
            h.disk_size.get()
        ));
    }
    let _ = number;
    if h.first_seq.get() == 0 {
        return Err("first sequence number: expected at least 1, found 0".into());
    }
    Ok(h)
}

/// Checks a record header's fields (not its sequence number or time); `Err` is the message.
pub(super) fn check_record(
    h: &RecordHeader,
    info: &JournalInfo,
) -> std::result::Result<(), String> {
    if h.flags != 0 || h.reserved0 != [0; 2] || h.reserved1 != [0; 4] {
        return Err("flags and reserved bytes: expected zero".into());
    }
    let (off, len, plen) = (
        h.offset.get(),
        h.length.get(),
        u64::from(h.payload_len.get()),
    );
    let sector = u64::from(info.sector_size);
    match h.kind {
        KIND_WRITE | KIND_ZERO => {
            if len == 0 || off % sector != 0 || len % sector != 0 {
                return Err(format!(
                    "range {off}+{len}: expected a non-empty range aligned to the {sector}-byte sector"
                ));
            }
            if off.checked_add(len).is_none_or(|e| e > info.disk_size) {
                return Err(format!(
                    "range {off}+{len} goes past the end of the {}-byte disk",
                    info.disk_size
                ));
            }
            let want = if h.kind == KIND_WRITE { len } else { 0 };
            if plen != want {
                return Err(format!("payload length: expected {want}, found {plen}"));
            }
            if h.kind == KIND_ZERO && h.payload_crc.get() != 0 {
                return Err(format!(
                    "zero range: payload CRC expected 0 (no payload), found {:08x}",
                    h.payload_crc.get()
                ));
            }
            if h.kind == KIND_WRITE && len > MAX_WRITE {
                return Err(format!(
                    "write of {len} bytes: at most {MAX_WRITE} bytes per record"
                ));
            }
        }
        KIND_MARKER => {
            if off != 0 || len != 0 || plen != MARKER_LEN as u64 {
                return Err(format!(
                    "marker: expected offset 0, length 0 and a {MARKER_LEN}-byte payload, found {off}, {len}, {plen}"
                ));
            }
        }
        k => return Err(format!("record kind: expected 1, 2 or 3, found {k}")),
    }
    Ok(())
}

/// Parses a marker payload; `Err` is the message.
fn parse_marker(p: &[u8]) -> std::result::Result<Marker, String> {
    let Ok(m) = MarkerPayload::read_from_bytes(p) else {
        return Err(format!(
            "marker payload: expected {MARKER_LEN} bytes, found {}",
            p.len()
        ));
    };
    let consistency = match m.consistency {
        CONSISTENCY_CRASH => Consistency::Crash,
        CONSISTENCY_APP => Consistency::App,
        c => return Err(format!("marker consistency: expected 1 or 2, found {c}")),
    };
    if m.flags & !(FLAG_DIGEST | FLAG_MULTI_VM) != 0 || m.reserved != [0; 6] {
        return Err(format!(
            "marker flags {:#04x}: unknown flags or non-zero reserved bytes",
            m.flags
        ));
    }
    let digest = if m.flags & FLAG_DIGEST != 0 {
        Some(Digest(m.digest))
    } else if m.digest != [0; 32] {
        return Err("marker digest: present but not flagged".into());
    } else {
        None
    };
    let group = if m.flags & FLAG_MULTI_VM != 0 {
        if m.group_id == [0; 16] {
            return Err("multi-VM marker: the group id is all zero".into());
        }
        Some((m.group_id, m.group_tag.get()))
    } else if m.group_id != [0; 16] || m.group_tag.get() != 0 {
        return Err("marker group: present but not flagged multi-VM".into());
    } else {
        None
    };
    let end = m
        .label
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(m.label.len());
    if m.label[end..].iter().any(|&b| b != 0) {
        return Err("marker label: expected zero padding".into());
    }
    let label = std::str::from_utf8(&m.label[..end])
        .map_err(|_| "marker label: not UTF-8".to_string())?
        .to_string();
    Ok(Marker {
        consistency,
        digest,
        group,
        label,
    })
}

struct Scan<'a> {
    opts: ScanOptions,
    info: JournalInfo,
    records: Vec<Record>,
    points: Vec<PointRecord>,
    defect: Option<Defect>,
    torn: Option<Defect>,
    unavailable: Vec<UnavailablePoint>,
    next_seq: Option<u64>,
    next_segment: Option<u32>,
    last_time: u64,
    /// The latest time of any intact record header, usable or not.
    last_seen: u64,
    segments: &'a [Segment],
}

impl Scan<'_> {
    fn broken(&self) -> bool {
        self.defect.is_some()
    }

    fn fail(&mut self, seg: &Segment, at: u64, seq: Option<u64>, message: String) {
        if self.defect.is_none() {
            self.defect = Some(Defect {
                path: seg.path.clone(),
                file_offset: at,
                seq,
                message,
            });
        }
    }

    fn segment(&mut self, si: usize) -> Result<()> {
        let seg = &self.segments[si];
        let last = si + 1 == self.segments.len();
        let bytes = seg.bytes();
        let h = match check_header(bytes, seg.number) {
            Ok(h) => h,
            Err(m) => {
                if last && bytes.len() < SEGMENT_HEADER_LEN {
                    self.end_short(seg, last, 0, None, "the segment header");
                } else {
                    self.fail(seg, 0, None, m);
                    self.lost_markers(bytes, SEGMENT_HEADER_LEN);
                }
                return Ok(());
            }
        };
        let info = info_of(&h);
        if info != self.info {
            return Err(Error::invalid(format!(
                "segment {} belongs to another disk or base: expected disk {} of {} bytes \
                 ({}-byte sectors) on base {}, found disk {} of {} bytes ({}-byte sectors) on base {}",
                seg.number,
                hex::encode(self.info.disk_id),
                self.info.disk_size,
                self.info.sector_size,
                hex::encode(self.info.base_root),
                hex::encode(info.disk_id),
                info.disk_size,
                info.sector_size,
                hex::encode(info.base_root),
            ))
            .with_path(&seg.path));
        }
        if h.segment.get() != seg.number {
            self.fail(
                seg,
                44,
                None,
                format!(
                    "segment number: the file name says {}, the header {}",
                    seg.number,
                    h.segment.get()
                ),
            );
            return Ok(());
        }
        if !self.broken() {
            if let Some(n) = self.next_segment
                && n != seg.number
            {
                self.fail(
                    seg,
                    0,
                    None,
                    format!("segment {n} is missing: the next segment is {}", seg.number),
                );
            }
            let first = h.first_seq.get();
            match self.next_seq {
                None if first > self.opts.start_seq => self.fail(
                    seg,
                    48,
                    None,
                    format!(
                        "records {}..{} are missing: the first segment starts at record {first}",
                        self.opts.start_seq,
                        first - 1
                    ),
                ),
                Some(n) if n != first => self.fail(
                    seg,
                    48,
                    None,
                    format!(
                        "sequence gap: expected the segment to start at record {n}, found {first}"
                    ),
                ),
                _ => {}
            }
            self.next_seq = Some(first);
        }
        self.next_segment = Some(seg.number + 1);
        let mut pos = SEGMENT_HEADER_LEN;
        while pos < bytes.len() {
            let at = pos as u64;
            let Ok((rh, _)) = RecordHeader::read_from_prefix(&bytes[pos..]) else {
                self.end_short(seg, last, at, None, "a record header");
                return Ok(());
            };
            if rh.magic != RECORD_MAGIC || rh.header_crc.get() != rh.compute_crc() {
                if last && !self.broken() && bytes[pos..].iter().all(|&b| b == 0) {
                    // Zeros to the end of the last segment: space allocated, never written.
                    self.end_short(seg, last, at, None, "zero-filled space");
                    return Ok(());
                }
                let msg = if rh.magic != RECORD_MAGIC {
                    format!("record magic: expected \"JREC\", found {:02x?}", rh.magic)
                } else {
                    format!(
                        "record header CRC-32C: expected {:08x}, found {:08x}",
                        rh.compute_crc(),
                        rh.header_crc.get()
                    )
                };
                self.fail(seg, at, None, msg);
                // Nothing after a bad header can be trusted; look on for the points it loses.
                self.lost_markers(bytes, pos + 1);
                return Ok(());
            }
            self.last_seen = self.last_seen.max(rh.time_ms.get());
            let seq = rh.seq.get();
            let plen = rh.payload_len.get() as usize;
            let pstart = pos + RECORD_HEADER_LEN;
            if bytes.len() - pstart < plen {
                self.end_short(seg, last, at, Some(seq), "a record's payload");
                return Ok(());
            }
            let payload = &bytes[pstart..pstart + plen];
            pos = pstart + plen;
            if self.broken() {
                // Only look for the points that are lost.
                self.lose(&rh, payload);
                continue;
            }
            let expected = self.next_seq.unwrap_or(seq);
            if seq != expected {
                self.fail(
                    seg,
                    at,
                    Some(seq),
                    format!("sequence gap: expected record {expected}, found {seq}"),
                );
                self.lose(&rh, payload);
                continue;
            }
            self.next_seq = Some(seq + 1);
            if let Err(m) = check_record(&rh, &self.info) {
                self.fail(seg, at, Some(seq), m);
                self.lose(&rh, payload);
                continue;
            }
            let time = rh.time_ms.get();
            if time < self.last_time {
                self.fail(
                    seg,
                    at,
                    Some(seq),
                    format!(
                        "time goes backwards: {time} ms after a record at {} ms",
                        self.last_time
                    ),
                );
                self.lose(&rh, payload);
                continue;
            }
            self.last_time = time;
            if self.opts.verify_payloads || rh.kind == KIND_MARKER {
                let crc = crc32c::crc32c(payload);
                if crc != rh.payload_crc.get() {
                    self.fail(
                        seg,
                        pstart as u64,
                        Some(seq),
                        format!(
                            "payload CRC-32C: expected {:08x}, found {crc:08x}",
                            rh.payload_crc.get()
                        ),
                    );
                    self.lose(&rh, payload);
                    continue;
                }
            }
            let kind = match rh.kind {
                KIND_WRITE => RecordKind::Write,
                KIND_ZERO => RecordKind::Zero,
                _ => RecordKind::Marker,
            };
            let marker = if kind == RecordKind::Marker {
                match parse_marker(payload) {
                    Ok(m) => Some(m),
                    Err(m) => {
                        self.fail(seg, pstart as u64, Some(seq), m);
                        self.lose(&rh, payload);
                        continue;
                    }
                }
            } else {
                None
            };
            if seq < self.opts.start_seq {
                continue; // already folded into the base
            }
            let index = self.records.len();
            self.records.push(Record {
                seq,
                time_ms: time,
                kind,
                offset: rh.offset.get(),
                length: rh.length.get(),
                segment: si as u32,
                payload_pos: pstart as u64,
                payload_crc: rh.payload_crc.get(),
            });
            if let Some(marker) = marker {
                self.points.push(PointRecord {
                    seq,
                    time_ms: time,
                    record: index,
                    marker,
                });
            }
        }
        Ok(())
    }

    /// A record at or after the defect: if it is a readable marker, its point is lost.
    fn lose(&mut self, rh: &RecordHeader, payload: &[u8]) {
        if rh.kind == KIND_MARKER
            && let Ok(m) = parse_marker(payload)
        {
            self.unavailable.push(UnavailablePoint {
                seq: rh.seq.get(),
                time_ms: rh.time_ms.get(),
                consistency: m.consistency,
            });
        }
    }

    /// After a defect where records cannot be followed: finds later CRC-valid record headers
    /// in `bytes` from `from` on and lists the markers among them as unavailable.
    fn lost_markers(&mut self, bytes: &[u8], from: usize) {
        let mut pos = from;
        while pos + RECORD_HEADER_LEN <= bytes.len() {
            let Some(i) = bytes[pos..].windows(4).position(|w| w == RECORD_MAGIC) else {
                return;
            };
            pos += i;
            let Ok((rh, _)) = RecordHeader::read_from_prefix(&bytes[pos..]) else {
                return;
            };
            if rh.header_crc.get() != rh.compute_crc() {
                pos += 1;
                continue;
            }
            self.last_seen = self.last_seen.max(rh.time_ms.get());
            let pstart = pos + RECORD_HEADER_LEN;
            let plen = rh.payload_len.get() as usize;
            if let Some(p) = bytes.get(pstart..pstart.saturating_add(plen)) {
                self.lose(&rh, p);
            }
            pos = pstart.saturating_add(plen).max(pos + 1);
        }
    }

    fn end_short(&mut self, seg: &Segment, last: bool, at: u64, seq: Option<u64>, what: &str) {
        let len = seg.bytes().len() as u64;
        let message = format!("the file ends ({len} bytes) inside {what}");
        if last && !self.broken() {
            self.torn = Some(Defect {
                path: seg.path.clone(),
                file_offset: at,
                seq,
                message: format!("torn last record, ignored: {message}"),
            });
        } else {
            self.fail(
                seg,
                at,
                seq,
                format!("{message}, and it is not the last segment"),
            );
        }
    }
}

impl Journal {
    /// Opens and indexes the journal in `dir`.
    ///
    /// # Errors
    /// The directory cannot be read, holds no segment, its first segment's header is unreadable,
    /// or a segment belongs to another disk or base. Defects inside the journal are not errors:
    /// see [`Journal::defect`].
    pub fn open(dir: &Path, opts: ScanOptions) -> Result<Journal> {
        let list = list_segments(dir)?;
        let mut segs = Vec::with_capacity(list.len());
        for (number, path) in list {
            let bytes = map_file(&path)?;
            segs.push(Segment {
                number,
                path,
                bytes,
            });
        }
        Journal::from_segments(dir, segs, opts)
    }

    /// Indexes a journal from segments in memory (`(number, bytes)`), as if read from `dir`.
    ///
    /// # Errors
    /// As [`Journal::open`].
    pub fn from_bytes(
        dir: &Path,
        segments: Vec<(u32, Vec<u8>)>,
        opts: ScanOptions,
    ) -> Result<Journal> {
        let mut segs: Vec<Segment> = segments
            .into_iter()
            .map(|(number, b)| Segment {
                number,
                path: dir.join(super::segment_file_name(number)),
                bytes: SegmentBytes::Mem(b),
            })
            .collect();
        segs.sort_by_key(|s| s.number);
        Journal::from_segments(dir, segs, opts)
    }

    fn from_segments(dir: &Path, segments: Vec<Segment>, opts: ScanOptions) -> Result<Journal> {
        let Some(first) = segments.first() else {
            return Err(
                Error::invalid("no journal segments (seg-NNNNNNNN.e2j) found").with_path(dir),
            );
        };
        let h = check_header(first.bytes(), first.number)
            .map_err(|m| Error::invalid(m).with_path(&first.path).with_offset(0))?;
        let mut scan = Scan {
            opts,
            info: info_of(&h),
            records: Vec::new(),
            points: Vec::new(),
            defect: None,
            torn: None,
            unavailable: Vec::new(),
            next_seq: None,
            next_segment: None,
            last_time: 0,
            last_seen: 0,
            segments: &segments,
        };
        for si in 0..segments.len() {
            scan.segment(si)?;
        }
        let last_seen_ms = scan.last_seen;
        let (info, records, points, defect, torn, unavailable) = (
            scan.info,
            scan.records,
            scan.points,
            scan.defect,
            scan.torn,
            scan.unavailable,
        );
        let payload_state = (0..records.len())
            .map(|_| AtomicU8::new(u8::from(opts.verify_payloads)))
            .collect();
        Ok(Journal {
            dir: dir.to_path_buf(),
            info,
            segments,
            records,
            points,
            defect,
            torn,
            unavailable,
            payload_state,
            start_seq: opts.start_seq,
            last_seen_ms,
        })
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The disk and base it belongs to.
    pub fn info(&self) -> &JournalInfo {
        &self.info
    }
    /// The segment files, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    /// The usable records (those before any defect, from the start sequence on), in order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
    /// The usable points, in order.
    pub fn points(&self) -> &[PointRecord] {
        &self.points
    }
    /// The first defect, if any: every point after it is unavailable.
    pub fn defect(&self) -> Option<&Defect> {
        self.defect.as_ref()
    }
    /// A torn last record, ignored.
    pub fn torn(&self) -> Option<&Defect> {
        self.torn.as_ref()
    }
    /// Points seen after the defect, which cannot be built.
    pub fn unavailable(&self) -> &[UnavailablePoint] {
        &self.unavailable
    }
    /// The first sequence number the journal was read from.
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }
    /// The last usable record's sequence number (0 when there is none).
    pub fn last_seq(&self) -> u64 {
        self.records
            .last()
            .map_or(self.start_seq.saturating_sub(1), |r| r.seq)
    }
    /// The latest time of any intact record header, also after a defect: how far the source
    /// got, which the RPO check measures against.
    pub fn last_time_seen(&self) -> u64 {
        self.last_seen_ms
    }
    /// Total bytes of the segment files.
    pub fn file_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes().len() as u64).sum()
    }

    /// The payload of record `index`, its CRC checked (once) before it is returned.
    ///
    /// # Errors
    /// The payload's CRC does not match: the record is corrupt.
    pub fn payload(&self, index: usize) -> Result<&[u8]> {
        let r = &self.records[index];
        let seg = &self.segments[r.segment as usize];
        let len = match r.kind {
            RecordKind::Write => r.length as usize,
            RecordKind::Zero => 0,
            RecordKind::Marker => MARKER_LEN,
        };
        let start = r.payload_pos as usize;
        let p = &seg.bytes()[start..start + len];
        match self.payload_state[index].load(Ordering::Acquire) {
            1 => return Ok(p),
            2 => {}
            _ => {
                let ok = crc32c::crc32c(p) == r.payload_crc;
                self.payload_state[index].store(if ok { 1 } else { 2 }, Ordering::Release);
                if ok {
                    return Ok(p);
                }
            }
        }
        Err(Error::invalid(format!(
            "record {}: payload CRC-32C: expected {:08x}, found {:08x}; the record is corrupt, \
             so this point and every later one are unavailable",
            r.seq,
            r.payload_crc,
            crc32c::crc32c(p)
        ))
        .with_path(&seg.path)
        .with_offset(r.payload_pos))
    }
}
