//! Replication of one disk, as Site Recovery runs it for a physical (EC2) machine, on simulated
//! time: initial replication from a snapshot into the process server's replica, then delta
//! replication over spans of simulated time — a seeded workload written by the machine's
//! Mobility service as journal segments (or the changed blocks between two snapshots), shipped
//! to the process server when it is up, received and processed by the [`Replica`], pruned by
//! the policy's retention — and the replication health at each span's end.
//!
//! This module knows nothing of the site's store: a [`DiskReplication`] (serde) is the state
//! the caller keeps; the files live in two folders it names, the **replica** (the process
//! server's, [`Replica`]) and the **source side** (the machine's: its journal, its disk as the
//! journal leaves it, the disk's block digests; see `source.rs`). Every report carries the wall
//! time of the real work beside the simulated span.
//!
//! Time: a span `(from, to]` holds the records whose time lies after `from` and at or before
//! `to`; crash-consistent markers fall on multiples of 5 minutes after the initial point, so
//! advancing 5 minutes from a marker gives the next one. Cutting a period into spans anywhere
//! writes the same journal bytes (segment boundaries included) as one span over it.
//!
//! Outages are windows `(from, to]` too: while the process server is down nothing is received
//! or processed (data piles up on the source side and is received when it is back); while the
//! source is down (machine stopped) it writes nothing and takes no points.

mod health;
mod source;
#[cfg(test)]
mod tests;

pub use health::{
    Conditions, DiskHealth, HealthError, MACHINE_PEAK_CHURN_BYTES_PER_SEC, MachineHealth,
    PROCESS_SERVER_DAILY_CHURN_BYTES, ProtectionHealth, disk_health, machine_health,
    machine_peak_churn, process_server_churn,
};
pub use source::SourceState;

use crate::digest::{BLOCK_SIZE, Digest, Manifest, sha256};
use crate::error::{Error, Result};
use crate::image::DiskImage;
use crate::journal::{Consistency, Marker};
use crate::progress::Progress;
use crate::recovery::{
    IntervalChurn, PointChoice, PointInfo, Policy, Replica, SimSpec, SpanSim, block_digests,
    diff_changed_into, group_id, simulate_span,
};
use serde::{Deserialize, Serialize};
use source::Source;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The seeded workload a replicated disk's machine runs (the crash-consistent interval, 5
/// minutes, and the app-consistent frequency come from the policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Seed: the same seed gives the same writes.
    pub seed: u64,
    /// Bytes written per second, on average.
    pub write_rate: u64,
    /// Fraction of writes in the hot spot (a tenth of the disk).
    pub hot_fraction: f64,
    /// Fraction of records that zero their range.
    pub zero_fraction: f64,
    /// Largest write, bytes.
    pub max_write: u64,
    /// Multi-VM sync: the replication group's name (every marker carries the group's id).
    pub multi_vm_group: Option<String>,
    /// Record each marker's root digest (so every point can be proven).
    pub digests: bool,
    /// Journal segment size, bytes.
    pub segment_size: u64,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            seed: 1,
            write_rate: 50_000,
            hot_fraction: 0.8,
            zero_fraction: 0.03,
            max_write: 256 << 10,
            multi_vm_group: None,
            digests: true,
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// Segments of 16 MiB: small enough that retention frees space soon, few enough files.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

impl WorkloadSpec {
    fn sim(&self, origin_ms: u64, policy: &Policy) -> SimSpec {
        SimSpec {
            seed: self.seed,
            start_ms: origin_ms,
            duration_ms: 0,
            write_rate: self.write_rate,
            hot_fraction: self.hot_fraction,
            zero_fraction: self.zero_fraction,
            max_write: self.max_write,
            app_frequency_ms: policy.app_frequency_ms,
            crash_interval_ms: policy.crash_interval_ms,
            group: self.multi_vm_group.as_deref().map(group_id),
            digests: self.digests,
            segment_size: self.segment_size,
        }
    }
}

/// Running totals of one disk's replication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Bytes of data the machine wrote.
    pub data_bytes_written: u64,
    /// Bytes it zeroed.
    pub bytes_zeroed: u64,
    /// Bytes of journal segments the source wrote.
    pub journal_bytes_written: u64,
    /// Segments the process server copied in (a segment that grew counts again).
    pub segments_received: u64,
    /// Bytes it copied in.
    pub bytes_received: u64,
    /// Bytes of segments processing read and checked.
    pub bytes_checked: u64,
    /// Recovery points (markers) written.
    pub points_written: u64,
    /// Of which app-consistent.
    pub app_points_written: u64,
    /// Points folded into the replica's base (left the retention window).
    pub points_folded: u64,
}

/// The state of one replicated disk, kept by the caller (in the site's store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskReplication {
    /// The disk's name (its EBS volume id, say); the journal's disk id derives from it.
    pub disk: String,
    /// The replica's folder (the process server's).
    pub replica_dir: PathBuf,
    /// The source side's folder (the machine's Mobility service).
    pub source_dir: PathBuf,
    /// The disk's size.
    pub disk_size: u64,
    /// Root digest of the snapshot initial replication read.
    pub base_root: Digest,
    /// The workload (`None`: deltas come from successive snapshots).
    pub workload: Option<WorkloadSpec>,
    /// The initial point's time: the workload's intervals count from it.
    pub origin_ms: u64,
    /// Simulated time up to which the source's writes are in its journal.
    pub generated_to_ms: u64,
    /// The sequence number the next record gets.
    pub next_seq: u64,
    /// Running totals.
    pub counters: Counters,
}

/// A window `(from_ms, to_ms]` of simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Start (exclusive), milliseconds since the epoch.
    pub from_ms: u64,
    /// End (inclusive).
    pub to_ms: u64,
}

impl Window {
    fn holds(&self, t: u64) -> bool {
        t > self.from_ms && t <= self.to_ms
    }
}

fn down_at(windows: &[Window], t: u64) -> bool {
    windows.iter().any(|w| w.holds(t))
}

/// What a span runs under.
pub struct SpanEnv<'a> {
    /// The replication policy (retention, app-consistent frequency, RPO threshold).
    pub policy: Policy,
    /// When the process server is down.
    pub process_server_down: Vec<Window>,
    /// When the source machine is down (writes nothing, takes no points, sends nothing).
    pub source_down: Vec<Window>,
    /// Progress of the real work.
    pub progress: &'a dyn Progress,
}

/// Wall-clock time of the real work, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WallTimes {
    /// Reading the snapshot(s) (initial copy, changed blocks).
    pub snapshot_read_ms: u64,
    /// Generating the workload's records.
    pub generate_ms: u64,
    /// Marker digests, replay onto the source disk, commit.
    pub commit_ms: u64,
    /// Receipt by the process server.
    pub receive_ms: u64,
    /// Processing (checking, indexing, folding by retention).
    pub process_ms: u64,
    /// Health.
    pub health_ms: u64,
    /// All of it.
    pub total_ms: u64,
}

fn ms(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// What initial replication did.
#[derive(Debug, Clone, Serialize)]
pub struct InitialReport {
    /// The disk.
    pub disk: String,
    /// Its size.
    pub disk_size: u64,
    /// The snapshot's root digest (the replica's base).
    pub base_root: Digest,
    /// The first recovery point (the item is Protected once it exists).
    pub first_point: Option<PointInfo>,
    /// Bytes allocated by the replica folder.
    pub replica_bytes: u64,
    /// Bytes allocated by the source folder.
    pub source_bytes: u64,
    /// Wall times.
    pub wall: WallTimes,
}

/// What a span did.
#[derive(Debug, Clone, Serialize)]
pub struct SpanReport {
    /// The disk.
    pub disk: String,
    /// The span's start (exclusive), ms since the epoch.
    pub from_ms: u64,
    /// Its end (inclusive).
    pub to_ms: u64,
    /// Simulated milliseconds covered.
    pub simulated_ms: u64,
    /// What the source wrote (records, bytes, markers, churn per interval).
    pub written: SpanSim,
    /// Journal bytes written.
    pub journal_bytes: u64,
    /// Segments received (copied in) by the process server.
    pub segments_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Points that became processed.
    pub new_points: u64,
    /// Points folded into the base (out of retention).
    pub folded_points: u64,
    /// Bytes processing checked.
    pub bytes_checked: u64,
    /// Bytes of segments held on the source side, not yet processed.
    pub source_pending_bytes: u64,
    /// Bytes allocated by the replica folder at the end.
    pub replica_bytes: u64,
    /// Health at the span's end.
    pub health: DiskHealth,
    /// Wall times.
    pub wall: WallTimes,
}

/// The journal's disk id for a disk name.
fn journal_disk_id(disk: &str) -> [u8; 16] {
    let d = sha256(format!("ec2azure replicated disk {disk}").as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

/// Bytes allocated under `dir` (what it costs on disk; sparse files count their data only).
pub fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => allocated_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Initial replication of one disk: `snapshot` (the EBS snapshot through `EbsSnapshot`, or any
/// image) is read into the replica's base with its manifest root, the source side is set up
/// with the same content, and the first crash-consistent point (at `start_ms`, carrying the
/// base's root) is written, received and processed — so the item can be Protected.
///
/// # Errors
/// A folder is not empty, the snapshot cannot be read or its size is not a multiple of 512
/// bytes, the policy is invalid, writing fails.
#[allow(clippy::too_many_arguments)]
pub fn initial_replication(
    snapshot: &dyn DiskImage,
    disk: &str,
    replica_dir: &Path,
    source_dir: &Path,
    policy: Policy,
    workload: Option<WorkloadSpec>,
    start_ms: u64,
    progress: &dyn Progress,
) -> Result<(DiskReplication, InitialReport)> {
    let all = Instant::now();
    let mut wall = WallTimes::default();
    let t = Instant::now();
    let mut replica = Replica::init(replica_dir, snapshot, policy, progress)?;
    wall.snapshot_read_ms = ms(t);
    let t = Instant::now();
    let base = replica.base()?;
    let mut src = Source::create(source_dir, &base, journal_disk_id(disk), start_ms, progress)?;
    drop(base);
    let root = replica.state().origin_root;
    if src.state().base_root != root {
        return Err(Error::invalid(format!(
            "the source side's copy has root {}, the replica's base {root}",
            src.state().base_root
        ))
        .with_path(source_dir));
    }
    let seg = workload
        .as_ref()
        .map_or(DEFAULT_SEGMENT_SIZE, |w| w.segment_size);
    let mut w = src.writer(seg)?;
    let group = workload
        .as_ref()
        .and_then(|w| w.multi_vm_group.as_deref())
        .map(group_id);
    w.marker(
        start_ms,
        &Marker {
            consistency: Consistency::Crash,
            digest: Some(root),
            group: group.map(|g| (g, start_ms / policy.crash_interval_ms)),
            label: "initial".into(),
        },
    )?;
    let journal_bytes = src.commit(w, start_ms, false, progress)?;
    wall.commit_ms = ms(t);
    let mut state = DiskReplication {
        disk: disk.to_string(),
        replica_dir: replica_dir.to_path_buf(),
        source_dir: source_dir.to_path_buf(),
        disk_size: snapshot.len(),
        base_root: root,
        workload,
        origin_ms: start_ms,
        generated_to_ms: start_ms,
        next_seq: src.state().end.next_seq,
        counters: Counters {
            journal_bytes_written: journal_bytes,
            points_written: 1,
            ..Counters::default()
        },
    };
    let mut sink = Shipped::default();
    ship(
        &src,
        &mut replica,
        &mut state,
        &mut sink,
        &mut wall,
        progress,
    )?;
    let first_point = replica.status()?.latest_processed;
    wall.total_ms = ms(all);
    let report = InitialReport {
        disk: disk.to_string(),
        disk_size: state.disk_size,
        base_root: root,
        first_point,
        replica_bytes: allocated_bytes(replica_dir),
        source_bytes: allocated_bytes(source_dir),
        wall,
    };
    Ok((state, report))
}

#[derive(Default)]
struct Shipped {
    segments: u64,
    bytes: u64,
    new_points: u64,
    folded: u64,
    checked: u64,
}

/// Receipt and processing of what the source holds, then pruning of what was processed.
fn ship(
    src: &Source,
    replica: &mut Replica,
    state: &mut DiskReplication,
    out: &mut Shipped,
    wall: &mut WallTimes,
    progress: &dyn Progress,
) -> Result<()> {
    if !src.has_segments() {
        return Ok(());
    }
    let t = Instant::now();
    let r = replica.receive(&src.journal_dir())?;
    wall.receive_ms += ms(t);
    out.segments += u64::from(r.received + r.replaced);
    out.bytes += r.bytes;
    state.counters.segments_received += u64::from(r.received + r.replaced);
    state.counters.bytes_received += r.bytes;
    if r.received + r.replaced == 0 {
        return Ok(());
    }
    let t = Instant::now();
    let p = replica.process(progress)?;
    wall.process_ms += ms(t);
    out.new_points += p.new_points as u64;
    out.folded += p.folded_points as u64;
    out.checked += p.bytes_checked;
    state.counters.bytes_checked += p.bytes_checked;
    state.counters.points_folded += p.folded_points as u64;
    src.prune(replica.state().processed_seq)?;
    Ok(())
}

/// Opens both sides and reconciles the caller's state with the source's committed one (a span
/// whose state the caller did not store is not generated again: its bytes are there).
fn open_sides(state: &mut DiskReplication, env: &SpanEnv) -> Result<(Source, Replica)> {
    let src = Source::open(&state.source_dir)?;
    let s = src.state();
    if s.generated_to_ms < state.generated_to_ms || s.end.next_seq < state.next_seq {
        return Err(Error::invalid(format!(
            "the source side is at {} (record {}), behind the stored state at {} (record {}): \
             its files were replaced",
            s.generated_to_ms, s.end.next_seq, state.generated_to_ms, state.next_seq
        ))
        .with_path(&state.source_dir));
    }
    state.generated_to_ms = s.generated_to_ms;
    state.next_seq = s.end.next_seq;
    let mut replica = Replica::open(&state.replica_dir)?;
    if replica.state().policy != env.policy {
        replica.set_policy(env.policy)?;
    }
    Ok((src, replica))
}

/// Delta replication over the span `(from_ms, to_ms]`: the workload's records for the span are
/// appended to the source's journal (none for a disk replicated from snapshots), shipped to the
/// process server whenever it is up (at each end of an outage window and at `to_ms`), received,
/// processed and pruned by retention; then the health at `to_ms`.
///
/// # Errors
/// The span starts after the source's journal ends (a gap) or ends before it starts; a folder
/// is missing or damaged; writing fails. A corrupt segment is not an error: processing stops
/// before it and the health says why.
pub fn advance(
    state: &mut DiskReplication,
    from_ms: u64,
    to_ms: u64,
    env: &SpanEnv,
) -> Result<SpanReport> {
    let all = Instant::now();
    if to_ms < from_ms {
        return Err(Error::argument(format!(
            "span ({from_ms}, {to_ms}]: the end is before the start"
        )));
    }
    env.policy.validate()?;
    let (mut src, mut replica) = open_sides(state, env)?;
    let done = state.generated_to_ms;
    if from_ms > done {
        return Err(Error::argument(format!(
            "span ({from_ms}, {to_ms}]: the source's journal ends at {done}; advance from there \
             first"
        )));
    }
    let start = from_ms.max(done).min(to_ms);
    let mut cuts: Vec<u64> = env
        .process_server_down
        .iter()
        .flat_map(|w| [w.from_ms, w.to_ms])
        .filter(|&t| t > start && t < to_ms)
        .collect();
    cuts.push(to_ms);
    cuts.sort_unstable();
    cuts.dedup();
    let mut wall = WallTimes::default();
    let mut written = SpanSim::default();
    let mut journal_bytes = 0;
    let mut sink = Shipped::default();
    let mut a = start;
    for b in cuts {
        if b > a {
            let t = Instant::now();
            let mut w = src.writer(
                state
                    .workload
                    .as_ref()
                    .map_or(DEFAULT_SEGMENT_SIZE, |w| w.segment_size),
            )?;
            let mut digests = false;
            if let Some(spec) = &state.workload {
                let sim = spec.sim(state.origin_ms, &env.policy);
                let got = simulate_span(&mut w, state.disk_size, &sim, a, b, &|t| {
                    !down_at(&env.source_down, t)
                })?;
                digests = spec.digests;
                add_sim(&mut written, got);
            }
            wall.generate_ms += ms(t);
            let t = Instant::now();
            journal_bytes += src.commit(w, b, digests, env.progress)?;
            wall.commit_ms += ms(t);
            state.generated_to_ms = b;
            state.next_seq = src.state().end.next_seq;
        }
        a = b;
        if !down_at(&env.process_server_down, b) {
            ship(
                &src,
                &mut replica,
                state,
                &mut sink,
                &mut wall,
                env.progress,
            )?;
        }
    }
    let c = &mut state.counters;
    c.data_bytes_written += written.data_bytes;
    c.bytes_zeroed += written.zeroed_bytes;
    c.journal_bytes_written += journal_bytes;
    c.points_written += written.points;
    c.app_points_written += written.app_points;
    let peak = machine_peak_churn(&[&written.churn]);
    let t = Instant::now();
    let health = health_now(&replica, state, env, to_ms, peak)?;
    wall.health_ms = ms(t);
    wall.total_ms = ms(all);
    Ok(span_report(
        state,
        (from_ms, to_ms),
        written,
        journal_bytes,
        &sink,
        &src,
        health,
        wall,
    ))
}

/// The report of a span `(from, to]` of either kind (workload or snapshot).
#[allow(clippy::too_many_arguments)]
fn span_report(
    state: &DiskReplication,
    (from_ms, to_ms): (u64, u64),
    written: SpanSim,
    journal_bytes: u64,
    sink: &Shipped,
    src: &Source,
    health: DiskHealth,
    wall: WallTimes,
) -> SpanReport {
    SpanReport {
        disk: state.disk.clone(),
        from_ms,
        to_ms,
        simulated_ms: to_ms - from_ms,
        written,
        journal_bytes,
        segments_received: sink.segments,
        bytes_received: sink.bytes,
        new_points: sink.new_points,
        folded_points: sink.folded,
        bytes_checked: sink.checked,
        source_pending_bytes: src.pending_bytes(),
        replica_bytes: allocated_bytes(&state.replica_dir),
        health,
        wall,
    }
}

fn add_sim(total: &mut SpanSim, s: SpanSim) {
    total.writes += s.writes;
    total.zeros += s.zeros;
    total.data_bytes += s.data_bytes;
    total.zeroed_bytes += s.zeroed_bytes;
    total.points += s.points;
    total.app_points += s.app_points;
    for c in s.churn {
        match total.churn.last_mut() {
            Some(l) if l.end_ms == c.end_ms => {
                l.bytes += c.bytes;
                l.covered_ms += c.covered_ms;
            }
            _ => total.churn.push(c),
        }
    }
}

fn health_now(
    replica: &Replica,
    state: &DiskReplication,
    env: &SpanEnv,
    now_ms: u64,
    peak: u64,
) -> Result<DiskHealth> {
    let status = replica.status()?;
    let newest_app = if status.segments > 0 {
        let journal = replica.journal(false)?;
        replica
            .catalog(&journal)
            .resolve(PointChoice::LatestApplicationConsistent)
            .ok()
            .map(|p| p.time_ms)
    } else {
        None
    };
    let cond = Conditions {
        process_server_down: down_at(&env.process_server_down, now_ms),
        source_down: down_at(&env.source_down, now_ms),
        peak_churn_bytes_per_sec: peak,
    };
    Ok(disk_health(
        &status,
        newest_app,
        &env.policy,
        state.origin_ms,
        now_ms,
        &cond,
    ))
}

/// The health of a disk at `now_ms` without advancing it (what `replication status` shows).
///
/// # Errors
/// The replica cannot be read.
pub fn health(state: &DiskReplication, env: &SpanEnv, now_ms: u64) -> Result<DiskHealth> {
    let replica = Replica::open(&state.replica_dir)?;
    health_now(&replica, state, env, now_ms, 0)
}

/// Delta replication from a new snapshot of the disk at `time_ms` (b): the blocks that differ
/// from the disk as the source's journal leaves it — `changed` as EBS ListChangedBlocks lists
/// them between the previous snapshot and this one, or, when `None`, found by reading the whole
/// new snapshot and comparing block digests — are appended as journal records, then a
/// crash-consistent marker carrying the new snapshot's root; shipped and processed if the
/// process server is up at `time_ms`; health at `time_ms`.
///
/// # Errors
/// `time_ms` is before the journal's end; the snapshot's size differs; reading or writing
/// fails.
pub fn advance_snapshot(
    state: &mut DiskReplication,
    new: &dyn DiskImage,
    changed: Option<&[u64]>,
    time_ms: u64,
    env: &SpanEnv,
) -> Result<SpanReport> {
    let all = Instant::now();
    env.policy.validate()?;
    let (mut src, mut replica) = open_sides(state, env)?;
    let from_ms = state.generated_to_ms;
    if time_ms < from_ms {
        return Err(Error::argument(format!(
            "snapshot at {time_ms}: the source's journal already reaches {from_ms}"
        )));
    }
    let mut wall = WallTimes::default();
    let t = Instant::now();
    let old = src.manifest();
    let list: Vec<u64> = match changed {
        Some(c) => c.to_vec(),
        None => {
            let m = Manifest::compute(new)?;
            block_digests(&m)
                .iter()
                .zip(src.digests())
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, _)| i as u64)
                .collect()
        }
    };
    let mut w = src.writer(DEFAULT_SEGMENT_SIZE)?;
    let d = diff_changed_into(&old, new, &list, &mut w, time_ms, env.progress)?;
    let group = state
        .workload
        .as_ref()
        .and_then(|w| w.multi_vm_group.as_deref())
        .map(group_id);
    w.marker(
        time_ms,
        &Marker {
            consistency: Consistency::Crash,
            digest: Some(d.root),
            group: group.map(|g| (g, time_ms / env.policy.crash_interval_ms)),
            label: "snapshot".into(),
        },
    )?;
    wall.snapshot_read_ms = ms(t);
    let t = Instant::now();
    let journal_bytes = src.commit(w, time_ms, false, env.progress)?;
    wall.commit_ms = ms(t);
    state.generated_to_ms = time_ms;
    state.next_seq = src.state().end.next_seq;
    let changed_bytes = (d.changed_blocks + d.zeroed_blocks) * BLOCK_SIZE;
    let written = SpanSim {
        writes: d.changed_blocks,
        zeros: d.zeroed_blocks,
        data_bytes: d.changed_blocks * BLOCK_SIZE,
        zeroed_bytes: d.zeroed_blocks * BLOCK_SIZE,
        points: 1,
        app_points: 0,
        churn: vec![IntervalChurn {
            end_ms: time_ms,
            covered_ms: time_ms - from_ms,
            bytes: changed_bytes,
        }],
    };
    let c = &mut state.counters;
    c.data_bytes_written += written.data_bytes;
    c.bytes_zeroed += written.zeroed_bytes;
    c.journal_bytes_written += journal_bytes;
    c.points_written += 1;
    let mut sink = Shipped::default();
    if !down_at(&env.process_server_down, time_ms) {
        ship(
            &src,
            &mut replica,
            state,
            &mut sink,
            &mut wall,
            env.progress,
        )?;
    }
    let peak = machine_peak_churn(&[&written.churn]);
    let t = Instant::now();
    let health = health_now(&replica, state, env, time_ms, peak)?;
    wall.health_ms = ms(t);
    wall.total_ms = ms(all);
    Ok(span_report(
        state,
        (from_ms, time_ms),
        written,
        journal_bytes,
        &sink,
        &src,
        health,
        wall,
    ))
}

/// What disabling replication removed.
#[derive(Debug, Clone, Serialize)]
pub struct DisableReport {
    /// Bytes of the source side removed (its pending journal and disk copy).
    pub source_bytes_removed: u64,
    /// Bytes of the replica removed (0 when kept).
    pub replica_bytes_removed: u64,
    /// The replica's folder, when kept.
    pub replica_kept: Option<PathBuf>,
}

/// Disables replication of a disk: the source side is removed (pending data is dropped), and
/// the replica too unless `keep_replica` (its points stay usable for a later look).
///
/// # Errors
/// A folder cannot be removed.
pub fn disable_replication(state: &DiskReplication, keep_replica: bool) -> Result<DisableReport> {
    let remove = |dir: &Path| -> Result<u64> {
        let bytes = allocated_bytes(dir);
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("removing a replication folder", e).with_path(dir)),
        }
    };
    let source_bytes_removed = remove(&state.source_dir)?;
    let (replica_bytes_removed, replica_kept) = if keep_replica {
        (0, Some(state.replica_dir.clone()))
    } else {
        (remove(&state.replica_dir)?, None)
    };
    Ok(DisableReport {
        source_bytes_removed,
        replica_bytes_removed,
        replica_kept,
    })
}
