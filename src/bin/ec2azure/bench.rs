//! `ec2azure bench convert`: times ec2azure against `qemu-img convert` and `cp --sparse=always`
//! on the same seeded inputs in the same run, and prints medians and ratios.
//!
//! Like is compared with like: qemu-img does not flush its output by default (cache mode
//! "unsafe"), so ec2azure's durable default is compared with `qemu-img -t writeback` (which
//! flushes) and `ec2azure --no-sync` with qemu-img's default. Each round runs every command once,
//! in a rotating order; the output is deleted and `sync` is run between commands (untimed), so
//! no command pays for another's write-back. The page cache is warm for all of them.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ec2azure::sample::{SampleSpec, make_sample};
use serde::Serialize;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Raw → fixed VHD conversion against qemu-img and cp.
    Convert(ConvertBench),
    /// Building recovery points (a journal written once vs rewritten ten times) against the
    /// physical floor and qemu-img on the equivalent qcow2 overlay chain; verifying all 288
    /// points of a day against building each separately.
    Points(crate::bench_points::PointsBench),
    /// Page-blob upload of a sparse VHD to the in-process fake and to a Blob endpoint (Azurite),
    /// against the naive way (every page, one stream).
    Upload(crate::upload::UploadBench),
    /// Replication of 10, 50 and 200 machines over a simulated day: wall time, peak RSS and
    /// site size per machine, and how they grow with the number of machines.
    Replication(crate::bench_replication::ReplicationBench),
    /// Rehearsals: the three-tier example, and N machines in P plans replicating for a
    /// simulated span then failed over: wall time, peak RSS, the share building and uploading.
    Rehearse(crate::bench_rehearse::RehearseBench),
}

#[derive(Args)]
pub struct ConvertBench {
    /// Folder for the inputs and outputs (on the file system you care about).
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    /// Rounds per command (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Size of the sparse input (30% data, a fifth of it allocated zeros).
    #[arg(long, default_value = "4G", value_parser = crate::parse_size)]
    sparse_size: u64,
    /// Size of the fully allocated input.
    #[arg(long, default_value = "2G", value_parser = crate::parse_size)]
    full_size: u64,
    /// Size of the sparse raw file for the --in-place timing.
    #[arg(long, default_value = "100G", value_parser = crate::parse_size)]
    in_place_size: u64,
    /// Run only the cases of one input: raw (the raw inputs and --in-place), vhdx, vhd,
    /// qcow2 or vmdk (stream-optimized, plain and compressible data).
    #[arg(long, value_name = "INPUT")]
    only: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Writes a copy of the raw file `from` to `to` with every byte masked to its low four bits:
/// the same layout (holes stay holes), but data that deflates to about half, as real disks do
/// (the seeded sample is random bytes, which deflate stores as they are).
fn compressible_copy(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let src = ec2azure::image::RawImage::open(from)?;
    let out = std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    out.set_len(ec2azure::DiskImage::len(&src))?;
    let mut buf = vec![0u8; 1 << 20];
    for e in ec2azure::DiskImage::extents(&src)?
        .iter()
        .filter(|e| e.kind.is_data())
    {
        let mut pos = e.offset;
        while pos < e.end() {
            let n = ((e.end() - pos) as usize).min(buf.len());
            ec2azure::DiskImage::read_exact_at(&src, &mut buf[..n], pos)?;
            if buf[..n].iter().any(|&b| b != 0) {
                for b in &mut buf[..n] {
                    *b &= 0x0f;
                }
                out.write_all_at(&buf[..n], pos)?;
            }
            pos += n as u64;
        }
    }
    Ok(())
}

#[derive(Serialize)]
pub(crate) struct Timing {
    pub(crate) input: String,
    pub(crate) command: String,
    pub(crate) group: &'static str,
    pub(crate) median_s: f64,
    pub(crate) min_s: f64,
    pub(crate) max_s: f64,
    pub(crate) runs: Vec<f64>,
}

#[derive(Serialize)]
pub(crate) struct Ratio {
    pub(crate) input: String,
    pub(crate) what: String,
    pub(crate) ours: String,
    pub(crate) anchor: String,
    pub(crate) ratio: f64,
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn sync_all() {
    let _ = Command::new("sync").status();
}

fn time_cmd(argv: &[String]) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", argv[0]))?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(d)
}

pub(crate) type Case = (&'static str, String, Vec<String>);

/// Runs every case `runs` times in rotating order (output deleted and `sync` run before each,
/// untimed), records the timings, and returns each command's median.
pub(crate) fn run_cases(
    label: &str,
    cases: &[Case],
    out: &str,
    runs: usize,
    say: &dyn Fn(String),
    timings: &mut Vec<Timing>,
) -> Result<std::collections::HashMap<String, f64>> {
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..runs {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let _ = std::fs::remove_file(out);
            sync_all();
            all[i].push(time_cmd(&cases[i].2)?.as_secs_f64());
        }
        say(format!("{label}: round {}/{runs} done", round + 1));
    }
    let _ = std::fs::remove_file(out);
    let mut med = std::collections::HashMap::new();
    for ((group, name, _), r) in cases.iter().zip(all) {
        med.insert(name.clone(), median(&r));
        timings.push(Timing::new(label, name, group, r));
    }
    Ok(med)
}

impl Ratio {
    pub(crate) fn new(input: &str, what: &str, ours: &str, anchor: &str, ratio: f64) -> Self {
        Ratio {
            input: input.into(),
            what: what.into(),
            ours: ours.into(),
            anchor: anchor.into(),
            ratio,
        }
    }
}

impl Timing {
    fn new(input: &str, command: &str, group: &'static str, runs: Vec<f64>) -> Self {
        Timing {
            input: input.into(),
            command: command.into(),
            group,
            median_s: median(&runs),
            min_s: runs.iter().copied().fold(f64::INFINITY, f64::min),
            max_s: runs.iter().copied().fold(0.0, f64::max),
            runs,
        }
    }
}

pub fn run(cmd: BenchCommand, quiet: bool) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Convert(b) => convert(b, quiet),
        BenchCommand::Points(b) => crate::bench_points::run(b, quiet),
        BenchCommand::Upload(b) => crate::upload::bench_upload(b, quiet),
        BenchCommand::Replication(b) => crate::bench_replication::run(b, quiet),
        BenchCommand::Rehearse(b) => crate::bench_rehearse::run(b, quiet),
    }
}

fn convert(b: ConvertBench, quiet: bool) -> Result<ExitCode> {
    if b.runs == 0 {
        bail!("--runs must be at least 1");
    }
    std::fs::create_dir_all(&b.dir).with_context(|| format!("creating {}", b.dir.display()))?;
    let me = std::env::current_exe().context("finding the ec2azure binary")?;
    let me = me.display().to_string();
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let qemu = have("qemu-img");
    if !qemu {
        say("qemu-img not found: only ec2azure and cp are timed".into());
    }
    let inputs = [
        (
            "sparse",
            SampleSpec {
                size: b.sparse_size,
                data_fraction: 0.3,
                zero_fraction: 0.2,
                seed: 11,
            },
        ),
        (
            "full",
            SampleSpec {
                size: b.full_size,
                data_fraction: 1.0,
                zero_fraction: 0.0,
                seed: 12,
            },
        ),
    ];
    let only = b.only.as_deref();
    if let Some(o) = only
        && !["raw", "vhdx", "vhd", "qcow2", "vmdk"].contains(&o)
    {
        bail!("--only {o:?}: expected raw, vhdx, vhd, qcow2 or vmdk");
    }
    let want = |what: &str| only.is_none_or(|o| o == what);
    let mut timings = Vec::new();
    let mut ratios = Vec::new();
    let mut identical = Vec::new();
    for (name, spec) in inputs {
        if name == "full" && !want("raw") {
            continue;
        }
        let input = b.dir.join(format!("{name}.raw"));
        say(format!(
            "making {} ({} bytes, seed {})",
            input.display(),
            spec.size,
            spec.seed
        ));
        let stats = make_sample(&input, &spec)?;
        let label = format!(
            "{name} {} ({:.0}% data)",
            crate::human(spec.size),
            100.0 * (stats.data_bytes + stats.zero_bytes) as f64 / spec.size as f64
        );
        let out = b.dir.join(format!("{name}.out.vhd")).display().to_string();
        let inp = input.display().to_string();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
        let mut cases: Vec<(&'static str, String, Vec<String>)> = vec![
            (
                "durable",
                "ec2azure convert".into(),
                s(&[&me, "convert", "-q", &inp, &out]),
            ),
            (
                "no-sync",
                "ec2azure convert --no-sync".into(),
                s(&[&me, "convert", "-q", "--no-sync", &inp, &out]),
            ),
            (
                "manifest",
                "ec2azure convert --no-sync --manifest".into(),
                s(&[
                    &me,
                    "convert",
                    "-q",
                    "--no-sync",
                    "--manifest",
                    &format!("{out}.json"),
                    &inp,
                    &out,
                ]),
            ),
            (
                "no-sync",
                "ec2azure convert --no-sync -S 64K".into(),
                s(&[&me, "convert", "-q", "--no-sync", "-S", "64K", &inp, &out]),
            ),
            (
                "no-sync",
                "cp --sparse=always".into(),
                s(&["cp", "--sparse=always", &inp, &out]),
            ),
        ];
        if qemu {
            let q = |extra: &[&str]| {
                let mut v = s(&["qemu-img", "convert"]);
                v.extend(s(extra));
                v.extend(s(&[
                    "-f",
                    "raw",
                    "-O",
                    "vpc",
                    "-o",
                    "subformat=fixed,force_size",
                    &inp,
                    &out,
                ]));
                v
            };
            cases.push(("no-sync", "qemu-img convert".into(), q(&[])));
            cases.push(("no-sync", "qemu-img convert -W".into(), q(&["-W"])));
            cases.push((
                "no-sync",
                "qemu-img convert -W -S 64k".into(),
                q(&["-W", "-S", "64k"]),
            ));
            cases.push((
                "durable",
                "qemu-img convert -t writeback".into(),
                q(&["-t", "writeback"]),
            ));
            cases.push((
                "durable",
                "qemu-img convert -t writeback -W".into(),
                q(&["-t", "writeback", "-W"]),
            ));
        }
        if !want("raw") {
            cases.clear();
        }
        let med = run_cases(&label, &cases, &out, b.runs, &say, &mut timings)?;
        let _ = std::fs::remove_file(format!("{out}.json"));
        let best = |names: &[&str]| {
            names
                .iter()
                .filter_map(|n| med.get(*n).map(|&m| (n.to_string(), m)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
        };
        let mut ratio = |what: &str, ours: &str, anchor: Option<(String, f64)>| {
            if let (Some(&o), Some((an, a))) = (med.get(ours), anchor) {
                ratios.push(Ratio {
                    input: label.clone(),
                    what: what.into(),
                    ours: ours.into(),
                    anchor: an,
                    ratio: o / a,
                });
            }
        };
        ratio(
            "durable vs qemu-img's best flushing run",
            "ec2azure convert",
            best(&[
                "qemu-img convert -t writeback",
                "qemu-img convert -t writeback -W",
            ]),
        );
        ratio(
            "no sync vs qemu-img's best default run",
            "ec2azure convert --no-sync",
            best(&["qemu-img convert", "qemu-img convert -W"]),
        );
        ratio(
            "64K holes, no sync vs qemu-img -W -S 64k",
            "ec2azure convert --no-sync -S 64K",
            best(&["qemu-img convert -W -S 64k"]),
        );
        ratio(
            "no sync vs cp --sparse=always",
            "ec2azure convert --no-sync",
            best(&["cp --sparse=always"]),
        );
        ratio(
            "manifest cost (with / without)",
            "ec2azure convert --no-sync --manifest",
            best(&["ec2azure convert --no-sync"]),
        );
        // The same sparse data in the container formats (made untimed by qemu-img), converted
        // to a fixed VHD by both tools.
        if qemu && name == "sparse" {
            let masked = b.dir.join("sparse.compressible.raw");
            for (fmt, qfmt, ext, key, create) in [
                ("VHDX", "vhdx", "vhdx", "vhdx", ""),
                ("dynamic VHD", "vpc", "dyn.vhd", "vhd", ""),
                ("qcow2", "qcow2", "qcow2", "qcow2", ""),
                (
                    "stream-optimized VMDK",
                    "vmdk",
                    "stream.vmdk",
                    "vmdk",
                    "subformat=streamOptimized",
                ),
                (
                    "stream-optimized VMDK, compressible data",
                    "vmdk",
                    "stream-c.vmdk",
                    "vmdk",
                    "subformat=streamOptimized",
                ),
            ] {
                if !want(key) {
                    continue;
                }
                let container = b.dir.join(format!("sparse.{ext}"));
                let cin = container.display().to_string();
                let from = if fmt.contains("compressible") {
                    say(format!(
                        "making {} (data masked to 4 bits)",
                        masked.display()
                    ));
                    compressible_copy(&input, &masked)?;
                    masked.display().to_string()
                } else {
                    inp.clone()
                };
                say(format!("making {cin} with qemu-img (untimed)"));
                let mut mk = s(&["qemu-img", "convert", "-f", "raw", "-O", qfmt]);
                if !create.is_empty() {
                    mk.extend(s(&["-o", create]));
                }
                mk.extend(s(&[&from, &cin]));
                time_cmd(&mk)?;
                // The VHD made from the container is the VHD made from its raw source, byte
                // for byte (same id and time).
                if key == "vmdk" {
                    let a = b.dir.join("id-check-a.vhd").display().to_string();
                    let c = b.dir.join("id-check-b.vhd").display().to_string();
                    let id = [
                        "--uuid",
                        "00000000-0000-4000-8000-000000000001",
                        "--timestamp",
                        "1700000000",
                    ];
                    let mut ca = s(&[&me, "convert", "-q", "--no-sync"]);
                    ca.extend(s(&id));
                    let mut cb = ca.clone();
                    ca.extend(s(&[&from, &a]));
                    cb.extend(s(&[&cin, &c]));
                    time_cmd(&ca)?;
                    time_cmd(&cb)?;
                    let same = std::process::Command::new("cmp")
                        .args(["-s", &a, &c])
                        .status()
                        .is_ok_and(|st| st.success());
                    say(format!("{fmt} → VHD byte-identical to raw → VHD: {same}"));
                    identical.push(serde_json::json!({ "input": fmt, "identical": same }));
                    let _ = std::fs::remove_file(&a);
                    let _ = std::fs::remove_file(&c);
                    if !same {
                        bail!(
                            "{fmt}: the VHD made from {cin} differs from the one made from {from}"
                        );
                    }
                }
                let qc = |extra: &[&str]| {
                    let mut v = s(&["qemu-img", "convert"]);
                    v.extend(s(extra));
                    v.extend(s(&[
                        "-f",
                        qfmt,
                        "-O",
                        "vpc",
                        "-o",
                        "subformat=fixed,force_size",
                        &cin,
                        &out,
                    ]));
                    v
                };
                let ours = format!("ec2azure convert --no-sync ({fmt} in)");
                let ccases: Vec<(&'static str, String, Vec<String>)> = vec![
                    (
                        "no-sync",
                        ours.clone(),
                        s(&[&me, "convert", "-q", "--no-sync", &cin, &out]),
                    ),
                    ("no-sync", format!("qemu-img convert ({fmt} in)"), qc(&[])),
                    (
                        "no-sync",
                        format!("qemu-img convert -W ({fmt} in)"),
                        qc(&["-W"]),
                    ),
                ];
                let cl = format!("{label} as {fmt}");
                let m = run_cases(&cl, &ccases, &out, b.runs, &say, &mut timings)?;
                let anchor = [&ccases[1].1, &ccases[2].1]
                    .into_iter()
                    .filter_map(|n| m.get(n).map(|&v| (n.clone(), v)))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                if let (Some(&o), Some((an, a))) = (m.get(&ours), anchor) {
                    ratios.push(Ratio {
                        input: cl,
                        what: format!("{fmt} → fixed VHD, no sync vs qemu-img's best"),
                        ours,
                        anchor: an,
                        ratio: o / a,
                    });
                }
                let _ = std::fs::remove_file(&container);
            }
            let _ = std::fs::remove_file(&masked);
        }
        let _ = std::fs::remove_file(&input);
    }

    // --in-place on a big sparse raw: O(1), whatever the size.
    let big = b.dir.join("inplace.raw");
    let mut ip = Vec::new();
    for _ in 0..(if want("raw") { b.runs } else { 0 }) {
        let f = std::fs::File::create(&big).context("creating the in-place input")?;
        f.set_len(b.in_place_size)
            .context("sizing the in-place input")?;
        drop(f);
        sync_all();
        let argv = vec![
            me.clone(),
            "convert".into(),
            "-q".into(),
            "--in-place".into(),
            big.display().to_string(),
        ];
        ip.push(time_cmd(&argv)?.as_secs_f64());
    }
    let _ = std::fs::remove_file(&big);
    if !ip.is_empty() {
        timings.push(Timing::new(
            &format!("sparse raw {}", crate::human(b.in_place_size)),
            "ec2azure convert --in-place",
            "durable",
            ip,
        ));
    }

    if b.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "runs": b.runs, "timings": timings, "ratios": ratios, "identical": identical,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<34} {:<40} {:>9} {:>9} {:>9}",
        "input", "command", "median s", "min s", "max s"
    );
    for t in &timings {
        println!(
            "{:<34} {:<40} {:>9.3} {:>9.3} {:>9.3}",
            t.input, t.command, t.median_s, t.min_s, t.max_s
        );
    }
    println!();
    println!("ratios of medians (below 1.0: ec2azure is faster)");
    for r in &ratios {
        println!(
            "{:<34} {:<40} {:>6.2}  ({} / {})",
            r.input, r.what, r.ratio, r.ours, r.anchor
        );
    }
    Ok(ExitCode::SUCCESS)
}
