//! A replica: what the process server holds for one disk — a base image, the journal segments
//! received so far, the processed horizon, and the policy. `receive` copies segments in;
//! `process` checks every byte of what was received, indexes it and moves the processed horizon,
//! then folds points that left the retention window into the base, so the replica stays bounded.
//!
//! ```text
//! REPLICA/replica.json        state (below), replaced atomically
//! REPLICA/base-SEQ.raw        the disk just before record SEQ (sparse raw)
//! REPLICA/segments/seg-*.e2j  received segments not yet folded into the base
//! ```

use super::build::convert_verified;
use super::catalog::{Catalog, PointChoice, PointInfo, Policy};
use super::overlay::PointImage;
use crate::digest::Digest;
use crate::error::{Error, Result, ResultExt};
use crate::export::{ConvertOptions, OutputFormat, convert, write_file_atomic};
use crate::image::{DiskImage, RawImage};
use crate::journal::{
    Journal, ScanOptions, format_duration, list_segments, segment_file_name, segment_info,
};
use crate::progress::Progress;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

const STATE_FILE: &str = "replica.json";
const SEGMENTS: &str = "segments";

/// The replica's state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Format version: 1.
    pub version: u32,
    /// The disk's size.
    pub disk_size: u64,
    /// The disk's id, set by the first segment received.
    pub disk_id: Option<String>,
    /// Root digest of the base the journals apply to (hex).
    pub origin_root: Digest,
    /// The base file's name.
    pub base_file: String,
    /// Records before this sequence number are in the base file.
    pub base_seq: u64,
    /// Root digest of the base file (hex).
    pub base_root: Digest,
    /// Segments up to this number were folded into the base and removed.
    pub folded_segments: u32,
    /// Points folded into the base so far.
    pub folded_points: u64,
    /// The last processed record (0: none).
    pub processed_seq: u64,
    /// The replication policy.
    pub policy: Policy,
    /// The defect processing found, if any: points after the processed horizon are lost.
    #[serde(default)]
    pub defect: Option<String>,
    /// The segment holding that defect: a fresh copy of it is accepted by `receive`.
    #[serde(default)]
    pub defect_segment: Option<u32>,
}

/// A replica directory.
#[derive(Debug)]
pub struct Replica {
    dir: PathBuf,
    state: ReplicaState,
}

/// What `receive` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiveReport {
    /// Segments copied in.
    pub received: u32,
    /// Segments already present (identical) or already folded.
    pub already_had: u32,
    /// Damaged segments (where processing found the defect) replaced by a differing copy.
    pub replaced: u32,
    /// Bytes copied.
    pub bytes: u64,
}

/// What `process` did.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    /// Segments read.
    pub segments: usize,
    /// Bytes checked.
    pub bytes_checked: u64,
    /// The processed horizon before and after.
    pub processed_seq_before: u64,
    /// After.
    pub processed_seq: u64,
    /// Points that became processed.
    pub new_points: usize,
    /// Points folded into the base by this run.
    pub folded_points: usize,
    /// The base's new start, if it was compacted.
    pub compacted_to: Option<u64>,
    /// A torn last record, ignored.
    pub torn: Option<String>,
    /// The first defect: points after it are unavailable.
    pub defect: Option<String>,
    /// Wall time of processing, milliseconds.
    pub elapsed_ms: u64,
}

/// What `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    /// The state file.
    pub state: ReplicaState,
    /// Segments held.
    pub segments: usize,
    /// Their bytes.
    pub segment_bytes: u64,
    /// The last usable record received.
    pub received_seq: u64,
    /// Records received but not processed.
    pub pending_records: u64,
    /// The newest point (after processing everything received).
    pub latest: Option<PointInfo>,
    /// The newest processed point.
    pub latest_processed: Option<PointInfo>,
    /// Data that failing over to the latest processed point instead of the latest would lose.
    pub processed_lag: Option<String>,
    /// Points kept, pruned, unavailable.
    pub points: usize,
    /// A torn last record.
    pub torn: Option<String>,
    /// The first defect.
    pub defect: Option<String>,
}

impl Replica {
    /// Makes a replica of `base` in `dir` (which must not exist or be empty): the base is
    /// copied in as a sparse raw file and its manifest root recorded.
    ///
    /// # Errors
    /// `dir` is not empty, the base's size is not a multiple of 512 bytes, or copying fails.
    pub fn init(
        dir: &Path,
        base: &dyn DiskImage,
        policy: Policy,
        progress: &dyn Progress,
    ) -> Result<Replica> {
        policy.validate()?;
        if base.is_empty() || !base.len().is_multiple_of(512) {
            return Err(Error::argument(format!(
                "a {}-byte base: a replicated disk is a non-zero multiple of 512 bytes",
                base.len()
            )));
        }
        if let Ok(mut rd) = std::fs::read_dir(dir)
            && rd.next().is_some()
        {
            return Err(
                Error::argument("the replica directory exists and is not empty").with_path(dir),
            );
        }
        std::fs::create_dir_all(dir.join(SEGMENTS))
            .map_err(|e| Error::io("creating the replica directory", e).with_path(dir))?;
        let base_file = "base-1.raw".to_string();
        let report = convert(
            base,
            &dir.join(&base_file),
            &ConvertOptions {
                format: OutputFormat::Raw,
                manifest: true,
                progress,
                ..ConvertOptions::default()
            },
        )?;
        let root = report
            .manifest
            .ok_or_else(|| Error::invalid("the base's manifest was not computed"))?
            .root_digest()?;
        let r = Replica {
            dir: dir.to_path_buf(),
            state: ReplicaState {
                version: 1,
                disk_size: base.len(),
                disk_id: None,
                origin_root: root,
                base_file,
                base_seq: 1,
                base_root: root,
                folded_segments: 0,
                folded_points: 0,
                processed_seq: 0,
                policy,
                defect: None,
                defect_segment: None,
            },
        };
        r.save()?;
        Ok(r)
    }

    /// Opens the replica in `dir`.
    ///
    /// # Errors
    /// The state file is missing or invalid.
    pub fn open(dir: &Path) -> Result<Replica> {
        let p = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&p).map_err(|e| {
            Error::io(
                "reading the replica's state (is this a replica directory?)",
                e,
            )
            .with_path(&p)
        })?;
        let state: ReplicaState = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("replica state: {e}")).with_path(&p))?;
        if state.version != 1 {
            return Err(
                Error::unsupported(format!("replica state version {}", state.version))
                    .with_path(&p),
            );
        }
        state.policy.validate().path(&p)?;
        Ok(Replica {
            dir: dir.to_path_buf(),
            state,
        })
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.state)
            .map_err(|e| Error::invalid(format!("replica state: {e}")))?;
        write_file_atomic(&self.dir.join(STATE_FILE), text.as_bytes(), true)
    }

    /// The state.
    pub fn state(&self) -> &ReplicaState {
        &self.state
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets the policy.
    ///
    /// # Errors
    /// The policy is invalid or the state cannot be saved.
    pub fn set_policy(&mut self, policy: Policy) -> Result<()> {
        policy.validate()?;
        self.state.policy = policy;
        self.save()
    }

    /// The base image (opened read-only).
    ///
    /// # Errors
    /// The base file cannot be opened.
    pub fn base(&self) -> Result<RawImage> {
        RawImage::open(&self.dir.join(&self.state.base_file))
    }

    /// The received journal, from the base's start on.
    ///
    /// # Errors
    /// As [`Journal::open`]; a replica without segments.
    pub fn journal(&self, verify_payloads: bool) -> Result<Journal> {
        Journal::open(
            &self.dir.join(SEGMENTS),
            ScanOptions {
                verify_payloads,
                start_seq: self.state.base_seq,
            },
        )
    }

    /// The catalog of the received journal under the replica's policy.
    pub fn catalog(&self, journal: &Journal) -> Catalog {
        self.catalog_under(journal, &self.state.policy)
    }

    /// The catalog of the received journal under `policy` (a failover may look at the points
    /// with another retention than the replica keeps); a defect processing found caps it.
    pub fn catalog_under(&self, journal: &Journal, policy: &Policy) -> Catalog {
        let mut c = Catalog::new(journal, policy, Some(self.state.processed_seq));
        if let Some(d) = &self.state.defect {
            c.cap(self.state.processed_seq, d);
        }
        c
    }

    /// Copies the segments of `journal_dir` that the replica does not hold yet.
    ///
    /// # Errors
    /// A segment belongs to another disk or base, differs from the copy already held, or cannot
    /// be copied.
    pub fn receive(&mut self, journal_dir: &Path) -> Result<ReceiveReport> {
        let mut report = ReceiveReport::default();
        let list = list_segments(journal_dir)?;
        if list.is_empty() {
            return Err(
                Error::invalid("no journal segments (seg-NNNNNNNN.e2j) found")
                    .with_path(journal_dir),
            );
        }
        for (n, path) in list {
            let (info, _) = segment_info(&path, n)?;
            let id = hex::encode(info.disk_id);
            if info.base_root != self.state.origin_root || info.disk_size != self.state.disk_size {
                return Err(Error::invalid(format!(
                    "the segment applies to a {}-byte disk on base {}, the replica is a {}-byte disk on base {}",
                    info.disk_size,
                    info.base_root,
                    self.state.disk_size,
                    self.state.origin_root
                ))
                .with_path(&path));
            }
            match &self.state.disk_id {
                Some(d) if *d != id => {
                    return Err(Error::invalid(format!(
                        "the segment belongs to disk {id}, the replica holds disk {d}"
                    ))
                    .with_path(&path));
                }
                Some(_) => {}
                None => {
                    self.state.disk_id = Some(id);
                    self.save()?;
                }
            }
            if n <= self.state.folded_segments {
                report.already_had += 1;
                continue;
            }
            let bytes = std::fs::read(&path)
                .map_err(|e| Error::io("reading a segment", e).with_path(&path))?;
            let target = self.dir.join(SEGMENTS).join(segment_file_name(n));
            match std::fs::read(&target) {
                Ok(held) if held == bytes => {
                    report.already_had += 1;
                    continue;
                }
                Ok(held) if held.len() < bytes.len() && bytes.starts_with(&held) => {
                    // The last segment grew since it was received: take the longer copy.
                }
                Ok(_) if self.state.defect_segment == Some(n) => {
                    // The held copy is where processing found the defect: take the new one,
                    // and let the next `process` check it.
                    report.replaced += 1;
                    self.state.defect = None;
                    self.state.defect_segment = None;
                    self.save()?;
                }
                Ok(held) => {
                    let at = held
                        .iter()
                        .zip(&bytes)
                        .position(|(a, b)| a != b)
                        .unwrap_or(held.len().min(bytes.len()));
                    return Err(Error::invalid(format!(
                        "segment {n} ({} bytes) differs from the copy the replica already holds \
                         ({} bytes), first at byte {at}",
                        bytes.len(),
                        held.len()
                    ))
                    .with_path(&path)
                    .with_offset(at as u64));
                }
                Err(_) => {}
            }
            write_file_atomic(&target, &bytes, true)?;
            report.received += 1;
            report.bytes += bytes.len() as u64;
        }
        Ok(report)
    }

    /// Checks every received byte, moves the processed horizon to the last usable record, and
    /// folds the points that left the retention window into the base.
    ///
    /// # Errors
    /// The segments cannot be read or belong to another disk; the base cannot be rewritten.
    pub fn process(&mut self, progress: &dyn Progress) -> Result<ProcessReport> {
        let start = Instant::now();
        let journal = self.journal(true)?;
        let before = self.state.processed_seq;
        let processed_seq = journal.last_seq().max(before);
        let new_points = journal
            .points()
            .iter()
            .filter(|p| p.seq > before && p.seq <= processed_seq)
            .count();
        self.state.processed_seq = processed_seq;
        self.state.defect = journal.defect().map(|d| d.to_string());
        self.state.defect_segment = journal.defect().and_then(|d| {
            d.path
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(crate::journal::parse_segment_file_name)
        });
        self.save()?;
        let catalog = self.catalog(&journal);
        let mut compacted_to = None;
        let mut folded = 0;
        if let Some(oldest) = catalog.points.first()
            && !catalog.pruned.is_empty()
            && oldest.seq > self.state.base_seq
        {
            let s = oldest.seq;
            let Some(point) = journal.points().iter().find(|p| p.seq == s) else {
                return Err(Error::invalid(format!(
                    "point rp-{s} vanished while processing"
                )));
            };
            let oldest_record = point.record;
            let expected = point.marker.digest;
            let base = self.base()?;
            let img = PointImage::new(&base, &journal, s)?;
            let name = format!("base-{s}.raw");
            // The new base takes its name only once its root matches the marker's digest.
            let mut root = Digest::default();
            convert_verified(
                &img,
                &self.dir.join(&name),
                &ConvertOptions {
                    format: OutputFormat::Raw,
                    manifest: true,
                    progress,
                    ..ConvertOptions::default()
                },
                |report| {
                    root = report
                        .manifest
                        .as_ref()
                        .ok_or_else(|| Error::invalid("the new base's manifest was not computed"))?
                        .root_digest()?;
                    match expected {
                        Some(want) if want != root => Err(Error::invalid(format!(
                            "compaction: the new base (point rp-{s}) has root {root}, its \
                             marker records {want}; the replica is unchanged"
                        ))
                        .with_path(&self.dir)),
                        _ => Ok(()),
                    }
                },
            )?;
            drop(img);
            drop(base);
            let old = std::mem::replace(&mut self.state.base_file, name);
            self.state.base_seq = s;
            self.state.base_root = root;
            folded = catalog.pruned.len();
            self.state.folded_points += folded as u64;
            // Segments whose every record is now in the base: those before the segment that
            // holds point `s`'s marker (records are in order, and the scan checked their
            // continuity up to it).
            let segs = journal.segments();
            let marker_seg = journal.records()[oldest_record].segment as usize;
            let mut folded_segments = self.state.folded_segments;
            if marker_seg > 0 {
                folded_segments = folded_segments.max(segs[marker_seg - 1].number);
            }
            let gone: Vec<PathBuf> = segs
                .iter()
                .filter(|g| g.number <= folded_segments)
                .map(|g| g.path.clone())
                .collect();
            self.state.folded_segments = folded_segments;
            // The state names the new base before anything old is removed: a crash in between
            // leaves only stray files (and replaying a prefix of a write log onto its result
            // changes nothing).
            self.save()?;
            // (Removing files that are still mapped is fine: the maps keep their pages.)
            let _ = std::fs::remove_file(self.dir.join(old));
            for p in gone {
                let _ = std::fs::remove_file(p);
            }
            compacted_to = Some(s);
        }
        Ok(self.process_report(&journal, before, new_points, folded, compacted_to, start))
    }

    fn process_report(
        &self,
        journal: &Journal,
        before: u64,
        new_points: usize,
        folded_points: usize,
        compacted_to: Option<u64>,
        start: Instant,
    ) -> ProcessReport {
        ProcessReport {
            segments: journal.segments().len(),
            bytes_checked: journal.file_bytes(),
            processed_seq_before: before,
            processed_seq: self.state.processed_seq,
            new_points,
            folded_points,
            compacted_to,
            torn: journal.torn().map(|d| d.to_string()),
            defect: journal.defect().map(|d| d.to_string()),
            elapsed_ms: start.elapsed().as_millis() as u64,
        }
    }

    /// The replica's status.
    ///
    /// # Errors
    /// The segments cannot be read.
    pub fn status(&self) -> Result<ReplicaStatus> {
        let has_segments = !list_segments(&self.dir.join(SEGMENTS))?.is_empty();
        if !has_segments {
            return Ok(ReplicaStatus {
                state: self.state.clone(),
                segments: 0,
                segment_bytes: 0,
                received_seq: self.state.base_seq.saturating_sub(1),
                pending_records: 0,
                latest: None,
                latest_processed: None,
                processed_lag: None,
                points: 0,
                torn: None,
                defect: None,
            });
        }
        let journal = self.journal(false)?;
        let catalog = self.catalog(&journal);
        let latest = catalog.resolve(PointChoice::Latest).ok().cloned();
        let latest_processed = catalog.resolve(PointChoice::LatestProcessed).ok().cloned();
        let processed_lag = match (&latest, &latest_processed) {
            (Some(a), Some(b)) => Some(format_duration(a.time_ms - b.time_ms)),
            _ => None,
        };
        Ok(ReplicaStatus {
            state: self.state.clone(),
            segments: journal.segments().len(),
            segment_bytes: journal.file_bytes(),
            received_seq: journal.last_seq(),
            pending_records: journal.last_seq().saturating_sub(self.state.processed_seq),
            latest,
            latest_processed,
            processed_lag,
            points: catalog.points.len(),
            torn: journal.torn().map(|d| d.to_string()),
            defect: journal
                .defect()
                .map(|d| d.to_string())
                .or_else(|| self.state.defect.clone()),
        })
    }
}
