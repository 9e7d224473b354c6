//! The rehearsal report in a real browser: a report written from a site holding what a
//! rehearsal leaves (two machines' RPO over six hours, their jobs with a failed task, a test
//! failover and a failover each, a plan's job) is rendered by headless Chromium to a PNG; the
//! PNG is decoded here (chunks and CRCs, zlib, every row's filter) and must show the page's
//! timeline: enough non-white pixels, the replication band's teal and the failed task's red.
//! Skipped (or failed under EC2AZURE_REQUIRE_ORACLES) without Chromium: `$EC2AZURE_CHROMIUM`,
//! else `chromium` or `chromium-browser` on PATH (scripts/install-test-deps.sh installs
//! Debian's).

use ec2azure::site::jobs::{Durations, Job, job_error};
use ec2azure::site::model::{
    FailoverRecord, ItemHistory, PolicyDetails, ReplicationPolicy, RpoSample, Verification,
};
use ec2azure::site::report::{ObjectiveOutcome, RehearsalInfo, Report, StepOutcome};
use ec2azure::site::{DEFAULT_START_MS, Site, SiteConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIN: u64 = 60_000;
const T0: u64 = DEFAULT_START_MS;

/// Chromium, or `None` (with a note; a panic under EC2AZURE_REQUIRE_ORACLES).
fn chromium() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(v) = std::env::var("EC2AZURE_CHROMIUM")
        && !v.is_empty()
    {
        candidates.push(v);
    }
    candidates.extend(["chromium".to_string(), "chromium-browser".to_string()]);
    for c in &candidates {
        let ok = Command::new(c)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(c.clone());
        }
    }
    let what = format!(
        "Chromium ({} cannot run; run scripts/install-test-deps.sh, or set EC2AZURE_CHROMIUM)",
        candidates.join(", ")
    );
    if std::env::var_os("EC2AZURE_REQUIRE_ORACLES").is_some() {
        panic!("{what} is required (EC2AZURE_REQUIRE_ORACLES) but missing");
    }
    eprintln!("note: {what}: report screenshot skipped");
    None
}

fn job(
    scenario: &str,
    friendly: &str,
    target: (&str, &str, &str),
    start: u64,
    tasks: &[(&str, &str, u64)],
    fail: Option<usize>,
) -> Job {
    let names: Vec<(&str, &str)> = tasks.iter().map(|(n, f, _)| (*n, *f)).collect();
    let mut j = Job::new(
        scenario,
        friendly,
        target,
        &names,
        &Durations::default(),
        start,
    );
    let mut now = start;
    for (i, (_, _, d)) in tasks.iter().enumerate() {
        now += d;
        j.tasks[i].wall_ms = 40 * (i as u64 + 1);
        if fail == Some(i) {
            let e = job_error(
                "28031",
                "Couldn't create the virtual machine: quota",
                "",
                "",
            );
            j.fail_task(i, e, now);
            break;
        }
        j.complete_task(i, now);
    }
    j
}

fn record(
    job_id: &str,
    scenario: &str,
    machine: &str,
    start: u64,
    point: u64,
    ok: bool,
) -> FailoverRecord {
    FailoverRecord {
        job_id: job_id.into(),
        scenario_name: scenario.into(),
        recovery_plan: None,
        choice: "Latest".into(),
        recovery_point_id: format!("items/{machine}/recoveryPoints/rp-42"),
        recovery_point_time_ms: point,
        recovery_point_type: "ApplicationConsistent".into(),
        start_ms: start,
        last_source_write_ms: start - 30_000,
        data_loss_ms: start - 30_000 - point,
        vm_running_ms: start + 12 * MIN,
        rto_ms: 12 * MIN,
        build_wall_ms: 2100,
        upload_wall_ms: 800,
        uploaded_bytes: 3 << 30,
        vm_id: format!("vms/{machine}"),
        vm_size: "Standard_D2s_v3".into(),
        ip_address: "10.0.0.20".into(),
        subnet_id: "subnets/default".into(),
        source_shut_down: Some(true),
        verification: vec![Verification {
            check: "disk".into(),
            passed: ok,
            detail: if ok {
                "digest matches"
            } else {
                "digest differs"
            }
            .into(),
        }],
        cleaned_up_ms: None,
        cleanup_notes: None,
    }
}

/// A site as a six-hour rehearsal of two machines leaves it.
fn rehearsed_site(dir: &Path) -> (Site, RehearsalInfo) {
    let mut site = Site::init(
        &dir.join("site"),
        SiteConfig {
            subscription_id: "00000000-0000-0000-0000-00000000000a".into(),
            seed: 7,
            start_ms: T0,
            durations: Durations::default(),
        },
    )
    .unwrap();
    let end = T0 + 6 * 60 * MIN;
    site.tx(|t| {
        // The machines' items are gone (migrated): the threshold comes from the policy.
        t.insert(
            "policies/pol",
            None,
            &ReplicationPolicy {
                friendly_name: "pol".into(),
                instance_type: "InMageAzureV2".into(),
                provider_specific_details: PolicyDetails::default(),
            },
        )?;
        for (k, m) in ["web", "db"].iter().enumerate() {
            let item = format!("items/{m}");
            let enable = job(
                "EnableDr",
                "Enable protection",
                (&item, m, "ProtectionEntity"),
                T0 + k as u64 * MIN,
                &[
                    ("EnablePrerequisites", "Prerequisites check", MIN),
                    (
                        "InstallMobilityService",
                        "Install Mobility Service",
                        5 * MIN,
                    ),
                ],
                None,
            );
            t.insert(&format!("jobs/enable-{m}"), None, &enable)?;
            let fin = job(
                "FinalizeProtection",
                "Finalize protection",
                (&item, m, "ProtectionEntity"),
                T0 + 6 * MIN,
                &[
                    ("InitialReplication", "Initial replication", 20 * MIN),
                    ("FinalizeProtection", "Finalizing protection", 2 * MIN),
                ],
                None,
            );
            t.insert(&format!("jobs/finalize-{m}"), None, &fin)?;
            let tfo_at = T0 + 3 * 60 * MIN;
            let tfo = job(
                "TestFailover",
                "Test failover",
                (&item, m, "ProtectionEntity"),
                tfo_at,
                &[
                    ("FailoverPrerequisites", "Prerequisites check", MIN),
                    ("CreateVm", "Create test virtual machine", 8 * MIN),
                    ("StartVm", "Start the virtual machine", 3 * MIN),
                ],
                // db's test VM could not be made: the quota.
                (k == 1).then_some(1),
            );
            t.insert(&format!("jobs/tfo-{m}"), None, &tfo)?;
            let fo_at = T0 + 5 * 60 * MIN;
            let fo = job(
                "UnplannedFailover",
                "Failover",
                (&item, m, "ProtectionEntity"),
                fo_at,
                &[
                    ("FailoverPrerequisites", "Prerequisites check", MIN),
                    ("CreateVm", "Create the virtual machine", 8 * MIN),
                    ("StartVm", "Start the virtual machine", 3 * MIN),
                ],
                None,
            );
            t.insert(&format!("jobs/fo-{m}"), None, &fo)?;
            // RPO every 5 minutes from the first point: a sawtooth, over the threshold for
            // an hour in the middle (an outage).
            let rpo = (0..60u64)
                .map(|i| {
                    let at = T0 + 30 * MIN + i * 5 * MIN;
                    let secs = if (24..36).contains(&i) {
                        (i - 23) * 300
                    } else {
                        60 + (i % 5) * 40
                    };
                    RpoSample {
                        time_ms: at,
                        rpo_in_seconds: Some(secs),
                        replication_health: "Normal".into(),
                    }
                })
                .collect();
            let history = ItemHistory {
                friendly_name: m.to_string(),
                rpo,
                failovers: vec![
                    record(
                        &format!("jobs/tfo-{m}"),
                        "TestFailover",
                        m,
                        tfo_at,
                        tfo_at - 4 * MIN,
                        k == 0,
                    ),
                    record(
                        &format!("jobs/fo-{m}"),
                        "UnplannedFailover",
                        m,
                        fo_at,
                        fo_at - 2 * MIN,
                        true,
                    ),
                ],
            };
            t.insert(&format!("history/{m}"), None, &history)?;
        }
        let plan = job(
            "RecoveryPlanUnplannedFailover",
            "Failover",
            ("plans/wave", "wave", "RecoveryPlan"),
            T0 + 5 * 60 * MIN,
            &[("RecoveryPlanFailover", "All groups failover", 14 * MIN)],
            None,
        );
        t.insert("jobs/plan-fo", None, &plan)?;
        Ok(())
    })
    .unwrap();
    let info = RehearsalInfo {
        title: "three-tier wave".into(),
        scenario: "examples/three-tier.toml".into(),
        started_ms: T0,
        ended_ms: end,
        wall_ms: 9_876,
        steps: vec![StepOutcome {
            name: "failover wave".into(),
            start_ms: T0 + 5 * 60 * MIN,
            end_ms: T0 + 5 * 60 * MIN + 14 * MIN,
            job_ids: vec!["jobs/plan-fo".into()],
            outcome: "ok".into(),
            expected: false,
        }],
        faults: vec!["VM quota (28031) at db's test failover".into()],
        objectives: vec![ObjectiveOutcome {
            objective: "RTO".into(),
            machine: None,
            target: "≤ 30m".into(),
            actual: "12m".into(),
            met: true,
        }],
    };
    (site, info)
}

/// A decoded PNG: width, height, RGB pixels.
struct Png {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = a as i16 + b as i16 - c as i16;
    let (pa, pb, pc) = (
        (p - a as i16).abs(),
        (p - b as i16).abs(),
        (p - c as i16).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes): the signature and
/// every chunk's CRC checked by the library's reader, IDAT inflated, each row unfiltered.
fn decode_png(bytes: &[u8]) -> Png {
    let (w, h) = ec2azure::boot::png::png_size(bytes).expect("a valid PNG");
    let (depth, colour, interlace) = (bytes[24], bytes[25], bytes[28]);
    assert_eq!((depth, interlace), (8, 0), "8-bit, not interlaced");
    let channels = match colour {
        2 => 3,
        6 => 4,
        c => panic!("unexpected PNG colour type {c}"),
    };
    let mut idat = Vec::new();
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if &bytes[at + 4..at + 8] == b"IDAT" {
            idat.extend_from_slice(&bytes[at + 8..at + 8 + len]);
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&idat[..]), &mut raw).unwrap();
    let (w, h) = (w as usize, h as usize);
    let stride = w * channels;
    assert_eq!(raw.len(), h * (1 + stride), "pixel data size");
    let mut prev = vec![0u8; stride];
    let mut rgb = Vec::with_capacity(w * h);
    for y in 0..h {
        let filter = raw[y * (stride + 1)];
        let mut row = raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)].to_vec();
        for i in 0..stride {
            let a = if i >= channels { row[i - channels] } else { 0 };
            let b = prev[i];
            let c = if i >= channels { prev[i - channels] } else { 0 };
            row[i] = row[i].wrapping_add(match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => paeth(a, b, c),
                f => panic!("row {y}: filter type {f}"),
            });
        }
        for px in row.chunks_exact(channels) {
            rgb.push([px[0], px[1], px[2]]);
        }
        prev = row;
    }
    Png {
        width: w,
        height: h,
        rgb,
    }
}

fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

/// Runs `cmd`, killing it after `limit`.
fn run_with_timeout(mut cmd: Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} took over {limit:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn chromium_renders_the_report_with_its_timeline() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut site, info) = rehearsed_site(dir.path());
    let report = Report::gather(&mut site, &info).unwrap();
    assert_eq!(report.machines.len(), 2);
    assert!(
        report
            .machines
            .iter()
            .all(|m| m.rpo_threshold_minutes == Some(15) && m.ms_above_threshold > 0),
        "the policy's threshold, crossed during the outage"
    );
    let files = report.write(&dir.path().join("report")).unwrap();
    assert!(files.json.exists());
    let shot: PathBuf = dir.path().join("report.png");
    let url = url::Url::from_file_path(&files.html).unwrap();
    let mut cmd = Command::new(&chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
    ])
    .arg(format!(
        "--user-data-dir={}",
        dir.path().join("profile").display()
    ))
    .arg(format!("--screenshot={}", shot.display()))
    .arg("--window-size=1400,1000")
    .arg(url.as_str());
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    assert!(
        out.status.success() && shot.exists(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let png = decode_png(&std::fs::read(&shot).unwrap());
    assert_eq!((png.width, png.height), (1400, 1000), "the window's size");
    let white = png.rgb.iter().filter(|p| **p == [255, 255, 255]).count();
    let total = png.rgb.len();
    let inked = total - white;
    assert!(
        inked * 100 > total * 5,
        "the page looks blank: {inked} of {total} pixels are not white"
    );
    // The timeline is drawn: the replication bands (an opaque teal, a thousand pixels wide:
    // the legend's swatch is 12) and, in the rows below the first band, the failed task's red
    // (the legend's red swatch is above them) and the succeeded tasks' green.
    let count_below = |c: [u8; 3], y0: usize| {
        png.rgb[y0 * png.width..]
            .iter()
            .filter(|p| **p == c)
            .count()
    };
    let teal = hex("#80cbc4");
    let band_rows: Vec<usize> = (0..png.height)
        .filter(|&y| {
            png.rgb[y * png.width..(y + 1) * png.width]
                .iter()
                .filter(|p| **p == teal)
                .count()
                > 500
        })
        .collect();
    assert!(
        band_rows.len() >= 10,
        "two replication bands 10 px high: {} rows of teal",
        band_rows.len()
    );
    let rows_top = band_rows[0];
    let state = |s| hex(ec2azure::site::report::svg::state_colour(s));
    let red = count_below(state(ec2azure::site::jobs::JobState::Failed), rows_top);
    assert!(red > 100, "the failed task: {red} red pixels");
    let green = count_below(state(ec2azure::site::jobs::JobState::Succeeded), rows_top);
    assert!(green > 100, "succeeded tasks: {green} green pixels");
    eprintln!(
        "report screenshot: {inked} of {total} pixels not white, {} rows of teal band, \
         {red} red and {green} green pixels in the rows",
        band_rows.len()
    );
    // To look at it: EC2AZURE_KEEP_SCREENSHOT=FILE.
    if let Some(keep) = std::env::var_os("EC2AZURE_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
