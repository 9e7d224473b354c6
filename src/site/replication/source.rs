//! The source side of one replicated disk: what the machine's Mobility service holds — the
//! journal it writes (segments not yet processed by the process server), the disk as that
//! journal leaves it, and its per-block digests (so every marker carries the root digest the
//! whole disk has there).
//!
//! ```text
//! SOURCE/journal/seg-*.e2j   segments the process server has not processed (the last one kept)
//! SOURCE/disk.raw            the disk as the committed journal leaves it (sparse raw)
//! SOURCE/digests.bin         its 512 KiB block digests, 32 bytes each
//! SOURCE/source.json         the committed end of the journal and of the workload
//! SOURCE/apply.json          an intent: replay records onto disk.raw, then commit (crash redo)
//! ```
//!
//! A span is appended in three steps: the records are written after the committed end (a run
//! that did not commit is trimmed away first, so the same span writes the same bytes again);
//! the markers' digests are computed over `disk.raw` (untouched so far) and set; then an intent
//! names the records, they are replayed onto `disk.raw`, the touched blocks re-hashed, and the
//! new end committed. A crash before the intent loses the uncommitted records; after it, the
//! next open redoes the replay (replaying a run of writes is idempotent).

use crate::digest::{BLOCK_SIZE, Digest, Manifest};
use crate::error::{Error, Result};
use crate::export::{ConvertOptions, OutputFormat, convert, write_file_atomic};
use crate::image::{DiskImage, RawImage};
use crate::journal::{
    Journal, JournalEnd, JournalInfo, JournalWriter, RecordKind, ScanOptions, WriterOptions,
    parse_segment_file_name, segment_info,
};
use crate::progress::Progress;
use crate::recovery::{block_digests, check_points, root_of};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const STATE: &str = "source.json";
const INTENT: &str = "apply.json";
const DISK: &str = "disk.raw";
const DIGESTS: &str = "digests.bin";
/// The journal's folder in the source directory.
pub const JOURNAL: &str = "journal";

/// The committed state of the source side (`source.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// Format version: 1.
    pub version: u32,
    /// The journal's disk id (hex).
    pub disk_id: String,
    /// The disk's size.
    pub disk_size: u64,
    /// The root digest of the base the journal applies to.
    pub base_root: Digest,
    /// Where the committed journal ends.
    pub end: JournalEnd,
    /// Simulated time up to which the source's writes are in the journal (ms since the epoch).
    pub generated_to_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    from_seq: u64,
    next: SourceState,
}

/// An opened source side.
#[derive(Debug)]
pub(crate) struct Source {
    dir: PathBuf,
    state: SourceState,
    digests: Vec<Digest>,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(what, e).with_path(path)
}

impl Source {
    /// Makes the source side of a disk whose content is `disk` (the replica's base), with
    /// journal disk id `disk_id`, at simulated time `start_ms`.
    pub(crate) fn create(
        dir: &Path,
        disk: &dyn DiskImage,
        disk_id: [u8; 16],
        start_ms: u64,
        progress: &dyn Progress,
    ) -> Result<Source> {
        if let Ok(mut rd) = std::fs::read_dir(dir)
            && rd.next().is_some()
        {
            return Err(
                Error::argument("the source directory exists and is not empty").with_path(dir),
            );
        }
        let jdir = dir.join(JOURNAL);
        std::fs::create_dir_all(&jdir).map_err(io("creating the source directory", &jdir))?;
        let report = convert(
            disk,
            &dir.join(DISK),
            &ConvertOptions {
                format: OutputFormat::Raw,
                manifest: true,
                progress,
                ..ConvertOptions::default()
            },
        )?;
        let manifest = report
            .manifest
            .ok_or_else(|| Error::invalid("the source disk's manifest was not computed"))?;
        let digests = block_digests(&manifest);
        let state = SourceState {
            version: 1,
            disk_id: hex::encode(disk_id),
            disk_size: disk.len(),
            base_root: manifest.root_digest()?,
            end: JournalEnd {
                next_seq: 1,
                ..JournalEnd::default()
            },
            generated_to_ms: start_ms,
        };
        let s = Source {
            dir: dir.to_path_buf(),
            state,
            digests,
        };
        s.save_digests()?;
        s.save_state()?;
        Ok(s)
    }

    /// Opens the source side in `dir`, finishing a span whose commit was interrupted.
    pub(crate) fn open(dir: &Path) -> Result<Source> {
        let p = dir.join(STATE);
        let text = std::fs::read_to_string(&p).map_err(io("reading the source state", &p))?;
        let state: SourceState = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("source state: {e}")).with_path(&p))?;
        if state.version != 1 {
            return Err(
                Error::unsupported(format!("source state version {}", state.version)).with_path(&p),
            );
        }
        let dp = dir.join(DIGESTS);
        let raw = std::fs::read(&dp).map_err(io("reading the source disk's digests", &dp))?;
        let blocks = Manifest::block_count(state.disk_size) as usize;
        if raw.len() != blocks * 32 {
            return Err(Error::invalid(format!(
                "source digests: expected {} bytes for {blocks} blocks, found {}",
                blocks * 32,
                raw.len()
            ))
            .with_path(&dp));
        }
        let digests = raw
            .chunks_exact(32)
            .map(|c| {
                let mut d = [0u8; 32];
                d.copy_from_slice(c);
                Digest(d)
            })
            .collect();
        let mut s = Source {
            dir: dir.to_path_buf(),
            state,
            digests,
        };
        let ip = dir.join(INTENT);
        if ip.exists() {
            let text = std::fs::read_to_string(&ip).map_err(io("reading the intent", &ip))?;
            let intent: Intent = serde_json::from_str(&text)
                .map_err(|e| Error::invalid(format!("source intent: {e}")).with_path(&ip))?;
            s.apply(intent)?;
        }
        // Records after the committed end (a run that crashed before committing) are removed
        // before anything can ship them.
        if s.has_segments() || s.journal_dir().exists() {
            drop(s.writer(WriterOptions::default().segment_size)?);
        }
        Ok(s)
    }

    /// The committed state.
    pub(crate) fn state(&self) -> &SourceState {
        &self.state
    }

    /// The journal's folder.
    pub(crate) fn journal_dir(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    /// The disk as the committed journal leaves it.
    pub(crate) fn disk(&self) -> Result<RawImage> {
        RawImage::open(&self.dir.join(DISK))
    }

    /// The disk's block digests now.
    pub(crate) fn digests(&self) -> &[Digest] {
        &self.digests
    }

    /// The disk now as a manifest (for a diff against a new snapshot).
    pub(crate) fn manifest(&self) -> Manifest {
        Manifest {
            version: 1,
            block_size: BLOCK_SIZE,
            size: self.state.disk_size,
            root: root_of(&self.digests).to_string(),
            zero_blocks: 0,
            blocks: self.digests.iter().map(|d| Some(*d)).collect(),
        }
    }

    fn info(&self) -> Result<JournalInfo> {
        let id = hex::decode(&self.state.disk_id)
            .ok()
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .ok_or_else(|| {
                Error::invalid(format!("source disk id {:?}", self.state.disk_id))
                    .with_path(&self.dir)
            })?;
        Ok(JournalInfo {
            disk_id: id,
            disk_size: self.state.disk_size,
            sector_size: 512,
            base_root: self.state.base_root,
        })
    }

    /// A writer appending after the committed end (an uncommitted tail is removed).
    pub(crate) fn writer(&self, segment_size: u64) -> Result<JournalWriter> {
        JournalWriter::resume(
            &self.journal_dir(),
            self.info()?,
            WriterOptions {
                segment_size,
                sync: true,
                created_ms: 0,
            },
            self.state.end,
        )
    }

    /// Commits what `w` appended, up to simulated time `to_ms`: digests for its markers that
    /// have none (`digests`), the replay onto the disk, the new end. Returns the journal bytes
    /// appended.
    pub(crate) fn commit(
        &mut self,
        mut w: JournalWriter,
        to_ms: u64,
        digests: bool,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let from_seq = self.state.end.next_seq;
        w.flush()?;
        let appended = w.next_seq() > from_seq;
        if appended && digests {
            let journal = self.journal_from(from_seq)?;
            let disk = self.disk()?;
            let checks = check_points(
                &disk,
                &self.digests,
                &journal,
                &|p| p.marker.digest.is_none(),
                progress,
            )?;
            drop(journal);
            for c in checks {
                w.set_marker_digest(c.seq, c.root)?;
            }
        }
        let end = w.position();
        let bytes = w.finish()?;
        let mut next = self.state.clone();
        next.end = end;
        next.generated_to_ms = to_ms.max(self.state.generated_to_ms);
        let intent = Intent { from_seq, next };
        if appended {
            let text = serde_json::to_vec(&intent)
                .map_err(|e| Error::invalid(format!("source intent: {e}")))?;
            write_file_atomic(&self.dir.join(INTENT), &text, true)?;
        }
        self.apply(intent)?;
        Ok(bytes)
    }

    fn journal_from(&self, start_seq: u64) -> Result<Journal> {
        Journal::open(
            &self.journal_dir(),
            ScanOptions {
                verify_payloads: false,
                start_seq,
            },
        )
    }

    /// Replays records from `intent.from_seq` onto the disk, re-hashes the blocks they touch,
    /// and commits `intent.next`.
    fn apply(&mut self, intent: Intent) -> Result<()> {
        if intent.next.end.next_seq > intent.from_seq {
            let journal = self.journal_from(intent.from_seq)?;
            if let Some(d) = journal.defect() {
                return Err(Error::invalid(format!(
                    "the source journal cannot be replayed onto its disk: {d}"
                ))
                .with_path(&self.dir));
            }
            let path = self.dir.join(DISK);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io("opening the source disk", &path))?;
            let mut touched = std::collections::BTreeSet::new();
            let zeros = vec![0u8; 1 << 20];
            for (i, r) in journal.records().iter().enumerate() {
                if r.seq >= intent.next.end.next_seq {
                    break;
                }
                match r.kind {
                    RecordKind::Write => {
                        let data = journal.payload(i)?;
                        file.write_all_at(data, r.offset)
                            .map_err(io("writing the source disk", &path))?;
                    }
                    RecordKind::Zero => {
                        let mut at = r.offset;
                        let end = r.offset + r.length;
                        while at < end {
                            let n = (end - at).min(zeros.len() as u64) as usize;
                            file.write_all_at(&zeros[..n], at)
                                .map_err(io("zeroing the source disk", &path))?;
                            at += n as u64;
                        }
                    }
                    RecordKind::Marker => continue,
                }
                touched.extend(r.offset / BLOCK_SIZE..=(r.offset + r.length - 1) / BLOCK_SIZE);
            }
            file.sync_all()
                .map_err(io("syncing the source disk", &path))?;
            drop(file);
            let disk = self.disk()?;
            let size = self.state.disk_size;
            let touched: Vec<u64> = touched.into_iter().collect();
            let fresh: Vec<(u64, Digest)> = touched
                .par_iter()
                .map_init(
                    || vec![0u8; BLOCK_SIZE as usize],
                    |buf, &b| -> Result<(u64, Digest)> {
                        let off = b * BLOCK_SIZE;
                        let n = (size - off).min(BLOCK_SIZE) as usize;
                        disk.read_at(&mut buf[..n], off)?;
                        Ok((b, Digest::of(&buf[..n])))
                    },
                )
                .collect::<Result<_>>()?;
            for (b, d) in fresh {
                self.digests[b as usize] = d;
            }
            self.save_digests()?;
        }
        self.state = intent.next;
        self.save_state()?;
        let ip = self.dir.join(INTENT);
        if ip.exists() {
            std::fs::remove_file(&ip).map_err(io("removing the intent", &ip))?;
        }
        Ok(())
    }

    fn save_state(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.state)
            .map_err(|e| Error::invalid(format!("source state: {e}")))?;
        write_file_atomic(&self.dir.join(STATE), text.as_bytes(), true)
    }

    fn save_digests(&self) -> Result<()> {
        let bytes: Vec<u8> = self.digests.iter().flat_map(|d| d.0).collect();
        write_file_atomic(&self.dir.join(DIGESTS), &bytes, true)
    }

    /// Removes the segments whose every record is at or before `processed_seq` (the process
    /// server has checked them), except the last one, which the next span appends to. Returns
    /// the bytes removed.
    pub(crate) fn prune(&self, processed_seq: u64) -> Result<u64> {
        let jdir = self.journal_dir();
        let rd = std::fs::read_dir(&jdir).map_err(io("listing the source journal", &jdir))?;
        let mut segs: Vec<(u32, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str().and_then(parse_segment_file_name)?;
                Some((n, e.path()))
            })
            .collect();
        segs.sort();
        let mut removed = 0;
        for pair in segs.windows(2) {
            let (n, path) = &pair[0];
            let (m, next) = &pair[1];
            if *n >= self.state.end.segment {
                break;
            }
            let (_, next_first) = segment_info(next, *m)?;
            if next_first.saturating_sub(1) > processed_seq {
                break;
            }
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(path).map_err(io("removing a processed segment", path))?;
            removed += len;
        }
        Ok(removed)
    }

    /// Bytes of segments held (not yet processed, and the last one).
    pub(crate) fn pending_bytes(&self) -> u64 {
        std::fs::read_dir(self.journal_dir())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Whether the journal holds any segment.
    pub(crate) fn has_segments(&self) -> bool {
        self.state.end.segment > 0
    }
}
