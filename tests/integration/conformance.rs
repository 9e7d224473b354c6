//! One conformance suite over every reader: the same checks run against raw, fixed VHD (ours and
//! qemu's), dynamic VHD (qemu's, including a sparse 6 GiB disk with data above 4 GiB and in the
//! last MiB, and partial-sector writes), and differencing VHDs (built by `vhdgen`), each compared
//! with a reference raw image made by another tool (`qemu-img convert -O raw`, or libvhdi for
//! differencing disks, which qemu cannot read):
//! - sequential reads in odd-sized pieces, and random unaligned reads;
//! - reads from four threads at once;
//! - reads at and past the end;
//! - the extent map hides no data, and covers every range `qemu-img map` calls data (for dynamic
//!   VHD; qemu reports no block status for fixed VHD and VHDX);
//! - `ec2azure convert -O raw` equals the reference byte for byte.

use crate::util::*;
use crate::vhdgen::{Child, Locator, unique_id_of, write_child};
use ec2azure::DiskImage;
use ec2azure::sample::SplitMix64;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn read_ref(f: &std::fs::File, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, off).unwrap();
    v
}

/// Runs every check on the image at `path` against the raw `reference` file.
pub(crate) fn conform(name: &str, path: &Path, reference: &Path, qemu_format: Option<&str>) {
    let img = ec2azure::open(path, None).unwrap_or_else(|e| panic!("{name}: open: {e}"));
    let rf = std::fs::File::open(reference).unwrap();
    let size = rf.metadata().unwrap().len();
    assert_eq!(img.len(), size, "{name}: size");
    let extents = img.extents().unwrap();
    assert_eq!(
        extents.len(),
        size,
        "{name}: the extent map covers the disk"
    );

    // Sequential reads in odd pieces, over the data extents plus a little around them (whole
    // disk for small images).
    let ranges: Vec<(u64, u64)> = if size <= 64 * MIB {
        vec![(0, size)]
    } else {
        extents
            .iter()
            .filter(|e| e.kind.is_data())
            .map(|e| {
                (
                    e.offset.saturating_sub(4096),
                    (e.len + 8192).min(size - e.offset.saturating_sub(4096)),
                )
            })
            .collect()
    };
    for (start, len) in ranges {
        let mut pos = start;
        let piece = 1_234_567usize;
        while pos < start + len {
            let n = piece.min((start + len - pos) as usize);
            let mut buf = vec![0u8; n];
            assert_eq!(img.read_at(&mut buf, pos).unwrap(), n);
            assert!(
                buf == read_ref(&rf, pos, n),
                "{name}: sequential read at {pos}+{n}"
            );
            pos += n as u64;
        }
    }

    // Random unaligned reads, biased towards data, from four threads at once.
    let data: Vec<_> = extents
        .iter()
        .filter(|e| e.kind.is_data())
        .copied()
        .collect();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (img, rf, data) = (&img, &rf, &data);
            s.spawn(move || {
                let mut rng = SplitMix64(t * 7919 + 1);
                for _ in 0..150 {
                    let off = if !data.is_empty() && !rng.next_u64().is_multiple_of(4) {
                        let e = data[(rng.next_u64() % data.len() as u64) as usize];
                        e.offset + rng.next_u64() % e.len
                    } else {
                        rng.next_u64() % size.max(1)
                    };
                    let len = (1 + rng.next_u64() % (3 * MIB)).min(size - off.min(size)) as usize;
                    let mut buf = vec![0u8; len];
                    assert_eq!(img.read_at(&mut buf, off).unwrap(), len);
                    assert!(
                        buf == read_ref(rf, off, len),
                        "{name}: random read at {off}+{len}"
                    );
                }
            });
        }
    });

    // At and past the end.
    let mut buf = vec![7u8; 1000];
    assert_eq!(
        img.read_at(&mut buf, size).unwrap(),
        0,
        "{name}: read at the end"
    );
    assert_eq!(
        img.read_at(&mut buf, size + 12345).unwrap(),
        0,
        "{name}: read past the end"
    );
    if size >= 10 {
        assert_eq!(
            img.read_at(&mut buf, size - 10).unwrap(),
            10,
            "{name}: read across the end"
        );
        assert_eq!(
            &buf[..10],
            &read_ref(&rf, size - 10, 10)[..],
            "{name}: tail bytes"
        );
    }

    // The extent map hides no data: outside data extents the reference reads zero.
    for e in extents.iter().filter(|e| !e.kind.is_data()) {
        let mut pos = e.offset;
        while pos < e.end() {
            let n = (e.end() - pos).min(8 * MIB) as usize;
            assert!(
                read_ref(&rf, pos, n).iter().all(|&b| b == 0),
                "{name}: non-zero bytes in a {:?} extent at {pos}",
                e.kind
            );
            pos += n as u64;
            if size > 64 * MIB {
                break; // big sparse disks: check the start of each hole only
            }
        }
    }
    // ... and covers everything qemu calls data.
    if let Some(fmt) = qemu_format {
        let map = run("qemu-img", ["map", "-f", fmt, "--output=json", p(path)])
            .ok()
            .json();
        for m in map.as_array().unwrap() {
            if m["data"] == true {
                let (o, l) = (m["start"].as_u64().unwrap(), m["length"].as_u64().unwrap());
                assert!(
                    extents.range(o, l).all(|e| e.kind.is_data()),
                    "{name}: qemu-img map says {o}+{l} is data; our map: {:?}",
                    extents.range(o, l).collect::<Vec<_>>()
                );
            }
        }
    }

    // The CLI's raw output equals the reference.
    let out = reference.with_extension("ours.raw");
    ec2azure(["convert", "-q", "--no-sync", "-O", "raw", p(path), p(&out)]).ok();
    ec2azure(["compare", "--strict", p(&out), p(reference)]).ok();
    let _ = std::fs::remove_file(out);
}

pub(crate) fn qemu_raw(path: &Path, fmt: &str) -> PathBuf {
    let out = path.with_extension("ref.raw");
    run(
        "qemu-img",
        ["convert", "-f", fmt, "-O", "raw", p(path), p(&out)],
    )
    .ok();
    out
}

#[test]
fn every_reader_conforms() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let raw = dir.join("s.raw");
    ec2azure([
        "sample",
        "-q",
        p(&raw),
        "--size",
        &(30 * MIB + 333).to_string(),
        "--seed",
        "8",
    ])
    .ok();
    conform("raw", &raw, &raw, None);

    let ours = dir.join("ours.vhd");
    ec2azure(["convert", "-q", "--no-sync", p(&raw), p(&ours)]).ok();
    // qemu-img map calls all of a fixed VHD data (its vpc driver does not look through to the
    // file's holes), so the map comparison is for dynamic disks only.
    conform("fixed vhd (ec2azure)", &ours, &qemu_raw(&ours, "vpc"), None);

    let qfixed = dir.join("qfixed.vhd");
    run(
        "qemu-img",
        [
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed",
            p(&raw),
            p(&qfixed),
        ],
    )
    .ok();
    conform("fixed vhd (qemu)", &qfixed, &qemu_raw(&qfixed, "vpc"), None);

    let qdyn = dir.join("qdyn.vhd");
    run(
        "qemu-img",
        ["convert", "-f", "raw", "-O", "vpc", p(&raw), p(&qdyn)],
    )
    .ok();
    // Partial-sector and cross-block writes on top.
    run(
        "qemu-io",
        [
            "-f",
            "vpc",
            "-c",
            "write -P 0x5a 100 3",
            "-c",
            "write -P 0x6b 2097000 1000",
            p(&qdyn),
        ],
    )
    .ok();
    conform(
        "dynamic vhd (qemu)",
        &qdyn,
        &qemu_raw(&qdyn, "vpc"),
        Some("vpc"),
    );

    let big = dir.join("big.vhd");
    run("qemu-img", ["create", "-f", "vpc", p(&big), "6G"]).ok();
    run(
        "qemu-io",
        [
            "-f",
            "vpc",
            "-c",
            "write -P 0xab 5G 1000",
            "-c",
            "write -P 0xcd 4294967000 4096",
            "-c",
            "write -P 0x11 6143M 1M",
            p(&big),
        ],
    )
    .ok();
    let big_ref = qemu_raw(&big, "vpc");
    assert!(std::fs::metadata(&big_ref).unwrap().len() > 6 * GIB - 16 * MIB);
    conform("dynamic vhd 6 GiB (qemu)", &big, &big_ref, Some("vpc"));
    let _ = std::fs::remove_file(&big_ref);

    // VHDX from the sample, in several block sizes and both subformats.
    for (i, opts) in [
        "block_size=1M",
        "block_size=32M",
        "subformat=fixed",
        "block_state_zero=off",
    ]
    .iter()
    .enumerate()
    {
        let x = dir.join(format!("s{i}.vhdx"));
        run(
            "qemu-img",
            [
                "convert",
                "-f",
                "raw",
                "-O",
                "vhdx",
                "-o",
                opts,
                p(&raw),
                p(&x),
            ],
        )
        .ok();
        run(
            "qemu-io",
            [
                "-f",
                "vhdx",
                "-c",
                "write -P 0x5a 100 3",
                "-c",
                "write -P 0x6b 1048000 2000",
                p(&x),
            ],
        )
        .ok();
        // qemu's VHDX driver reports no block status (its map calls everything data), so
        // only "our map hides no data" applies here.
        conform(&format!("vhdx {opts}"), &x, &qemu_raw(&x, "vhdx"), None);
    }
    // Sparse 6 GiB and 10 GiB VHDX with data above 4 GiB (past the first sector-bitmap entry of
    // the BAT), at 8 GiB, and in the last MiB.
    for (size, name) in [("6G", "six.vhdx"), ("10G", "ten.vhdx")] {
        let x = dir.join(name);
        run("qemu-img", ["create", "-f", "vhdx", p(&x), size]).ok();
        let last = if size == "6G" { "6143M" } else { "10239M" };
        run(
            "qemu-io",
            [
                "-f",
                "vhdx",
                "-c",
                "write -P 0xab 5G 1000",
                "-c",
                "write -P 0xcd 4294967000 4096",
                "-c",
                &format!("write -P 0x11 {last} 1M"),
                "-c",
                "write -P 0x22 100 3",
                p(&x),
            ],
        )
        .ok();
        if size == "10G" {
            run(
                "qemu-io",
                ["-f", "vhdx", "-c", "write -P 0x33 8G 64k", p(&x)],
            )
            .ok();
        }
        let r = qemu_raw(&x, "vhdx");
        conform(&format!("vhdx {size} sparse"), &x, &r, None);
        let _ = std::fs::remove_file(&r);
    }
}

/// A parent made by qemu (dynamic) and its virtual size.
fn dynamic_parent(dir: &Path, name: &str, seed: u64) -> (PathBuf, u64) {
    let raw = dir.join(format!("{name}.src.raw"));
    ec2azure([
        "sample",
        "-q",
        p(&raw),
        "--size",
        "20M",
        "--seed",
        &seed.to_string(),
    ])
    .ok();
    let vhd = dir.join(format!("{name}.vhd"));
    run(
        "qemu-img",
        ["convert", "-f", "raw", "-O", "vpc", p(&raw), p(&vhd)],
    )
    .ok();
    let size = ec2azure(["info", "--json", p(&vhd)]).ok().json()["virtual_size"]
        .as_u64()
        .unwrap();
    (vhd, size)
}

fn child_writes(size: u64, seed: u8) -> Vec<(u64, Vec<u8>)> {
    vec![
        (512, pattern(512 * 3, seed)),             // a few sectors in block 0
        (2 * MIB - 1024, pattern(4096, seed + 1)), // across a block boundary
        (size - 512 * 5, pattern(512 * 5, seed + 2)), // the last sectors
    ]
}

/// `reference` with `writes` applied, as a new raw file.
fn overlay(reference: &Path, writes: &[(u64, Vec<u8>)], out: &Path) {
    let mut bytes = std::fs::read(reference).unwrap();
    for (o, data) in writes {
        bytes[*o as usize..*o as usize + data.len()].copy_from_slice(data);
    }
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn differencing_vhds_conform_and_agree_with_libvhdi() {
    if !have_qemu() {
        return;
    }
    let libvhdi = have_libvhdi();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (parent, size) = dynamic_parent(dir, "parent", 21);
    let parent_ref = qemu_raw(&parent, "vpc");

    let child = dir.join("child.vhd");
    let w1 = child_writes(size, 40);
    write_child(
        &child,
        &Child {
            size,
            block_size: 2 << 20,
            parent_id: unique_id_of(&parent),
            parent_name: "parent.vhd",
            locator: Locator::Relative(".\\parent.vhd".into()),
            unique_id: [0xc1; 16],
            writes: w1.clone(),
        },
    );
    let child_ref = dir.join("child.expect.raw");
    overlay(&parent_ref, &w1, &child_ref);
    conform("differencing vhd", &child, &child_ref, None);

    // A grandchild over the child, found by absolute locator.
    let grand = dir.join("grand.vhd");
    let w2 = vec![
        (1024, pattern(512, 90)),
        (3 * MIB, pattern(MIB as usize, 91)),
    ];
    write_child(
        &grand,
        &Child {
            size,
            block_size: 512 * 1024,
            parent_id: [0xc1; 16],
            parent_name: "child.vhd",
            locator: Locator::Absolute(p(&child).to_string()),
            unique_id: [0xc2; 16],
            writes: w2.clone(),
        },
    );
    let grand_ref = dir.join("grand.expect.raw");
    overlay(&child_ref, &w2, &grand_ref);
    conform("differencing vhd, two levels", &grand, &grand_ref, None);

    if libvhdi {
        // libvhdi, given a chain, reads what we read. libvhdi returns zeros for a parent's
        // sectors that share a bitmap byte with a sector present in the child: its VHD bitmap
        // loop takes `byte >> (7 - bit)` without masking to one bit, so every sector after a
        // set bit in the same byte looks present (libvhdi_block_descriptor.c, read in its
        // repository). This chain's writes are therefore 4 KiB-aligned; the sub-4 KiB cases
        // above are checked against the byte model.
        let c4 = dir.join("child4k.vhd");
        let g4 = dir.join("grand4k.vhd");
        let w3 = vec![
            (4096, pattern(8192, 50)),
            (2 * MIB - 4096, pattern(12_288, 51)),
            (size - 4096, pattern(4096, 52)),
        ];
        let w4 = vec![
            (8192, pattern(4096, 60)),
            (3 * MIB, pattern(MIB as usize, 61)),
        ];
        write_child(
            &c4,
            &Child {
                size,
                block_size: 2 << 20,
                parent_id: unique_id_of(&parent),
                parent_name: "parent.vhd",
                locator: Locator::Relative("parent.vhd".into()),
                unique_id: [0xc4; 16],
                writes: w3,
            },
        );
        write_child(
            &g4,
            &Child {
                size,
                block_size: 512 * 1024,
                parent_id: [0xc4; 16],
                parent_name: "child4k.vhd",
                locator: Locator::Relative("child4k.vhd".into()),
                unique_id: [0xc5; 16],
                writes: w4,
            },
        );
        let script = libvhdi_script();
        let theirs = dir.join("grand4k.libvhdi.raw");
        let parents = [
            format!("--parent={}", p(&c4)),
            format!("--parent={}", p(&parent)),
        ];
        run(
            "/usr/bin/python3",
            [
                p(&script),
                "export",
                p(&g4),
                p(&theirs),
                &parents[0],
                &parents[1],
            ],
        )
        .ok();
        ec2azure(["compare", "--strict", p(&g4), p(&theirs)]).ok();
    }

    // Moving the whole chain keeps the relative locator working.
    let moved = dir.join("moved");
    std::fs::create_dir(&moved).unwrap();
    std::fs::copy(&parent, moved.join("parent.vhd")).unwrap();
    std::fs::copy(&child, moved.join("child.vhd")).unwrap();
    ec2azure([
        "compare",
        "--strict",
        p(&moved.join("child.vhd")),
        p(&child_ref),
    ])
    .ok();
    // Only the header's parent name: found beside the child too.
    let named = moved.join("named.vhd");
    write_child(
        &named,
        &Child {
            size,
            block_size: 2 << 20,
            parent_id: unique_id_of(&parent),
            parent_name: "parent.vhd",
            locator: Locator::NameOnly,
            unique_id: [0xc3; 16],
            writes: w1.clone(),
        },
    );
    ec2azure(["compare", "--strict", p(&named), p(&child_ref)]).ok();
}

#[test]
fn differencing_vhd_refusals() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (parent, size) = dynamic_parent(dir, "parent", 22);
    let mk = |name: &str, parent_id: [u8; 16], locator: Locator| {
        let path = dir.join(name);
        write_child(
            &path,
            &Child {
                size,
                block_size: 2 << 20,
                parent_id,
                parent_name: "parent.vhd",
                locator,
                unique_id: [0xd0; 16],
                writes: child_writes(size, 3),
            },
        );
        path
    };
    // The wrong parent: refused, naming both ids.
    let wrong = mk(
        "wrong-id.vhd",
        [0xee; 16],
        Locator::Relative("parent.vhd".into()),
    );
    ec2azure(["convert", p(&wrong), p(&dir.join("o.vhd"))])
        .expect_code(2)
        .stderr_has("but the child expects its parent to be eeeeeeee-");
    // A missing parent: refused, never read as zeros.
    let missing = mk(
        "missing.vhd",
        unique_id_of(&parent),
        Locator::Relative("gone.vhd".into()),
    );
    std::fs::remove_file(&parent).unwrap();
    let out = ec2azure(["info", p(&missing)]);
    out.expect_code(2)
        .stderr_has("not found; tried")
        .stderr_has("gone.vhd");
    assert!(!dir.join("o.vhd").exists());
    // A child that names itself as parent: the depth limit stops the loop.
    let me = dir.join("loop.vhd");
    write_child(
        &me,
        &Child {
            size,
            block_size: 2 << 20,
            parent_id: [0xd1; 16],
            parent_name: "loop.vhd",
            locator: Locator::Relative("loop.vhd".into()),
            unique_id: [0xd1; 16],
            writes: child_writes(size, 5),
        },
    );
    ec2azure(["info", p(&me)])
        .expect_code(2)
        .stderr_has("deeper than 16");
}

/// qcow2 through imago, every case the issue names, against `qemu-img convert -O raw`.
#[test]
fn qcow2_conforms() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let raw = dir.join("base.raw");
    ec2azure([
        "sample",
        "-q",
        p(&raw),
        "--size",
        &(24 * MIB).to_string(),
        "--seed",
        "31",
    ])
    .ok();
    let qi = |args: &[&str]| run("qemu-img", args).ok().code;
    let io = |img: &Path, cmds: &[&str]| {
        let mut a = vec!["-f".to_string(), "qcow2".to_string()];
        for c in cmds {
            a.push("-c".into());
            a.push(c.to_string());
        }
        a.push(p(img).to_string());
        run("qemu-io", &a).ok();
    };
    // v2 and v3, plain and zlib-compressed.
    for (name, extra) in [
        ("v2", vec!["-o", "compat=0.10"]),
        ("v3", vec!["-o", "compat=1.1"]),
        ("zlib", vec!["-c"]),
    ] {
        let img = dir.join(format!("{name}.qcow2"));
        let mut a = vec!["convert", "-f", "raw", "-O", "qcow2"];
        a.extend(extra.iter().copied());
        a.extend([p(&raw), p(&img)]);
        qi(&a);
        conform(
            &format!("qcow2 {name}"),
            &img,
            &qemu_raw(&img, "qcow2"),
            Some("qcow2"),
        );
    }
    // Zero clusters (v3) over data.
    let z = dir.join("zero.qcow2");
    qi(&["convert", "-f", "raw", "-O", "qcow2", p(&raw), p(&z)]);
    io(&z, &["write -z 0 1M", "write -z 5M 128k"]);
    conform(
        "qcow2 zero clusters",
        &z,
        &qemu_raw(&z, "qcow2"),
        Some("qcow2"),
    );
    // A backing chain with relative paths: base.qcow2 <- mid.qcow2 <- top.qcow2, with
    // partial-cluster writes; and an overlay over a raw backing file.
    let base = dir.join("chain-base.qcow2");
    qi(&["convert", "-f", "raw", "-O", "qcow2", p(&raw), p(&base)]);
    let mid = dir.join("chain-mid.qcow2");
    qi(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "chain-base.qcow2",
        "-F",
        "qcow2",
        p(&mid),
    ]);
    io(
        &mid,
        &[
            "write -P 0x71 1000 100",
            "write -P 0x72 65000 1000",
            "write -P 0x73 20M 3",
        ],
    );
    let top = dir.join("chain-top.qcow2");
    qi(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "chain-mid.qcow2",
        "-F",
        "qcow2",
        p(&top),
    ]);
    io(
        &top,
        &[
            "write -P 0x81 1050 10",
            "write -z 4M 64k",
            "write -P 0x82 25165312 512",
        ],
    );
    conform(
        "qcow2 backing chain",
        &top,
        &qemu_raw(&top, "qcow2"),
        Some("qcow2"),
    );
    let over_raw = dir.join("over-raw.qcow2");
    qi(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        p(&over_raw),
    ]);
    io(&over_raw, &["write -P 0x91 3M 5000"]);
    conform(
        "qcow2 over raw backing",
        &over_raw,
        &qemu_raw(&over_raw, "qcow2"),
        Some("qcow2"),
    );
    // An external data file.
    let ext = dir.join("ext.qcow2");
    // (qemu-img create resolves a relative data file name against its working directory.)
    let opt = format!("data_file={},data_file_raw=on", p(&dir.join("ext.data")));
    qi(&["create", "-f", "qcow2", "-o", &opt, p(&ext), "16M"]);
    io(&ext, &["write -P 0xa1 0 1M", "write -P 0xa2 9M 4096"]);
    conform(
        "qcow2 external data file",
        &ext,
        &qemu_raw(&ext, "qcow2"),
        Some("qcow2"),
    );
}

/// What imago cannot read is refused with its reason, never misread.
#[test]
fn qcow2_refusals() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let raw = dir.join("r.raw");
    ec2azure(["sample", "-q", p(&raw), "--size", "8M", "--seed", "32"]).ok();
    let zstd = dir.join("zstd.qcow2");
    let zstd_ok = run(
        "qemu-img",
        [
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-c",
            "-o",
            "compression_type=zstd",
            p(&raw),
            p(&zstd),
        ],
    )
    .code
        == 0;
    let l2 = dir.join("l2.qcow2");
    run(
        "qemu-img",
        [
            "create",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            p(&l2),
            "8M",
        ],
    )
    .ok();
    let enc = dir.join("enc.qcow2");
    run(
        "qemu-img",
        [
            "create",
            "--object",
            "secret,id=s0,data=pw",
            "-f",
            "qcow2",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=s0",
            p(&enc),
            "8M",
        ],
    )
    .ok();
    // Data in the encrypted image: imago alone would return its ciphertext.
    run(
        "qemu-io",
        [
            "--object",
            "secret,id=s0,data=pw",
            "--image-opts",
            "-c",
            "write -P 0x41 0 64k",
            &format!(
                "driver=qcow2,file.filename={},encrypt.key-secret=s0",
                p(&enc)
            ),
        ],
    )
    .ok();
    let enc_overlay = dir.join("over-enc.qcow2");
    run(
        "qemu-img",
        [
            "create",
            "-f",
            "qcow2",
            "-b",
            "enc.qcow2",
            "-F",
            "qcow2",
            p(&enc_overlay),
        ],
    )
    .ok();
    let mut cases = vec![
        (l2, "extended L2"),
        (enc, "encrypted (LUKS)"),
        (enc_overlay, "encrypted (LUKS)"),
    ];
    if zstd_ok {
        cases.push((zstd, "zstd")); // imago: "compression type" / zstd
    }
    for (img, what) in cases {
        let out = dir.join("out.vhd");
        let r = ec2azure(["convert", p(&img), p(&out)]);
        r.expect_code(2).stderr_has(what);
        assert!(!out.exists(), "{what}: no output");
        eprintln!("{what}: {}", r.stderr.lines().next().unwrap_or(""));
    }
    // A truncated image: its data clusters past the new end would read as zeros.
    let t = dir.join("trunc.qcow2");
    run("qemu-img", ["create", "-f", "qcow2", p(&t), "64M"]).ok();
    run(
        "qemu-io",
        ["-f", "qcow2", "-c", "write -P 0xaa 0 32M", p(&t)],
    )
    .ok();
    let f = std::fs::OpenOptions::new().write(true).open(&t).unwrap();
    f.set_len(8 << 20).unwrap();
    drop(f);
    ec2azure(["convert", p(&t), p(&dir.join("trunc.vhd"))])
        .expect_code(2)
        .stderr_has("the file was truncated");
    // A missing backing file is an error, never zeros.
    let base = dir.join("gone.qcow2");
    run("qemu-img", ["create", "-f", "qcow2", p(&base), "8M"]).ok();
    let top = dir.join("top.qcow2");
    run(
        "qemu-img",
        [
            "create",
            "-f",
            "qcow2",
            "-b",
            "gone.qcow2",
            "-F",
            "qcow2",
            p(&top),
        ],
    )
    .ok();
    std::fs::remove_file(&base).unwrap();
    ec2azure(["info", p(&top)])
        .expect_code(2)
        .stderr_has("gone.qcow2");
}

/// Appends one VHDX log entry to the log region of `bytes` and names it in the current header:
/// a data page written at `data_at`, 4 KiB zeroed at `zero_at`, and the BAT entry of block
/// `bat_block` rewritten as ZERO (state 2). Built from MS-VHDX §2.3 by hand, so qemu (which
/// replays the log of a copy opened read-write) is the judge of what it means.
fn add_log_entry(bytes: &mut [u8], data_at: u64, zero_at: u64, bat_at: u64, bat_block: u64) {
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    // The current header: the valid one with the higher sequence number (both are valid here).
    let h = if le64(bytes, 128 * 1024 + 8) > le64(bytes, 64 * 1024 + 8) {
        128 * 1024
    } else {
        64 * 1024
    };
    let log_off = le64(bytes, h + 72) as usize;
    let guid = [0x6c; 16];
    // The BAT page holding the entry, with the entry changed.
    let bat_entry_at = bat_at + bat_block * 8; // block < chunk ratio: no bitmap entries before it
    let bat_page_at = bat_entry_at / 4096 * 4096;
    let mut bat_page = bytes[bat_page_at as usize..bat_page_at as usize + 4096].to_vec();
    let o = (bat_entry_at - bat_page_at) as usize;
    bat_page[o..o + 8].copy_from_slice(&2u64.to_le_bytes());
    let new_data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let seq: u64 = 0x1234_5678_9abc;
    // Entry: header + 3 descriptors (one 4 KiB sector), then 2 data sectors.
    let mut e = vec![0u8; 3 * 4096];
    e[0..4].copy_from_slice(b"loge");
    e[8..12].copy_from_slice(&(3u32 * 4096).to_le_bytes());
    e[12..16].copy_from_slice(&0u32.to_le_bytes()); // tail: this entry
    e[16..24].copy_from_slice(&seq.to_le_bytes());
    e[24..28].copy_from_slice(&3u32.to_le_bytes());
    e[32..48].copy_from_slice(&guid);
    let flen = bytes.len() as u64;
    e[48..56].copy_from_slice(&flen.to_le_bytes());
    e[56..64].copy_from_slice(&flen.to_le_bytes());
    let mut desc = |i: usize, sig: &[u8; 4], trailing: u32, leading: [u8; 8], off: u64| {
        let d = 64 + i * 32;
        e[d..d + 4].copy_from_slice(sig);
        e[d + 4..d + 8].copy_from_slice(&trailing.to_le_bytes());
        e[d + 8..d + 16].copy_from_slice(&leading);
        e[d + 16..d + 24].copy_from_slice(&off.to_le_bytes());
        e[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
    };
    let lead = |p: &[u8]| -> [u8; 8] { p[..8].try_into().unwrap() };
    let trail = |p: &[u8]| le32(p, 4092);
    desc(0, b"desc", trail(&new_data), lead(&new_data), data_at);
    // A zero descriptor: "zero", reserved, zero length, file offset, sequence.
    desc(1, b"zero", 0, 4096u64.to_le_bytes(), zero_at);
    desc(2, b"desc", trail(&bat_page), lead(&bat_page), bat_page_at);
    for (k, page) in [&new_data, &bat_page].into_iter().enumerate() {
        let s = 4096 * (k + 1);
        e[s..s + 4].copy_from_slice(b"data");
        e[s + 4..s + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
        e[s + 8..s + 4092].copy_from_slice(&page[8..4092]);
        e[s + 4092..s + 4096].copy_from_slice(&(seq as u32).to_le_bytes());
    }
    let crc = ec2azure::image::vhdx::crc_with_zeroed_field(&e, 4);
    e[4..8].copy_from_slice(&crc.to_le_bytes());
    bytes[log_off..log_off + e.len()].copy_from_slice(&e);
    bytes[h + 48..h + 64].copy_from_slice(&guid);
    let c = ec2azure::image::vhdx::crc_with_zeroed_field(&bytes[h..h + 4096], 4);
    bytes[h + 4..h + 8].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn vhdx_dirty_log_is_replayed_in_memory_like_qemu() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let raw = dir.join("l.raw");
    ec2azure([
        "sample",
        "-q",
        p(&raw),
        "--size",
        "16M",
        "--data-fraction",
        "1",
        "--seed",
        "41",
    ])
    .ok();
    let clean = dir.join("clean.vhdx");
    run(
        "qemu-img",
        [
            "convert",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            "block_size=1M,subformat=fixed",
            p(&raw),
            p(&clean),
        ],
    )
    .ok();
    let mut bytes = std::fs::read(&clean).unwrap();
    // Where block 2's payload and the BAT are: from the region table and the BAT itself.
    let rt = 192 * 1024;
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let mut bat = 0;
    for i in 0..u32::from_le_bytes(bytes[rt + 8..rt + 12].try_into().unwrap()) as usize {
        let e = rt + 16 + i * 32;
        if bytes[e] == 0x66 {
            bat = le64(&bytes, e + 16);
        }
    }
    let block = |b: &[u8], i: u64| (le64(b, (bat + i * 8) as usize) >> 20) << 20;
    let (b2, b5) = (block(&bytes, 2), block(&bytes, 5));
    assert!(b2 > 0 && b5 > 0, "fixed subformat: blocks are present");
    add_log_entry(&mut bytes, b2 + 8192, b5 + 4096, bat, 9);
    let dirty = dir.join("dirty.vhdx");
    std::fs::write(&dirty, &bytes).unwrap();
    // qemu refuses to read it read-only, and replays the log of a copy opened read-write.
    let copy = dir.join("replayed-by-qemu.vhdx");
    std::fs::write(&copy, &bytes).unwrap();
    run("qemu-img", ["check", "-r", "all", "-f", "vhdx", p(&copy)]);
    let want = qemu_raw(&copy, "vhdx");
    // The replay changed something (so this test can fail): the three edits are visible.
    let clean_raw = qemu_raw(&clean, "vhdx");
    assert!(
        std::fs::read(&want).unwrap() != std::fs::read(&clean_raw).unwrap(),
        "qemu replayed nothing"
    );
    conform("vhdx with a dirty log", &dirty, &want, None);
    assert!(
        std::fs::read(&dirty).unwrap() == bytes,
        "the dirty file must not be written"
    );
    let j = ec2azure(["info", "--json", p(&dirty)]).ok().json();
    assert_eq!(j["format"], "vhdx");
    // Both info and convert say that the log was replayed, with its size.
    let note = j["notes"][0].as_str().unwrap_or_default().to_string();
    assert!(
        note.contains("log was replayed in memory") && note.contains(": 1 log entries, "),
        "{j}"
    );
    let text = ec2azure(["info", p(&dirty)]).ok().stdout.clone();
    assert!(text.contains(&note), "{text}");
    ec2azure(["convert", p(&dirty), p(&dir.join("dirty.vhd"))])
        .ok()
        .stderr_has(&note);
    // Truncated after the log was written: the lost tail must not read as zeros.
    let cut = dir.join("dirty-truncated.vhdx");
    std::fs::write(&cut, &bytes[..bytes.len() - (1 << 20)]).unwrap();
    ec2azure(["convert", p(&cut), p(&dir.join("cut.vhd"))])
        .expect_code(2)
        .stderr_has("the file was truncated");
}

/// Differencing VHDX over a qemu-made parent, built by make_diff_vhdx.py (MS-VHDX; no tool here
/// can make one): FULLY and PARTIALLY PRESENT blocks with sector bitmaps (LSB first, as libvhdi
/// reads them), found by relative and by absolute path, checked against the byte model. Debian's
/// libvhdi (20210425) cannot link a VHDX parent, so it cannot judge these.
#[test]
fn differencing_vhdx_conforms() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let raw = dir.join("base.raw");
    ec2azure(["sample", "-q", p(&raw), "--size", "20M", "--seed", "3"]).ok();
    let parent = dir.join("parent.vhdx");
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
            p(&parent),
        ],
    )
    .ok();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/make_diff_vhdx.py");
    let writes = [
        (512u64, 1024u64, 0x41u8),
        (2_096_640, 1024, 0x42),
        (4 * MIB, 2 * MIB, 0x43),
        (19 * MIB + 512, 3072, 0x44),
    ];
    let specs: Vec<String> = writes
        .iter()
        .map(|(o, l, b)| format!("{o}:{l}:{b}"))
        .collect();
    let mut expect = std::fs::read(&raw).unwrap();
    for &(o, l, b) in &writes {
        expect[o as usize..(o + l) as usize].fill(b);
    }
    let want = dir.join("expect.raw");
    std::fs::write(&want, &expect).unwrap();
    for (name, locator) in [
        ("rel.vhdx", "parent.vhdx".to_string()),
        ("abs.vhdx", p(&parent).to_string()),
    ] {
        let child = dir.join(name);
        let mut args = vec![
            p(&script).to_string(),
            p(&parent).to_string(),
            p(&child).to_string(),
            locator,
        ];
        args.extend(specs.iter().cloned());
        run("python3", &args).ok();
        conform(&format!("differencing vhdx ({name})"), &child, &want, None);
    }
    // The wrong parent (another VHDX at the same path): refused by its data write GUID.
    let other = dir.join("other.vhdx");
    run(
        "qemu-img",
        ["convert", "-f", "raw", "-O", "vhdx", p(&raw), p(&other)],
    )
    .ok();
    std::fs::rename(&other, &parent).unwrap();
    ec2azure(["info", p(&dir.join("rel.vhdx"))])
        .expect_code(2)
        .stderr_has("data write GUID");
    std::fs::remove_file(&parent).unwrap();
    ec2azure(["info", p(&dir.join("rel.vhdx"))])
        .expect_code(2)
        .stderr_has("not found; tried");
}

/// What a qcow2 may open implicitly: no loops, at most 16 levels, nothing outside its folder
/// when the format was only guessed; and a fixed VHD whose disk starts with a qcow2 header is a
/// VHD.
#[test]
fn qcow2_open_gate() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let qi = |args: &[&str]| run("qemu-img", args).ok().code;
    // 17 overlays: refused by depth.
    qi(&["create", "-f", "qcow2", p(&dir.join("l0.qcow2")), "1M"]);
    for i in 1..=17 {
        let (b, t) = (format!("l{}.qcow2", i - 1), dir.join(format!("l{i}.qcow2")));
        qi(&[
            "create",
            "-f",
            "qcow2",
            "-u",
            "-b",
            &b,
            "-F",
            "qcow2",
            p(&t),
            "1M",
        ]);
    }
    ec2azure(["info", p(&dir.join("l17.qcow2"))])
        .expect_code(2)
        .stderr_has("deeper than 16");
    ec2azure(["info", p(&dir.join("l10.qcow2"))]).ok();
    // A loop: an image whose backing file is itself.
    let lp = dir.join("loop.qcow2");
    qi(&[
        "create",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "loop.qcow2",
        "-F",
        "qcow2",
        p(&lp),
        "1M",
    ]);
    ec2azure(["info", p(&lp)])
        .expect_code(2)
        .stderr_has("deeper than 16");
    // A raw disk whose first sector is a qcow2 header naming a host file as its raw backing:
    // with the format guessed, the host file is not read.
    let sub = dir.join("disks");
    std::fs::create_dir(&sub).unwrap();
    let outside = dir.join("secret.raw");
    std::fs::write(&outside, vec![0x5e; 1 << 20]).unwrap();
    let evil = sub.join("guest.img");
    qi(&[
        "create",
        "-f",
        "qcow2",
        "-u",
        "-b",
        p(&outside),
        "-F",
        "raw",
        p(&evil),
        "1M",
    ]);
    let out = sub.join("o.vhd");
    ec2azure(["convert", p(&evil), p(&out)])
        .expect_code(2)
        .stderr_has("outside its folder");
    assert!(!out.exists());
    // Named explicitly, the user takes responsibility.
    ec2azure(["convert", "-q", "-f", "qcow2", p(&evil), p(&out)]).ok();
    // A fixed VHD whose disk happens to start with a qcow2 header is a VHD.
    let raw = dir.join("starts-qcow2.raw");
    let mut bytes = std::fs::read(dir.join("l0.qcow2")).unwrap();
    bytes.resize(2 << 20, 0);
    std::fs::write(&raw, &bytes).unwrap();
    let vhd = dir.join("starts-qcow2.vhd");
    ec2azure(["convert", "-q", "-f", "raw", p(&raw), p(&vhd)]).ok();
    let j = ec2azure(["info", "--json", p(&vhd)]).ok().json();
    assert_eq!(j["format"], "vhd");
    ec2azure([
        "compare",
        "--strict",
        "-f",
        "raw",
        "-F",
        "vhd",
        p(&raw),
        p(&vhd),
    ])
    .ok();
}
