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
    // The replica's base is a copy of the base: make it the same file, so the page cache holds
    // one copy for everyone (qemu's chain reads the base too).
    let copy = dir.join("base-1.raw");
    std::fs::remove_file(&copy)?;
    std::fs::hard_link(base, &copy)?;
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

/// Every regular file under `path` (or `path` itself).
fn files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().flat_map(|e| files(&e.path())).collect())
        .unwrap_or_default()
}

/// Drops `paths` from the page cache (after writing back), so the inputs of one contender do
/// not push another's out: the whole set is larger than this machine's memory.
fn evict(paths: &[&Path]) {
    let _ = Command::new("sync").status();
    for p in paths.iter().flat_map(|p| files(p)) {
        if let Ok(f) = std::fs::File::open(&p) {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid descriptor; advice only.
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
}

/// Reads `paths` once (untimed), so each contender starts with its inputs cached.
fn warm(paths: &[&Path]) {
    for p in paths.iter().flat_map(|p| files(p)) {
        if let Ok(mut f) = std::fs::File::open(&p) {
            let _ = std::io::copy(&mut f, &mut std::io::sink());
        }
    }
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
    let dir = std::fs::canonicalize(&b.dir)?;
    let base = dir.join("base.raw");
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
    let once = dir.join("r-once");
    let many = dir.join(format!("r-x{}", b.rewrites));
    say("making the replicas (journal written once / rewritten)".into());
    rewrite_replica(&once, &base, at, b.region, 1)?;
    rewrite_replica(&many, &base, at, b.region, b.rewrites)?;
    let qemu = Command::new("qemu-img").arg("--version").output().is_ok();
    let chain = if qemu {
        say(format!("making the {}-overlay qcow2 chain", b.overlays));
        Some(qcow2_chain(
            &dir, &base, at, b.region, b.rewrites, b.overlays,
        )?)
    } else {
        say("qemu-img not found: the qcow2 chain is not timed".into());
        None
    };
    // The built point as raw, for the floor's "write the image once".
    let point_raw = dir.join("point.raw");
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
    let out = dir.join("out.vhd").display().to_string();
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
    // Everything together is larger than memory: each group runs with its own inputs cached and
    // the others' evicted.
    let chain_files: Vec<PathBuf> = (0..b.overlays)
        .map(|i| dir.join(format!("ov{i}.qcow2")))
        .collect();
    let chain_refs: Vec<&Path> = chain_files.iter().map(PathBuf::as_path).collect();
    let vj = dir.join("r-24h");
    let groups: [(&str, Vec<&Path>, Vec<&Path>); 3] = [
        (
            "once",
            [&chain_refs[..], &[many.as_path(), vj.as_path()]].concat(),
            vec![base.as_path(), once.as_path(), point_raw.as_path()],
        ),
        (
            "rewritten",
            vec![once.as_path(), point_raw.as_path()],
            vec![base.as_path(), many.as_path()],
        ),
        (
            "qemu",
            vec![many.as_path()],
            [&chain_refs[..], &[base.as_path()]].concat(),
        ),
    ];
    let mut med = std::collections::HashMap::new();
    for (g, cold, hot) in groups {
        let picked: Vec<Case> = cases
            .iter()
            .filter(|c| match g {
                "once" => c.0 == "floor" || c.1.contains("written once"),
                "rewritten" => c.1.contains("rewritten"),
                _ => c.0 == "qemu",
            })
            .cloned()
            .collect();
        if picked.is_empty() {
            continue;
        }
        evict(&cold);
        warm(&hot);
        med.extend(run_cases(
            &label,
            &picked,
            &out,
            b.runs,
            &say,
            &mut timings,
        )?);
    }
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
    evict(&[many.as_path(), once.as_path(), point_raw.as_path()]);
    evict(&chain_refs);
    if !vj.join("replica.json").exists() {
        say("simulating 24 hours (288 points) and making its replica".into());
        let _ = std::fs::remove_dir_all(&vj);
        let j = dir.join("j-24h");
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
        let (bs, js, vs) = (
            base.display().to_string(),
            j.display().to_string(),
            vj.display().to_string(),
        );
        for args in [
            s(&["replica", "init", "-q", "--base", &bs, &vs]),
            s(&["replica", "receive", "-q", &js, &vs]),
            s(&["replica", "process", "-q", &vs]),
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
    warm(&[vj.as_path(), base.as_path()]);
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
