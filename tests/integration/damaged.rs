//! Damaged inputs, named for the damage they carry: each is refused by `convert` and `info` with
//! a clear error (file, offset, expected vs found) and exit 2, leaves no output behind, and is
//! reported by `check` (exit 1) with the failing rule.

use crate::util::*;
use ec2azure::image::vhd::{Footer, checksum};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

/// A good 2 MiB fixed VHD as bytes.
fn good_vhd() -> Vec<u8> {
    let mut v = pattern(2 * MIB as usize, 9);
    v.extend_from_slice(&Footer::new_fixed(2 * MIB, [5; 16], 100).encode());
    v
}

fn fix_checksum(v: &mut [u8]) {
    let n = v.len();
    let f: &mut [u8; 512] = (&mut v[n - 512..]).try_into().unwrap();
    let s = checksum(f);
    f[64..68].copy_from_slice(&s.to_be_bytes());
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Text the error must contain.
    error: &'static str,
    /// The `check` rule that must fail.
    rule: &'static str,
}

fn cases() -> Vec<Case> {
    let good = good_vhd();
    let n = good.len();
    let mut out = Vec::new();
    let mut bad_cookie = good.clone();
    bad_cookie[n - 512..n - 504].copy_from_slice(b"conectiX");
    fix_checksum(&mut bad_cookie);
    out.push(Case {
        name: "vhd-bad-cookie",
        bytes: bad_cookie,
        error: "expected \"conectix\", found \"conectiX\"",
        rule: "footer-cookie",
    });
    let mut bad_sum = good.clone();
    bad_sum[n - 512 + 64] ^= 0x40;
    out.push(Case {
        name: "vhd-bad-checksum",
        bytes: bad_sum,
        error: "checksum",
        rule: "footer-checksum",
    });
    let mut wrong_size = good.clone();
    wrong_size[n - 512 + 48..n - 512 + 56].copy_from_slice(&(3 * MIB).to_be_bytes());
    fix_checksum(&mut wrong_size);
    out.push(Case {
        name: "vhd-size-larger-than-file",
        bytes: wrong_size,
        error: "must be 3146240 bytes",
        rule: "file-length",
    });
    let mut truncated = good.clone();
    truncated.drain(MIB as usize..MIB as usize + 4096);
    out.push(Case {
        name: "vhd-truncated-data",
        bytes: truncated,
        error: "fixed VHD size",
        rule: "file-length",
    });
    let mut dynamic = good.clone();
    dynamic[n - 512 + 60..n - 512 + 64].copy_from_slice(&3u32.to_be_bytes());
    fix_checksum(&mut dynamic);
    out.push(Case {
        name: "vhd-footer-of-dynamic-disk",
        bytes: dynamic,
        error: "dynamic VHD",
        rule: "disk-type",
    });
    let mut weird = good.clone();
    weird[n - 512 + 60..n - 512 + 64].copy_from_slice(&7u32.to_be_bytes());
    fix_checksum(&mut weird);
    out.push(Case {
        name: "vhd-unknown-disk-type",
        bytes: weird,
        error: "found 7",
        rule: "disk-type",
    });
    out
}

fn write(dir: &Path, c: &Case) -> PathBuf {
    let p = dir.join(format!("{}.vhd", c.name));
    std::fs::write(&p, &c.bytes).unwrap();
    p
}

#[test]
fn damaged_vhds_are_refused_with_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    for c in cases() {
        let input = write(d.path(), &c);
        let output = d.path().join(format!("{}.out.vhd", c.name));
        // Detected (not silently raw) and refused, naming the file and the damage.
        let out = ec2azure(["convert", p(&input), p(&output)]);
        out.expect_code(2).stderr_has(c.error).stderr_has(p(&input));
        assert!(
            out.stderr.contains("at offset"),
            "{}: the offset is named\n{out}",
            c.name
        );
        assert!(!output.exists(), "{}: no output may be left", c.name);
        let leftovers: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".partial"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{}: temporary files left: {leftovers:?}",
            c.name
        );
        // With the format named explicitly, the same.
        ec2azure(["convert", "-f", "vhd", p(&input), p(&output)])
            .expect_code(2)
            .stderr_has(c.error);
        ec2azure(["info", p(&input)])
            .expect_code(2)
            .stderr_has(c.error);
        // check reports it with the rule that failed.
        let j = ec2azure(["check", "--json", p(&input)])
            .expect_code(1)
            .json();
        let failed: Vec<&str> = j["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["passed"] == false)
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert!(
            failed.contains(&c.rule),
            "{}: expected {} to fail, got {failed:?}",
            c.name,
            c.rule
        );
        // The input was not modified.
        assert_eq!(
            std::fs::read(&input).unwrap(),
            c.bytes,
            "{}: input modified",
            c.name
        );
    }
}

#[test]
fn known_formats_are_never_read_as_raw() {
    let d = tempfile::tempdir().unwrap();
    let qcow = d.path().join("x.qcow2");
    let mut q = b"QFI\xfb\0\0\0\x03".to_vec();
    q.resize(65536, 0);
    std::fs::write(&qcow, &q).unwrap();
    ec2azure(["convert", p(&qcow), p(&d.path().join("q.vhd"))])
        .expect_code(2)
        .stderr_has("qcow2: opening");
    let vhdx = d.path().join("x.vhdx");
    let mut x = b"vhdxfile".to_vec();
    x.resize(65536, 0);
    std::fs::write(&vhdx, &x).unwrap();
    ec2azure(["info", p(&vhdx)])
        .expect_code(2)
        .stderr_has("vhdx");
    let dynamic = d.path().join("dyn.vhd");
    let mut v = Footer::new_fixed(MIB, [1; 16], 0).encode().to_vec();
    v.resize(8192, 0);
    std::fs::write(&dynamic, &v).unwrap();
    ec2azure(["convert", p(&dynamic), p(&d.path().join("d.vhd"))])
        .expect_code(2)
        .stderr_has(
            "a footer copy at offset 0 means a dynamic (3) or differencing (4) disk, found 2",
        );
    // -f raw reads any of them as raw bytes on purpose.
    ec2azure([
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "raw",
        p(&qcow),
        p(&d.path().join("q.raw")),
    ])
    .ok();
    assert_eq!(std::fs::read(d.path().join("q.raw")).unwrap(), q);
}

#[test]
fn too_short_and_empty_files() {
    let d = tempfile::tempdir().unwrap();
    let empty = d.path().join("empty.raw");
    std::fs::write(&empty, b"").unwrap();
    let vhd = d.path().join("empty.vhd");
    // An empty raw disk converts to a footer-only VHD, which check says is too small for Azure.
    ec2azure(["convert", "-q", p(&empty), p(&vhd)]).ok();
    assert_eq!(std::fs::metadata(&vhd).unwrap().len(), 512);
    ec2azure(["check", p(&vhd)]).expect_code(1);
    ec2azure(["check", "-q", p(&empty)]).expect_code(1);
    ec2azure(["convert", "-f", "vhd", p(&empty), p(&d.path().join("x"))])
        .expect_code(2)
        .stderr_has("too short");
}

/// A qemu-made VHDX and the offsets of its structures.
struct VhdxFile {
    bytes: Vec<u8>,
    bat: usize,
    meta: usize,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn qemu_vhdx(dir: &Path) -> Option<VhdxFile> {
    if !have_qemu() {
        return None;
    }
    let raw = dir.join("v.raw");
    ec2azure(["sample", "-q", p(&raw), "--size", "8M", "--seed", "4"]).ok();
    let x = dir.join("v.vhdx");
    run(
        "qemu-img",
        [
            "convert",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            "block_size=1M",
            p(&raw),
            p(&x),
        ],
    )
    .ok();
    let bytes = std::fs::read(&x).unwrap();
    let rt = 192 * 1024;
    let (mut bat, mut meta) = (0, 0);
    for i in 0..le32(&bytes, rt + 8) as usize {
        let e = rt + 16 + i * 32;
        let off = u64::from_le_bytes(bytes[e + 16..e + 24].try_into().unwrap()) as usize;
        match bytes[e] {
            0x66 => bat = off,  // 2DC27766-...
            0x06 => meta = off, // 8B7CA206-...
            _ => {}
        }
    }
    assert!(bat > 0 && meta > 0);
    Some(VhdxFile { bytes, bat, meta })
}

/// Recomputes the CRC-32C of the 4 KiB header or 64 KiB table at `at`.
fn fix_crc(b: &mut [u8], at: usize, len: usize) {
    let c = ec2azure::image::vhdx::crc_with_zeroed_field(&b[at..at + len], 4);
    b[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn damaged_vhdx_files() {
    let d = tempfile::tempdir().unwrap();
    let Some(v) = qemu_vhdx(d.path()) else { return };
    let good = d.path().join("good.vhdx");
    std::fs::write(&good, &v.bytes).unwrap();
    let expect = d.path().join("expect.raw");
    ec2azure(["convert", "-q", "-O", "raw", p(&good), p(&expect)]).ok();
    let write = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = v.bytes.clone();
        edit(&mut b);
        let path = d.path().join(name);
        std::fs::write(&path, &b).unwrap();
        path
    };
    // One damaged copy of a header or region table: the other copy is used, same bytes.
    for (name, at) in [
        ("header1-crc.vhdx", 64 * 1024 + 4),
        ("header2-crc.vhdx", 128 * 1024 + 4),
        ("region1-crc.vhdx", 192 * 1024 + 4),
    ] {
        let path = write(name, &|b| b[at] ^= 0xff);
        ec2azure(["compare", "--strict", p(&path), p(&expect)]).ok();
    }
    // A log GUID without any log entry for it: nothing to replay, same bytes.
    let empty_log = write("empty-log.vhdx", &|b| {
        for h in [64 * 1024, 128 * 1024] {
            b[h + 48..h + 64].copy_from_slice(&[0x5A; 16]);
            fix_crc(b, h, 4096);
        }
    });
    ec2azure(["compare", "--strict", p(&empty_log), p(&expect)]).ok();
    // Both copies damaged, or the structures the data depends on: refused, named, exit 2.
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let refusals: Vec<(&str, Edit, &str)> = vec![
        (
            "both-headers.vhdx",
            Box::new(|b| {
                b[64 * 1024 + 4] ^= 1;
                b[128 * 1024 + 4] ^= 1
            }),
            "neither header is valid",
        ),
        (
            "both-region-tables.vhdx",
            Box::new(|b| {
                b[192 * 1024] = b'X';
                b[256 * 1024] = b'X'
            }),
            "neither region table is valid",
        ),
        (
            "bat-entry-past-eof.vhdx",
            Box::new(move |b| {
                // Block 0 FULLY PRESENT at 4 TiB.
                let e: u64 = 6 | ((4u64 << 20) << 20);
                b[v.bat..v.bat + 8].copy_from_slice(&e.to_le_bytes());
            }),
            "outside the",
        ),
        (
            "region-tables-disagree.vhdx",
            Box::new(|b| {
                // Move the BAT in region table 2 only (a valid table that disagrees with 1).
                let rt = 256 * 1024;
                for i in 0..le32(b, rt + 8) as usize {
                    let e = rt + 16 + i * 32;
                    if b[e] == 0x66 {
                        let off = u64::from_le_bytes(b[e + 16..e + 24].try_into().unwrap());
                        b[e + 16..e + 24].copy_from_slice(&(off + (1 << 20)).to_le_bytes());
                    }
                }
                fix_crc(b, rt, 64 * 1024);
            }),
            "both region tables are valid but",
        ),
        (
            "bat-entry-over-metadata.vhdx",
            Box::new(move |b| {
                let e: u64 = 6 | (((v.meta as u64) >> 20) << 20);
                b[v.bat..v.bat + 8].copy_from_slice(&e.to_le_bytes());
            }),
            "over the metadata region",
        ),
        (
            "unknown-required-metadata.vhdx",
            Box::new(move |b| {
                // Give the first metadata entry an unknown GUID and the required flag.
                let e = v.meta + 32;
                b[e..e + 16].copy_from_slice(&[0xAB; 16]);
                let flags = le32(b, e + 24) | 4;
                b[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
            }),
            "marked required but is unknown",
        ),
        ("signature-damaged.vhdx", Box::new(|b| b[0] = b'X'), "vhdx"),
    ];
    for (name, edit, msg) in &refusals {
        let path = write(name, edit.as_ref());
        let out = d.path().join(format!("{name}.out"));
        ec2azure(["convert", p(&path), p(&out)])
            .expect_code(2)
            .stderr_has(msg)
            .stderr_has(p(&path));
        assert!(!out.exists(), "{name}: no output");
        assert_eq!(
            std::fs::read(&path).unwrap().len(),
            v.bytes.len(),
            "{name}: input untouched"
        );
    }
}

/// A qemu-made dynamic VHD with each structure damaged in turn: refused, named, exit 2.
#[test]
fn damaged_dynamic_vhds() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("r.raw");
    ec2azure(["sample", "-q", p(&raw), "--size", "6M", "--seed", "5"]).ok();
    let vhd = d.path().join("d.vhd");
    run(
        "qemu-img",
        ["convert", "-f", "raw", "-O", "vpc", p(&raw), p(&vhd)],
    )
    .ok();
    let good = std::fs::read(&vhd).unwrap();
    let be64 = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let hdr = be64(&good, 16) as usize; // footer data offset → dynamic header
    let bat = be64(&good, hdr + 16) as usize;
    let fix_header = move |b: &mut Vec<u8>| {
        let h: &[u8; 1024] = b[hdr..hdr + 1024].try_into().unwrap();
        let c = ec2azure::image::vhd::dynamic::header_checksum(h);
        b[hdr + 36..hdr + 40].copy_from_slice(&c.to_be_bytes());
    };
    let both_footers = |b: &mut Vec<u8>, edit: &dyn Fn(&mut [u8])| {
        let n = b.len();
        for at in [0, n - 512] {
            edit(&mut b[at..at + 512]);
            let f: &[u8; 512] = b[at..at + 512].try_into().unwrap();
            let c = ec2azure::image::vhd::checksum(f);
            b[at + 64..at + 68].copy_from_slice(&c.to_be_bytes());
        }
    };
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "header-cookie",
            Box::new(move |b| b[hdr] = b'X'),
            "expected \"cxsparse\"",
        ),
        (
            "header-checksum",
            Box::new(move |b| b[hdr + 36] ^= 1),
            "dynamic header checksum",
        ),
        (
            "header-version",
            Box::new(move |b| {
                b[hdr + 24] = 9;
                fix_header(b)
            }),
            "header version",
        ),
        (
            "block-size-not-power-of-two",
            Box::new(move |b| {
                b[hdr + 32..hdr + 36].copy_from_slice(&3_000_000u32.to_be_bytes());
                fix_header(b)
            }),
            "block size",
        ),
        (
            "table-too-short",
            Box::new(move |b| {
                b[hdr + 28..hdr + 32].copy_from_slice(&1u32.to_be_bytes());
                fix_header(b)
            }),
            "the table has 1",
        ),
        (
            "table-past-eof",
            Box::new(move |b| {
                b[hdr + 16..hdr + 24].copy_from_slice(&(1u64 << 40).to_be_bytes());
                fix_header(b)
            }),
            "past the end",
        ),
        (
            "bat-entry-past-eof",
            Box::new(move |b| b[bat..bat + 4].copy_from_slice(&0x00FF_FFFFu32.to_be_bytes())),
            "past the end",
        ),
        (
            "bat-entry-over-header",
            Box::new(move |b| b[bat..bat + 4].copy_from_slice(&1u32.to_be_bytes())),
            "over the",
        ),
        (
            "footer-data-offset-past-eof",
            Box::new(move |b| {
                both_footers(b, &|f| {
                    f[16..24].copy_from_slice(&(1u64 << 40).to_be_bytes())
                })
            }),
            "past the end",
        ),
        (
            "both-footers-bad-checksum",
            Box::new(|b| {
                let n = b.len();
                b[64] ^= 1;
                b[n - 512 + 64] ^= 1
            }),
            "checksum",
        ),
    ];
    for (name, edit, msg) in &cases {
        let mut b = good.clone();
        edit(&mut b);
        let path = d.path().join(format!("{name}.vhd"));
        std::fs::write(&path, &b).unwrap();
        let out = d.path().join(format!("{name}.out"));
        ec2azure(["convert", p(&path), p(&out)])
            .expect_code(2)
            .stderr_has(msg)
            .stderr_has(p(&path));
        assert!(!out.exists(), "{name}: no output");
    }
    // Only the head footer damaged: the end copy is used, same bytes.
    let mut b = good.clone();
    b[64] ^= 1;
    let head_bad = d.path().join("head-footer-bad.vhd");
    std::fs::write(&head_bad, &b).unwrap();
    ec2azure(["compare", p(&head_bad), p(&vhd)]).ok();
}
