//! Replication groups: the disks a failover recovers together, and how a [`PointChoice`]
//! resolves to one point per disk.
//!
//! A [`ProtectedDisk`] is one replicated disk: a [`Replica`] (the process server's state), or a
//! base image with a journal given directly (never processed: every payload is checked when it
//! is opened); with the policy its catalog is read under. A [`ReplicationGroup`] is one or more
//! of them. [`ReplicationGroup::resolve`] turns a choice into a [`Resolution`]: the pick per disk
//! and, as data, what resolving did — the processing `Latest` runs first (and how much less data
//! it loses than `LatestProcessed`), the points lost to defects with their reasons, and notes.
//! Nothing here prints; the CLI and the Site Recovery simulator report it their own way.

use super::catalog::{Catalog, PointChoice, PointInfo, Policy, resolve_multi_vm};
use super::overlay::{PointImage, check_base_size};
use super::replica::{ProcessReport, Replica};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::DiskImage;
use crate::journal::{Journal, PointId, ScanOptions, format_duration};
use crate::progress::Progress;
use serde::Serialize;
use std::path::Path;
use std::sync::OnceLock;

/// One disk of a replication group.
pub struct ProtectedDisk {
    name: String,
    base: Box<dyn DiskImage>,
    /// The root the base must have: the replica's recorded base root, or the journal's base.
    base_root: Digest,
    /// The base's block digests, computed (and checked against `base_root`) once, on demand.
    base_digests: OnceLock<Vec<Digest>>,
    journal: Journal,
    policy: Policy,
    replica: Option<Replica>,
}

impl std::fmt::Debug for ProtectedDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtectedDisk")
            .field("name", &self.name)
            .field("base_root", &self.base_root)
            .field("policy", &self.policy)
            .field("replica", &self.replica.as_ref().map(Replica::dir))
            .finish_non_exhaustive()
    }
}

/// The name a folder gives a disk (its last component).
fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("disk")
        .to_string()
}

impl ProtectedDisk {
    /// The disk a replica directory holds, under the replica's policy, named after the folder.
    /// `verify_payloads` checks every received payload now (as `points verify` wants).
    ///
    /// # Errors
    /// The replica cannot be opened, has no segments, or its segments apply to another base.
    pub fn from_replica(dir: &Path, verify_payloads: bool) -> Result<ProtectedDisk> {
        let replica = Replica::open(dir)?;
        let journal = replica.journal(verify_payloads)?;
        let state = replica.state();
        if journal.info().base_root != state.origin_root {
            return Err(Error::invalid(format!(
                "the segments apply to base {}, the replica was made from base {}",
                journal.info().base_root,
                state.origin_root
            ))
            .with_path(dir));
        }
        let base_root = state.base_root;
        Ok(ProtectedDisk {
            name: folder_name(dir),
            base: Box::new(replica.base()?),
            base_root,
            base_digests: OnceLock::new(),
            journal,
            policy: state.policy,
            replica: Some(replica),
        })
    }

    /// A base image and the journal in `journal_dir` that applies to it, under the default
    /// policy, named after the journal's folder. The journal was never processed, so every
    /// payload is checked now: a corrupt record makes the points after it unavailable, whichever
    /// is asked for.
    ///
    /// # Errors
    /// The journal cannot be opened, or the base's size differs from the journal's disk.
    pub fn from_journal(base: Box<dyn DiskImage>, journal_dir: &Path) -> Result<ProtectedDisk> {
        let journal = Journal::open(
            journal_dir,
            ScanOptions {
                verify_payloads: true,
                ..ScanOptions::default()
            },
        )?;
        check_base_size(&*base, &journal)?;
        Ok(ProtectedDisk {
            name: folder_name(journal_dir),
            base,
            base_root: journal.info().base_root,
            base_digests: OnceLock::new(),
            journal,
            policy: Policy::default(),
            replica: None,
        })
    }

    /// Reads the catalog under `policy` instead.
    ///
    /// # Errors
    /// The policy is invalid.
    pub fn with_policy(mut self, policy: Policy) -> Result<ProtectedDisk> {
        policy.validate()?;
        self.policy = policy;
        Ok(self)
    }

    /// Renames the disk (names must differ within a group).
    pub fn with_name(mut self, name: impl Into<String>) -> ProtectedDisk {
        self.name = name.into();
        self
    }

    /// The disk's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy its catalog is read under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The journal (for a replica: what it received, from its base on).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The base image the journal applies to.
    pub fn base(&self) -> &dyn DiskImage {
        &*self.base
    }

    /// The replica, when the disk is one.
    pub fn replica(&self) -> Option<&Replica> {
        self.replica.as_ref()
    }

    /// The recovery points: [`Replica::catalog_under`] for a replica, the journal's catalog
    /// (everything processed) otherwise.
    pub fn catalog(&self) -> Catalog {
        match &self.replica {
            Some(r) => r.catalog_under(&self.journal, &self.policy),
            None => Catalog::new(&self.journal, &self.policy, None),
        }
    }

    /// The base's per-block digests, computed once and checked against the root the journal
    /// (or the replica) records for it.
    ///
    /// # Errors
    /// The base cannot be read, or has another root: the wrong base.
    pub fn base_digests(&self) -> Result<&[Digest]> {
        if let Some(d) = self.base_digests.get() {
            return Ok(d);
        }
        let (d, root) = super::base_digests(&*self.base)?;
        if root != self.base_root {
            return Err(Error::invalid(format!(
                "{}: the base has root digest {}, expected {}: wrong base",
                self.name, root, self.base_root
            )));
        }
        Ok(self.base_digests.get_or_init(|| d))
    }

    /// Proves the base before a point is built from it: a base given with a journal is hashed
    /// and checked against the journal's base root; a replica's base is trusted (its root was
    /// recorded when it was written).
    ///
    /// # Errors
    /// As [`ProtectedDisk::base_digests`].
    pub fn check_base(&self) -> Result<()> {
        if self.replica.is_none() {
            self.base_digests()?;
        }
        Ok(())
    }

    /// Point `id` as a disk image.
    ///
    /// # Errors
    /// As [`PointImage::new`].
    pub fn point_image(&self, id: PointId) -> Result<PointImage<'_>> {
        PointImage::new(&*self.base, &self.journal, id.seq())
    }

    /// Processes what a replica received (nothing for a journal given directly) and reopens
    /// its journal and base.
    ///
    /// # Errors
    /// As [`Replica::process`].
    pub fn process(&mut self, progress: &dyn Progress) -> Result<Option<ProcessReport>> {
        let Some(r) = self.replica.as_mut() else {
            return Ok(None);
        };
        let report = r.process(progress)?;
        self.journal = r.journal(false)?;
        self.base_root = r.state().base_root;
        self.base = Box::new(r.base()?);
        self.base_digests = OnceLock::new();
        Ok(Some(report))
    }
}

/// The disks a failover recovers together.
#[derive(Debug)]
pub struct ReplicationGroup {
    disks: Vec<ProtectedDisk>,
}

/// The point picked for one disk.
#[derive(Debug, Clone, Serialize)]
pub struct Pick {
    /// The disk's name.
    pub disk: String,
    /// The point.
    pub point: PointInfo,
}

/// Processing that resolving `Latest` ran on one disk first.
#[derive(Debug, Clone, Serialize)]
pub struct DiskProcessing {
    /// The disk's name.
    pub disk: String,
    /// What processing did.
    pub report: ProcessReport,
    /// The latest processed point before processing.
    pub latest_processed_before: Option<PointId>,
    /// The latest point after it.
    pub latest_after: Option<PointId>,
    /// How much newer the latest point is than the latest processed one was: the data that
    /// choosing `Latest` over `LatestProcessed` does not lose (milliseconds).
    pub gain_ms: Option<u64>,
}

/// Points of one disk that cannot be recovered, and why.
#[derive(Debug, Clone, Serialize)]
pub struct LostPoints {
    /// The disk's name.
    pub disk: String,
    /// The points (those that can still be seen after the defect).
    pub points: Vec<PointId>,
    /// Why.
    pub reason: String,
}

/// What resolving a choice did, as data.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// The choice resolved.
    pub choice: PointChoice,
    /// Processing run first (for `Latest`), per replica.
    pub processed: Vec<DiskProcessing>,
    /// Points lost to defects, per disk that has any.
    pub lost: Vec<LostPoints>,
    /// Notes for the user, one line each.
    pub notes: Vec<String>,
}

/// A choice resolved: one pick per disk, in the group's order, and what it took.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// One point per disk.
    pub picks: Vec<Pick>,
    /// What resolving did.
    pub report: GroupReport,
}

impl ReplicationGroup {
    /// A group of `disks`.
    ///
    /// # Errors
    /// No disks, or two with one name (names become output files' names).
    pub fn new(disks: Vec<ProtectedDisk>) -> Result<ReplicationGroup> {
        if disks.is_empty() {
            return Err(Error::argument(
                "a replication group needs at least one disk",
            ));
        }
        let mut names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::argument(format!(
                "two disks are named {:?} (the folder names give the output files' names): \
                 give each disk's replica or journal folder a different name",
                w[0]
            )));
        }
        Ok(ReplicationGroup { disks })
    }

    /// The disks, in the order given.
    pub fn disks(&self) -> &[ProtectedDisk] {
        &self.disks
    }

    /// The disks, to take them apart.
    pub fn into_disks(self) -> Vec<ProtectedDisk> {
        self.disks
    }

    /// Every disk's catalog, in order.
    pub fn catalogs(&self) -> Vec<Catalog> {
        self.disks.iter().map(ProtectedDisk::catalog).collect()
    }

    /// The newest processed multi-VM point common to every disk (`GROUP/TAG`), for a group of
    /// more than one disk.
    pub fn latest_multi_vm(&self) -> Option<String> {
        if self.disks.len() < 2 {
            return None;
        }
        let cats = self.catalogs();
        let refs: Vec<&Catalog> = cats.iter().collect();
        resolve_multi_vm(&refs, false)
            .ok()
            .and_then(|v| v[0].multi_vm.clone())
    }

    /// Resolves `choice` to one point per disk. `Latest` processes every replica first
    /// (writing its state); the report says what that did. Multi-VM choices pick the newest
    /// point common to every disk; the others resolve per disk.
    ///
    /// # Errors
    /// Processing fails; no point matches on some disk (the error names the disk and why).
    pub fn resolve(&mut self, choice: PointChoice, progress: &dyn Progress) -> Result<Resolution> {
        let mut report = GroupReport {
            choice,
            processed: Vec::new(),
            lost: Vec::new(),
            notes: Vec::new(),
        };
        if choice == PointChoice::Latest {
            for d in &mut self.disks {
                let before = d
                    .catalog()
                    .resolve(PointChoice::LatestProcessed)
                    .ok()
                    .cloned();
                let Some(rep) = d.process(progress)? else {
                    continue;
                };
                let after = d.catalog().resolve(PointChoice::Latest).ok().cloned();
                let gain_ms = match (&before, &after) {
                    (Some(b), Some(a)) => Some(a.time_ms.saturating_sub(b.time_ms)),
                    _ => None,
                };
                report.notes.push(format!(
                    "{}: processed {} byte(s) in {} ms first (latest instead of latest \
                     processed: {} less data lost)",
                    d.name,
                    rep.bytes_checked,
                    rep.elapsed_ms,
                    gain_ms.map_or("n/a".into(), format_duration)
                ));
                report.processed.push(DiskProcessing {
                    disk: d.name.clone(),
                    report: rep,
                    latest_processed_before: before.map(|p| p.id),
                    latest_after: after.map(|p| p.id),
                    gain_ms,
                });
            }
        }
        let cats = self.catalogs();
        for (d, c) in self.disks.iter().zip(&cats) {
            if let Some(defect) = &c.defect {
                let points: Vec<PointId> = c.unavailable.iter().map(|p| PointId(p.seq)).collect();
                report.notes.push(format!(
                    "{}: {} point(s) unavailable after a defect: {defect}",
                    d.name,
                    points.len()
                ));
                report.lost.push(LostPoints {
                    disk: d.name.clone(),
                    points,
                    reason: defect.clone(),
                });
            }
        }
        let points: Vec<PointInfo> = if choice.is_multi_vm() {
            let refs: Vec<&Catalog> = cats.iter().collect();
            resolve_multi_vm(
                &refs,
                choice == PointChoice::LatestMultiVmApplicationConsistent,
            )?
            .into_iter()
            .cloned()
            .collect()
        } else {
            self.disks
                .iter()
                .zip(&cats)
                .map(|(d, c)| {
                    c.resolve(choice)
                        .cloned()
                        .map_err(|e| Error::new(e.kind(), format!("{}: {}", d.name, e.message())))
                })
                .collect::<Result<_>>()?
        };
        let picks = self
            .disks
            .iter()
            .zip(points)
            .map(|(d, point)| Pick {
                disk: d.name.clone(),
                point,
            })
            .collect();
        Ok(Resolution { picks, report })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MemImage;
    use crate::journal::{Consistency, JournalInfo, JournalWriter, Marker, WriterOptions};
    use crate::progress::NoProgress;

    const DISK: u64 = 1 << 20;
    const MIN: u64 = 60_000;
    const GROUP: [u8; 16] = [5; 16];

    fn base() -> Vec<u8> {
        let mut b = vec![0u8; DISK as usize];
        b[..4096].fill(1);
        b
    }

    /// A journal over `base()`: before each marker `(minute, app, multi-VM tag)` a 32 KiB write.
    fn journal(dir: &Path, markers: &[(u64, bool, Option<u64>)]) {
        let info = JournalInfo {
            disk_id: [7; 16],
            disk_size: DISK,
            sector_size: 512,
            base_root: super::super::base_digests(&MemImage::new(base()))
                .unwrap()
                .1,
        };
        let mut w = JournalWriter::create(
            dir,
            info,
            WriterOptions {
                segment_size: 40 * 1024,
                sync: false,
                created_ms: 0,
            },
        )
        .unwrap();
        for (i, &(minute, app, tag)) in markers.iter().enumerate() {
            let t = minute * MIN;
            let off = (i as u64 * 32 * 1024) % DISK;
            w.write(t, off, &[i as u8 + 2; 32 * 1024]).unwrap();
            w.marker(
                t,
                &Marker {
                    consistency: if app {
                        Consistency::App
                    } else {
                        Consistency::Crash
                    },
                    digest: None,
                    group: tag.map(|t| (GROUP, t)),
                    label: String::new(),
                },
            )
            .unwrap();
        }
        w.finish().unwrap();
    }

    fn from_journal(dir: &Path, markers: &[(u64, bool, Option<u64>)]) -> ProtectedDisk {
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        journal(dir, markers);
        ProtectedDisk::from_journal(Box::new(MemImage::new(base())), dir).unwrap()
    }

    fn ids(r: &Resolution) -> Vec<u64> {
        r.picks.iter().map(|p| p.point.seq).collect()
    }

    /// Markers every 5 minutes, app-consistent at 0 and 10 minutes.
    const FIVE: [(u64, bool, Option<u64>); 4] = [
        (0, true, None),
        (5, false, None),
        (10, true, None),
        (15, false, None),
    ];

    #[test]
    fn every_single_disk_choice() {
        let d = tempfile::tempdir().unwrap();
        let mut g = ReplicationGroup::new(vec![from_journal(&d.path().join("a"), &FIVE)]).unwrap();
        // Markers are records 2, 4, 6, 8.
        let r = |g: &mut ReplicationGroup, c: &str| g.resolve(c.parse().unwrap(), &NoProgress);
        assert_eq!(ids(&r(&mut g, "latest").unwrap()), [8]);
        assert_eq!(ids(&r(&mut g, "LatestProcessed").unwrap()), [8]);
        assert_eq!(ids(&r(&mut g, "latest-app-consistent").unwrap()), [6]);
        assert_eq!(ids(&r(&mut g, "rp-4").unwrap()), [4]);
        assert_eq!(ids(&r(&mut g, "1970-01-01T00:12:00Z").unwrap()), [6]);
        assert_eq!(ids(&r(&mut g, "1970-01-01T00:15:00+00:00").unwrap()), [8]);
        let e = r(&mut g, "rp-5").unwrap_err();
        assert!(
            e.to_string().starts_with("a: point rp-5: not available"),
            "{e}"
        );
        let e = r(&mut g, "latest-multi-vm-processed").unwrap_err();
        assert!(e.to_string().contains("no processed multi-VM point"), "{e}");
        // A journal given directly is not processed: nothing to report.
        let rep = r(&mut g, "latest").unwrap().report;
        assert!(rep.processed.is_empty() && rep.lost.is_empty() && rep.notes.is_empty());
        assert_eq!(rep.choice.to_string(), "Latest");
    }

    #[test]
    fn multi_vm_picks_the_newest_point_common_to_every_disk() {
        let d = tempfile::tempdir().unwrap();
        // Disk b misses tag 3 (its last point is a plain one); tag 2 is app-consistent on a
        // only, so the app-consistent common point is tag 1.
        let a = from_journal(
            &d.path().join("a"),
            &[(0, true, Some(1)), (5, true, Some(2)), (10, false, Some(3))],
        );
        let b = from_journal(
            &d.path().join("b"),
            &[(0, true, Some(1)), (5, false, Some(2)), (10, false, None)],
        );
        let mut g = ReplicationGroup::new(vec![a, b]).unwrap();
        let r = g
            .resolve(PointChoice::LatestMultiVmProcessed, &NoProgress)
            .unwrap();
        assert_eq!(ids(&r), [4, 4]);
        let tags: Vec<_> = r.picks.iter().map(|p| p.point.multi_vm.clone()).collect();
        assert_eq!(tags[0], tags[1]);
        assert!(tags[0].as_deref().unwrap().ends_with("/2"));
        assert_eq!(
            g.latest_multi_vm().as_deref(),
            tags[0].as_deref(),
            "what `points list` shows"
        );
        let r = g
            .resolve(PointChoice::LatestMultiVmApplicationConsistent, &NoProgress)
            .unwrap();
        assert_eq!(ids(&r), [2, 2]);
        assert_eq!(r.picks[1].disk, "b");
        // The single-disk choices resolve per disk.
        assert_eq!(
            ids(&g.resolve(PointChoice::Latest, &NoProgress).unwrap()),
            [6, 6]
        );
    }

    #[test]
    fn custom_by_time_before_any_point_and_by_id_name_the_disk() {
        let d = tempfile::tempdir().unwrap();
        let a = from_journal(&d.path().join("a"), &[(10, false, None), (15, false, None)]);
        let mut g = ReplicationGroup::new(vec![a]).unwrap();
        let e = g
            .resolve(PointChoice::CustomTime(5 * MIN), &NoProgress)
            .unwrap_err();
        assert!(
            e.to_string().contains("a: no processed point at or before"),
            "{e}"
        );
        assert_eq!(
            ids(&g
                .resolve(PointChoice::Custom(PointId(4)), &NoProgress)
                .unwrap()),
            [4]
        );
    }

    #[test]
    fn points_after_a_defect_are_reported_lost() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a");
        journal(&dir, &FIVE);
        // Corrupt the third write's payload (record 5): points rp-6 and rp-8 are lost.
        let j = Journal::open(&dir, ScanOptions::default()).unwrap();
        let rec = j.records()[4];
        let seg = &j.segments()[rec.segment as usize].path;
        let mut bytes = std::fs::read(seg).unwrap();
        bytes[rec.payload_pos as usize + 100] ^= 0xff;
        std::fs::write(seg, bytes).unwrap();
        let disk = ProtectedDisk::from_journal(Box::new(MemImage::new(base())), &dir).unwrap();
        let mut g = ReplicationGroup::new(vec![disk]).unwrap();
        let r = g.resolve(PointChoice::Latest, &NoProgress).unwrap();
        assert_eq!(ids(&r), [4]);
        assert_eq!(r.report.lost.len(), 1);
        let lost = &r.report.lost[0];
        assert_eq!(lost.disk, "a");
        assert!(lost.points.contains(&PointId(8)), "{lost:?}");
        assert!(!lost.reason.is_empty());
        assert!(r.report.notes[0].contains("unavailable after a defect"));
    }

    #[test]
    fn latest_processes_a_replica_first_and_reports_it() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("j");
        let markers: Vec<_> = (0..8).map(|i| (i * 5, i % 4 == 0, None)).collect();
        journal(&j, &markers);
        // Receive and process the first segments, then receive the rest unprocessed.
        let mut segs: Vec<_> = std::fs::read_dir(&j)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        assert!(segs.len() >= 4, "{segs:?}");
        let half = d.path().join("half");
        std::fs::create_dir(&half).unwrap();
        for s in &segs[..2] {
            std::fs::copy(s, half.join(s.file_name().unwrap())).unwrap();
        }
        let rdir = d.path().join("r");
        let mut rep = Replica::init(
            &rdir,
            &MemImage::new(base()),
            Policy::default(),
            &NoProgress,
        )
        .unwrap();
        rep.receive(&half).unwrap();
        rep.process(&NoProgress).unwrap();
        rep.receive(&j).unwrap();
        let disk = ProtectedDisk::from_replica(&rdir, false).unwrap();
        let mut g = ReplicationGroup::new(vec![disk]).unwrap();
        // Latest processed: no processing, an older point; a custom unprocessed point is refused.
        let lp = g
            .resolve(PointChoice::LatestProcessed, &NoProgress)
            .unwrap();
        assert!(lp.report.processed.is_empty());
        let lp_seq = lp.picks[0].point.seq;
        assert!(lp_seq < 16);
        let e = g
            .resolve(PointChoice::Custom(PointId(16)), &NoProgress)
            .unwrap_err();
        assert!(e.to_string().contains("not processed yet"), "{e}");
        // Latest: processing done first, reported as data.
        let l = g.resolve(PointChoice::Latest, &NoProgress).unwrap();
        assert_eq!(ids(&l), [16]);
        let p = &l.report.processed[0];
        assert_eq!(p.disk, "r");
        assert_eq!(p.latest_processed_before, Some(PointId(lp_seq)));
        assert_eq!(p.latest_after, Some(PointId(16)));
        assert_eq!(p.gain_ms, Some((35 - (lp_seq / 2 - 1) * 5) * MIN));
        assert!(p.report.new_points > 0);
        assert!(l.report.notes[0].contains("processed"));
        // Now everything is processed.
        assert_eq!(
            ids(&g
                .resolve(PointChoice::LatestProcessed, &NoProgress)
                .unwrap()),
            [16]
        );
        // The base root is checked once, against the replica's record.
        assert_eq!(g.disks()[0].base_digests().unwrap().len(), 2);
    }

    #[test]
    fn a_group_needs_distinct_names() {
        let d = tempfile::tempdir().unwrap();
        let a = from_journal(&d.path().join("x/a"), &FIVE);
        let b = from_journal(&d.path().join("y/a"), &FIVE);
        let e = ReplicationGroup::new(vec![a, b]).unwrap_err();
        assert!(e.to_string().contains("two disks are named \"a\""), "{e}");
        let b = from_journal(&d.path().join("z/a"), &FIVE).with_name("b");
        let a = from_journal(&d.path().join("w/a"), &FIVE);
        assert!(ReplicationGroup::new(vec![a, b]).is_ok());
        assert!(ReplicationGroup::new(vec![]).is_err());
    }
}
