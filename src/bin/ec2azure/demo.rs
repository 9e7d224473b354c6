//! `ec2azure demo`: the main job on built-in sample data, printing each step. It makes a seeded
//! raw snapshot whose size is not a whole MiB (as odd exports are), converts it to a fixed VHD
//! with a manifest, checks it against Azure's rules, compares it with the source, checks it with
//! qemu-img when present, shows what qemu-img's own VHD of the same input looks like to Azure,
//! and converts a copy in place.

use anyhow::{Context, Result, bail};
use clap::Args;
use ec2azure::check::Target;
use ec2azure::sample::{SampleSpec, make_sample};
use ec2azure::{ConvertOptions, Manifest, NoProgress, check_file, compare, convert, open};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Args)]
pub struct DemoArgs {
    /// Keep the demo's files in DIR (created if missing) instead of a temporary folder.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Size of the sample snapshot (deliberately not a whole MiB by default).
    #[arg(long, default_value = "48M", value_parser = crate::parse_size)]
    size: u64,
    /// Seed of the sample.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

struct Steps {
    failed: usize,
    quiet: bool,
}

impl Steps {
    fn say(&self, s: impl AsRef<str>) {
        if !self.quiet {
            println!("{}", s.as_ref());
        }
    }
    fn check(&mut self, ok: bool, what: &str) {
        self.say(format!("   {} {what}", if ok { "ok  " } else { "FAIL" }));
        if !ok {
            self.failed += 1;
        }
    }
}

fn qemu_img(args: &[&str]) -> Option<std::process::Output> {
    Command::new("qemu-img").args(args).output().ok()
}

pub fn run(a: DemoArgs, quiet: bool) -> Result<ExitCode> {
    let tmp;
    let dir: &Path = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary folder")?;
            tmp.path()
        }
    };
    let mut s = Steps { failed: 0, quiet };
    let size = a.size + 123_456; // not a whole MiB, as odd exports are
    let snap = dir.join("snap.raw");
    let vhd = dir.join("snap.vhd");
    let manifest_path = dir.join("snap.manifest.json");
    let p = |p: &Path| p.display().to_string();

    s.say(format!(
        "1. Sample EC2 snapshot {} (seed {})",
        p(&snap),
        a.seed
    ));
    let stats = make_sample(
        &snap,
        &SampleSpec {
            size,
            data_fraction: 0.3,
            zero_fraction: 0.2,
            seed: a.seed,
        },
    )?;
    s.say(format!(
        "   {size} bytes: {} bytes of data, {} bytes of allocated zeros, the rest holes",
        stats.data_bytes, stats.zero_bytes
    ));

    s.say(format!(
        "2. ec2azure convert {} {} --manifest ...",
        p(&snap),
        p(&vhd)
    ));
    let src = open(&snap, None)?;
    let t = std::time::Instant::now();
    let report = convert(
        &*src,
        &vhd,
        &ConvertOptions {
            manifest: true,
            ..ConvertOptions::default()
        },
    )?;
    let manifest = report.manifest.clone().context("manifest missing")?;
    ec2azure::export::write_file_atomic(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
        true,
    )?;
    s.say(format!(
        "   {:.0} ms: virtual size {} (padded by {} zero bytes to a whole MiB), read {} bytes, \
         wrote {} bytes, root digest {}",
        t.elapsed().as_secs_f64() * 1000.0,
        report.virtual_size,
        report.padding,
        report.bytes_read,
        report.bytes_written,
        &manifest.root[..16]
    ));

    // Below 20 MiB a VHD is a fine page blob but too small for a managed-disk upload.
    let target = if report.virtual_size >= 20 << 20 {
        Target::ManagedDisk
    } else {
        Target::PageBlob
    };
    s.say(format!("3. ec2azure check: every Azure rule ({target:?})"));
    let c = check_file(&vhd, target)?;
    let failing: Vec<_> = c.failed().map(|r| r.rule).collect();
    s.check(c.ready, &format!("ready (failed rules: {failing:?})"));

    s.say("4. ec2azure compare: the VHD reads back as the snapshot plus zero padding");
    let back = open(&vhd, None)?;
    let cmp = compare(&*src, &*back, false, &NoProgress)?;
    s.check(cmp.identical, "identical content");
    let again = Manifest::compute(&*back)?;
    s.check(
        again.root == manifest.root,
        "manifest root recomputed from the VHD matches",
    );

    s.say("5. Independent oracle: qemu-img");
    match qemu_img(&["compare", "-f", "raw", "-F", "vpc", &p(&snap), &p(&vhd)]) {
        Some(o) => {
            s.check(
                o.status.success(),
                "qemu-img compare -f raw -F vpc: identical",
            );
            if let Some(i) = qemu_img(&["info", "-f", "vpc", "--output=json", &p(&vhd)]) {
                let v: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap_or_default();
                let vs = v["virtual-size"].as_u64();
                s.check(
                    vs == Some(report.virtual_size),
                    &format!(
                        "qemu-img info virtual-size {vs:?} = {}",
                        report.virtual_size
                    ),
                );
            }
            s.say("6. For contrast: qemu-img convert -O vpc -o subformat=fixed,force_size");
            let qvhd = dir.join("qemu.vhd");
            let o = qemu_img(&[
                "convert",
                "-f",
                "raw",
                "-O",
                "vpc",
                "-o",
                "subformat=fixed,force_size",
                &p(&snap),
                &p(&qvhd),
            ]);
            if o.is_some_and(|o| o.status.success()) {
                let q = check_file(&qvhd, target)?;
                let why: Vec<_> = q.failed().map(|r| r.azure_message.as_str()).collect();
                s.say(format!(
                    "   qemu-img's VHD is {} for Azure{}",
                    if q.ready { "ready" } else { "NOT ready" },
                    why.first().map(|m| format!(": {m}")).unwrap_or_default()
                ));
            }
        }
        None => s.say("   qemu-img not found: skipped"),
    }

    s.say("7. ec2azure convert --in-place on a copy: footer appended, no data copied");
    let copy = dir.join("inplace.raw");
    std::fs::copy(&snap, &copy).context("copying the sample")?;
    // Flush the copy first, so the timing below is the in-place conversion's own.
    std::fs::File::open(&copy)
        .and_then(|f| f.sync_all())
        .context("syncing the copy")?;
    let t = std::time::Instant::now();
    let r = ec2azure::convert_in_place(&copy, &ConvertOptions::default())?;
    s.say(format!(
        "   {:.1} ms, {} bytes written",
        t.elapsed().as_secs_f64() * 1000.0,
        r.bytes_written
    ));
    s.check(
        check_file(&copy, target)?.ready,
        "the converted copy is ready",
    );
    let cmp = compare(&*open(&copy, None)?, &*back, true, &NoProgress)?;
    s.check(cmp.identical, "and identical to the converted VHD");

    s.say("8. Recovery points: a replica of the VHD, 2 hours of simulated replication, failover points");
    recovery_points(&mut s, &*back, dir, target)?;

    s.say("9. ec2azure rehearse examples/aws-tutorial.toml: the tutorial, offline (test failover, cleanup, failover, commit, complete migration)");
    rehearse_tutorial(&mut s, dir)?;

    if a.dir.is_none() {
        s.say("(temporary files removed; use --dir DIR to keep them)");
    }
    if s.failed > 0 {
        bail!("{} demo check(s) failed", s.failed);
    }
    s.say("All checks passed.");
    Ok(ExitCode::SUCCESS)
}

/// Step 8: journal simulate → replica init/receive/process → points build and verify.
fn recovery_points(
    s: &mut Steps,
    base: &dyn ec2azure::DiskImage,
    dir: &Path,
    target: Target,
) -> Result<()> {
    use ec2azure::recovery::{self, Catalog, PointChoice, Policy, Replica, SimSpec};
    let journal = dir.join("journal");
    let replica = dir.join("replica");
    let _ = std::fs::remove_dir_all(&journal);
    let _ = std::fs::remove_dir_all(&replica);
    let (digests, _) = recovery::base_digests(base)?;
    let t = std::time::Instant::now();
    let sim = recovery::simulate(
        base,
        &digests,
        &journal,
        &SimSpec {
            duration_ms: 2 * 3_600_000,
            write_rate: 16 << 10,
            ..SimSpec::default()
        },
        &NoProgress,
    )?;
    s.say(format!(
        "   journal simulate: {} points ({} app-consistent), {} writes, {} bytes of journal, {:.0} ms",
        sim.points,
        sim.app_points,
        sim.writes,
        sim.journal_bytes,
        t.elapsed().as_secs_f64() * 1000.0
    ));
    let mut r = Replica::init(&replica, base, Policy::default(), &NoProgress)?;
    r.receive(&journal)?;
    let pr = r.process(&NoProgress)?;
    s.say(format!(
        "   replica process: {} bytes checked in {} ms, horizon at record {}",
        pr.bytes_checked, pr.elapsed_ms, pr.processed_seq
    ));
    let j = r.journal(false)?;
    let cat = Catalog::new(&j, &r.state().policy, Some(r.state().processed_seq));
    s.check(
        cat.check(&r.state().policy).ok(),
        "points check: RPO and app-consistent frequency met",
    );
    let app = cat
        .resolve(PointChoice::LatestApplicationConsistent)?
        .clone();
    let out = dir.join("point.vhd");
    let rbase = r.base()?;
    let b = recovery::build_point(&rbase, &j, app.seq, &out, &ConvertOptions::default())?;
    s.check(
        b.verified == Some(true),
        &format!(
            "points build latest-app-consistent ({} at {}) reproduces its marker's digest",
            app.id, app.time
        ),
    );
    s.check(
        check_file(&out, target)?.ready,
        "and the point's VHD is Azure-ready",
    );
    let t = std::time::Instant::now();
    let checks = recovery::check_points(&rbase, &digests, &j, &|_| true, &NoProgress)?;
    let good = checks.iter().filter(|c| c.matches == Some(true)).count();
    s.check(
        good == checks.len() && good as u64 == sim.points,
        &format!(
            "points verify: all {good} points reproduce their digests ({:.0} ms, one pass)",
            t.elapsed().as_secs_f64() * 1000.0
        ),
    );
    Ok(())
}

/// The tutorial's scenario, built in.
const TUTORIAL: &str = include_str!("../../../examples/aws-tutorial.toml");

/// Step 9: the tutorial rehearsed; the report's summary.
fn rehearse_tutorial(s: &mut Steps, dir: &Path) -> Result<()> {
    use ec2azure::site::rehearse::{RehearseOptions, rehearse};
    let scn = dir.join("aws-tutorial.toml");
    std::fs::write(&scn, TUTORIAL).with_context(|| format!("writing {}", scn.display()))?;
    let report = dir.join("rehearsal");
    let site = report.join("site");
    if site.exists() {
        std::fs::remove_dir_all(&site).with_context(|| format!("removing {}", site.display()))?;
    }
    let r = rehearse(
        &scn,
        &RehearseOptions {
            site_dir: site,
            ..RehearseOptions::default()
        },
        &NoProgress,
    )?;
    let files = r.report.write(&report)?;
    for line in r.report.text().lines().take(10) {
        s.say(format!("   {line}"));
    }
    s.check(r.met, "every objective met (RPO, RTO, every VM verified)");
    s.say(format!("   report: {}", files.html.display()));
    Ok(())
}
