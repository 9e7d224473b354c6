//! Journals and recovery points from the CLI: every point against qemu (the same writes applied
//! with qemu-io to a chain of qcow2 overlays, one per point), journal diff, damage of every kind,
//! replicas (processing, latest vs latest processed, compaction) and multi-VM points.

use crate::util::*;
use ec2azure::journal::{Consistency, JournalInfo, JournalWriter, Marker, WriterOptions};
use std::path::Path;

fn files_equal(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

fn base_root(path: &Path) -> ec2azure::digest::Digest {
    let img = ec2azure::open(path, None).unwrap();
    ec2azure::recovery::base_digests(&*img).unwrap().1
}

/// The same writes and zeroings go into our journal and, with qemu-io, into a chain of qcow2
/// overlays (one per point); each overlay, converted by qemu-img, equals our build of that point.
#[test]
fn every_point_equals_qemus_overlay_chain() {
    if !have_qemu() || !have("qemu-io", &["--version"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base.raw");
    let size: u64 = 8 << 20;
    sparse_file(
        &base,
        size,
        &[(0, pattern(65536, 1)), (3 << 20, pattern(1 << 20, 2))],
    );
    let jdir = d.path().join("j");
    let info = JournalInfo {
        disk_id: [1; 16],
        disk_size: size,
        sector_size: 512,
        base_root: base_root(&base),
    };
    let mut w = JournalWriter::create(&jdir, info, WriterOptions::default()).unwrap();
    let mut rng: u64 = 12345;
    let mut next = |m: u64| {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) % m
    };
    let mut points = Vec::new();
    let mut backing = (base.clone(), "raw");
    let mut t = 1_767_225_600_000u64;
    for k in 0..6 {
        let ov = d.path().join(format!("ov{k}.qcow2"));
        run(
            "qemu-img",
            [
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                p(&backing.0),
                "-F",
                backing.1,
                p(&ov),
            ],
        )
        .ok();
        let mut cmds = Vec::new();
        for _ in 0..(3 + next(6)) {
            let off = next(size / 512 - 64) * 512;
            let len = (1 + next(2048)) * 512;
            let len = len.min(size - off);
            t += 1000;
            if next(5) == 0 {
                w.zero(t, off, len).unwrap();
                cmds.push(format!("write -z {off} {len}"));
            } else {
                let byte = 1 + next(255) as u8;
                w.write(t, off, &vec![byte; len as usize]).unwrap();
                cmds.push(format!("write -P {byte} {off} {len}"));
            }
        }
        let mut args = vec!["-f".to_string(), "qcow2".to_string()];
        for c in &cmds {
            args.push("-c".into());
            args.push(c.clone());
        }
        args.push(p(&ov).to_string());
        run("qemu-io", &args).ok();
        t += 1000;
        let seq = w
            .marker(
                t,
                &Marker {
                    consistency: if k % 3 == 2 {
                        Consistency::App
                    } else {
                        Consistency::Crash
                    },
                    digest: None,
                    group: None,
                    label: String::new(),
                },
            )
            .unwrap();
        points.push((seq, ov.clone()));
        backing = (ov, "qcow2");
    }
    w.finish().unwrap();
    for (seq, ov) in &points {
        let want = d.path().join(format!("q{seq}.raw"));
        run("qemu-img", ["convert", "-O", "raw", p(ov), p(&want)]).ok();
        let got = d.path().join(format!("o{seq}.raw"));
        ec2azure([
            "points",
            "build",
            "--base",
            p(&base),
            "--journal",
            p(&jdir),
            "--point",
            &format!("rp-{seq}"),
            "-O",
            "raw",
            "--no-sync",
            p(&got),
        ])
        .ok();
        assert!(
            files_equal(&want, &got),
            "point rp-{seq} differs from qemu's overlay"
        );
    }
    // The newest point as a fixed VHD, read back by qemu.
    let (last, ov) = points.last().unwrap();
    let vhd = d.path().join("last.vhd");
    ec2azure([
        "points",
        "build",
        "--base",
        p(&base),
        "--journal",
        p(&jdir),
        "--point",
        "latest",
        "--no-sync",
        p(&vhd),
    ])
    .ok();
    run(
        "qemu-img",
        ["compare", "-q", "-f", "vpc", "-F", "qcow2", p(&vhd), p(ov)],
    )
    .ok();
    let _ = last;
    // Latest app-consistent is the third point.
    let out = ec2azure([
        "points",
        "build",
        "--base",
        p(&base),
        "--journal",
        p(&jdir),
        "--point",
        "latest-app-consistent",
        "--json",
        "--no-sync",
        p(&d.path().join("app.vhd")),
    ]);
    out.ok();
    assert_eq!(
        out.json()["disks"][0]["point"]["seq"],
        serde_json::json!(points[5].0)
    );
}

/// Simulates `duration` over a fresh sample base; returns (base, journal).
fn simulated(
    dir: &Path,
    name: &str,
    seed: &str,
    duration: &str,
    extra: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = dir.join(format!("{name}.raw"));
    if !base.exists() {
        ec2azure(["sample", "--size", "4M", "--seed", seed, p(&base)]).ok();
    }
    let j = dir.join(format!("{name}.j"));
    let mut args = vec![
        "journal",
        "simulate",
        "--base",
        p(&base),
        "--seed",
        seed,
        "--duration",
        duration,
        "--write-rate",
        "2K",
    ];
    if !extra.contains(&"--segment-size") {
        args.extend_from_slice(&["--segment-size", "64K"]);
    }
    args.extend_from_slice(extra);
    args.push(p(&j));
    ec2azure(&args).ok();
    (base, j)
}

#[test]
fn journal_diff_rebuilds_the_new_image() {
    let d = tempfile::tempdir().unwrap();
    let old = d.path().join("old.raw");
    let new = d.path().join("new.raw");
    // Not a whole MiB, nor a whole 512 KiB block: the VHD is padded, the digest is not.
    let size = (6 << 20) + 1536;
    sparse_file(
        &old,
        size,
        &[(0, pattern(1 << 20, 1)), (4 << 20, pattern(8192, 3))],
    );
    std::fs::copy(&old, &new).unwrap();
    // Change a block, zero a block, write into a hole.
    let f = std::fs::OpenOptions::new().write(true).open(&new).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&pattern(1000, 9), 700_000).unwrap();
    f.write_all_at(&vec![0u8; 8192], 4 << 20).unwrap();
    f.write_all_at(&pattern(4096, 5), (5 << 20) + 4096).unwrap();
    let j = d.path().join("j");
    let out = ec2azure(["journal", "diff", "--json", p(&old), p(&new), p(&j)]);
    out.ok();
    let v = out.json();
    assert_eq!(v["changed_blocks"], 2);
    assert_eq!(v["zeroed_blocks"], 1);
    let got = d.path().join("got.raw");
    ec2azure([
        "points",
        "build",
        "--base",
        p(&old),
        "--journal",
        p(&j),
        "--point",
        "latest",
        "-O",
        "raw",
        "--no-sync",
        p(&got),
    ])
    .ok();
    assert!(files_equal(&got, &new));
    // As a padded VHD, verified against the marker's digest (which covers the disk only).
    let vhd = d.path().join("got.vhd");
    let b = ec2azure([
        "points",
        "build",
        "--base",
        p(&old),
        "--journal",
        p(&j),
        "--point",
        "latest",
        "--json",
        "--no-sync",
        p(&vhd),
    ]);
    b.ok();
    assert_eq!(b.json()["disks"][0]["build"]["verified"], true);
    assert_eq!(
        b.json()["disks"][0]["build"]["convert"]["padding"],
        (1 << 20) - 1536
    );
    ec2azure(["points", "verify", "--base", p(&old), "--journal", p(&j)]).ok();
    // The journal applies to OLD only.
    ec2azure([
        "points",
        "build",
        "--base",
        p(&new),
        "--journal",
        p(&j),
        "--point",
        "latest",
        p(&d.path().join("x.vhd")),
    ])
    .expect_code(2)
    .stderr_has("wrong base");
    assert!(!d.path().join("x.vhd").exists());
}

#[test]
fn damage_loses_only_the_points_after_it() {
    let d = tempfile::tempdir().unwrap();
    let (base, j) = simulated(d.path(), "a", "4", "1h", &[]);
    assert!(
        ec2azure(["journal", "verify", p(&j)])
            .ok()
            .stdout
            .contains("intact")
    );
    let list = ec2azure([
        "points",
        "list",
        "--json",
        "--base",
        p(&base),
        "--journal",
        p(&j),
    ]);
    let pts = list.json()["disks"][0]["catalog"]["points"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(pts.len(), 12);
    // Torn tail: the last record (the last marker) is cut; reported, ignored.
    let mut segs: Vec<_> = std::fs::read_dir(&j)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let last = segs.last().unwrap().clone();
    let len = std::fs::metadata(&last).unwrap().len();
    let keep = std::fs::read(&last).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let v = ec2azure(["journal", "verify", "--json", p(&j)]);
    v.ok();
    assert!(
        v.json()["torn"]
            .as_str()
            .unwrap()
            .contains("torn last record")
    );
    let list = ec2azure([
        "points",
        "list",
        "--json",
        "--base",
        p(&base),
        "--journal",
        p(&j),
    ]);
    assert_eq!(
        list.json()["disks"][0]["catalog"]["points"]
            .as_array()
            .unwrap()
            .len(),
        11
    );
    std::fs::write(&last, &keep).unwrap();
    // A flipped byte in the middle of the journal: verify fails and names it; earlier points
    // still build and verify; later ones are listed as unavailable.
    let mid = &segs[segs.len() / 2];
    let mut bytes = std::fs::read(mid).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(mid, &bytes).unwrap();
    let v = ec2azure(["journal", "verify", "--json", p(&j)]);
    v.expect_code(1);
    let defect = &v.json()["defect"];
    assert_eq!(defect["path"].as_str().unwrap(), p(mid));
    let lost = v.json()["unavailable"].as_array().unwrap().len();
    assert!(lost > 0);
    let ver = ec2azure([
        "points",
        "verify",
        "--json",
        "--base",
        p(&base),
        "--journal",
        p(&j),
    ]);
    ver.expect_code(1);
    let disk = &ver.json()["disks"][0];
    assert_eq!(disk["mismatching"], 0);
    assert_eq!(disk["unavailable"].as_u64().unwrap() as usize, lost);
    let ok_pts = disk["checked"].as_u64().unwrap() as usize;
    // Every point is either checked or listed as lost (the damaged record itself may be a
    // marker whose header is unreadable: at most one unaccounted for).
    assert!(
        (11..=12).contains(&(ok_pts + lost)) && ok_pts > 0,
        "{ok_pts} + {lost}"
    );
    let first = pts[0]["id"].as_str().unwrap();
    ec2azure([
        "points",
        "build",
        "--base",
        p(&base),
        "--journal",
        p(&j),
        "--point",
        first,
        "--no-sync",
        p(&d.path().join("first.vhd")),
    ])
    .ok();
    let gone = pts[11]["id"].as_str().unwrap();
    ec2azure([
        "points",
        "build",
        "--base",
        p(&base),
        "--journal",
        p(&j),
        "--point",
        gone,
        p(&d.path().join("gone.vhd")),
    ])
    .expect_code(2)
    .stderr_has("after a defect");
    // A segment of another disk in the directory is refused.
    let (_, other) = simulated(d.path(), "b", "5", "30m", &[]);
    std::fs::copy(other.join("seg-00000002.e2j"), j.join("seg-00000002.e2j")).unwrap();
    ec2azure(["journal", "inspect", p(&j)])
        .expect_code(2)
        .stderr_has("another disk");
}

#[test]
fn replica_processes_folds_and_resolves_latest() {
    let d = tempfile::tempdir().unwrap();
    let (base, j) = simulated(d.path(), "a", "6", "3h", &[]);
    let r = d.path().join("r");
    ec2azure([
        "replica",
        "init",
        "--base",
        p(&base),
        "--retention",
        "1h",
        p(&r),
    ])
    .ok();
    // Receive the first half of the segments and process them.
    let mut segs: Vec<_> = std::fs::read_dir(&j)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let half = d.path().join("half");
    std::fs::create_dir(&half).unwrap();
    for s in &segs[..segs.len() / 2] {
        std::fs::copy(s, half.join(s.file_name().unwrap())).unwrap();
    }
    ec2azure(["replica", "receive", p(&half), p(&r)]).ok();
    let pr = ec2azure(["replica", "process", "--json", p(&r)]);
    pr.ok();
    // Then everything, unprocessed.
    let rc = ec2azure(["replica", "receive", "--json", p(&j), p(&r)]);
    rc.ok();
    assert!(rc.json()["already_had"].as_u64().unwrap() >= (segs.len() / 2) as u64);
    let st = ec2azure(["replica", "status", "--json", p(&r)]).json();
    assert!(st["pending_records"].as_u64().unwrap() > 0);
    let lp = st["latest_processed"]["seq"].as_u64().unwrap();
    let latest = st["latest"]["seq"].as_u64().unwrap();
    assert!(lp < latest);
    // Latest processed: no processing, an older point.
    let b1 = ec2azure([
        "points",
        "build",
        "--replica",
        p(&r),
        "--point",
        "latest-processed",
        "--json",
        "--no-sync",
        p(&d.path().join("lp.vhd")),
    ]);
    b1.ok();
    assert_eq!(b1.json()["disks"][0]["point"]["seq"].as_u64(), Some(lp));
    assert_eq!(b1.json()["disks"][0]["build"]["verified"], true);
    // Latest: processes everything first (and folds what left the 1 h window), the newest point.
    let b2 = ec2azure([
        "points",
        "build",
        "--replica",
        p(&r),
        "--point",
        "latest",
        "--json",
        "--no-sync",
        p(&d.path().join("l.vhd")),
    ]);
    b2.ok();
    assert_eq!(b2.json()["disks"][0]["point"]["seq"].as_u64(), Some(latest));
    assert_eq!(b2.json()["disks"][0]["build"]["verified"], true);
    assert!(
        b2.json()["notes"][0]
            .as_str()
            .unwrap()
            .contains("processed")
    );
    let st = ec2azure(["replica", "status", "--json", p(&r)]).json();
    assert_eq!(st["pending_records"], 0);
    assert!(st["state"]["folded_points"].as_u64().unwrap() > 0, "{st}");
    assert!(st["state"]["base_seq"].as_u64().unwrap() > 1);
    // Segments wholly folded into the base are gone; the replica stays bounded.
    assert!(st["segments"].as_u64().unwrap() < segs.len() as u64, "{st}");
    // Every point left still reproduces its digest on the compacted base.
    let v = ec2azure(["points", "verify", "--json", "--replica", p(&r)]);
    v.ok();
    assert_eq!(v.json()["disks"][0]["checked"], 13); // 1 h of 5-minute points, both ends
    // The policy: the points kept meet a 15-minute RPO; a 1-minute threshold is breached.
    ec2azure(["points", "check", "--replica", p(&r)]).ok();
    ec2azure([
        "points",
        "check",
        "--replica",
        p(&r),
        "--rpo-threshold",
        "1m",
    ])
    .expect_code(1);
    ec2azure([
        "replica",
        "init",
        "--base",
        p(&base),
        "--app-frequency",
        "30m",
        p(&d.path().join("r2")),
    ])
    .expect_code(2)
    .stderr_has("below 60 minutes");
}

/// A payload corrupted after processing began: `latest` processes first, finds the defect and
/// resolves to the newest point before it; points after it are listed as lost; `points verify`
/// fails; a single-segment journal with a defect fails `points verify` too.
#[test]
fn replica_with_a_corrupt_unprocessed_segment_falls_back() {
    let d = tempfile::tempdir().unwrap();
    let (base, j) = simulated(d.path(), "a", "11", "1h", &[]);
    let r = d.path().join("r");
    ec2azure(["replica", "init", "--base", p(&base), p(&r)]).ok();
    ec2azure(["replica", "receive", p(&j), p(&r)]).ok();
    // Corrupt a write payload in a late segment of the replica's copy.
    let mut segs: Vec<_> = std::fs::read_dir(r.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let victim = &segs[segs.len() * 3 / 4];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = 128 + 56 + 100; // inside the first record's payload
    bytes[at] ^= 1;
    std::fs::write(victim, &bytes).unwrap();
    let b = ec2azure([
        "points",
        "build",
        "--replica",
        p(&r),
        "--point",
        "latest",
        "--json",
        "--no-sync",
        p(&d.path().join("l.vhd")),
    ]);
    b.ok();
    let got = b.json()["disks"][0]["point"]["seq"].as_u64().unwrap();
    let st = ec2azure(["replica", "status", "--json", p(&r)]).json();
    assert!(
        st["defect"].as_str().unwrap().contains("payload CRC"),
        "{st}"
    );
    assert_eq!(st["latest"]["seq"].as_u64(), Some(got));
    let list = ec2azure(["points", "list", "--json", "--replica", p(&r)]).json();
    let cat = &list["disks"][0]["catalog"];
    assert!(!cat["unavailable"].as_array().unwrap().is_empty());
    assert!(
        cat["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["seq"].as_u64().unwrap() <= got)
    );
    ec2azure(["points", "verify", "--replica", p(&r)]).expect_code(1);
    // The sender sends the segments again: the damaged one is replaced (the others are held
    // already), processing finds nothing wrong, and the newest point is back.
    let rc = ec2azure(["replica", "receive", "--json", p(&j), p(&r)]);
    rc.ok();
    assert_eq!(rc.json()["replaced"], 1);
    ec2azure(["replica", "process", "-q", p(&r)]).ok();
    let st = ec2azure(["replica", "status", "--json", p(&r)]).json();
    assert!(st["defect"].is_null(), "{st}");
    assert!(st["latest"]["seq"].as_u64().unwrap() > got);
    ec2azure(["points", "verify", "--replica", p(&r)]).ok();
    // One segment, its last marker corrupt: verify fails, naming the defect.
    let (b2, j2) = simulated(d.path(), "c", "12", "30m", &["--segment-size", "64M"]);
    let seg = j2.join("seg-00000001.e2j");
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 1; // inside the last marker's digest
    std::fs::write(&seg, &bytes).unwrap();
    let v = ec2azure([
        "points",
        "verify",
        "--json",
        "--base",
        p(&b2),
        "--journal",
        p(&j2),
    ]);
    v.expect_code(1);
    assert_eq!(v.json()["disks"][0]["unavailable"], 1);
    assert_eq!(v.json()["disks"][0]["checked"], 5);
}

#[test]
fn multi_vm_points_are_common_to_every_disk() {
    let d = tempfile::tempdir().unwrap();
    let (ba, ja) = simulated(d.path(), "a", "7", "2h", &["--group", "web"]);
    let (bb, jb) = simulated(d.path(), "b", "8", "90m", &["--group", "web"]);
    let out = d.path().join("out");
    let b = ec2azure([
        "points",
        "build",
        "--base",
        p(&ba),
        "--journal",
        p(&ja),
        "--base",
        p(&bb),
        "--journal",
        p(&jb),
        "--point",
        "latest-multi-vm-processed",
        "--json",
        "--no-sync",
        p(&out),
    ]);
    b.ok();
    let v = b.json();
    let ta = v["disks"][0]["point"]["time"].as_str().unwrap();
    let tb = v["disks"][1]["point"]["time"].as_str().unwrap();
    assert_eq!(ta, tb);
    assert_eq!(ta, "2026-01-01T01:30:00Z");
    assert_eq!(v["disks"][0]["build"]["verified"], true);
    assert_eq!(v["disks"][1]["build"]["verified"], true);
    assert!(out.join("a.j.vhd").exists() && out.join("b.j.vhd").exists());
    // App-consistent: the newest common app point is at 01:00.
    let b = ec2azure([
        "points",
        "build",
        "--base",
        p(&ba),
        "--journal",
        p(&ja),
        "--base",
        p(&bb),
        "--journal",
        p(&jb),
        "--point",
        "latest-multi-vm-app-consistent",
        "--json",
        "--no-sync",
        p(&d.path().join("out2")),
    ]);
    b.ok();
    assert_eq!(
        b.json()["disks"][0]["point"]["time"],
        "2026-01-01T01:00:00Z"
    );
    // The same through replicas (as the process server holds them).
    let (ra, rb) = (d.path().join("ra"), d.path().join("rb"));
    for (r, base, j) in [(&ra, &ba, &ja), (&rb, &bb, &jb)] {
        ec2azure(["replica", "init", "-q", "--base", p(base), p(r)]).ok();
        ec2azure(["replica", "receive", "-q", p(j), p(r)]).ok();
        ec2azure(["replica", "process", "-q", p(r)]).ok();
    }
    let out4 = d.path().join("out4");
    let b = ec2azure([
        "points",
        "build",
        "--replica",
        p(&ra),
        "--replica",
        p(&rb),
        "--point",
        "latest-multi-vm-processed",
        "--json",
        "--no-sync",
        p(&out4),
    ]);
    b.ok();
    assert_eq!(
        b.json()["disks"][1]["point"]["time"],
        "2026-01-01T01:30:00Z"
    );
    assert!(out4.join("ra.vhd").exists() && out4.join("rb.vhd").exists());
    // A single disk cannot take a multi-VM choice; a journal without a group has none.
    let (bc, jc) = simulated(d.path(), "c", "9", "30m", &[]);
    ec2azure([
        "points",
        "build",
        "--base",
        p(&ba),
        "--journal",
        p(&ja),
        "--base",
        p(&bc),
        "--journal",
        p(&jc),
        "--point",
        "latest-multi-vm-processed",
        p(&d.path().join("out3")),
    ])
    .expect_code(2)
    .stderr_has("multi-VM");
}
