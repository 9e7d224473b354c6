//! VMDK and OVA against qemu: every subformat `qemu-img convert -O vmdk` writes, qemu-io writes
//! into sparse extents (partial grains, zero grains), delta disks, VMware/EC2-style
//! stream-optimized files (directory in the footer; no footer; truncated; damaged grains), the
//! redundant grain directory, OVAs read inside the tar; and every format we do not read
//! refused by name, with no output.

use crate::conformance::{conform, qemu_raw};
use crate::util::*;
use crate::vmdkgen::{Stream, ovf, stream_optimized, tar};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: u64 = 1 << 20;

fn sample(path: &Path, size: u64, seed: u64) {
    ec2azure([
        "sample",
        "-q",
        p(path),
        "--size",
        &size.to_string(),
        "--seed",
        &seed.to_string(),
    ])
    .ok();
}

fn qi(args: &[&str]) {
    run("qemu-img", args).ok();
}

fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut a = vec!["-f".to_string(), "vmdk".to_string()];
    for c in cmds {
        a.push("-c".into());
        a.push(c.to_string());
    }
    a.push(p(img).to_string());
    run("qemu-io", &a).ok();
}

#[test]
fn vmdk_subformats_conform() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // 24 MiB + 5 sectors: the last grain is partial.
    let raw = dir.join("base.raw");
    sample(&raw, 24 * MIB, 41);
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.set_len(24 * MIB + 5 * 512).unwrap();
    f.write_all_at(&pattern(5 * 512, 9), 24 * MIB).unwrap();
    for sub in [
        "monolithicSparse",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
        "streamOptimized",
    ] {
        let img = dir.join(format!("{sub}.vmdk"));
        qi(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            p(&raw),
            p(&img),
        ]);
        let qmap = (!sub.contains("Flat")).then_some("vmdk");
        conform(&format!("vmdk {sub}"), &img, &qemu_raw(&img, "vmdk"), qmap);
        let j = ec2azure(["info", "--json", p(&img)]).ok().json();
        assert_eq!(j["format"], "vmdk");
        assert_eq!(j["vmdk"]["create_type"], sub);
        assert_eq!(j["virtual_size"], 24 * MIB + 5 * 512);
    }

    // Writes by qemu-io into a sparse extent: partial grains, grains across a table boundary
    // (32 MiB = 512 grains of 64 KiB), zero grains (zeroed_grain=on makes GTE 1).
    let big = dir.join("writes.vmdk");
    qi(&[
        "create",
        "-f",
        "vmdk",
        "-o",
        "zeroed_grain=on",
        p(&big),
        "80M",
    ]);
    qemu_io(
        &big,
        &[
            "write -P 0x11 0 4k",
            "write -P 0x22 65000 3000",
            "write -P 0x33 33553920 131072",
            "write -P 0x44 70M 1M",
            "write -z 70M 256k",
            "write -P 0x55 79M 1M",
        ],
    );
    conform(
        "vmdk qemu-io writes, zero grains",
        &big,
        &qemu_raw(&big, "vmdk"),
        Some("vmdk"),
    );
    let j = ec2azure(["info", "--json", p(&big)]).ok().json();
    assert!(
        j["extents"]["zero"]["bytes"].as_u64().unwrap() >= 256 << 10,
        "{j}"
    );

    // A delta disk over a sparse parent; qemu-io writes into the child.
    let parent = dir.join("parent.vmdk");
    qi(&["convert", "-f", "raw", "-O", "vmdk", p(&raw), p(&parent)]);
    let child = dir.join("child.vmdk");
    qi(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        "parent.vmdk",
        "-F",
        "vmdk",
        p(&child),
    ]);
    qemu_io(&child, &["write -P 0x66 1M 100k", "write -z 3M 64k"]);
    conform("vmdk delta disk", &child, &qemu_raw(&child, "vmdk"), None);
    let j = ec2azure(["info", "--json", p(&child)]).ok().json();
    assert!(
        j["vmdk"]["parent"]
            .as_str()
            .unwrap()
            .ends_with("parent.vmdk"),
        "{j}"
    );

    // A child whose parentCID was reset to ffffffff still names its parent: a broken link,
    // refused (read alone it would give zeros for the parent's data; qemu refuses it too).
    let cut = dir.join("child-ff.vmdk");
    let mut cb = std::fs::read(&child).unwrap();
    // qemu writes the CID unpadded (%x), so the value runs to the end of its line; the
    // embedded descriptor keeps its size by giving up as many bytes of its NUL padding.
    let at = cb.windows(10).position(|w| w == b"parentCID=").unwrap() + 10;
    let end = at + cb[at..].iter().position(|&b| b == b'\n').unwrap();
    let grow = 8 - (end - at);
    cb.splice(at..end, b"ffffffff".iter().copied());
    let pad = at + cb[at..].iter().position(|&b| b == 0).unwrap();
    cb.drain(pad..pad + grow);
    std::fs::write(&cut, &cb).unwrap();
    ec2azure(["convert", p(&cut), p(&dir.join("cut.vhd"))])
        .expect_code(2)
        .stderr_has("its parentCID is ffffffff");
    // The parent changed after the child was made (its CID): refused, as is a missing parent.
    let mut bytes = std::fs::read(&parent).unwrap();
    let at = bytes.windows(4).position(|w| w == b"CID=").unwrap() + 4;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&parent, &bytes).unwrap();
    let out = dir.join("child.vhd");
    ec2azure(["convert", p(&child), p(&out)])
        .expect_code(2)
        .stderr_has("the parent changed after the delta was made");
    std::fs::remove_file(&parent).unwrap();
    ec2azure(["convert", p(&child), p(&out)])
        .expect_code(2)
        .stderr_has("never read without its parent");
    assert!(!out.exists());
}

#[test]
fn vmware_stream_optimized_and_ova() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // 40 MiB: two grain tables (32 MiB each), the second partly used.
    let raw = dir.join("disk.raw");
    sample(&raw, 40 * MIB, 77);
    let disk = std::fs::read(&raw).unwrap();

    // Directory and footer at the end, as VMware and EC2 write it: qemu reads it too.
    let s = dir.join("export.vmdk");
    std::fs::write(
        &s,
        stream_optimized(&disk, "export.vmdk", Stream::default()),
    )
    .unwrap();
    let qref = qemu_raw(&s, "vmdk");
    assert!(
        std::fs::read(&qref).unwrap() == disk,
        "qemu reads our VMware-style stream"
    );
    conform("vmdk stream, GD in footer", &s, &raw, Some("vmdk"));
    let j = ec2azure(["info", "--json", p(&s)]).ok().json();
    assert_eq!(j["vmdk"]["create_type"], "streamOptimized");
    assert_eq!(j["vmdk"]["compressed"], true);
    assert_eq!(j["notes"].as_array().unwrap().len(), 0, "{j}");

    // No footer: found by scanning the markers, and the notes say so.
    let nf = dir.join("no-footer.vmdk");
    let o = Stream {
        no_footer: true,
        ..Stream::default()
    };
    std::fs::write(&nf, stream_optimized(&disk, "no-footer.vmdk", o)).unwrap();
    conform("vmdk stream without footer", &nf, &raw, None);
    let j = ec2azure(["info", "--json", p(&nf)]).ok().json();
    assert!(j["notes"][0].as_str().unwrap().contains("scanning"), "{j}");

    // Damaged streams are refused with the reason and leave no output.
    let out = dir.join("out.vhd");
    for (name, o, why) in [
        (
            "truncated",
            Stream {
                no_footer: true,
                no_eos: true,
                ..Stream::default()
            },
            "the stream is truncated",
        ),
        (
            "short-grain",
            Stream {
                short_grain: Some(3),
                ..Stream::default()
            },
            "inflates to 65535 bytes, expected the grain size, 65536",
        ),
        (
            "wrong-lba",
            Stream {
                wrong_lba: Some(2),
                ..Stream::default()
            },
            "but the grain table puts grain",
        ),
    ] {
        let f = dir.join(format!("{name}.vmdk"));
        std::fs::write(&f, stream_optimized(&disk, "x.vmdk", o)).unwrap();
        ec2azure(["convert", p(&f), p(&out)])
            .expect_code(2)
            .stderr_has(why);
        assert!(!out.exists(), "{name}: no output");
    }
    // Compressed garbage in a grain: the zlib error, with the offset.
    let mut bytes = stream_optimized(&disk, "x.vmdk", Stream::default());
    // The header and a one-sector descriptor come first, then the first stored grain's marker.
    let lba = u64::from_le_bytes(bytes[1024..1032].try_into().unwrap());
    let first_grain = 1024 + 12;
    for b in &mut bytes[first_grain + 10..first_grain + 40] {
        *b ^= 0x5a;
    }
    let f = dir.join("garbage.vmdk");
    std::fs::write(&f, &bytes).unwrap();
    ec2azure(["convert", p(&f), p(&out)])
        .expect_code(2)
        .stderr_has(&format!("compressed grain {}", lba / 128));

    // An OVA as EC2 writes one: the OVF first, then the stream-optimized disk.
    let vmdk = std::fs::read(&s).unwrap();
    let ova = dir.join("export.ova");
    let desc = ovf(&[("export-disk1.vmdk", 40 * MIB)]);
    std::fs::write(
        &ova,
        tar(&[
            ("export.ovf", desc.as_bytes()),
            ("export-disk1.vmdk", &vmdk),
        ]),
    )
    .unwrap();
    let j = ec2azure(["info", "--json", p(&ova)]).ok().json();
    assert_eq!(j["format"], "ova");
    assert_eq!(j["disks"][0]["file"], "export-disk1.vmdk");
    assert_eq!(j["disks"][0]["capacity"], 40 * MIB);
    assert!(
        j["disks"][0]["format"]
            .as_str()
            .unwrap()
            .ends_with("#streamOptimized")
    );
    conform("ova, one disk", &ova, &raw, None);
    // The same bytes as tar and qemu-img give.
    let x = dir.join("x");
    std::fs::create_dir(&x).unwrap();
    run("tar", ["-xf", p(&ova), "-C", p(&x)]).ok();
    let via_tar = qemu_raw(&x.join("export-disk1.vmdk"), "vmdk");
    let ours = dir.join("ova.raw");
    ec2azure(["convert", "-q", "-O", "raw", p(&ova), p(&ours)]).ok();
    ec2azure(["compare", "--strict", p(&ours), p(&via_tar)]).ok();

    // Two disks: one must be chosen, by number or name.
    let small = dir.join("small.raw");
    sample(&small, 2 * MIB, 5);
    let small_disk = std::fs::read(&small).unwrap();
    let v2 = stream_optimized(&small_disk, "d2.vmdk", Stream::default());
    let two = dir.join("two.ova");
    let desc = ovf(&[("d1.vmdk", 40 * MIB), ("d2.vmdk", 2 * MIB)]);
    std::fs::write(
        &two,
        tar(&[
            ("two.ovf", desc.as_bytes()),
            ("d1.vmdk", &vmdk),
            ("d2.vmdk", &v2),
        ]),
    )
    .unwrap();
    let o2 = dir.join("two.vhd");
    ec2azure(["convert", p(&two), p(&o2)])
        .expect_code(2)
        .stderr_has("choose one with --disk");
    assert!(!o2.exists());
    let text = ec2azure(["info", p(&two)]).ok().stdout.clone();
    assert!(
        text.contains("disks:          2") && text.contains("d2.vmdk"),
        "{text}"
    );
    for sel in ["2", "vmdisk2", "d2.vmdk"] {
        let r = dir.join(format!("two-{sel}.raw"));
        ec2azure(["convert", "-q", "-O", "raw", "--disk", sel, p(&two), p(&r)]).ok();
        assert!(std::fs::read(&r).unwrap() == small_disk, "--disk {sel}");
    }
    ec2azure(["convert", "--disk", "3", p(&two), p(&o2)])
        .expect_code(2)
        .stderr_has("names no disk");

    // The OVF's capacity must be the VMDK's.
    let bad = dir.join("bad.ova");
    let desc = ovf(&[("d.vmdk", 41 * MIB)]);
    std::fs::write(
        &bad,
        tar(&[("bad.ovf", desc.as_bytes()), ("d.vmdk", &vmdk)]),
    )
    .unwrap();
    ec2azure(["convert", p(&bad), p(&o2)])
        .expect_code(2)
        .stderr_has("the OVF says its capacity is 42991616 bytes");
    // Compressed members are refused by name.
    let gz = dir.join("gz.ova");
    let desc = ovf(&[("d.vmdk", 40 * MIB)]).replace(
        "ovf:id=\"file1\"",
        "ovf:id=\"file1\" ovf:compression=\"gzip\"",
    );
    std::fs::write(&gz, tar(&[("gz.ovf", desc.as_bytes()), ("d.vmdk", &vmdk)])).unwrap();
    ec2azure(["convert", p(&gz), p(&o2)])
        .expect_code(2)
        .stderr_has("gzip-compressed");
    // Two members of one name (tar keeps the last, a reader could take the first): refused.
    let dup = dir.join("dup.ova");
    let desc = ovf(&[("d.vmdk", 40 * MIB)]);
    std::fs::write(
        &dup,
        tar(&[
            ("dup.ovf", desc.as_bytes()),
            ("d.vmdk", &v2),
            ("d.vmdk", &vmdk),
        ]),
    )
    .unwrap();
    ec2azure(["convert", p(&dup), p(&o2)])
        .expect_code(2)
        .stderr_has("two members named \"d.vmdk\"");
    // Members stored as GNU sparse files (their holes taken out) are refused, not misread.
    if run("tar", ["--version"]).code == 0 {
        let sp = dir.join("sp");
        std::fs::create_dir(&sp).unwrap();
        let f = std::fs::File::create(sp.join("d.vmdk")).unwrap();
        f.set_len(8 * MIB).unwrap();
        f.write_all_at(b"KDMV", 0).unwrap();
        f.write_all_at(&[1u8; 4096], 6 * MIB).unwrap();
        std::fs::write(sp.join("a.ovf"), ovf(&[("d.vmdk", 8 * MIB)])).unwrap();
        for (name, args) in [
            (
                "pax.ova",
                vec!["--format=posix", "--sparse", "--sparse-version=0.0"],
            ),
            ("gnu.ova", vec!["--format=gnu", "--sparse"]),
        ] {
            let out = dir.join(name);
            let mut a = args.clone();
            a.extend(["-C", p(&sp), "-cf", p(&out), "a.ovf", "d.vmdk"]);
            run("tar", &a).ok();
            ec2azure(["info", p(&out)])
                .expect_code(2)
                .stderr_has("tar member stored as a GNU sparse file");
        }
    }
    // A tar without an OVF is not an OVA (and not a raw disk).
    let t = dir.join("plain.tar");
    std::fs::write(&t, tar(&[("a.txt", b"hello")])).unwrap();
    ec2azure(["convert", p(&t), p(&o2)])
        .expect_code(2)
        .stderr_has("not an OVA");
    assert!(!o2.exists());
}

#[test]
fn redundant_grain_directory_is_used_when_the_primary_is_damaged() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let raw = dir.join("r.raw");
    sample(&raw, 8 * MIB, 3);
    let v = dir.join("r.vmdk");
    qi(&["convert", "-f", "raw", "-O", "vmdk", p(&raw), p(&v)]);
    let mut b = std::fs::read(&v).unwrap();
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (rgd, gd) = (le64(&b, 48) as usize * 512, le64(&b, 56) as usize * 512);
    assert_ne!(rgd, 0, "qemu writes a redundant directory");
    // The primary directory's first entry points far past the end of the file.
    b[gd..gd + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    std::fs::write(&v, &b).unwrap();
    conform("vmdk, redundant GD", &v, &raw, None);
    let j = ec2azure(["info", "--json", p(&v)]).ok().json();
    assert!(
        j["notes"][0]
            .as_str()
            .unwrap()
            .contains("redundant grain directory"),
        "{j}"
    );
    // Both damaged: refused, naming both.
    b[rgd..rgd + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    std::fs::write(&v, &b).unwrap();
    ec2azure(["info", p(&v)])
        .expect_code(2)
        .stderr_has("the redundant copy is bad too");
}

#[test]
fn descriptor_extents_and_refusals() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // FLAT at an offset, ZERO, and a SPARSE extent, in one descriptor, by hand.
    let flat = pattern(3 * 512 + 2048 * 512, 4);
    std::fs::write(dir.join("f.bin"), &flat).unwrap();
    let desc = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
                createType=\"monolithicFlat\"\nRW 2048 FLAT \"f.bin\" 3\nRW 100 ZERO\n\
                RDONLY 10 VMFS \"f.bin\"\n";
    let dv = dir.join("d.vmdk");
    std::fs::write(&dv, desc).unwrap();
    let r = dir.join("d.raw");
    ec2azure(["convert", "-q", "-O", "raw", p(&dv), p(&r)]).ok();
    let got = std::fs::read(&r).unwrap();
    let mut want = flat[3 * 512..].to_vec();
    want.extend(vec![0u8; 100 * 512]);
    want.extend_from_slice(&flat[..10 * 512]);
    // convert -O raw keeps the virtual size (1 MiB + 55 KiB), not rounded up.
    assert_eq!(got.len(), want.len());
    assert!(got == want);
    // qemu skips RDONLY and ZERO extent lines (its parser reads RW lines with a file name
    // only), which the specification does not: it is the oracle for RW FLAT and VMFS lines.
    if have_qemu() {
        let dq = dir.join("q.vmdk");
        std::fs::write(
            &dq,
            "version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\
             RW 2048 FLAT \"f.bin\" 3\nRW 10 VMFS \"f.bin\"\n",
        )
        .unwrap();
        let q = std::fs::read(qemu_raw(&dq, "vmdk")).unwrap();
        let mut want = flat[3 * 512..].to_vec();
        want.extend_from_slice(&flat[..10 * 512]);
        assert!(q == want, "qemu reads the flat extents as we expect");
        let r = dir.join("q.raw");
        ec2azure(["convert", "-q", "-O", "raw", p(&dq), p(&r)]).ok();
        assert!(std::fs::read(&r).unwrap() == q, "we read them as qemu does");
    }
    let out = dir.join("o.vhd");
    for (text, why) in [
        ("RW 2048 VMFSSPARSE \"f.bin\"", "ESX COWD sparse"),
        ("RW 2048 SESPARSE \"f.bin\"", "space-efficient"),
        ("NOACCESS 2048 FLAT \"f.bin\"", "NOACCESS"),
        ("RW 2048 FLAT \"missing.bin\"", "missing.bin"),
        ("RW 999999 FLAT \"f.bin\"", "which is 1050112 bytes long"),
        ("RW 2048 FLAT \"../f.bin\"", "outside its folder"),
    ] {
        // The last case's descriptor lies in a subfolder and names a file beside it.
        let at = if text.contains("../") {
            std::fs::create_dir_all(dir.join("sub")).unwrap();
            dir.join("sub").join("d.vmdk")
        } else {
            dv.clone()
        };
        std::fs::write(
            &at,
            format!("version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"vmfs\"\n{text}\n"),
        )
        .unwrap();
        ec2azure(["convert", p(&at), p(&out)])
            .expect_code(2)
            .stderr_has(why);
        assert!(!out.exists());
        if text.contains("../") {
            // Named with -f vmdk, it is allowed.
            ec2azure(["convert", "-q", "-f", "vmdk", p(&at), p(&out)]).ok();
            std::fs::remove_file(&out).unwrap();
        }
    }
    for (ct, why) in [
        ("vmfsSparse", "ESX COWD"),
        ("vmfsRawDeviceMap", "raw device mapping"),
        ("seSparse", "seSparse"),
        ("banana", "createType \"banana\" is unknown"),
    ] {
        std::fs::write(
            &dv,
            format!("version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"{ct}\"\nRW 1 ZERO\n"),
        )
        .unwrap();
        ec2azure(["convert", p(&dv), p(&out)])
            .expect_code(2)
            .stderr_has(why);
    }
    // A delta descriptor without its parent's name.
    std::fs::write(
        &dv,
        "version=1\nCID=1\nparentCID=12345678\ncreateType=\"monolithicFlat\"\nRW 8 ZERO\n",
    )
    .unwrap();
    ec2azure(["convert", p(&dv), p(&out)])
        .expect_code(2)
        .stderr_has("names no parent");
}

#[test]
fn other_formats_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut cases: Vec<(std::path::PathBuf, &str)> = Vec::new();
    let mut put = |name: &str, head: &[u8], tail: Option<&[u8]>, what: &'static str| {
        let f = dir.join(name);
        let mut b = vec![0u8; 1 << 20];
        b[..head.len()].copy_from_slice(head);
        if let Some(t) = tail {
            let n = b.len();
            b[n - 512..n - 512 + t.len()].copy_from_slice(t);
        }
        std::fs::write(&f, b).unwrap();
        cases.push((f, what));
    };
    let mut vdi = vec![0u8; 68];
    vdi[..40].copy_from_slice(b"<<< Oracle VM VirtualBox Disk Image >>>\n");
    vdi[64..68].copy_from_slice(&0xbeda107fu32.to_le_bytes());
    put("a.vdi", &vdi, None, "this is a VDI image");
    put("a.qed", b"QED\0", None, "this is a QED image");
    put(
        "a.luks",
        b"LUKS\xba\xbe\0\x02",
        None,
        "this is a LUKS (encrypted) image",
    );
    put(
        "a.hdd",
        b"WithoutFreeSpace",
        None,
        "this is a Parallels image",
    );
    put(
        "a.bochs",
        b"Bochs Virtual HD Image\0",
        None,
        "this is a bochs image",
    );
    put(
        "a.cloop",
        b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0\n",
        None,
        "cloop",
    );
    put(
        "a.dmg",
        b"",
        Some(b"koly\0\0\0\x04"),
        "this is a DMG (Apple disk image) image",
    );
    put(
        "a.qcow",
        b"QFI\xfb\0\0\0\x01",
        None,
        "this is a qcow (version 1) image",
    );
    put("a.cowd", b"COWD\x01\0\0\0", None, "VMDK COWD (ESX sparse)");
    if have_qemu() {
        // The real thing where qemu-img can make it.
        for (fmt, what) in [
            ("vdi", "this is a VDI image"),
            ("qed", "this is a QED image"),
            ("parallels", "this is a Parallels image"),
            ("qcow", "this is a qcow (version 1) image"),
        ] {
            let f = dir.join(format!("q.{fmt}"));
            qi(&["create", "-f", fmt, p(&f), "16M"]);
            cases.push((f, what));
        }
    }
    for (f, what) in &cases {
        let out = dir.join("out.vhd");
        let r = ec2azure(["convert", p(f), p(&out)]);
        r.expect_code(2)
            .stderr_has(what)
            .stderr_has("ec2azure reads raw, VHD, VHDX, qcow2 and VMDK (also inside an OVA)");
        assert!(r.stdout.is_empty(), "{r}");
        assert!(!out.exists(), "{}: no output", f.display());
        ec2azure(["info", p(f)]).expect_code(2).stderr_has(what);
        // -f raw is the explicit override.
        let j = ec2azure(["info", "--json", "-f", "raw", p(f)]).ok().json();
        assert_eq!(j["format"], "raw");
        assert!(j["notes"][0].as_str().unwrap().contains("-f raw"), "{j}");
    }
    // A file with no signature is read as raw, and info says why.
    let plain = dir.join("plain.img");
    std::fs::write(&plain, pattern(1 << 20, 3)).unwrap();
    let text = ec2azure(["info", p(&plain)]).ok().stdout.clone();
    assert!(
        text.contains("format:         raw") && text.contains("no image signature found"),
        "{text}"
    );
}
