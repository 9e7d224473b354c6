use super::*;
use crate::image::MemImage;
use crate::journal::{Journal, ScanOptions};
use crate::progress::NoProgress;
use crate::recovery::ProtectedDisk;
use proptest::prelude::*;

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn base(size: usize) -> MemImage {
    let mut v = vec![0u8; size];
    for (i, b) in v.iter_mut().enumerate().take(size / 2) {
        *b = (i % 251) as u8;
    }
    MemImage::new(v)
}

fn workload(rate: u64) -> WorkloadSpec {
    WorkloadSpec {
        seed: 7,
        write_rate: rate,
        max_write: 64 << 10,
        segment_size: 256 << 10,
        ..WorkloadSpec::default()
    }
}

fn env(policy: Policy) -> SpanEnv<'static> {
    SpanEnv {
        policy,
        process_server_down: Vec::new(),
        source_down: Vec::new(),
        progress: &NoProgress,
    }
}

fn setup(dir: &Path, policy: Policy, rate: u64) -> DiskReplication {
    let (state, report) = initial_replication(
        &base(4 << 20),
        "vol-1",
        &dir.join("replica"),
        &dir.join("source"),
        policy,
        Some(workload(rate)),
        T0,
        &NoProgress,
    )
    .unwrap();
    let first = report.first_point.expect("the first point exists");
    assert_eq!(first.time_ms, T0);
    assert_eq!(first.digest, Some(report.base_root));
    state
}

/// Every segment's length and digest, by file name.
fn segments(dir: &Path) -> Vec<(String, u64, Digest)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let b = std::fs::read(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                b.len() as u64,
                Digest::of(&b),
            )
        })
        .collect();
    v.sort();
    v
}

/// The points the replica offers, each checked against its marker's digest (in one pass; the
/// oldest and newest also built whole).
fn verified_points(replica: &Path) -> Vec<(u64, Consistency)> {
    let disk = ProtectedDisk::from_replica(replica, true).unwrap();
    let cat = disk.catalog();
    let keep: std::collections::BTreeSet<u64> = cat.points.iter().map(|p| p.seq).collect();
    let checks = crate::recovery::check_points(
        disk.base(),
        disk.base_digests().unwrap(),
        disk.journal(),
        &|p| keep.contains(&p.seq),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(checks.len(), keep.len());
    for c in &checks {
        assert_eq!(c.matches, Some(true), "point rp-{} verifies", c.seq);
    }
    for p in [cat.points.first(), cat.points.last()]
        .into_iter()
        .flatten()
    {
        let img = disk.point_image(p.id).unwrap();
        let root = Manifest::compute(&img).unwrap().root_digest().unwrap();
        assert_eq!(Some(root), p.digest, "point {} built", p.id);
    }
    cat.points
        .iter()
        .map(|p| (p.time_ms, p.consistency))
        .collect()
}

/// The source journal as it stands (its first segments may be pruned).
fn source_journal(dir: &Path) -> Journal {
    let first = segments(dir).first().unwrap().0.clone();
    let n = crate::journal::parse_segment_file_name(&first).unwrap();
    let (_, seq) = crate::journal::segment_info(&dir.join(&first), n).unwrap();
    Journal::open(
        dir,
        ScanOptions {
            verify_payloads: false,
            start_seq: seq,
        },
    )
    .unwrap()
}

#[test]
fn span_splits_write_identical_journals() {
    let d = tempfile::tempdir().unwrap();
    let policy = Policy::default();
    // Keep every segment on the source side: the process server is down all along.
    let mut e = env(policy);
    e.process_server_down = vec![Window {
        from_ms: T0,
        to_ms: T0 + 3 * HOUR,
    }];
    let mut one = setup(&d.path().join("one"), policy, 2_000);
    advance(&mut one, T0, T0 + 2 * HOUR, &e).unwrap();
    let mut many = setup(&d.path().join("many"), policy, 2_000);
    for i in 0..24 {
        let r = advance(&mut many, T0 + i * 5 * MIN, T0 + (i + 1) * 5 * MIN, &e).unwrap();
        assert_eq!(r.written.points, 1);
    }
    // And at odd cuts, not on interval boundaries.
    let mut odd = setup(&d.path().join("odd"), policy, 2_000);
    let mut t = T0;
    for cut in [
        7 * MIN + 13,
        31 * MIN,
        31 * MIN + 1,
        77 * MIN + 999,
        2 * HOUR,
    ] {
        advance(&mut odd, t, T0 + cut, &e).unwrap();
        t = T0 + cut;
    }
    let a = segments(&d.path().join("one/source/journal"));
    assert!(a.len() > 2, "several segments: {}", a.len());
    assert_eq!(a, segments(&d.path().join("many/source/journal")));
    assert_eq!(a, segments(&d.path().join("odd/source/journal")));
    assert_eq!(one.counters, many.counters);
    assert_eq!(one.next_seq, odd.next_seq);
    let j = Journal::open(&d.path().join("one/source/journal"), ScanOptions::default()).unwrap();
    assert_eq!(j.points().len(), 1 + 24);
    assert!(j.defect().is_none());
}

#[test]
fn a_day_gives_points_every_5_minutes_and_app_points_hourly() {
    let d = tempfile::tempdir().unwrap();
    let policy = Policy {
        retention_ms: 48 * HOUR,
        ..Policy::default()
    };
    let mut s = setup(d.path(), policy, 200);
    let e = env(policy);
    let r = advance(&mut s, T0, T0 + 24 * HOUR, &e).unwrap();
    assert_eq!(r.written.points, 288);
    assert_eq!(r.written.app_points, 24);
    assert_eq!(
        r.health.replication_health,
        ProtectionHealth::Normal,
        "{:?}",
        r.health
    );
    assert_eq!(r.health.rpo_in_seconds, Some(0));
    let points = verified_points(&d.path().join("replica"));
    assert_eq!(points.len(), 289);
    for (k, (t, c)) in points.iter().enumerate() {
        assert_eq!(*t, T0 + k as u64 * 5 * MIN);
        let app = k > 0 && (k as u64 * 5 * MIN).is_multiple_of(HOUR);
        assert_eq!(*c == Consistency::App, app, "point {k}");
    }
    // No app-consistent frequency: none.
    let d2 = tempfile::tempdir().unwrap();
    let p0 = Policy {
        app_frequency_ms: 0,
        ..policy
    };
    let mut s2 = setup(d2.path(), p0, 200);
    let r = advance(&mut s2, T0, T0 + 3 * HOUR, &env(p0)).unwrap();
    assert_eq!((r.written.points, r.written.app_points), (36, 0));
}

#[test]
fn retention_prunes_old_points_and_folds_the_base() {
    let d = tempfile::tempdir().unwrap();
    let policy = Policy {
        retention_ms: HOUR,
        app_frequency_ms: HOUR,
        ..Policy::default()
    };
    let mut s = setup(d.path(), policy, 500);
    let e = env(policy);
    let mut folded = 0;
    for h in 0..4 {
        let r = advance(&mut s, T0 + h * HOUR, T0 + (h + 1) * HOUR, &e).unwrap();
        folded += r.folded_points;
    }
    assert!(folded > 0);
    let replica = Replica::open(&d.path().join("replica")).unwrap();
    assert!(replica.state().base_seq > 1, "the base was folded");
    let points = verified_points(&d.path().join("replica"));
    let newest = T0 + 4 * HOUR;
    assert_eq!(points.last().unwrap().0, newest);
    assert_eq!(points.first().unwrap().0, newest - HOUR);
    assert_eq!(points.len(), 13);
    // The source side keeps only what was not processed (the last segment).
    let left = segments(&d.path().join("source/journal"));
    assert_eq!(left.len(), 1, "processed segments pruned from the source");
}

#[test]
fn a_process_server_outage_raises_the_rpo_error_and_recovers() {
    let d = tempfile::tempdir().unwrap();
    let policy = Policy::default();
    let mut s = setup(d.path(), policy, 500);
    let mut e = env(policy);
    e.process_server_down = vec![Window {
        from_ms: T0 + HOUR,
        to_ms: T0 + 2 * HOUR + 15 * MIN,
    }];
    let r = advance(&mut s, T0, T0 + HOUR + 30 * MIN, &e).unwrap();
    let h = &r.health;
    assert_eq!(h.replication_health, ProtectionHealth::Critical);
    let crash: Vec<&HealthError> = h
        .health_errors
        .iter()
        .filter(|e| {
            e.error_message
                .starts_with("No crash-consistent recovery point")
        })
        .collect();
    assert_eq!(crash.len(), 1, "{:?}", h.health_errors);
    assert_eq!(crash[0].error_code, "806");
    assert_eq!(
        crash[0].error_message,
        "No crash-consistent recovery point available for the VM in the last 15 minutes"
    );
    assert_eq!(h.rpo_in_seconds, Some(30 * 60));
    assert_eq!(h.latest_processed_ms, Some(T0 + HOUR));
    assert!(r.source_pending_bytes > 0, "data piles up on the source");
    // No app point for over 65 minutes (frequency 60 min, 5 min of slack): 78144 too.
    let r = advance(&mut s, T0 + HOUR + 30 * MIN, T0 + 2 * HOUR + 5 * MIN, &e).unwrap();
    assert!(
        r.health
            .health_errors
            .iter()
            .all(|e| e.error_code != "78144")
    );
    let r = advance(
        &mut s,
        T0 + 2 * HOUR + 5 * MIN,
        T0 + 2 * HOUR + 10 * MIN,
        &e,
    )
    .unwrap();
    let app = r
        .health
        .health_errors
        .iter()
        .find(|e| e.error_code == "78144")
        .expect("78144");
    assert!(app.possible_causes.contains("(806)"), "{app:?}");
    // Back up: everything that piled up is received and processed.
    let r = advance(
        &mut s,
        T0 + 2 * HOUR + 10 * MIN,
        T0 + 2 * HOUR + 20 * MIN,
        &e,
    )
    .unwrap();
    assert_eq!(
        r.health.replication_health,
        ProtectionHealth::Normal,
        "{:?}",
        r.health
    );
    assert_eq!(r.new_points, 16);
    assert_eq!(verified_points(&d.path().join("replica")).len(), 1 + 28);
}

#[test]
fn a_stopped_source_raises_78174() {
    let d = tempfile::tempdir().unwrap();
    let policy = Policy::default();
    let mut s = setup(d.path(), policy, 500);
    let mut e = env(policy);
    e.source_down = vec![Window {
        from_ms: T0 + 10 * MIN,
        to_ms: T0 + HOUR,
    }];
    let r = advance(&mut s, T0, T0 + 40 * MIN, &e).unwrap();
    assert_eq!(r.written.points, 2);
    let codes: Vec<&str> = r
        .health
        .health_errors
        .iter()
        .map(|e| e.error_code.as_str())
        .collect();
    assert_eq!(codes, ["78174"]);
}

#[test]
fn a_corrupt_segment_over_a_day_keeps_exactly_the_points_before_it() {
    let d = tempfile::tempdir().unwrap();
    let policy = Policy {
        retention_ms: 48 * HOUR,
        ..Policy::default()
    };
    let mut s = setup(d.path(), policy, 200);
    let mut e = env(policy);
    e.process_server_down = vec![Window {
        from_ms: T0 + 6 * HOUR,
        to_ms: T0 + 8 * HOUR,
    }];
    advance(&mut s, T0, T0 + 7 * HOUR, &e).unwrap();
    // A segment written during the outage, not yet shipped, is damaged on the source.
    let jdir = d.path().join("source/journal");
    let journal = source_journal(&jdir);
    let rec = journal
        .records()
        .iter()
        .enumerate()
        .find(|(_, r)| {
            r.time_ms > T0 + 6 * HOUR + 20 * MIN && r.kind == crate::journal::RecordKind::Write
        })
        .map(|(i, r)| (i, *r))
        .unwrap();
    let seg_path = journal.segments()[rec.1.segment as usize].path.clone();
    let before: Vec<u64> = journal
        .points()
        .iter()
        .filter(|p| p.seq < rec.1.seq)
        .map(|p| p.time_ms)
        .collect();
    drop(journal);
    let mut bytes = std::fs::read(&seg_path).unwrap();
    bytes[rec.1.payload_pos as usize + 5] ^= 0x40;
    std::fs::write(&seg_path, &bytes).unwrap();
    let r = advance(&mut s, T0 + 7 * HOUR, T0 + 24 * HOUR, &e).unwrap();
    let h = &r.health;
    assert_eq!(h.replication_health, ProtectionHealth::Critical);
    let defect = h.defect.as_deref().expect("the defect is reported");
    assert!(defect.contains("CRC") || defect.contains("crc"), "{defect}");
    let err = h
        .health_errors
        .iter()
        .find(|e| e.error_code == "CorruptReplicationData")
        .expect("health says why");
    assert!(err.possible_causes.contains(defect));
    let points: Vec<u64> = verified_points(&d.path().join("replica"))
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    // The replica's points: every 5 minutes from the initial one up to the last marker that
    // precedes the defect, and none after.
    let last_good = *before.last().unwrap();
    assert!(last_good > T0 + 6 * HOUR && last_good <= T0 + 6 * HOUR + 25 * MIN);
    let want: Vec<u64> = (0..)
        .map(|k| T0 + k * 5 * MIN)
        .take_while(|&t| t <= last_good)
        .collect();
    assert_eq!(points, want);
    assert!(points.last().unwrap() < &(T0 + 6 * HOUR + 25 * MIN));
}

#[test]
fn churn_over_54_mb_per_second_raises_78188() {
    let d = tempfile::tempdir().unwrap();
    let policy = Policy::default();
    let mut s = setup(d.path(), policy, 60_000_000);
    // 100 ms of the workload: about 6 MB, at 60 MB/s.
    let r = advance(&mut s, T0, T0 + 100, &env(policy)).unwrap();
    assert!(r.written.data_bytes > 4_000_000);
    let e = r
        .health
        .health_errors
        .iter()
        .find(|e| e.error_code == "78188")
        .expect("78188");
    assert!(e.possible_causes.contains("54 MB/s"));
    // Two disks of one machine at 30 MB/s each: each is fine, the machine is not.
    let c = |b| {
        vec![IntervalChurn {
            end_ms: T0 + 5 * MIN,
            covered_ms: 1000,
            bytes: b,
        }]
    };
    let (a, b) = (c(30_000_000), c(30_000_000));
    assert_eq!(machine_peak_churn(&[&a]), 30_000_000);
    let m = machine_health(&[], &[&a, &b], T0);
    assert_eq!(m.peak_churn_bytes_per_sec, 60_000_000);
    assert!(m.health_errors.iter().any(|e| e.error_code == "78188"));
    // The process server: 2 TB a day.
    assert!(process_server_churn(1_100_000_000_000, 12 * HOUR, T0).is_some());
    assert!(process_server_churn(1_900_000_000_000, 24 * HOUR, T0).is_none());
}

#[test]
fn snapshots_make_points_and_disable_removes_or_keeps() {
    let d = tempfile::tempdir().unwrap();
    let policy = Policy::default();
    let (mut s, _) = initial_replication(
        &base(4 << 20),
        "vol-2",
        &d.path().join("replica"),
        &d.path().join("source"),
        policy,
        None,
        T0,
        &NoProgress,
    )
    .unwrap();
    let mut v = vec![0u8; 4 << 20];
    v[..1 << 20].fill(9);
    let new = MemImage::new(v.clone());
    let e = env(policy);
    // Time passes without data (a snapshot-driven disk): the RPO is breached.
    let r = advance(&mut s, T0, T0 + 20 * MIN, &e).unwrap();
    assert_eq!(r.written.points, 0);
    assert!(
        r.health
            .health_errors
            .iter()
            .any(|e| e.error_code == "RpoThresholdExceeded")
    );
    let r = advance_snapshot(&mut s, &new, None, T0 + 30 * MIN, &e).unwrap();
    assert_eq!(r.written.writes + r.written.zeros, 4);
    assert_eq!(r.health.replication_health, ProtectionHealth::Normal);
    let points = verified_points(&d.path().join("replica"));
    assert_eq!(points.len(), 2);
    let want = Manifest::compute(&new).unwrap().root_digest().unwrap();
    let disk = ProtectedDisk::from_replica(&d.path().join("replica"), true).unwrap();
    assert_eq!(disk.catalog().points[1].digest, Some(want));
    drop(disk);
    let kept = disable_replication(&s, true).unwrap();
    assert!(kept.source_bytes_removed > 0 && kept.replica_kept.is_some());
    assert!(!d.path().join("source").exists() && d.path().join("replica").exists());
    let gone = disable_replication(&s, false).unwrap();
    assert!(gone.replica_bytes_removed > 0);
    assert!(!d.path().join("replica").exists());
}

#[test]
fn an_uncommitted_span_is_redone_to_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    let policy = Policy::default();
    let mut e = env(policy);
    e.process_server_down = vec![Window {
        from_ms: T0,
        to_ms: T0 + 2 * HOUR,
    }];
    let mut a = setup(&d.path().join("a"), policy, 2_000);
    advance(&mut a, T0, T0 + HOUR, &e).unwrap();
    let mut b = setup(&d.path().join("b"), policy, 2_000);
    advance(&mut b, T0, T0 + 30 * MIN, &e).unwrap();
    let stored = b.clone();
    // A run the caller never stored: the source committed it; a retry with the old state
    // does not generate it twice.
    advance(&mut b, T0 + 30 * MIN, T0 + 45 * MIN, &e).unwrap();
    let mut retry = stored;
    advance(&mut retry, T0 + 30 * MIN, T0 + HOUR, &e).unwrap();
    // Garbage after the committed end (a crash mid-append) is trimmed away.
    let jdir = d.path().join("b/source/journal");
    let last = segments(&jdir).last().unwrap().0.clone();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(jdir.join(&last))
        .unwrap();
    std::io::Write::write_all(&mut f, b"torn tail").unwrap();
    std::fs::write(jdir.join("seg-00000999.e2j"), b"junk").unwrap();
    let mut again = retry.clone();
    advance(&mut again, T0 + HOUR, T0 + HOUR + 5 * MIN, &e).unwrap();
    advance(&mut a, T0 + HOUR, T0 + HOUR + 5 * MIN, &e).unwrap();
    assert!(!jdir.join("seg-00000999.e2j").exists());
    assert_eq!(
        segments(&d.path().join("a/source/journal")),
        segments(&jdir)
    );
    assert_eq!(a.next_seq, again.next_seq);
}

/// The points a run must leave: the markers written (every 5 minutes outside the source's
/// downtime), those the process server had when it was last up, within retention of the
/// newest of them.
fn model(
    cuts: &[u64],
    ps_down: &[Window],
    src_down: &[Window],
    end: u64,
    retention: u64,
) -> Vec<u64> {
    let markers: Vec<u64> = std::iter::once(T0)
        .chain((1..).map(|k| T0 + k * 5 * MIN).take_while(|&t| t <= end))
        .filter(|&t| t == T0 || !down_at(src_down, t))
        .collect();
    // Shipping happens at every span end and window edge where the process server is up.
    let mut ships: Vec<u64> = cuts.to_vec();
    ships.extend(ps_down.iter().flat_map(|w| [w.from_ms, w.to_ms]));
    ships.push(T0);
    let horizon = ships
        .into_iter()
        .filter(|&t| t <= end && !down_at(ps_down, t))
        .max()
        .unwrap_or(T0);
    let got: Vec<u64> = markers.into_iter().filter(|&t| t <= horizon).collect();
    let newest = *got.last().unwrap_or(&T0);
    got.into_iter()
        .filter(|&t| t >= newest.saturating_sub(retention))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn points_match_a_model_over_random_spans_and_outages(
        cuts in proptest::collection::vec(1u64..(3 * HOUR / 1000), 1..6),
        ps in proptest::collection::vec((0u64..(3 * HOUR / 1000), 1u64..(HOUR / 1000)), 0..3),
        src in proptest::collection::vec((0u64..(3 * HOUR / 1000), 1u64..(HOUR / 1000)), 0..2),
    ) {
        let d = tempfile::tempdir().unwrap();
        let policy = Policy { retention_ms: HOUR, ..Policy::default() };
        let mut s = setup(d.path(), policy, 200);
        let win = |v: &[(u64, u64)]| -> Vec<Window> {
            v.iter().map(|&(a, l)| Window { from_ms: T0 + a * 1000, to_ms: T0 + (a + l) * 1000 }).collect()
        };
        let mut e = env(policy);
        e.process_server_down = win(&ps);
        e.source_down = win(&src);
        let mut cuts: Vec<u64> = cuts.into_iter().map(|c| T0 + c * 1000).collect();
        cuts.push(T0 + 3 * HOUR);
        cuts.sort_unstable();
        cuts.dedup();
        let mut t = T0;
        for &c in &cuts {
            advance(&mut s, t, c, &e).unwrap();
            t = c;
        }
        let got: Vec<u64> = verified_points(&d.path().join("replica")).into_iter().map(|(t, _)| t).collect();
        let want = model(&cuts, &e.process_server_down, &e.source_down, T0 + 3 * HOUR, HOUR);
        prop_assert_eq!(got, want);
    }
}
