//! `journal diff|simulate|inspect|verify`: change journals from the CLI.

use super::*;

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

pub fn journal(cmd: JournalCommand, quiet: bool) -> Result<ExitCode> {
    match cmd {
        JournalCommand::Diff(a) => journal_diff(a, quiet),
        JournalCommand::Simulate(a) => journal_simulate(a, quiet),
        JournalCommand::Inspect(a) => journal_inspect(a, false),
        JournalCommand::Verify(a) => journal_inspect(a, true),
    }
}

pub(crate) fn journal_diff(a: DiffArgs, quiet: bool) -> Result<ExitCode> {
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

pub(crate) fn journal_simulate(a: SimulateArgs, quiet: bool) -> Result<ExitCode> {
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

pub(crate) fn journal_inspect(a: JournalArgs, verify: bool) -> Result<ExitCode> {
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
