//! Independent readers agree with us: qemu-img (`info -f vpc`, `compare -f raw -F vpc`) and
//! libvhdi (`vhdiinfo`, and its Python binding through scripts/vhdiexport.py) on VHDs of many
//! sizes — tiny, odd, exactly 1 GiB, sparse multi-GiB, and over 2 TiB (past qemu's 2040 GiB
//! limit, so only libvhdi and our reader check that one) — and our reader reads qemu's VHDs.

use crate::util::*;
use std::path::Path;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// qemu refuses VHDs above 2040 GiB.
const QEMU_VPC_MAX: u64 = 2040 * GIB;

struct Sized {
    name: &'static str,
    size: u64,
}

/// Data at the start, in the middle, and in the last bytes (when the disk has room for them).
fn writes_for(size: u64) -> Vec<(u64, Vec<u8>)> {
    let mut w = Vec::new();
    if size == 0 {
        return w;
    }
    let first = size.min(5000) as usize;
    w.push((0, pattern(first, 1)));
    if size > 3 * MIB {
        w.push((size / 2 - 1234, pattern(MIB as usize + 77, 2)));
    }
    if size > 10_000 {
        w.push((size - 999, pattern(999, 3)));
    }
    w
}

/// The padded disk's bytes in `off..off+len`, computed from the writes (holes are zero).
fn expected_range(writes: &[(u64, Vec<u8>)], off: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    for (wo, data) in writes {
        let (s, e) = ((*wo).max(off), (wo + data.len() as u64).min(off + len));
        if s < e {
            v[(s - off) as usize..(e - off) as usize]
                .copy_from_slice(&data[(s - wo) as usize..(e - wo) as usize]);
        }
    }
    v
}

fn check_one(dir: &Path, case: &Sized, qemu: bool, libvhdi: bool) {
    let raw = dir.join(format!("{}.raw", case.name));
    let vhd = dir.join(format!("{}.vhd", case.name));
    let writes = writes_for(case.size);
    sparse_file(&raw, case.size, &writes);
    let j = ec2azure(["convert", "--json", "--no-sync", p(&raw), p(&vhd)])
        .ok()
        .json();
    let aligned = case.size.div_ceil(MIB) * MIB;
    assert_eq!(j["virtual_size"], aligned, "{}", case.name);
    assert_eq!(
        std::fs::metadata(&vhd).unwrap().len(),
        aligned + 512,
        "{}",
        case.name
    );
    ec2azure(["check", "--target", "page-blob", p(&vhd)]).expect_code(if aligned <= 8 << 40 {
        0
    } else {
        1
    });
    ec2azure(["compare", p(&raw), p(&vhd)]).ok();

    if qemu && aligned <= QEMU_VPC_MAX && aligned > 0 {
        let info = run("qemu-img", ["info", "-f", "vpc", "--output=json", p(&vhd)]);
        let v = info.ok().json();
        assert_eq!(
            v["virtual-size"], aligned,
            "{}: qemu-img virtual size\n{info}",
            case.name
        );
        assert_eq!(v["format"], "vpc");
        run(
            "qemu-img",
            ["compare", "-f", "raw", "-F", "vpc", p(&raw), p(&vhd)],
        )
        .ok();
    }
    if libvhdi {
        let vi = run("vhdiinfo", [p(&vhd)]);
        let text = &vi.ok().stdout;
        assert!(text.contains("Disk type\t\t: Fixed"), "{}\n{vi}", case.name);
        assert!(
            text.contains(&format!("({aligned} bytes)")),
            "{}: vhdiinfo media size\n{vi}",
            case.name
        );
        let script = libvhdi_script();
        let info = run("/usr/bin/python3", [p(&script), "info", p(&vhd)])
            .ok()
            .json();
        assert_eq!(info["media_size"], aligned, "{}", case.name);
        // Digests of every written range and of the padding edge, read through libvhdi.
        let mut ranges: Vec<(u64, u64)> =
            writes.iter().map(|(o, d)| (*o, d.len() as u64)).collect();
        if aligned > case.size {
            let start = case.size.saturating_sub(100);
            ranges.push((start, aligned - start));
        }
        let specs: Vec<String> = ranges.iter().map(|(o, l)| format!("{o}:{l}")).collect();
        let mut args = vec![p(&script).to_string(), "sha256".into(), p(&vhd).to_string()];
        args.extend(specs);
        let out = run("/usr/bin/python3", &args);
        let got: Vec<&str> = out.ok().stdout.lines().collect();
        for (i, &(o, l)) in ranges.iter().enumerate() {
            assert_eq!(
                got[i],
                sha256_hex(&expected_range(&writes, o, l)),
                "{}: libvhdi range {o}+{l}",
                case.name
            );
        }
        // Small disks: the whole export through libvhdi equals the padded input.
        if aligned <= 64 * MIB {
            let exported = dir.join(format!("{}.libvhdi.raw", case.name));
            run(
                "/usr/bin/python3",
                [p(&script), "export", p(&vhd), p(&exported)],
            )
            .ok();
            let mut want = std::fs::read(&raw).unwrap();
            want.resize(aligned as usize, 0);
            assert!(
                std::fs::read(&exported).unwrap() == want,
                "{}: libvhdi export differs",
                case.name
            );
        }
    }
    let _ = std::fs::remove_file(&vhd);
    let _ = std::fs::remove_file(&raw);
}

#[test]
fn many_sizes_agree_with_qemu_and_libvhdi() {
    let qemu = have_qemu();
    let libvhdi = have_libvhdi();
    let d = tempfile::tempdir().unwrap();
    let cases = [
        Sized {
            name: "one-byte",
            size: 1,
        },
        Sized {
            name: "one-sector",
            size: 512,
        },
        Sized {
            name: "odd",
            size: 1_000_001,
        },
        Sized {
            name: "twenty-mib",
            size: 20 * MIB,
        },
        Sized {
            name: "odd-multi-mib",
            size: 37 * MIB + 4097,
        },
        Sized {
            name: "one-gib",
            size: GIB,
        },
        Sized {
            name: "sparse-3gib-odd",
            size: 3 * GIB + 12_345,
        },
        Sized {
            name: "over-2tib-sparse",
            size: 2 * (1 << 40) + 5 * MIB + 3,
        },
    ];
    for c in &cases {
        check_one(d.path(), c, qemu, libvhdi);
    }
}

#[test]
fn our_reader_reads_qemu_made_fixed_vhds() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("q.raw");
    ec2azure(["sample", "-q", p(&raw), "--size", "30M", "--seed", "3"]).ok();
    for opts in ["subformat=fixed", "subformat=fixed,force_size"] {
        let qvhd = d.path().join("q.vhd");
        run(
            "qemu-img",
            [
                "convert",
                "-f",
                "raw",
                "-O",
                "vpc",
                "-o",
                opts,
                p(&raw),
                p(&qvhd),
            ],
        )
        .ok();
        let qsize = run("qemu-img", ["info", "-f", "vpc", "--output=json", p(&qvhd)])
            .ok()
            .json()["virtual-size"]
            .as_u64()
            .unwrap();
        let j = ec2azure(["info", "--json", p(&qvhd)]).ok().json();
        assert_eq!(j["format"], "vhd", "{opts}");
        assert_eq!(j["virtual_size"], qsize, "{opts}: our size = qemu's size");
        ec2azure(["compare", p(&raw), p(&qvhd)]).ok();
        // And what we make of qemu's VHD, qemu reads the same.
        let ours = d.path().join("ours.vhd");
        ec2azure(["convert", "-q", p(&qvhd), p(&ours)]).ok();
        run(
            "qemu-img",
            ["compare", "-f", "vpc", "-F", "vpc", p(&qvhd), p(&ours)],
        )
        .ok();
    }
}

/// Footers from other creators: our virtual size is the one qemu-img reports (qemu and Virtual PC
/// images are sized by CHS unless the geometry is the maximum; everyone else by current size).
#[test]
fn virtual_size_follows_the_creator_like_qemu() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let size = 20 * MIB;
    let max = ec2azure::image::vhd::Chs {
        cylinders: 65535,
        heads: 16,
        sectors: 255,
    };
    let chs = ec2azure::image::vhd::Chs::for_size(size);
    for (creator, geometry) in [
        (b"qemu", chs),
        (b"vpc ", chs),
        (b"qemu", max),
        (b"win ", chs),
        (b"d2v ", chs),
        (b"e2az", chs),
    ] {
        let mut f = ec2azure::image::vhd::Footer::new_fixed(size, [9; 16], 0);
        f.creator_app = *creator;
        f.geometry = geometry;
        let path = d.path().join("c.vhd");
        sparse_file(&path, size, &[(size - 4096, pattern(4096, 4))]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&f.encode());
        std::fs::write(&path, &bytes).unwrap();
        let q = run("qemu-img", ["info", "-f", "vpc", "--output=json", p(&path)])
            .ok()
            .json();
        let ours = ec2azure(["info", "--json", p(&path)]).ok().json();
        let name = String::from_utf8_lossy(creator);
        assert_eq!(
            ours["virtual_size"], q["virtual-size"],
            "creator {name:?} geometry {geometry:?}"
        );
        // And the bytes qemu reads are the bytes we read.
        let ours_raw = d.path().join("ours.raw");
        let qemu_raw = d.path().join("qemu.raw");
        ec2azure(["convert", "-q", "-O", "raw", p(&path), p(&ours_raw)]).ok();
        run(
            "qemu-img",
            ["convert", "-f", "vpc", "-O", "raw", p(&path), p(&qemu_raw)],
        )
        .ok();
        assert!(
            std::fs::read(&ours_raw).unwrap() == std::fs::read(&qemu_raw).unwrap(),
            "creator {name:?}"
        );
    }
}
