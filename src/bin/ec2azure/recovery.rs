//! `journal`, `replica` and `points`: change journals, the process server's replica, and
//! recovery points.

use crate::{human, parse_size, term};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ec2azure::clock::Clock;
use ec2azure::journal::{
    Journal, ScanOptions, format_duration, format_time, parse_duration, parse_time, point_id,
};
use ec2azure::recovery::{
    self, PointChoice, PointInfo, Policy, ProtectedDisk, Replica, ReplicationGroup, Resolution,
    SimSpec, check_points,
};
use ec2azure::{ConvertOptions, DiskImage, OutputFormat, Progress};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Subcommand)]
pub enum JournalCommand {
    /// Write the journal that turns OLD into NEW: one record per changed 512 KiB block (as EBS
    /// ListChangedBlocks gives them) and a marker with NEW's root digest.
    Diff(DiffArgs),
    /// Write a seeded workload over a base image: writes with a hot spot, zeroed ranges,
    /// crash-consistent markers every 5 minutes, app-consistent tags at the policy frequency,
    /// each marker with the disk's root digest.
    Simulate(SimulateArgs),
    /// Show a journal: its disk and base, segments, records, points, and any torn tail or defect.
    Inspect(JournalArgs),
    /// Check every byte of a journal (exit 0 intact, 1 defective: points lost, 2 error).
    Verify(JournalArgs),
}

#[derive(Args)]
pub struct DiffArgs {
    /// The old image: the journal's base.
    old: PathBuf,
    /// The new image.
    new: PathBuf,
    /// The journal directory to write (must not exist, or be empty).
    journal: PathBuf,
    /// The records' time (RFC 3339); now by default.
    #[arg(long)]
    time: Option<String>,
    /// OLD's block manifest (`convert --manifest`): with two ebs:// snapshots of one lineage,
    /// ListChangedBlocks names the blocks that may differ and only those are read from NEW;
    /// OLD is not read at all.
    #[arg(long, value_name = "FILE")]
    old_manifest: Option<PathBuf>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SimulateArgs {
    /// The base image the workload writes over.
    #[arg(long)]
    base: PathBuf,
    /// Seed: the same seed and base give the same journal.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long (whole 5-minute intervals): 90m, 6h, 1d.
    #[arg(long, default_value = "1h")]
    duration: String,
    /// Average bytes written per second (K, M, G suffixes).
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    write_rate: u64,
    /// Fraction of writes that land in the hot spot (a tenth of the disk).
    #[arg(long, default_value_t = 0.8)]
    hot_fraction: f64,
    /// Fraction of records that zero their range (TRIM) instead of writing it.
    #[arg(long, default_value_t = 0.03)]
    zero_fraction: f64,
    /// Largest single write.
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    max_write: u64,
    /// App-consistent frequency (1h to 12h, or 0 for none).
    #[arg(long, default_value = "1h")]
    app_frequency: String,
    /// Multi-VM replication group name: markers carry the group and a tag from their time, so
    /// journals simulated for several disks with one group share their points.
    #[arg(long)]
    group: Option<String>,
    /// Start time (RFC 3339 UTC).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    start: String,
    /// Leave the digests out of the markers.
    #[arg(long)]
    no_digests: bool,
    /// Segment file size.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    segment_size: u64,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
    /// The journal directory to write (must not exist, or be empty).
    journal: PathBuf,
}

#[derive(Args)]
pub struct JournalArgs {
    /// The journal directory.
    journal: PathBuf,
    /// List every record too (inspect).
    #[arg(long)]
    records: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ReplicaCommand {
    /// Make a replica of a base image (the base is copied in as sparse raw).
    Init(ReplicaInitArgs),
    /// Copy a journal's new segments into the replica.
    Receive(ReplicaReceiveArgs),
    /// Check and index what was received, move the processed horizon, fold points that left
    /// the retention window into the base.
    Process(ReplicaArgs),
    /// Show the replica: processed horizon, latest and latest processed points, pending data.
    Status(ReplicaArgs),
}

#[derive(Args)]
pub struct PolicyArgs {
    /// Recovery point retention: 1h to 15d (default 24h).
    #[arg(long)]
    retention: Option<String>,
    /// App-consistent snapshot frequency: 1h to 12h, or 0 for none (default 1h).
    #[arg(long)]
    app_frequency: Option<String>,
    /// RPO alert threshold (default 15m).
    #[arg(long)]
    rpo_threshold: Option<String>,
}

impl PolicyArgs {
    fn over(&self, base: Policy) -> Result<Policy> {
        let mut p = Policy::from_args(
            self.retention.as_deref(),
            self.app_frequency.as_deref(),
            self.rpo_threshold.as_deref(),
        )?;
        if self.retention.is_none() {
            p.retention_ms = base.retention_ms;
        }
        if self.app_frequency.is_none() {
            p.app_frequency_ms = base.app_frequency_ms;
        }
        if self.rpo_threshold.is_none() {
            p.rpo_threshold_ms = base.rpo_threshold_ms;
        }
        p.validate()?;
        Ok(p)
    }
}

#[derive(Args)]
pub struct ReplicaInitArgs {
    /// The base image (any format ec2azure reads).
    #[arg(long)]
    base: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
    /// The replica directory to make.
    replica: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReplicaReceiveArgs {
    /// The journal directory to take segments from.
    journal: PathBuf,
    /// The replica directory.
    replica: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReplicaArgs {
    /// The replica directory.
    replica: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum PointsCommand {
    /// List the recovery points in the retention window (and those pruned or lost).
    List(PointsArgs),
    /// Check the policy: RPO gaps, app-consistent frequency, retention, lost points
    /// (exit 0 met, 1 not met).
    Check(PointsArgs),
    /// Build a recovery point into a fixed VHD or raw image.
    Build(BuildArgs),
    /// Build every point in retention (or one) in one pass and check each against its marker's
    /// digest (exit 0 only when every point reproduces its digest and none is lost).
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct SourceArgs {
    /// A replica directory (repeat for the disks of a replication group).
    #[arg(long, conflicts_with_all = ["base", "journal"])]
    replica: Vec<PathBuf>,
    /// A base image (with --journal; repeat both for several disks).
    #[arg(long, requires = "journal")]
    base: Vec<PathBuf>,
    /// A journal directory (with --base).
    #[arg(long, requires = "base")]
    journal: Vec<PathBuf>,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Args)]
pub struct PointsArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutFormat {
    Vhd,
    Raw,
}

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// latest, latest-processed, latest-app-consistent, latest-multi-vm-processed,
    /// latest-multi-vm-app-consistent, a point id (rp-N) or a time (the newest point at or
    /// before it).
    #[arg(long, short)]
    point: String,
    /// Output file; with several disks, an output directory (one file per disk).
    output: PathBuf,
    /// Output format.
    #[arg(short = 'O', long = "output-format", value_enum, default_value = "vhd")]
    output_format: OutFormat,
    /// Skip the final sync.
    #[arg(long)]
    no_sync: bool,
    #[command(flatten)]
    id: crate::VhdIdArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Check only this point.
    #[arg(long, short)]
    point: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn journal(cmd: JournalCommand, quiet: bool) -> Result<ExitCode> {
    match cmd {
        JournalCommand::Diff(a) => journal_diff(a, quiet),
        JournalCommand::Simulate(a) => journal_simulate(a, quiet),
        JournalCommand::Inspect(a) => journal_inspect(a, false),
        JournalCommand::Verify(a) => journal_inspect(a, true),
    }
}

pub fn replica(cmd: ReplicaCommand, quiet: bool) -> Result<ExitCode> {
    term::install_interrupt_handler();
    match cmd {
        ReplicaCommand::Init(a) => {
            let base = ec2azure::open(&a.base, None)?;
            let policy = a.policy.over(Policy::default())?;
            let progress = term::progress(quiet || a.json);
            let r = Replica::init(&a.replica, &*base, policy, &progress)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(r.state())?);
            } else if !quiet {
                println!(
                    "replica {}: {} disk, base root {}",
                    a.replica.display(),
                    human(r.state().disk_size),
                    r.state().origin_root
                );
            }
        }
        ReplicaCommand::Receive(a) => {
            let mut r = Replica::open(&a.replica)?;
            let rep = r.receive(&a.journal)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else if !quiet {
                println!(
                    "received {} segment(s), {} ({} already held)",
                    rep.received,
                    human(rep.bytes),
                    rep.already_had
                );
            }
        }
        ReplicaCommand::Process(a) => {
            let mut r = Replica::open(&a.replica)?;
            let progress = term::progress(quiet || a.json);
            let rep = r.process(&progress)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            } else if !quiet {
                println!(
                    "processed {} in {} segment(s) in {} ms: horizon record {} -> {}, {} new point(s)",
                    human(rep.bytes_checked),
                    rep.segments,
                    rep.elapsed_ms,
                    rep.processed_seq_before,
                    rep.processed_seq,
                    rep.new_points
                );
                if let Some(s) = rep.compacted_to {
                    println!(
                        "folded {} point(s) older than the retention window into the base (base now at record {s})",
                        rep.folded_points
                    );
                }
                print_damage(rep.torn.as_deref(), rep.defect.as_deref());
            }
        }
        ReplicaCommand::Status(a) => {
            let r = Replica::open(&a.replica)?;
            let s = r.status()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else if !quiet {
                println!("replica     {}", a.replica.display());
                println!(
                    "disk        {} ({})",
                    s.state
                        .disk_id
                        .as_deref()
                        .unwrap_or("no segment received yet"),
                    human(s.state.disk_size)
                );
                println!(
                    "base        {} (records before {} folded in, {} point(s))",
                    s.state.base_file, s.state.base_seq, s.state.folded_points
                );
                println!(
                    "received    {} segment(s), {}, up to record {}",
                    s.segments,
                    human(s.segment_bytes),
                    s.received_seq
                );
                println!(
                    "processed   up to record {} ({} record(s) pending)",
                    s.state.processed_seq, s.pending_records
                );
                println!(
                    "points      {} in the retention window ({})",
                    s.points,
                    format_duration(s.state.policy.retention_ms)
                );
                if let Some(p) = &s.latest {
                    println!("latest      {} at {} (after processing)", p.id, p.time);
                }
                if let Some(p) = &s.latest_processed {
                    println!(
                        "processed   {} at {} (no processing; {} older)",
                        p.id,
                        p.time,
                        s.processed_lag.as_deref().unwrap_or("0s")
                    );
                }
                print_damage(s.torn.as_deref(), s.defect.as_deref());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_damage(torn: Option<&str>, defect: Option<&str>) {
    if let Some(t) = torn {
        println!("warning: {t}");
    }
    if let Some(d) = defect {
        println!("DEFECT: {d}");
        println!("        every point after it is unavailable");
    }
}

fn journal_diff(a: DiffArgs, quiet: bool) -> Result<ExitCode> {
    term::install_interrupt_handler();
    let time = match &a.time {
        Some(t) => parse_time(t).context("--time")?,
        None => ec2azure::clock::SystemClock.now_ms(),
    };
    let progress = term::progress(quiet || a.json);
    let r = match &a.old_manifest {
        Some(m) => {
            let snap = |p: &std::path::Path| {
                p.to_str()
                    .and_then(|s| s.strip_prefix("ebs://"))
                    .map(str::to_string)
            };
            let (Some(old_id), Some(new_id)) = (snap(&a.old), snap(&a.new)) else {
                bail!("--old-manifest: OLD and NEW must both be ebs://snap-… snapshots");
            };
            let text =
                std::fs::read_to_string(m).with_context(|| format!("reading {}", m.display()))?;
            let manifest = ec2azure::Manifest::from_json(&text)
                .with_context(|| format!("reading {}", m.display()))?;
            let api = ec2azure::cloud::aws_ebs::AwsEbs::new(None, None)?;
            let changed = ec2azure::cloud::ebs::changed_blocks(
                &api,
                &old_id,
                &new_id,
                ec2azure::cloud::ebs::RetryPolicy::default(),
            )?;
            let new = ec2azure::open(&a.new, None)?;
            recovery::diff_changed(&manifest, &*new, &changed, &a.journal, time, &progress)?
        }
        None => {
            let old = ec2azure::open(&a.old, None)?;
            let new = ec2azure::open(&a.new, None)?;
            recovery::diff(&*old, &*new, &a.journal, time, &progress)?
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if !quiet {
        println!(
            "{}: {} changed and {} zeroed block(s) of 512 KiB, {} of journal; point rp-{} has root {}",
            a.journal.display(),
            r.changed_blocks,
            r.zeroed_blocks,
            human(r.journal_bytes),
            r.changed_blocks + r.zeroed_blocks + 1,
            r.root
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn journal_simulate(a: SimulateArgs, quiet: bool) -> Result<ExitCode> {
    term::install_interrupt_handler();
    let base = ec2azure::open(&a.base, None)?;
    let duration_ms = parse_duration(&a.duration).context("--duration")?;
    let app = Policy::from_args(None, Some(&a.app_frequency), None)?.app_frequency_ms;
    let start_ms = parse_time(&a.start).context("--start")?;
    let progress = term::progress(quiet || a.json);
    let t = Instant::now();
    let (digests, _) = recovery::base_digests(&*base)?;
    let spec = SimSpec {
        seed: a.seed,
        start_ms,
        duration_ms,
        write_rate: a.write_rate,
        hot_fraction: a.hot_fraction,
        zero_fraction: a.zero_fraction,
        max_write: a.max_write,
        app_frequency_ms: app,
        crash_interval_ms: 300_000,
        group: a.group.as_deref().map(recovery::group_id),
        digests: !a.no_digests,
        segment_size: a.segment_size,
    };
    let r = recovery::simulate(&*base, &digests, &a.journal, &spec, &progress)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if !quiet {
        println!(
            "{}: {} point(s) ({} app-consistent), {} writes ({}), {} zeroed ranges, {} of journal in {:.2} s",
            a.journal.display(),
            r.points,
            r.app_points,
            r.writes,
            human(r.data_bytes),
            r.zeros,
            human(r.journal_bytes),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn journal_inspect(a: JournalArgs, verify: bool) -> Result<ExitCode> {
    let j = Journal::open(
        &a.journal,
        ScanOptions {
            verify_payloads: verify,
            ..ScanOptions::default()
        },
    )?;
    let info = j.info();
    let points: Vec<serde_json::Value> = j
        .points()
        .iter()
        .map(|p| {
            serde_json::json!({
                "id": point_id(p.seq),
                "time": format_time(p.time_ms),
                "consistency": p.marker.consistency,
                "multi_vm": p.marker.group.map(|(g, t)| format!("{}/{t}", hex::encode(g))),
                "digest": p.marker.digest.map(hex::encode),
                "label": p.marker.label,
            })
        })
        .collect();
    let writes = j
        .records()
        .iter()
        .filter(|r| r.kind == ec2azure::journal::RecordKind::Write);
    let data: u64 = writes.clone().map(|r| r.length).sum();
    let v = serde_json::json!({
        "journal": a.journal,
        "disk_id": hex::encode(info.disk_id),
        "disk_size": info.disk_size,
        "sector_size": info.sector_size,
        "base_root": hex::encode(info.base_root),
        "segments": j.segments().len(),
        "bytes": j.file_bytes(),
        "records": j.records().len(),
        "writes": writes.count(),
        "write_bytes": data,
        "first_seq": j.records().first().map(|r| r.seq),
        "last_seq": j.last_seq(),
        "points": points,
        "torn": j.torn().map(|d| d.to_string()),
        "defect": j.defect(),
        "unavailable": j.unavailable(),
        "payloads_checked": verify,
        "intact": j.defect().is_none(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("journal     {}", a.journal.display());
        println!(
            "disk        {} ({}, {}-byte sectors)",
            hex::encode(info.disk_id),
            human(info.disk_size),
            info.sector_size
        );
        println!("base root   {}", hex::encode(info.base_root));
        println!(
            "segments    {} ({})",
            j.segments().len(),
            human(j.file_bytes())
        );
        println!(
            "records     {} (last {}), {} of writes",
            j.records().len(),
            j.last_seq(),
            human(data)
        );
        println!("points      {}", j.points().len());
        if a.records {
            for r in j.records() {
                println!(
                    "  {:>8} {} {:?} {}+{}",
                    r.seq,
                    format_time(r.time_ms),
                    r.kind,
                    r.offset,
                    r.length
                );
            }
        }
        for p in j.points() {
            println!(
                "  {:<10} {} {:<5}{}{}",
                point_id(p.seq),
                format_time(p.time_ms),
                match p.marker.consistency {
                    ec2azure::journal::Consistency::App => "app",
                    ec2azure::journal::Consistency::Crash => "crash",
                },
                if p.marker.group.is_some() {
                    " multi-VM"
                } else {
                    ""
                },
                if p.marker.digest.is_some() {
                    " digest"
                } else {
                    ""
                }
            );
        }
        print_damage(
            j.torn().map(|d| d.to_string()).as_deref(),
            j.defect().map(|d| d.to_string()).as_deref(),
        );
        if !j.unavailable().is_empty() {
            let ids: Vec<String> = j.unavailable().iter().map(|p| point_id(p.seq)).collect();
            println!("unavailable {} point(s): {}", ids.len(), ids.join(", "));
        }
        if verify && j.defect().is_none() {
            println!("every record and payload checked: intact");
        }
    }
    Ok(if verify && j.defect().is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The replication group `s` names: replicas, or bases with their journals, each under the
/// policy the options give over its own.
fn open_group(s: &SourceArgs, verify_payloads: bool) -> Result<ReplicationGroup> {
    let mut disks = Vec::new();
    if !s.replica.is_empty() {
        for dir in &s.replica {
            let d = ProtectedDisk::from_replica(dir, verify_payloads)?;
            let policy = s.policy.over(*d.policy())?;
            disks.push(d.with_policy(policy)?);
        }
    } else {
        if s.base.is_empty() || s.base.len() != s.journal.len() {
            bail!("give --replica DIR, or --base IMAGE --journal DIR (the same number of each)");
        }
        let policy = s.policy.over(Policy::default())?;
        for (b, j) in s.base.iter().zip(&s.journal) {
            let base = ec2azure::open(b, None)?;
            disks.push(ProtectedDisk::from_journal(base, j)?.with_policy(policy)?);
        }
    }
    Ok(ReplicationGroup::new(disks)?)
}

/// Resolves `choice` over the group; notes go to stderr unless `quiet`.
fn resolve(group: &mut ReplicationGroup, choice: PointChoice, quiet: bool) -> Result<Resolution> {
    let r = group.resolve(choice, &ec2azure::NoProgress)?;
    if !quiet {
        for n in &r.report.notes {
            eprintln!("{n}");
        }
    }
    Ok(r)
}

/// Opens the point `spec` names, of the one disk `src` gives, and calls `f` with it as a
/// [`DiskImage`] (for `upload --point`). A base given on the command line is checked first.
pub fn with_point<R>(
    src: &SourceArgs,
    spec: &str,
    quiet: bool,
    f: impl FnOnce(&dyn DiskImage, &PointInfo) -> Result<R>,
) -> Result<R> {
    let choice: PointChoice = spec.parse()?;
    let mut group = open_group(src, false)?;
    if group.disks().len() != 1 || choice.is_multi_vm() {
        bail!("a point of one disk: give one --replica, or one --base and --journal");
    }
    let r = resolve(&mut group, choice, quiet)?;
    let d = &group.disks()[0];
    d.check_base()?;
    let p = &r.picks[0].point;
    let img = d.point_image(p.id)?;
    f(&img, p)
}

pub fn points(cmd: PointsCommand, quiet: bool) -> Result<ExitCode> {
    term::install_interrupt_handler();
    match cmd {
        PointsCommand::List(a) => points_list(a),
        PointsCommand::Check(a) => points_check(a),
        PointsCommand::Build(a) => points_build(a, quiet),
        PointsCommand::Verify(a) => points_verify(a, quiet),
    }
}

fn kind_str(p: &PointInfo) -> String {
    let c = match p.consistency {
        ec2azure::journal::Consistency::App => "app",
        ec2azure::journal::Consistency::Crash => "crash",
    };
    if p.multi_vm.is_some() {
        format!("{c} multi-VM")
    } else {
        c.to_string()
    }
}

fn points_list(a: PointsArgs) -> Result<ExitCode> {
    let group = open_group(&a.source, false)?;
    let disks = group.disks();
    let cats = group.catalogs();
    let common = group.latest_multi_vm();
    if a.json {
        let v: Vec<serde_json::Value> = disks
            .iter()
            .zip(&cats)
            .map(|(d, c)| serde_json::json!({ "disk": d.name(), "catalog": c }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "disks": v, "latest_multi_vm": common })
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (d, c) in disks.iter().zip(&cats) {
        println!(
            "{}: {} point(s) in the retention window ({} pruned)",
            d.name(),
            c.points.len(),
            c.pruned.len()
        );
        for p in &c.points {
            println!(
                "  {:<10} {} {:<15} {}{}",
                p.id,
                p.time,
                kind_str(p),
                if p.processed {
                    "processed"
                } else {
                    "received "
                },
                if p.digest.is_some() { " digest" } else { "" }
            );
        }
        if let Some(def) = &c.defect {
            println!("  DEFECT: {def}");
            let ids: Vec<String> = c.unavailable.iter().map(|p| point_id(p.seq)).collect();
            println!(
                "  unavailable: {} point(s){}{}",
                ids.len(),
                if ids.is_empty() { "" } else { ": " },
                ids.join(", ")
            );
        }
    }
    if let Some(tag) = common {
        println!("latest multi-VM point common to all disks: {tag}");
    }
    Ok(ExitCode::SUCCESS)
}

fn points_check(a: PointsArgs) -> Result<ExitCode> {
    let group = open_group(&a.source, false)?;
    let mut ok = true;
    let mut reports = Vec::new();
    for d in group.disks() {
        let policy = d.policy();
        let r = d.catalog().check(policy);
        ok &= r.ok();
        if !a.json {
            println!(
                "{}: {} point(s) over {} ({} app-consistent), retention {}, {} pruned",
                d.name(),
                r.points,
                r.span,
                r.app_consistent_points,
                r.retention,
                r.pruned
            );
            for g in &r.rpo_breaches {
                println!(
                    "  RPO over {}: no point from {} to {} ({})",
                    format_duration(policy.rpo_threshold_ms),
                    g.from,
                    g.to,
                    g.length
                );
            }
            for g in &r.app_gaps {
                println!(
                    "  no app-consistent point from {} to {} ({}; frequency {})",
                    g.from,
                    g.to,
                    g.length,
                    format_duration(policy.app_frequency_ms)
                );
            }
            if let Some(def) = &r.defect {
                println!("  DEFECT: {def}: {} point(s) unavailable", r.unavailable);
            }
            println!(
                "  {}",
                if r.ok() {
                    "policy met"
                } else {
                    "policy NOT met"
                }
            );
        }
        reports.push(serde_json::json!({ "disk": d.name(), "report": r, "ok": r.ok() }));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "ok": ok, "disks": reports }))?
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn points_build(a: BuildArgs, quiet: bool) -> Result<ExitCode> {
    let choice: PointChoice = a.point.parse()?;
    let mut group = open_group(&a.source, false)?;
    let t = Instant::now();
    let resolution = resolve(&mut group, choice, quiet || a.json)?;
    let several = group.disks().len() > 1;
    if several {
        std::fs::create_dir_all(&a.output)
            .with_context(|| format!("creating {}", a.output.display()))?;
    }
    let progress = term::progress(quiet || a.json);
    let mut reports = Vec::new();
    for (d, pick) in group.disks().iter().zip(&resolution.picks) {
        let p = &pick.point;
        // The base is trusted for a replica (its root is recorded); a base given on the command
        // line is hashed and checked against the journal's first.
        d.check_base()?;
        let ext = match a.output_format {
            OutFormat::Vhd => "vhd",
            OutFormat::Raw => "raw",
        };
        let out = if several {
            a.output.join(format!("{}.{ext}", d.name()))
        } else {
            a.output.clone()
        };
        let (unique_id, timestamp) = a.id.resolve()?;
        let opts = ConvertOptions {
            format: match a.output_format {
                OutFormat::Vhd => OutputFormat::Vhd,
                OutFormat::Raw => OutputFormat::Raw,
            },
            sync: !a.no_sync,
            unique_id,
            timestamp,
            progress: &progress as &dyn Progress,
            ..ConvertOptions::default()
        };
        let r = recovery::build_point(d.base(), d.journal(), p.seq, &out, &opts)?;
        if !quiet && !a.json {
            println!(
                "{}: {} ({} {}) -> {}: {} written{}{}",
                d.name(),
                p.id,
                p.time,
                kind_str(p),
                out.display(),
                human(r.convert.bytes_written),
                r.root.map(|x| format!(", root {x}")).unwrap_or_default(),
                match r.verified {
                    Some(true) => ", matches the marker's digest",
                    Some(false) => ", DOES NOT match",
                    None => " (the marker carries no digest to check)",
                }
            );
        }
        reports
            .push(serde_json::json!({ "disk": d.name(), "output": out, "point": p, "build": r }));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "disks": reports, "notes": resolution.report.notes,
                "processed": resolution.report.processed, "lost": resolution.report.lost,
                "elapsed_ms": t.elapsed().as_millis() as u64
            }))?
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn points_verify(a: VerifyArgs, quiet: bool) -> Result<ExitCode> {
    let choice = a
        .point
        .as_deref()
        .map(str::parse::<PointChoice>)
        .transpose()?;
    let mut group = open_group(&a.source, true)?;
    let mut notes = Vec::new();
    let only: Option<Vec<u64>> = match choice {
        Some(c) => {
            let r = resolve(&mut group, c, quiet || a.json)?;
            notes = r.report.notes;
            Some(r.picks.iter().map(|p| p.point.seq).collect())
        }
        None => None,
    };
    let progress = term::progress(quiet || a.json);
    let mut ok = true;
    let mut out = Vec::new();
    for (i, d) in group.disks().iter().enumerate() {
        let t = Instant::now();
        let cat = d.catalog();
        // Every point's proof rests on the base: hash it (a replica's too) and check its root.
        let digests = d.base_digests()?;
        let keep: Vec<u64> = match &only {
            Some(v) => vec![v[i]],
            None => cat.points.iter().map(|p| p.seq).collect(),
        };
        let checks = check_points(
            d.base(),
            digests,
            d.journal(),
            &|p| keep.contains(&p.seq),
            &progress,
        )?;
        let good = checks.iter().filter(|c| c.matches == Some(true)).count();
        let bad: Vec<&recovery::PointCheck> =
            checks.iter().filter(|c| c.matches == Some(false)).collect();
        let none = checks.iter().filter(|c| c.matches.is_none()).count();
        let lost = if only.is_some() {
            0
        } else {
            cat.unavailable.len()
        };
        let disk_ok = bad.is_empty() && none == 0 && lost == 0 && !checks.is_empty();
        ok &= disk_ok;
        if !a.json && !quiet {
            println!(
                "{}: {} point(s) checked in {:.2} s: {good} reproduce their digest, {} do not, {none} carry none{}",
                d.name(),
                checks.len(),
                t.elapsed().as_secs_f64(),
                bad.len(),
                if lost > 0 {
                    format!(", {lost} lost to a defect")
                } else {
                    String::new()
                }
            );
            for c in &bad {
                println!(
                    "  {} at {}: root {}, the marker records {}",
                    point_id(c.seq),
                    format_time(c.time_ms),
                    c.root,
                    c.expected.map_or("-".into(), |d| d.to_string())
                );
            }
            if let Some(def) = &cat.defect {
                println!("  DEFECT: {def}");
            }
        }
        out.push(serde_json::json!({
            "disk": d.name(), "ok": disk_ok, "checked": checks.len(), "matching": good,
            "mismatching": bad.len(), "without_digest": none, "unavailable": lost,
            "defect": cat.defect, "points": checks, "elapsed_ms": t.elapsed().as_millis() as u64,
        }));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "ok": ok, "disks": out, "notes": notes })
            )?
        );
    } else if !quiet {
        println!(
            "{}",
            if ok {
                "every point checked reproduces its digest"
            } else {
                "NOT every point reproduces its digest"
            }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
