//! `points list|check|build|verify`: recovery points of a replication group from the CLI.

use super::*;

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
    /// A replicated item of a site (`--site`) instead of replicas or journals.
    #[arg(long, conflicts_with_all = ["replica", "base", "journal"])]
    item: Option<String>,
    /// The site (with --item).
    #[arg(long, env = "EC2AZURE_SITE", default_value = ec2azure::site::DEFAULT_DIR)]
    site: PathBuf,
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

/// The replication group `s` names: replicas, or bases with their journals, each under the
/// policy the options give over its own.
pub(crate) fn open_group(s: &SourceArgs, verify_payloads: bool) -> Result<ReplicationGroup> {
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
pub(crate) fn resolve(
    group: &mut ReplicationGroup,
    choice: PointChoice,
    quiet: bool,
) -> Result<Resolution> {
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

pub(crate) fn kind_str(p: &PointInfo) -> String {
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

/// `points list --item`: an item's recovery points, as the service lists them.
fn site_points(a: &PointsArgs, item: &str) -> Result<ExitCode> {
    let mut site = ec2azure::site::Site::open(&a.site)?;
    let pts = site.recovery_points(item)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&pts)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: {} recovery point(s), {} pruned",
        pts.item,
        pts.points.len(),
        pts.pruned
    );
    for p in &pts.points {
        println!(
            "  {:<10} {} {:<22}{}{}",
            p.name,
            p.recovery_point_time,
            p.recovery_point_type,
            if p.is_multi_vm_sync_point == "True" {
                " multi-VM"
            } else {
                ""
            },
            if p.processed {
                ""
            } else {
                " (received, not processed)"
            }
        );
    }
    for d in &pts.defects {
        println!("  DEFECT: {d}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn points_list(a: PointsArgs) -> Result<ExitCode> {
    if let Some(item) = &a.item {
        return site_points(&a, item);
    }
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

pub(crate) fn points_check(a: PointsArgs) -> Result<ExitCode> {
    if a.item.is_some() {
        bail!("--item is for `points list`; a site item's health is in `replication status`");
    }
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

pub(crate) fn points_build(a: BuildArgs, quiet: bool) -> Result<ExitCode> {
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

pub(crate) fn points_verify(a: VerifyArgs, quiet: bool) -> Result<ExitCode> {
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
