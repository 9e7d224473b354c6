//! Writing a journal: records appended to numbered segments in a temporary directory beside the
//! target, which is renamed into place when the journal is finished.

use super::format::*;
use super::{Consistency, JournalInfo, Marker, segment_file_name};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use zerocopy::{FromBytes, IntoBytes};

/// How to write a journal.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// A new segment starts when the current one would grow past this many bytes.
    pub segment_size: u64,
    /// Sync every segment before the directory is renamed into place.
    pub sync: bool,
    /// The segments' creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            segment_size: 64 << 20,
            sync: true,
            created_ms: 0,
        }
    }
}

/// Appends records to a new journal.
pub struct JournalWriter {
    target: PathBuf,
    tmp: Option<tempfile::TempDir>,
    info: JournalInfo,
    opts: WriterOptions,
    segment: u32,
    file: Option<BufWriter<File>>,
    seg_len: u64,
    next_seq: u64,
    last_time: u64,
    /// Marker sequence number → (segment number, offset of its record header).
    markers: HashMap<u64, (u32, u64)>,
    bytes: u64,
    /// Resumed in place: new segments are stamped with their first record's time, and
    /// `finish` syncs instead of renaming.
    in_place: bool,
    /// Segments this writer created or appended to (synced by `finish`).
    touched: Vec<u32>,
}

/// Where a journal ends, as [`JournalWriter::position`] reports it and
/// [`JournalWriter::resume`] takes it: enough to append to the journal later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct JournalEnd {
    /// The last segment's number (0: no segment yet).
    pub segment: u32,
    /// The last segment's length in bytes.
    pub segment_len: u64,
    /// The sequence number the next record gets.
    pub next_seq: u64,
    /// The last record's time, milliseconds since the Unix epoch (0: none).
    pub last_time_ms: u64,
}

impl JournalWriter {
    /// Starts a journal that will be renamed to `dir` (which must not exist, or be empty) by
    /// [`JournalWriter::finish`].
    ///
    /// # Errors
    /// `dir` exists and is not empty, the disk description is invalid, or the temporary directory
    /// cannot be made.
    pub fn create(dir: &Path, info: JournalInfo, opts: WriterOptions) -> Result<JournalWriter> {
        check_info(&info)?;
        if let Ok(mut rd) = std::fs::read_dir(dir)
            && rd.next().is_some()
        {
            return Err(
                Error::argument("the journal directory exists and is not empty").with_path(dir),
            );
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("journal");
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp"))
            .tempdir_in(parent)
            .map_err(|e| {
                Error::io("creating the journal's temporary directory", e).with_path(parent)
            })?;
        Ok(JournalWriter {
            target: dir.to_path_buf(),
            tmp: Some(tmp),
            info,
            opts,
            segment: 0,
            file: None,
            seg_len: 0,
            next_seq: 1,
            last_time: 0,
            markers: HashMap::new(),
            bytes: 0,
            in_place: false,
            touched: Vec::new(),
        })
    }

    /// Appends, in place, to the journal in `dir` that ends at `end` (as an earlier writer's
    /// [`JournalWriter::position`] gave it; `JournalEnd { next_seq: 1, ..}` with segment 0 for
    /// a journal not started). Anything in `dir` past `end` — a segment numbered higher, bytes
    /// after `segment_len` in the last one, left by a run that was not committed — is removed
    /// first, so a resumed run that writes the same records writes the same bytes. New segments
    /// are stamped with the time of their first record (not `opts.created_ms`), so where a
    /// journal is cut into runs does not change its bytes. [`JournalWriter::finish`] syncs the
    /// segments written and renames nothing.
    ///
    /// # Errors
    /// The disk description is invalid; the last segment is missing, shorter than `end` says or
    /// belongs to another disk; `dir` cannot be listed or trimmed.
    pub fn resume(
        dir: &Path,
        info: JournalInfo,
        opts: WriterOptions,
        end: JournalEnd,
    ) -> Result<JournalWriter> {
        check_info(&info)?;
        let mut w = JournalWriter {
            target: dir.to_path_buf(),
            tmp: None,
            info,
            opts,
            segment: 0,
            file: None,
            seg_len: 0,
            next_seq: 1,
            last_time: 0,
            markers: HashMap::new(),
            bytes: 0,
            in_place: true,
            touched: Vec::new(),
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("creating the journal directory", e).with_path(dir))?;
        for (n, path) in super::reader::list_segments(dir)? {
            if n > end.segment {
                std::fs::remove_file(&path).map_err(|e| {
                    Error::io("removing an uncommitted journal segment", e).with_path(&path)
                })?;
            }
        }
        w.segment = end.segment;
        w.next_seq = end.next_seq.max(1);
        w.last_time = end.last_time_ms;
        if end.segment > 0 {
            let path = dir.join(segment_file_name(end.segment));
            let (found, _) = super::reader::segment_info(&path, end.segment)?;
            if found != info {
                return Err(Error::invalid(
                    "the journal's last segment belongs to another disk or base",
                )
                .with_path(&path));
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("opening the last segment", e).with_path(&path))?;
            let len = file
                .metadata()
                .map_err(|e| Error::io("reading the last segment's size", e).with_path(&path))?
                .len();
            if len < end.segment_len || end.segment_len < SEGMENT_HEADER_LEN as u64 {
                return Err(Error::invalid(format!(
                    "the last segment holds {len} bytes, the journal's end is recorded at {}",
                    end.segment_len
                ))
                .with_path(&path));
            }
            file.set_len(end.segment_len)
                .map_err(|e| Error::io("trimming the last segment", e).with_path(&path))?;
            let mut f = file;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0))
                .map_err(|e| Error::io("seeking the last segment", e).with_path(&path))?;
            w.file = Some(BufWriter::with_capacity(1 << 20, f));
            w.seg_len = end.segment_len;
            w.touched.push(end.segment);
        }
        Ok(w)
    }

    /// Where the journal ends now (after the records appended so far).
    pub fn position(&self) -> JournalEnd {
        JournalEnd {
            segment: self.segment,
            segment_len: self.seg_len,
            next_seq: self.next_seq,
            last_time_ms: self.last_time,
        }
    }

    /// The directory the segments are being written to (until [`JournalWriter::finish`]).
    pub fn temp_dir(&self) -> &Path {
        self.tmp.as_ref().map_or(&self.target, |t| t.path())
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn start_segment(&mut self, first_time_ms: u64) -> Result<()> {
        self.flush()?;
        self.segment += 1;
        self.touched.push(self.segment);
        let created_ms = if self.in_place {
            first_time_ms
        } else {
            self.opts.created_ms
        };
        let path = self.temp_dir().join(segment_file_name(self.segment));
        let file = File::create_new(&path)
            .map_err(|e| Error::io("creating a journal segment", e).with_path(&path))?;
        let mut h = SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: VERSION.into(),
            header_len: (SEGMENT_HEADER_LEN as u32).into(),
            disk_id: self.info.disk_id,
            disk_size: self.info.disk_size.into(),
            sector_size: self.info.sector_size.into(),
            segment: self.segment.into(),
            first_seq: self.next_seq.into(),
            base_root: self.info.base_root.0,
            created_ms: created_ms.into(),
            reserved: [0; 28],
            crc: 0.into(),
        };
        h.crc = h.compute_crc().into();
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(h.as_bytes())
            .map_err(|e| Error::io("writing a segment header", e).with_path(&path))?;
        self.file = Some(w);
        self.seg_len = SEGMENT_HEADER_LEN as u64;
        self.bytes += SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    /// Writes out buffered records.
    ///
    /// # Errors
    /// The write fails.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.flush()
                .map_err(|e| Error::io("writing a journal segment", e).with_path(&self.target))?;
        }
        Ok(())
    }

    fn append(
        &mut self,
        kind: u8,
        time_ms: u64,
        offset: u64,
        length: u64,
        payload: &[u8],
    ) -> Result<u64> {
        if time_ms < self.last_time {
            return Err(Error::argument(format!(
                "record time {time_ms} ms is before the previous record's {} ms",
                self.last_time
            )));
        }
        let seq = self.next_seq;
        let mut h = RecordHeader {
            magic: RECORD_MAGIC,
            kind,
            flags: 0,
            reserved0: [0; 2],
            seq: seq.into(),
            time_ms: time_ms.into(),
            offset: offset.into(),
            length: length.into(),
            payload_len: u32::try_from(payload.len()).unwrap_or(u32::MAX).into(),
            payload_crc: if payload.is_empty() {
                0
            } else {
                crc32c::crc32c(payload)
            }
            .into(),
            reserved1: [0; 4],
            header_crc: 0.into(),
        };
        super::reader::check_record(&h, &self.info).map_err(Error::argument)?;
        h.header_crc = h.compute_crc().into();
        let rec_len = (RECORD_HEADER_LEN + payload.len()) as u64;
        if self.file.is_none()
            || (self.seg_len > SEGMENT_HEADER_LEN as u64
                && self.seg_len + rec_len > self.opts.segment_size)
        {
            self.start_segment(time_ms)?;
        }
        let at = self.seg_len;
        let path = &self.target;
        let Some(w) = self.file.as_mut() else {
            return Err(Error::argument("no segment open"));
        };
        w.write_all(h.as_bytes())
            .and_then(|()| w.write_all(payload))
            .map_err(|e| Error::io("writing a journal record", e).with_path(path))?;
        if kind == KIND_MARKER {
            self.markers.insert(seq, (self.segment, at));
        }
        self.seg_len += rec_len;
        self.bytes += rec_len;
        self.next_seq += 1;
        self.last_time = time_ms;
        Ok(seq)
    }

    /// Appends a write of `data` at `offset`. Returns its sequence number.
    ///
    /// # Errors
    /// The range is unaligned, empty, longer than 16 MiB or past the disk's end; the write fails.
    pub fn write(&mut self, time_ms: u64, offset: u64, data: &[u8]) -> Result<u64> {
        self.append(KIND_WRITE, time_ms, offset, data.len() as u64, data)
    }

    /// Appends the zeroing of `offset..offset + len`. Returns its sequence number.
    ///
    /// # Errors
    /// As [`JournalWriter::write`].
    pub fn zero(&mut self, time_ms: u64, offset: u64, len: u64) -> Result<u64> {
        self.append(KIND_ZERO, time_ms, offset, len, &[])
    }

    /// Appends a marker. Returns its sequence number: the point's id.
    ///
    /// # Errors
    /// The label is longer than 32 bytes or the group id is all zero; the write fails.
    pub fn marker(&mut self, time_ms: u64, marker: &Marker) -> Result<u64> {
        let payload = encode_marker(marker)?;
        self.append(KIND_MARKER, time_ms, 0, 0, payload.as_bytes())
    }

    /// Sets the digest of the marker with sequence number `seq`, already written.
    ///
    /// # Errors
    /// There is no such marker, or the segment cannot be rewritten.
    pub fn set_marker_digest(&mut self, seq: u64, digest: Digest) -> Result<()> {
        self.flush()?;
        let Some(&(segment, at)) = self.markers.get(&seq) else {
            return Err(Error::argument(format!(
                "no marker with sequence number {seq}"
            )));
        };
        let path = self.temp_dir().join(segment_file_name(segment));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening a segment to set a digest", e).with_path(&path))?;
        let mut buf = [0u8; RECORD_HEADER_LEN + MARKER_LEN];
        file.read_exact_at(&mut buf, at)
            .map_err(|e| Error::io("reading a marker", e).with_path(&path))?;
        let (mut h, rest) = RecordHeader::read_from_prefix(&buf)
            .map_err(|_| Error::invalid("marker header").with_path(&path))?;
        let mut m = MarkerPayload::read_from_bytes(rest)
            .map_err(|_| Error::invalid("marker payload").with_path(&path))?;
        m.flags |= FLAG_DIGEST;
        m.digest = digest.0;
        h.payload_crc = crc32c::crc32c(m.as_bytes()).into();
        h.header_crc = h.compute_crc().into();
        buf[..RECORD_HEADER_LEN].copy_from_slice(h.as_bytes());
        buf[RECORD_HEADER_LEN..].copy_from_slice(m.as_bytes());
        file.write_all_at(&buf, at)
            .map_err(|e| Error::io("writing a marker", e).with_path(&path))
    }

    /// Flushes, syncs and renames the journal into place. Returns the bytes written.
    ///
    /// # Errors
    /// Writing, syncing or renaming fails; the temporary directory is removed then.
    pub fn finish(mut self) -> Result<u64> {
        if self.in_place {
            self.flush()?;
            self.file = None;
            if self.opts.sync {
                for &n in &self.touched {
                    let p = self.target.join(segment_file_name(n));
                    File::open(&p)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| Error::io("syncing a journal segment", e).with_path(&p))?;
                }
            }
            return Ok(self.bytes);
        }
        if self.file.is_none() {
            self.start_segment(self.opts.created_ms)?; // an empty journal still names its disk and base
        }
        self.flush()?;
        let tmp = self
            .tmp
            .take()
            .ok_or_else(|| Error::argument("journal already finished"))?;
        if self.opts.sync {
            for n in 1..=self.segment {
                let p = tmp.path().join(segment_file_name(n));
                File::open(&p)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io("syncing a journal segment", e).with_path(&p))?;
            }
        }
        self.file = None;
        // An empty target directory (made by the caller) is replaced.
        let _ = std::fs::remove_dir(&self.target);
        let path = tmp.keep();
        std::fs::rename(&path, &self.target).map_err(|e| {
            let _ = std::fs::remove_dir_all(&path);
            Error::io("renaming the journal into place", e).with_path(&self.target)
        })?;
        Ok(self.bytes)
    }
}

/// Checks a journal's disk description.
fn check_info(info: &JournalInfo) -> Result<()> {
    if info.sector_size != 512 && info.sector_size != 4096 {
        return Err(Error::argument(format!(
            "sector size: expected 512 or 4096, found {}",
            info.sector_size
        )));
    }
    if info.disk_size == 0 || !info.disk_size.is_multiple_of(u64::from(info.sector_size)) {
        return Err(Error::argument(format!(
            "disk size {}: a journal needs a non-zero multiple of the {}-byte sector",
            info.disk_size, info.sector_size
        )));
    }
    Ok(())
}

/// The 96-byte payload of `m`.
fn encode_marker(m: &Marker) -> Result<MarkerPayload> {
    if m.label.contains('\0') {
        return Err(Error::argument(format!(
            "marker label {:?}: must not contain NUL",
            m.label
        )));
    }
    if m.label.len() > 32 {
        return Err(Error::argument(format!(
            "marker label {:?}: at most 32 bytes",
            m.label
        )));
    }
    let mut label = [0u8; 32];
    label[..m.label.len()].copy_from_slice(m.label.as_bytes());
    let mut flags = 0;
    let (group_id, group_tag) = match m.group {
        Some((id, _)) if id == [0; 16] => {
            return Err(Error::argument(
                "multi-VM marker: the group id must not be all zero",
            ));
        }
        Some((id, tag)) => {
            flags |= FLAG_MULTI_VM;
            (id, tag)
        }
        None => ([0; 16], 0),
    };
    let digest = match m.digest {
        Some(d) => {
            flags |= FLAG_DIGEST;
            d.0
        }
        None => [0; 32],
    };
    Ok(MarkerPayload {
        consistency: match m.consistency {
            Consistency::Crash => CONSISTENCY_CRASH,
            Consistency::App => CONSISTENCY_APP,
        },
        flags,
        reserved: [0; 6],
        group_id,
        group_tag: group_tag.into(),
        digest,
        label,
    })
}
