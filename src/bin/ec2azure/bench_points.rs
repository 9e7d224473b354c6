//! `ec2azure bench points`: building a recovery point, and verifying every point, against the
//! physical floor and against qemu-img materialising the equivalent qcow2 overlay chain.
//!
//! Inputs (made once in `--dir`, seeded):
//! - a sparse base (4 GiB, 30% data);
//! - journal "once": a region (1 GiB) written once in 1 MiB writes, then a marker;
//! - journal "rewrites": the same region written `--rewrites` (10) times over, then a marker;
//! - a qcow2 chain over the base with the same rewrites spread over `--overlays` (24) overlays;
//! - a 24-hour simulated journal (288 crash-consistent points) for `points verify`.
//!
//! Timed, each median of `--runs` rounds in rotating order with the output deleted and `sync`
//! run between commands (untimed), warm page cache, no final sync for anyone:
//! `points build` from each replica, `qemu-img convert` of the chain's top, the floor (reading
//! the once-journal's files + converting the built point from a raw file, i.e. writing the image
//! once), `points verify` of all 288 points, and building single points of that journal (times
//! 288 gives the cost of building each point separately).

use crate::bench::{Case, Ratio, Timing, median, run_cases};
use anyhow::{Context, Result, bail};
use clap::Args;
use ec2azure::journal::{Consistency, JournalWriter, Marker, WriterOptions};
use ec2azure::recovery::{Policy, Replica};
use ec2azure::sample::{SampleSpec, SplitMix64, make_sample};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Args)]
pub struct PointsBench {
    /// Folder for the inputs and outputs.
    #[arg(long, default_value = "target/bench-points")]
    dir: PathBuf,
    /// Rounds per command (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Size of the base disk.
    #[arg(long, default_value = "4G", value_parser = crate::parse_size)]
    size: u64,
    /// Size of the region the journals write.
    #[arg(long, default_value = "1G", value_parser = crate::parse_size)]
    region: u64,
    /// How many times the rewrite journal writes the region.
    #[arg(long, default_value_t = 10)]
    rewrites: u64,
    /// Overlays in the qcow2 chain.
    #[arg(long, default_value_t = 24)]
    overlays: u64,
    /// Single points built separately (their median, times the number of points, estimates
    /// building every point separately).
    #[arg(long, default_value_t = 3)]
    separate: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

const WRITE: u64 = 1 << 20;
const T0: u64 = 1_767_225_600_000;

/// A replica of `base` whose segments are a journal writing `region` bytes at `at`, `passes`
/// times over (different data each pass), then one marker.
fn rewrite_replica(dir: &Path, base: &Path, at: u64, region: u64, passes: u64) -> Result<()> {
    if dir.join("replica.json").exists() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    let img = ec2azure::open(base, None)?;
    let r = Replica::init(dir, &*img, Policy::default(), &ec2azure::NoProgress)?;
    let (_, root) = ec2azure::recovery::base_digests(&*img)?;
    let mut w = JournalWriter::create(
        &dir.join("segments"),
        ec2azure::journal::JournalInfo {
            disk_id: [0xbe; 16],
            disk_size: img.len(),
            sector_size: 512,
            base_root: root,
        },
        WriterOptions {
            sync: false,
            created_ms: T0,
            ..WriterOptions::default()
        },
    )?;
    let mut buf = vec![0u8; WRITE as usize];
    let mut t = T0;
    for pass in 0..passes {
        for k in 0..region / WRITE {
            SplitMix64(pass * 1_000_003 + k).fill(&mut buf);
            t += 1;
            w.write(t, at + k * WRITE, &buf)?;
        }
    }
    w.marker(
        t + 1,
        &Marker {
            consistency: Consistency::Crash,
            digest: None,
            group: None,
            label: String::new(),
        },
    )?;
    w.finish()?;
    let mut r = Replica::open(r.dir())?;
    r.process(&ec2azure::NoProgress)?;
    Ok(())
}

/// The qcow2 chain: `overlays` overlays over the raw base, the rewrites spread over them in
/// order (qemu-io `write -P`).
fn qcow2_chain(
    dir: &Path,
    base: &Path,
    at: u64,
    region: u64,
    passes: u64,
    overlays: u64,
) -> Result<PathBuf> {
    let top = dir.join(format!("ov{}.qcow2", overlays - 1));
    if top.exists() {
        return Ok(top);
    }
    let writes: Vec<(u64, u64)> = (0..passes)
        .flat_map(|p| (0..region / WRITE).map(move |k| (p, at + k * WRITE)))
        .collect();
    let per = writes.len().div_ceil(overlays as usize);
    let mut backing = (base.to_path_buf(), "raw");
    for i in 0..overlays {
        let ov = dir.join(format!("ov{i}.qcow2"));
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-b"])
            .arg(&backing.0)
            .args(["-F", backing.1])
            .arg(&ov)
            .status()?;
        if !st.success() {
            bail!("qemu-img create failed");
        }
        // One qemu-io per overlay; writes of the same pass and neighbouring offsets coalesce.
        let mut cmds = Vec::new();
        let chunk = writes.iter().skip(i as usize * per).take(per);
        let mut run: Option<(u64, u64, u64)> = None; // (pass, start, len)
        for &(p, off) in chunk {
            match run {
                Some((rp, s, l)) if rp == p && s + l == off && l < (64 << 20) => {
                    run = Some((rp, s, l + WRITE))
                }
                Some((rp, s, l)) => {
                    cmds.push(format!("write -P {} {s} {l}", 1 + rp % 250));
                    run = Some((p, off, WRITE));
                }
                None => run = Some((p, off, WRITE)),
            }
        }
        if let Some((rp, s, l)) = run {
            cmds.push(format!("write -P {} {s} {l}", 1 + rp % 250));
        }
        let mut c = Command::new("qemu-io");
        c.args(["-f", "qcow2"]);
        for x in &cmds {
            c.arg("-c").arg(x);
        }
        let st = c.arg(&ov).stdout(std::process::Stdio::null()).status()?;
        if !st.success() {
            bail!("qemu-io failed on {}", ov.display());
        }
        backing = (ov, "qcow2");
    }
    Ok(top)
}

pub fn run(b: PointsBench, quiet: bool) -> Result<ExitCode> {
    if b.runs == 0 || b.rewrites == 0 || b.overlays == 0 {
        bail!("--runs, --rewrites and --overlays must be at least 1");
    }
    if b.region > b.size / 2 || b.region < WRITE {
        bail!("--region must be between 1 MiB and half the disk");
    }
    std::fs::create_dir_all(&b.dir).with_context(|| format!("creating {}", b.dir.display()))?;
    let me = std::env::current_exe()?.display().to_string();
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let base = b.dir.join("base.raw");
    if !base.exists() {
        say(format!("making {}", base.display()));
        make_sample(
            &base,
            &SampleSpec {
                size: b.size,
                data_fraction: 0.3,
                zero_fraction: 0.2,
                seed: 21,
            },
        )?;
    }
    let at = (b.size / 4) / WRITE * WRITE;
    let once = b.dir.join("r-once");
    let many = b.dir.join(format!("r-x{}", b.rewrites));
    say("making the replicas (journal written once / rewritten)".into());
    rewrite_replica(&once, &base, at, b.region, 1)?;
    rewrite_replica(&many, &base, at, b.region, b.rewrites)?;
    let qemu = Command::new("qemu-img").arg("--version").output().is_ok();
    let chain = if qemu {
        say(format!("making the {}-overlay qcow2 chain", b.overlays));
        Some(qcow2_chain(
            &b.dir, &base, at, b.region, b.rewrites, b.overlays,
        )?)
    } else {
        say("qemu-img not found: the qcow2 chain is not timed".into());
        None
    };
    // The built point as raw, for the floor's "write the image once".
    let point_raw = b.dir.join("point.raw");
    if !point_raw.exists() {
        let st = Command::new(&me)
            .args([
                "points",
                "build",
                "-q",
                "--no-sync",
                "-O",
                "raw",
                "--point",
                "latest-processed",
                "--replica",
            ])
            .arg(&once)
            .arg(&point_raw)
            .status()?;
        if !st.success() {
            bail!("building the reference point failed");
        }
    }
    let out = b.dir.join("out.vhd").display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let seg_glob: Vec<String> = std::fs::read_dir(once.join("segments"))?
        .filter_map(|e| e.ok().map(|e| e.path().display().to_string()))
        .collect();
    let mut cat = s(&["cat"]);
    cat.extend(seg_glob);
    let mut cases: Vec<Case> = vec![
        (
            "build",
            "points build (written once)".into(),
            s(&[
                &me,
                "points",
                "build",
                "-q",
                "--no-sync",
                "--point",
                "latest-processed",
                "--replica",
                &once.display().to_string(),
                &out,
            ]),
        ),
        (
            "build",
            format!("points build (rewritten {}x)", b.rewrites),
            s(&[
                &me,
                "points",
                "build",
                "-q",
                "--no-sync",
                "--point",
                "latest-processed",
                "--replica",
                &many.display().to_string(),
                &out,
            ]),
        ),
        ("floor", "read the journal once (cat)".into(), {
            let mut v = s(&["sh", "-c"]);
            v.push(format!("{} > /dev/null", cat.join(" ")));
            v
        }),
        (
            "floor",
            "write the image once (convert the built point)".into(),
            s(&[
                &me,
                "convert",
                "-q",
                "--no-sync",
                &point_raw.display().to_string(),
                &out,
            ]),
        ),
    ];
    if let Some(top) = &chain {
        let top = top.display().to_string();
        cases.push((
            "qemu",
            format!("qemu-img convert ({} overlays) -W", b.overlays),
            s(&[
                "qemu-img",
                "convert",
                "-W",
                "-O",
                "vpc",
                "-o",
                "subformat=fixed,force_size",
                &top,
                &out,
            ]),
        ));
        cases.push((
            "qemu",
            format!("qemu-img convert ({} overlays)", b.overlays),
            s(&[
                "qemu-img",
                "convert",
                "-O",
                "vpc",
                "-o",
                "subformat=fixed,force_size",
                &top,
                &out,
            ]),
        ));
    }
    let mut timings: Vec<Timing> = Vec::new();
    let short = |n: u64| {
        if n >= 1 << 30 {
            format!("{} GiB", n >> 30)
        } else {
            format!("{} MiB", n >> 20)
        }
    };
    let label = format!("{} base, {} region", short(b.size), short(b.region));
    let med = run_cases(&label, &cases, &out, b.runs, &say, &mut timings)?;
    let get = |n: &str| med.get(n).copied().unwrap_or(f64::NAN);
    let once_t = get("points build (written once)");
    let many_t = get(&format!("points build (rewritten {}x)", b.rewrites));
    let floor =
        get("read the journal once (cat)") + get("write the image once (convert the built point)");
    let mut ratios = vec![
        Ratio::new(
            &label,
            "rewritten / written once",
            &format!("rewritten {}x", b.rewrites),
            "written once",
            many_t / once_t,
        ),
        Ratio::new(
            &label,
            "written once / floor (read journal + write image)",
            "points build",
            "floor",
            once_t / floor,
        ),
        Ratio::new(
            &label,
            "rewritten / floor",
            "points build",
            "floor",
            many_t / floor,
        ),
    ];
    if chain.is_some() {
        let q = get(&format!("qemu-img convert ({} overlays) -W", b.overlays))
            .min(get(&format!("qemu-img convert ({} overlays)", b.overlays)));
        ratios.push(Ratio::new(
            &label,
            "rewritten vs qemu-img's best on the chain",
            "points build",
            "qemu-img",
            many_t / q,
        ));
    }

    // Verification of every point of a 24-hour journal against building each separately.
    let vj = b.dir.join("r-24h");
    if !vj.join("replica.json").exists() {
        say("simulating 24 hours (288 points) and making its replica".into());
        let _ = std::fs::remove_dir_all(&vj);
        let j = b.dir.join("j-24h");
        let _ = std::fs::remove_dir_all(&j);
        let st = Command::new(&me)
            .args([
                "journal",
                "simulate",
                "-q",
                "--seed",
                "5",
                "--duration",
                "24h",
                "--write-rate",
                "16K",
                "--base",
            ])
            .arg(&base)
            .arg(&j)
            .status()?;
        if !st.success() {
            bail!("journal simulate failed");
        }
        for args in [
            vec![
                "replica".into(),
                "init".into(),
                "-q".into(),
                "--base".into(),
                base.display().to_string(),
                vj.display().to_string(),
            ],
            vec![
                "replica".into(),
                "receive".into(),
                "-q".into(),
                j.display().to_string(),
                vj.display().to_string(),
            ],
            vec![
                "replica".into(),
                "process".into(),
                "-q".into(),
                vj.display().to_string(),
            ],
        ] {
            if !Command::new(&me).args(&args).status()?.success() {
                bail!("ec2azure {} failed", args.join(" "));
            }
        }
        let _ = std::fs::remove_dir_all(&j);
    }
    let vjs = vj.display().to_string();
    let mut vcases: Vec<Case> = vec![(
        "verify",
        "points verify (all 288)".into(),
        s(&[&me, "points", "verify", "-q", "--replica", &vjs]),
    )];
    for k in 0..b.separate {
        let t = format!("2026-01-01T{:02}:00:00Z", 4 + 8 * k % 20);
        vcases.push((
            "separate",
            format!("points build at {t}"),
            s(&[
                &me,
                "points",
                "build",
                "-q",
                "--no-sync",
                "-O",
                "raw",
                "--point",
                &t,
                "--replica",
                &vjs,
                &out,
            ]),
        ));
    }
    let vlabel = "24 h journal, 288 points".to_string();
    let vmed = run_cases(&vlabel, &vcases, &out, b.runs, &say, &mut timings)?;
    let verify_t = vmed
        .get("points verify (all 288)")
        .copied()
        .unwrap_or(f64::NAN);
    let per: Vec<f64> = vmed
        .iter()
        .filter(|(k, _)| k.starts_with("points build"))
        .map(|(_, v)| *v)
        .collect();
    let separately = median(&per) * 288.0;
    ratios.push(Ratio::new(
        &vlabel,
        "verify all vs build each separately (288 x median single build)",
        "points verify",
        "separate builds",
        verify_t / separately,
    ));

    if b.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "timings": timings, "ratios": ratios })
            )?
        );
    } else {
        for t in &timings {
            println!(
                "{:<28} {:<55} median {:>8.3} s  (min {:.3}, max {:.3})",
                t.input, t.command, t.median_s, t.min_s, t.max_s
            );
        }
        println!("floor (read journal once + write image once): {floor:.3} s");
        println!("building each of 288 points separately (estimated): {separately:.1} s");
        for r in &ratios {
            println!("{:<28} {:<62} {:.3}", r.input, r.what, r.ratio);
        }
    }
    Ok(ExitCode::SUCCESS)
}
