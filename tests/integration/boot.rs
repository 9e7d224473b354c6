//! `boot-check` and `sample --bootable`: both bootable samples boot under qemu (TCG, or KVM when
//! it works) from raw, a fixed VHD ec2azure wrote, a VHDX qemu-img wrote and a recovery point;
//! a zeroed MBR, a GPT without an ESP, a truncated kernel and a hung guest do not, each for its
//! own reason; the input's bytes never change; the screenshot is a valid PNG of the size the
//! report gives; a hung guest's qemu is gone after the timeout. Skipped (or failed under
//! EC2AZURE_REQUIRE_ORACLES) without qemu-system-x86_64, OVMF or the sample's packages.

use crate::util::{ec2azure, have, p, sha256_hex};
use ec2azure::image::partition::{self, Guid, NewGptPartition};
use std::path::{Path, PathBuf};
use std::process::Command;

const MARKER: &str = ec2azure::boot::sample::MARKER;

/// The sample's pieces as scripts/install-test-deps.sh leaves them.
fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-tools/boot")
}

/// `true` when qemu, OVMF and the sample's pieces are there; otherwise a note (or a panic under
/// EC2AZURE_REQUIRE_ORACLES).
fn have_boot_tools() -> bool {
    if !have("qemu-system-x86_64", &["--version"]) || !have("mformat", &["--version"]) {
        return false;
    }
    let ovmf = ec2azure::boot::qemu::find_ovmf().is_ok();
    let sample = ["bios", "uefi"].iter().all(|b| {
        ec2azure::boot::sample::SampleTools::discover(&[tools_dir()], b.parse().unwrap()).is_ok()
    });
    if !(ovmf && sample) {
        let what = "OVMF or the bootable sample's packages (run scripts/install-test-deps.sh)";
        if std::env::var_os("EC2AZURE_REQUIRE_ORACLES").is_some() {
            panic!("{what} required (EC2AZURE_REQUIRE_ORACLES) but missing");
        }
        eprintln!("note: {what} missing, boot check skipped");
        return false;
    }
    true
}

fn make_sample(dir: &Path, kind: &str) -> PathBuf {
    let out = dir.join(format!("{kind}.img"));
    let o = Command::new(env!("CARGO_BIN_EXE_ec2azure"))
        .args(["sample", "--bootable", kind, p(&out)])
        .env("EC2AZURE_BOOT_TOOLS", tools_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn hash(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

/// Checks a PNG chunk by chunk (signature, CRCs, IHDR, IDAT inflating to exactly the rows the
/// IHDR promises) and returns its size.
fn valid_png(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    let (w, h) = ec2azure::boot::png::png_size(&b).unwrap();
    let colour = b[25];
    let depth = b[24];
    assert_eq!(depth, 8, "8-bit samples");
    let channels = match colour {
        2 => 3,
        6 => 4,
        0 => 1,
        c => panic!("unexpected PNG colour type {c}"),
    };
    let mut at = 8;
    let mut idat = Vec::new();
    while at + 8 <= b.len() {
        let len = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if &b[at + 4..at + 8] == b"IDAT" {
            idat.extend_from_slice(&b[at + 8..at + 8 + len]);
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&idat[..]), &mut raw).unwrap();
    assert_eq!(
        raw.len(),
        h as usize * (1 + w as usize * channels),
        "pixel data size"
    );
    (w, h)
}

/// Boots `args` with --json and a screenshot, expecting exit `code`.
fn boot(dir: &Path, name: &str, args: &[&str], code: i32) -> serde_json::Value {
    let shot = dir.join(format!("{name}.png"));
    let mut all = vec![
        "boot-check",
        "--json",
        "--timeout",
        "150s",
        "--screenshot",
        p(&shot),
    ];
    all.extend_from_slice(args);
    let out = ec2azure(&all);
    out.expect_code(code);
    let v = out.json();
    if v["qemu_version"].is_string() {
        let (w, h) = valid_png(&shot);
        assert_eq!(v["screenshot_size"], serde_json::json!([w, h]), "{out}");
        assert!(w >= 640 && h >= 400, "a VGA screen: {w}×{h}");
    }
    v
}

fn assert_booted(v: &serde_json::Value, firmware: &str) {
    assert_eq!(v["verdict"], "booted", "{v:#}");
    assert_eq!(v["booted"], true);
    assert_eq!(v["firmware"], firmware);
    let serial = v["serial_excerpt"].as_array().unwrap();
    assert!(
        serial.iter().any(|l| l.as_str().unwrap().contains(MARKER)),
        "{v:#}"
    );
    assert!(v["kernel"].as_str().unwrap().starts_with("Linux version "));
    let names: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for n in [
        "partition-table",
        "boot-type",
        "firmware",
        "disk-reads",
        "kernel",
        "expect",
        "screenshot",
    ] {
        assert!(names.contains(&n), "finding {n} missing: {names:?}");
    }
    let reads = v["disk_reads"].as_array().unwrap();
    assert!(
        reads.last().unwrap()["bytes"].as_u64().unwrap() > 1 << 20,
        "the kernel was read"
    );
}

/// One sample booted from raw, a fixed VHD, a VHDX and a recovery point.
fn sample_boots_everywhere(kind: &str, firmware: &str, layout: &str) {
    if !have_boot_tools() || !have("qemu-img", &["--version"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let raw = make_sample(d.path(), kind);
    let expect = ["--expect", MARKER];
    // Raw.
    let before = hash(&raw);
    let v = boot(d.path(), "raw", &[&[p(&raw)][..], &expect].concat(), 0);
    assert_booted(&v, firmware);
    assert_eq!(v["layout"], layout);
    assert_eq!(hash(&raw), before, "the raw input is unchanged");
    // A fixed VHD ec2azure wrote.
    let vhd = d.path().join("s.vhd");
    ec2azure(["convert", "--no-sync", p(&raw), p(&vhd)]).ok();
    let before = hash(&vhd);
    let v = boot(d.path(), "vhd", &[&[p(&vhd)][..], &expect].concat(), 0);
    assert_booted(&v, firmware);
    assert!(v["served_as"].as_str().unwrap().starts_with("vhd"), "{v:#}");
    assert_eq!(hash(&vhd), before, "the VHD is unchanged");
    // A VHDX qemu-img wrote.
    let vhdx = d.path().join("s.vhdx");
    crate::util::run(
        "qemu-img",
        ["convert", "-f", "raw", "-O", "vhdx", p(&raw), p(&vhdx)],
    )
    .ok();
    let before = hash(&vhdx);
    let v = boot(d.path(), "vhdx", &[&[p(&vhdx)][..], &expect].concat(), 0);
    assert_booted(&v, firmware);
    assert_eq!(hash(&vhdx), before, "the VHDX is unchanged");
    // A recovery point: an empty base plus the journal of everything the sample wrote.
    let base = d.path().join("base.raw");
    crate::util::sparse_file(&base, std::fs::metadata(&raw).unwrap().len(), &[]);
    let j = d.path().join("j");
    ec2azure(["journal", "diff", p(&base), p(&raw), p(&j)]).ok();
    let (hb, hj) = (hash(&base), dir_hash(&j));
    let v = boot(
        d.path(),
        "point",
        &[
            &["--base", p(&base), "--journal", p(&j), "--point", "latest"][..],
            &expect,
        ]
        .concat(),
        0,
    );
    assert_booted(&v, firmware);
    assert_eq!(v["served_as"], "exported to a temporary sparse raw file");
    assert_eq!(
        (hash(&base), dir_hash(&j)),
        (hb, hj),
        "base and journal unchanged"
    );
}

fn dir_hash(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    names.iter().map(|n| hash(n)).collect::<Vec<_>>().join(",")
}

#[test]
fn the_bios_sample_boots_from_raw_vhd_vhdx_and_a_point() {
    sample_boots_everywhere("bios", "bios", "mbr");
}

#[test]
fn the_uefi_sample_boots_from_raw_vhd_vhdx_and_a_point() {
    sample_boots_everywhere("uefi", "uefi", "gpt-with-esp");
}

#[test]
fn a_zeroed_mbr_is_not_bootable_without_starting_qemu() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("zero.raw");
    crate::util::sparse_file(&raw, 8 << 20, &[(4096, vec![1; 512])]);
    // No qemu needed: a missing binary would be an error (exit 2), not this.
    let out = Command::new(env!("CARGO_BIN_EXE_ec2azure"))
        .args(["boot-check", "--json", p(&raw)])
        .env("EC2AZURE_QEMU", "/nonexistent/qemu")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "not-bootable");
    assert_eq!(v["layout"], "none");
    assert!(v["qemu_version"].is_null());
    assert!(v["reason"].as_str().unwrap().contains("55 AA"), "{v:#}");
}

#[test]
fn a_gpt_without_an_esp_is_not_bootable() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("noesp.raw");
    let sectors = 16384;
    let linux = Guid::from_fields(
        0x0FC6_3DAF,
        0x8483,
        0x4772,
        *b"\x8E\x79\x3D\x69\xD8\x47\x7D\xE4",
    );
    let pieces = partition::build_gpt(
        sectors,
        Guid([3; 16]),
        &[NewGptPartition {
            type_guid: linux,
            unique_guid: Guid([4; 16]),
            first_lba: 2048,
            last_lba: sectors - 34,
            name: "root".into(),
        }],
        &[],
    )
    .unwrap();
    crate::util::sparse_file(&raw, sectors * 512, &pieces);
    let out = ec2azure(["boot-check", "--json", p(&raw)]);
    out.expect_code(1);
    let v = out.json();
    assert_eq!(v["verdict"], "not-bootable");
    assert_eq!(v["layout"], "gpt-without-esp");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("no EFI system partition")
    );
    // The partition table is reported in full.
    assert_eq!(v["partitions"]["gpt"]["entries"][0]["name"], "root");
}

#[test]
fn a_truncated_kernel_does_not_boot() {
    if !have_boot_tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let kernel =
        ec2azure::boot::sample::SampleTools::discover(&[tools_dir()], "bios".parse().unwrap())
            .unwrap()
            .kernel;
    let half = d.path().join("vmlinuz");
    let bytes = std::fs::read(&kernel).unwrap();
    std::fs::write(&half, &bytes[..bytes.len() / 3]).unwrap();
    for (kind, verdicts) in [
        ("bios", ["guest-reset", "boot-loader-error"]),
        ("uefi", ["boot-loader-error", "boot-loader-error"]),
    ] {
        let img = make_sample(d.path(), kind);
        let fat = format!("{}@@1048576", p(&img));
        crate::util::run("mcopy", ["-o", "-i", &fat, p(&half), "::/vmlinuz"]).ok();
        let before = hash(&img);
        let v = boot(d.path(), kind, &["--expect", MARKER, p(&img)], 1);
        assert!(
            verdicts.contains(&v["verdict"].as_str().unwrap()),
            "{kind}: {v:#}"
        );
        assert!(v["kernel"].is_null(), "no kernel banner");
        assert_eq!(hash(&img), before);
    }
}

/// The pids of processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[test]
fn a_hung_guest_ends_at_the_timeout_and_its_vm_is_gone() {
    if !have_boot_tools() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("hang.raw");
    // Boot code that spins forever (jmp $), with the boot signature.
    let mbr = partition::build_mbr(&[0xEB, 0xFE], &[]).unwrap();
    crate::util::sparse_file(&raw, 4 << 20, &[(0, mbr.to_vec())]);
    let before = hash(&raw);
    let t = std::time::Instant::now();
    let shot = d.path().join("hang.png");
    let out = ec2azure([
        "boot-check",
        "--json",
        "--timeout",
        "10s",
        "--screenshot",
        p(&shot),
        p(&raw),
    ]);
    out.expect_code(1);
    let v = out.json();
    assert_eq!(v["verdict"], "timeout", "{out}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("started the disk's boot code"), "{reason}");
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    let (w, h) = valid_png(&shot);
    assert_eq!(v["screenshot_size"], serde_json::json!([w, h]));
    assert!(
        processes_naming(p(&raw)).is_empty(),
        "a qemu is left running"
    );
    assert_eq!(hash(&raw), before);
}

#[test]
fn a_missing_qemu_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("mbr.raw");
    let mbr = partition::build_mbr(&[0xEB, 0xFE], &[]).unwrap();
    crate::util::sparse_file(&raw, 1 << 20, &[(0, mbr.to_vec())]);
    let out = Command::new(env!("CARGO_BIN_EXE_ec2azure"))
        .args(["boot-check", p(&raw)])
        .env("EC2AZURE_QEMU", "/nonexistent/qemu-system-x86_64")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/qemu-system-x86_64"));
}
