//! The CLI end to end: conversions, reports, exit codes, reproducibility, in-place, safety.

use crate::util::*;
use ec2azure::image::vhd::{Footer, VHD_EPOCH_UNIX};
use std::path::Path;

const MIB: u64 = 1 << 20;

fn sample(dir: &Path, name: &str, size: u64, seed: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    ec2azure([
        "sample",
        "-q",
        p(&path),
        "--size",
        &size.to_string(),
        "--seed",
        &seed.to_string(),
    ])
    .ok();
    path
}

fn footer_of(path: &Path) -> Footer {
    let b = std::fs::read(path).unwrap();
    let tail: [u8; 512] = b[b.len() - 512..].try_into().unwrap();
    Footer::decode(&tail)
}

#[test]
fn convert_pads_to_whole_mib_and_reads_back() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample(d.path(), "s.raw", 3 * MIB + 777, 5);
    let vhd = d.path().join("s.vhd");
    let out = ec2azure(["convert", "--json", p(&raw), p(&vhd)]);
    let j = out.ok().json();
    assert_eq!(j["virtual_size"], 4 * MIB);
    assert_eq!(j["padding"], MIB - 777);
    assert_eq!(j["file_len"], 4 * MIB + 512);
    assert_eq!(std::fs::metadata(&vhd).unwrap().len(), 4 * MIB + 512);
    let input = std::fs::read(&raw).unwrap();
    let output = std::fs::read(&vhd).unwrap();
    assert_eq!(&output[..input.len()], &input[..]);
    assert!(
        output[input.len()..(4 * MIB) as usize]
            .iter()
            .all(|&b| b == 0)
    );
    // Under 20 MiB: a valid page blob, too small for a managed-disk upload.
    ec2azure(["check", "--target", "page-blob", p(&vhd)]).ok();
    ec2azure(["check", p(&vhd)]).expect_code(1);
    ec2azure(["compare", p(&raw), p(&vhd)]).ok();
    let strict = ec2azure(["compare", "--strict", "--json", p(&raw), p(&vhd)]);
    assert_eq!(
        strict.expect_code(1).json()["first_difference"],
        3 * MIB + 777
    );

    // VHD → raw gives the padded disk; VHD → VHD gives the same disk again.
    let back = d.path().join("back.raw");
    ec2azure(["convert", "-O", "raw", p(&vhd), p(&back)]).ok();
    let b = std::fs::read(&back).unwrap();
    assert_eq!(b.len() as u64, 4 * MIB);
    assert_eq!(&b[..], &output[..(4 * MIB) as usize]);
    let again = d.path().join("again.vhd");
    ec2azure(["convert", p(&vhd), p(&again)]).ok();
    assert_eq!(std::fs::metadata(&again).unwrap().len(), 4 * MIB + 512);
    ec2azure(["compare", "--strict", p(&vhd), p(&again)]).ok();
}

#[test]
fn output_is_sparse_where_input_has_holes_or_zeros() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("z.raw");
    // 64 MiB: 8 MiB of allocated zeros, 1 MiB of data, the rest holes.
    sparse_file(
        &raw,
        64 * MIB,
        &[
            (8 * MIB, vec![0; 8 * MIB as usize]),
            (40 * MIB, pattern(MIB as usize, 3)),
        ],
    );
    let vhd = d.path().join("z.vhd");
    let j = ec2azure(["convert", "--json", p(&raw), p(&vhd)])
        .ok()
        .json();
    assert_eq!(j["bytes_written"], MIB);
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(&vhd).unwrap().blocks() * 512;
    assert!(
        blocks <= 2 * MIB,
        "output allocates {blocks} bytes, expected about 1 MiB"
    );
}

#[test]
fn uuid_and_timestamp_make_output_reproducible() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample(d.path(), "r.raw", 2 * MIB, 9);
    let (a, b) = (d.path().join("a.vhd"), d.path().join("b.vhd"));
    let uuid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    let ts = "1700000000";
    for out in [&a, &b] {
        ec2azure([
            "convert",
            "-q",
            "--uuid",
            uuid,
            "--timestamp",
            ts,
            p(&raw),
            p(out),
        ])
        .ok();
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let f = footer_of(&a);
    assert_eq!(ec2azure::image::vhd::format_uuid(&f.unique_id), uuid);
    assert_eq!(u64::from(f.timestamp), 1_700_000_000 - VHD_EPOCH_UNIX);
    assert_eq!(&f.creator_app, b"e2az");
    // Without them, two outputs differ in id.
    let c = d.path().join("c.vhd");
    ec2azure(["convert", "-q", p(&raw), p(&c)]).ok();
    assert_ne!(footer_of(&c).unique_id, f.unique_id);
    ec2azure(["convert", "--timestamp", "5", p(&raw), p(&c)])
        .expect_code(2)
        .stderr_has("before 2000-01-01");
    ec2azure(["convert", "--uuid", "nope", p(&raw), p(&c)])
        .expect_code(2)
        .stderr_has("32 hex digits");
}

#[test]
fn manifest_matches_block_hashes_of_the_output_disk() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("m.raw");
    let size = 5 * MIB / 2 + 100; // 2.5 MiB + 100: padded to 3 MiB
    sparse_file(
        &raw,
        size,
        &[
            (0, pattern(1000, 1)),
            (MIB + 3, pattern(600_000, 2)),
            (size - 10, vec![7; 10]),
        ],
    );
    let vhd = d.path().join("m.vhd");
    let mpath = d.path().join("m.json");
    let j = ec2azure([
        "convert",
        "--json",
        "--manifest",
        p(&mpath),
        p(&raw),
        p(&vhd),
    ])
    .ok()
    .json();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    assert_eq!(m["size"], 3 * MIB);
    assert_eq!(m["block_size"], 512 * 1024);
    let disk = std::fs::read(&vhd).unwrap();
    let disk = &disk[..(3 * MIB) as usize];
    let mut root = Vec::new();
    let blocks = m["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 6);
    for (i, chunk) in disk.chunks(512 * 1024).enumerate() {
        let h = sha256_hex(chunk);
        if chunk.iter().all(|&b| b == 0) {
            assert!(blocks[i].is_null(), "block {i} is zero and must be null");
        } else {
            assert_eq!(blocks[i], h.as_str(), "block {i}");
        }
        root.extend_from_slice(&ec2azure::digest::sha256(chunk));
    }
    assert_eq!(m["root"], sha256_hex(&root).as_str());
    assert_eq!(j["manifest_root"], m["root"]);
    // Block 4 (2 MiB..2.5 MiB) is a hole; block 5 holds the last 10 bytes, then padding.
    assert!(blocks[4].is_null() && !blocks[5].is_null());
}

#[test]
fn in_place_appends_a_footer_and_refuses_twice_and_non_files() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample(d.path(), "ip.raw", 5 * MIB + 3, 4);
    let before = std::fs::read(&raw).unwrap();
    let j = ec2azure(["convert", "--in-place", "--json", p(&raw)])
        .ok()
        .json();
    assert_eq!(j["virtual_size"], 6 * MIB);
    assert_eq!(j["bytes_written"], 512);
    let after = std::fs::read(&raw).unwrap();
    assert_eq!(after.len() as u64, 6 * MIB + 512);
    assert_eq!(&after[..before.len()], &before[..]);
    ec2azure(["check", "--target", "page-blob", p(&raw)]).ok();
    ec2azure(["convert", "--in-place", p(&raw)])
        .expect_code(2)
        .stderr_has("already ends with a VHD footer");
    assert_eq!(
        std::fs::read(&raw).unwrap(),
        after,
        "a refused in-place run must not touch the file"
    );
    ec2azure(["convert", "--in-place", "/dev/null"])
        .expect_code(2)
        .stderr_has("regular file");
    ec2azure(["convert", "--in-place", "-O", "raw", p(&raw)]).expect_code(2);
}

#[test]
fn refuses_to_overwrite_its_input() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample(d.path(), "x.raw", MIB, 1);
    let before = std::fs::read(&raw).unwrap();
    ec2azure(["convert", p(&raw), p(&raw)])
        .expect_code(2)
        .stderr_has("the output is the input");
    assert_eq!(std::fs::read(&raw).unwrap(), before);
}

#[test]
fn info_reports_format_extents_footer_and_readiness() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("i.raw");
    sparse_file(&raw, 32 * MIB, &[(MIB, pattern(4096, 1))]);
    let j = ec2azure(["info", "--json", p(&raw)]).ok().json();
    assert_eq!(j["format"], "raw");
    assert_eq!(j["virtual_size"], 32 * MIB);
    assert_eq!(j["azure_ready"], false);
    let alloc = j["allocated_bytes"].as_u64().unwrap();
    assert!((4096..=MIB).contains(&alloc), "allocated {alloc}");
    let vhd = d.path().join("i.vhd");
    ec2azure(["convert", "-q", p(&raw), p(&vhd)]).ok();
    let j = ec2azure(["info", "--json", p(&vhd)]).ok().json();
    assert_eq!(j["format"], "vhd");
    assert_eq!(j["virtual_size"], 32 * MIB);
    assert_eq!(j["file_size"], 32 * MIB + 512);
    assert_eq!(j["azure_ready"], true);
    // The cookie and creator as text, not a quoted string inside a string.
    assert_eq!(j["footer"]["cookie"], "conectix");
    assert_eq!(j["footer"]["creator_host_os"], "Wi2k");
    assert_eq!(j["footer"]["disk_type"], "fixed");
    assert_eq!(j["footer"]["checksum_valid"], true);
    assert_eq!(j["footer"]["geometry"]["heads"], 4);
    let text = ec2azure(["info", p(&vhd)]);
    assert!(text.ok().stdout.contains("azure:          ready"), "{text}");
    assert!(
        text.stdout.contains("cookie               conectix\n"),
        "{text}"
    );
}

#[test]
fn check_json_lists_every_rule() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample(d.path(), "c.raw", 24 * MIB, 2);
    let vhd = d.path().join("c.vhd");
    ec2azure(["convert", "-q", p(&raw), p(&vhd)]).ok();
    let j = ec2azure(["check", "--json", p(&vhd)]).ok().json();
    assert_eq!(j["ready"], true);
    let rules: Vec<&str> = j["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    for r in [
        "footer-cookie",
        "footer-checksum",
        "disk-type",
        "file-length",
        "whole-mib",
        "page-blob-size",
        "managed-disk-size",
    ] {
        assert!(rules.contains(&r), "missing rule {r}: {rules:?}");
    }
    // A raw file is not ready (exit 1), a missing file is an error (exit 2).
    ec2azure(["check", p(&raw)]).expect_code(1);
    ec2azure(["check", p(&d.path().join("missing"))])
        .expect_code(2)
        .stderr_has("missing");
    // A 1 MiB VHD is a fine page blob but too small for a managed disk upload.
    let small_raw = sample(d.path(), "small.raw", MIB, 2);
    let small = d.path().join("small.vhd");
    ec2azure(["convert", "-q", p(&small_raw), p(&small)]).ok();
    let out = ec2azure(["check", p(&small)]);
    assert!(
        out.expect_code(1).stdout.contains("managed-disk-size"),
        "{out}"
    );
    ec2azure(["check", "--target", "page-blob", p(&small)]).ok();
}

#[test]
fn compare_reports_first_difference() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.raw");
    let b = d.path().join("b.raw");
    sparse_file(&a, 8 * MIB, &[(MIB, pattern(10_000, 1))]);
    sparse_file(
        &b,
        8 * MIB,
        &[(MIB, pattern(10_000, 1)), (5 * MIB + 17, vec![1])],
    );
    let j = ec2azure(["compare", "--json", p(&a), p(&b)])
        .expect_code(1)
        .json();
    assert_eq!(j["first_difference"], 5 * MIB + 17);
    assert_eq!(j["identical"], false);
    let text = ec2azure(["compare", p(&a), p(&b)]);
    assert!(
        text.expect_code(1)
            .stdout
            .contains(&format!("offset {}", 5 * MIB + 17)),
        "{text}"
    );
    ec2azure(["compare", p(&a), p(&d.path().join("nope"))]).expect_code(2);
}

#[test]
fn demo_runs_and_passes() {
    let d = tempfile::tempdir().unwrap();
    let out = ec2azure(["demo", "--dir", p(d.path())]);
    assert!(out.ok().stdout.contains("All checks passed."), "{out}");
    assert!(d.path().join("snap.vhd").exists());
}

#[test]
fn errors_name_the_file_and_exit_2() {
    let out = ec2azure(["convert", "/nonexistent/in.raw", "/tmp/out.vhd"]);
    out.expect_code(2).stderr_has("/nonexistent/in.raw");
    assert!(
        out.stderr.contains("caused by"),
        "the cause chain is printed\n{out}"
    );
    ec2azure(["info", "/nonexistent/in.raw"]).expect_code(2);
    ec2azure(["frobnicate"]).expect_code(2);
}

#[test]
fn a_closed_pipe_is_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample(d.path(), "p.raw", MIB, 1);
    // The reader (`true`) is gone before we write: the write meets a closed pipe every time.
    let bin = env!("CARGO_BIN_EXE_ec2azure");
    let cmd = format!("(sleep 0.3; exec {bin} info {}) | true", p(&raw));
    let out = run("sh", ["-c", &cmd]);
    assert!(!out.stderr.contains("panicked"), "{out}");
}

#[test]
fn ctrl_c_stops_a_conversion_and_removes_the_partial_file() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("big.raw");
    ec2azure([
        "sample",
        "-q",
        p(&raw),
        "--size",
        "256M",
        "--data-fraction",
        "1",
        "--zero-fraction",
        "0",
    ])
    .ok();
    let out = d.path().join("big.vhd");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ec2azure"))
        .args(["convert", "-q", "-S", "512", p(&raw), p(&out)])
        .spawn()
        .unwrap();
    // Wait until the temporary output exists, then interrupt.
    let partial = || {
        std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
    };
    let t = std::time::Instant::now();
    while !partial() && t.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(partial(), "the conversion never created its temporary file");
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted conversions exit 130");
    assert!(!partial(), "the temporary file was removed");
    assert!(!out.exists(), "nothing under the target's name");
}

#[test]
fn in_place_refuses_container_formats_and_leaves_them_alone() {
    let d = tempfile::tempdir().unwrap();
    let mut q = b"QFI\xfb\0\0\0\x03".to_vec();
    q.resize(3 * MIB as usize + 5, 0);
    let mut x = b"vhdxfile".to_vec();
    x.resize(3 * MIB as usize + 5, 0);
    for (name, bytes, what) in [
        ("a.qcow2", q, "a qcow2 image"),
        ("a.vhdx", x, "a VHDX image"),
    ] {
        let path = d.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        ec2azure(["convert", "--in-place", p(&path)])
            .expect_code(2)
            .stderr_has(what);
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was modified");
    }
    let raw = sample(d.path(), "r.raw", MIB, 1);
    ec2azure(["convert", "--in-place", "-O", "raw", p(&raw)])
        .expect_code(2)
        .stderr_has("cannot be combined with -O raw");
}

#[test]
fn manifest_may_not_overwrite_input_or_output() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample(d.path(), "in.raw", 2 * MIB, 1);
    let before = std::fs::read(&raw).unwrap();
    let out = d.path().join("out.vhd");
    ec2azure(["convert", "--manifest", p(&raw), p(&raw), p(&out)])
        .expect_code(2)
        .stderr_has("that is the input");
    assert_eq!(std::fs::read(&raw).unwrap(), before);
    ec2azure(["convert", "--manifest", p(&out), p(&raw), p(&out)])
        .expect_code(2)
        .stderr_has("that is the output");
    ec2azure([
        "convert",
        "--manifest",
        p(&d.path().join("no/such/dir/m.json")),
        p(&raw),
        p(&out),
    ])
    .expect_code(2)
    .stderr_has("does not exist");
    assert!(!out.exists(), "refused before converting");
}

#[test]
fn no_mmap_reads_the_same() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample(d.path(), "n.raw", 5 * MIB + 1, 6);
    let (a, b) = (d.path().join("a.vhd"), d.path().join("b.vhd"));
    let args = [
        "--uuid",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "--timestamp",
        "1700000000",
    ];
    ec2azure([
        "convert",
        "-q",
        args[0],
        args[1],
        args[2],
        args[3],
        p(&raw),
        p(&a),
    ])
    .ok();
    ec2azure([
        "convert",
        "-q",
        "--no-mmap",
        args[0],
        args[1],
        args[2],
        args[3],
        p(&raw),
        p(&b),
    ])
    .ok();
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
}
