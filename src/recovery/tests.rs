//! The state-machine property test: random writes, zeroings and markers go into a journal and
//! into a `Vec<u8>` model of the disk; the journal is then left intact, torn, corrupted at a
//! random byte, or missing a segment; every point the reader offers must equal the model at
//! that point, exactly the points before the damage must be offered, and one-pass verification
//! must give every point's true root.

use super::*;
use crate::digest::Manifest;
use crate::image::MemImage;
use crate::journal::{
    Consistency, Journal, JournalInfo, JournalWriter, Marker, ScanOptions, WriterOptions,
    segment_file_name,
};
use proptest::prelude::*;

const DISK: u64 = 96 * 1024;
const SECTOR: u64 = 512;

#[derive(Debug, Clone)]
enum Op {
    Write { at: u64, sectors: u64, seed: u8 },
    Zero { at: u64, sectors: u64 },
    Marker { app: bool, digest: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let units = DISK / SECTOR;
    prop_oneof![
        4 => (0..units, 1u64..40, any::<u8>()).prop_map(|(at, sectors, seed)| Op::Write { at, sectors, seed }),
        1 => (0..units, 1u64..80).prop_map(|(at, sectors)| Op::Zero { at, sectors }),
        2 => (any::<bool>(), any::<bool>()).prop_map(|(app, digest)| Op::Marker { app, digest }),
    ]
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    /// Cut this fraction of the last record off the end of the last segment.
    Torn(f64),
    /// Flip a bit at this fraction of the journal's bytes (past segment 1's header).
    Flip(f64, u8),
    /// Remove a segment other than the first (this fraction of the way).
    DropSegment(f64),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        (0.01f64..0.99).prop_map(Damage::Torn),
        ((0.0f64..1.0), 0u8..8).prop_map(|(f, b)| Damage::Flip(f, b)),
        (0.0f64..1.0).prop_map(Damage::DropSegment),
    ]
}

fn fill(seed: u8, at: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = seed.wrapping_add((at as usize + i) as u8).wrapping_mul(31) | 1;
    }
}

fn root(data: &[u8]) -> crate::digest::Digest {
    let m = Manifest::compute(&MemImage::new(data.to_vec())).unwrap();
    m.root_digest().unwrap()
}

struct Built {
    dir: tempfile::TempDir,
    base: Vec<u8>,
    /// Per marker: (seq, model at that point).
    snapshots: Vec<(u64, Vec<u8>)>,
}

fn write_journal(ops: &[Op], segment_size: u64) -> Built {
    let mut base = vec![0u8; DISK as usize];
    fill(7, 0, &mut base[..8192]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let info = JournalInfo {
        disk_id: [9; 16],
        disk_size: DISK,
        sector_size: SECTOR as u32,
        base_root: root(&base),
    };
    let mut w = JournalWriter::create(
        &dir,
        info,
        WriterOptions {
            segment_size,
            sync: false,
            created_ms: 0,
        },
    )
    .unwrap();
    let mut model = base.clone();
    let mut snapshots = Vec::new();
    for (t, op) in ops.iter().enumerate() {
        let t = t as u64 * 1000;
        match *op {
            Op::Write { at, sectors, seed } => {
                let (off, len) = (at * SECTOR, (sectors * SECTOR).min(DISK - at * SECTOR));
                let mut data = vec![0u8; len as usize];
                fill(seed, off, &mut data);
                w.write(t, off, &data).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            Op::Zero { at, sectors } => {
                let (off, len) = (at * SECTOR, (sectors * SECTOR).min(DISK - at * SECTOR));
                w.zero(t, off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            Op::Marker { app, digest } => {
                let seq = w
                    .marker(
                        t,
                        &Marker {
                            consistency: if app {
                                Consistency::App
                            } else {
                                Consistency::Crash
                            },
                            digest: digest.then(|| root(&model)),
                            group: None,
                            label: String::new(),
                        },
                    )
                    .unwrap();
                snapshots.push((seq, model.clone()));
            }
        }
    }
    w.finish().unwrap();
    Built {
        dir: tmp,
        base,
        snapshots,
    }
}

/// Where each record starts: (segment number, header offset, record length, seq).
fn record_spans(j: &Journal) -> Vec<(u32, u64, u64, u64)> {
    j.records()
        .iter()
        .map(|r| {
            let seg = &j.segments()[r.segment as usize];
            let len = match r.kind {
                crate::journal::RecordKind::Write => r.length,
                crate::journal::RecordKind::Zero => 0,
                crate::journal::RecordKind::Marker => crate::journal::MARKER_LEN as u64,
            };
            (seg.number, r.payload_pos - 56, 56 + len, r.seq)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_offered_point_equals_the_model(
        ops in proptest::collection::vec(op(), 1..40),
        dmg in damage(),
        seg_size in prop_oneof![Just(2048u64), Just(16384), Just(1 << 20)],
    ) {
        let b = write_journal(&ops, seg_size);
        let jdir = b.dir.path().join("j");
        let clean = Journal::open(&jdir, ScanOptions::default()).unwrap();
        let spans = record_spans(&clean);
        let segs: Vec<(u32, std::path::PathBuf, u64)> = clean
            .segments()
            .iter()
            .map(|s| (s.number, s.path.clone(), s.bytes().len() as u64))
            .collect();
        drop(clean);
        // The first sequence number whose record is damaged (points at or after it are lost),
        // and whether the damage is a torn tail.
        let mut lost_from = u64::MAX;
        let mut torn = false;
        let mut open_fails = false;
        // A missing last segment is indistinguishable from one not received yet: no defect.
        let mut dropped_last = false;
        match dmg {
            Damage::None => {}
            Damage::Torn(f) => {
                if let Some(&(seg, at, len, seq)) = spans.last() {
                    let (_, path, flen) = segs.iter().find(|s| s.0 == seg).unwrap().clone();
                    let cut = ((len as f64 * f) as u64).clamp(1, len);
                    let keep = flen - cut;
                    prop_assert!(keep >= at);
                    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    f.set_len(keep).unwrap();
                    lost_from = seq;
                    torn = true;
                }
            }
            Damage::Flip(f, bit) => {
                let total: u64 = segs.iter().map(|s| s.2).sum();
                let mut pos = ((total as f64 * f) as u64).min(total - 1);
                for (n, path, flen) in &segs {
                    if pos < *flen {
                        let mut bytes = std::fs::read(path).unwrap();
                        bytes[pos as usize] ^= 1 << bit;
                        std::fs::write(path, &bytes).unwrap();
                        if pos < 128 {
                            if *n == 1 { open_fails = true; }
                            lost_from = spans.iter().find(|s| s.0 == *n).map_or(u64::MAX, |s| s.3);
                        } else {
                            lost_from = spans
                                .iter()
                                .find(|s| s.0 == *n && s.1 <= pos && pos < s.1 + s.2)
                                .map(|s| s.3)
                                .unwrap();
                        }
                        break;
                    }
                    pos -= flen;
                }
            }
            Damage::DropSegment(f) => {
                if segs.len() > 1 {
                    let i = 1 + ((segs.len() - 1) as f64 * f) as usize % (segs.len() - 1);
                    std::fs::remove_file(&segs[i].1).unwrap();
                    dropped_last = i + 1 == segs.len();
                    lost_from = spans.iter().find(|s| s.0 == segs[i].0).map_or(u64::MAX, |s| s.3);
                }
            }
        }
        let opened = Journal::open(&jdir, ScanOptions { verify_payloads: true, start_seq: 1 });
        if open_fails {
            prop_assert!(opened.is_err());
            return Ok(());
        }
        let j = opened.unwrap();
        prop_assert_eq!(j.torn().is_some(), torn);
        prop_assert_eq!(
            j.defect().is_some(),
            lost_from != u64::MAX && !torn && !dropped_last,
            "{:?}",
            j.defect()
        );
        let want: Vec<u64> = b.snapshots.iter().map(|s| s.0).filter(|&s| s < lost_from).collect();
        let got: Vec<u64> = j.points().iter().map(|p| p.seq).collect();
        prop_assert_eq!(&got, &want);
        // Unavailable points are lost ones, and every lost marker that is still intact on disk
        // (not in a removed segment, not the damaged record itself) is listed.
        let listed: std::collections::BTreeSet<u64> = j.unavailable().iter().map(|u| u.seq).collect();
        for &u in &listed {
            prop_assert!(u >= lost_from, "rp-{} listed as lost before the damage at {}", u, lost_from);
        }
        let dropped_seg = match dmg {
            Damage::DropSegment(_) => spans
                .iter()
                .find(|s| s.3 == lost_from)
                .map(|s| s.0),
            _ => None,
        };
        for (seq, _) in &b.snapshots {
            let seg = spans.iter().find(|s| s.3 == *seq).map(|s| s.0);
            if *seq > lost_from && !torn && seg != dropped_seg {
                prop_assert!(listed.contains(seq), "lost point rp-{} is not listed", seq);
            }
        }
        // Read lazily (payloads checked when used), every point offered is either the model's
        // or, after the damage, refused.
        let lazy = Journal::open(&jdir, ScanOptions::default()).unwrap();
        let lazy_base = MemImage::new(b.base.clone());
        for p in lazy.points() {
            let snap = &b.snapshots.iter().find(|s| s.0 == p.seq).unwrap().1;
            let img = PointImage::new(&lazy_base, &lazy, p.seq).unwrap();
            let mut buf = vec![0u8; DISK as usize];
            match img.read_exact_at(&mut buf, 0) {
                Ok(()) => prop_assert!(buf == *snap, "lazily read rp-{} differs", p.seq),
                Err(_) => prop_assert!(p.seq > lost_from, "rp-{} refused before the damage", p.seq),
            }
        }
        let base = MemImage::new(b.base.clone());
        for (seq, snap) in b.snapshots.iter().filter(|s| s.0 < lost_from) {
            let img = PointImage::new(&base, &j, *seq).unwrap();
            let mut buf = vec![0u8; DISK as usize];
            img.read_exact_at(&mut buf, 0).unwrap();
            prop_assert!(buf == *snap, "point rp-{} differs from the model", seq);
            // The extents hide no data.
            for e in img.extents().unwrap().iter().filter(|e| !e.kind.is_data()) {
                prop_assert!(snap[e.offset as usize..e.end() as usize].iter().all(|&x| x == 0));
            }
        }
        // One pass gives every point's true root, and every recorded digest matches.
        let (digests, _) = base_digests(&base).unwrap();
        let checks = check_points(&base, &digests, &j, &|_| true, &crate::NoProgress).unwrap();
        prop_assert_eq!(checks.len(), want.len());
        for (c, (_, snap)) in checks.iter().zip(b.snapshots.iter()) {
            prop_assert_eq!(c.root, root(snap));
            prop_assert!(c.matches != Some(false));
        }
    }
}

/// Writes beyond the checks a writer makes: a record with a valid CRC but an unaligned range,
/// a range past the disk's end, an unknown kind, time going backwards — each is a defect at
/// that record, and the points before it stay.
#[test]
fn valid_crc_but_invalid_fields_are_defects() {
    use crate::journal::format_test_support::patch_record;
    let ops = [
        Op::Write {
            at: 0,
            sectors: 2,
            seed: 1,
        },
        Op::Marker {
            app: false,
            digest: true,
        },
        Op::Write {
            at: 4,
            sectors: 2,
            seed: 2,
        },
        Op::Marker {
            app: true,
            digest: true,
        },
    ];
    type Patch = fn(&mut [u8]);
    let cases: [(&str, Patch); 5] = [
        ("aligned to the 512-byte sector", |h| {
            h[24..32].copy_from_slice(&(3u64 * 512 + 1).to_le_bytes())
        }),
        ("past the end", |h| {
            h[24..32].copy_from_slice(&(DISK - 512).to_le_bytes())
        }),
        ("record kind", |h| h[4] = 9),
        ("time goes backwards", |h| {
            h[16..24].copy_from_slice(&0u64.to_le_bytes())
        }),
        ("sequence gap", |h| {
            h[8..16].copy_from_slice(&7u64.to_le_bytes())
        }),
    ];
    for (want, f) in cases {
        let b = write_journal(&ops, 1 << 20);
        let jdir = b.dir.path().join("j");
        let seg = jdir.join(segment_file_name(1));
        let clean = Journal::open(&jdir, ScanOptions::default()).unwrap();
        let at = clean.records()[2].payload_pos - 56;
        drop(clean);
        patch_record(&seg, at, f);
        let j = Journal::open(&jdir, ScanOptions::default()).unwrap();
        let d = j.defect().unwrap_or_else(|| panic!("no defect for {want}"));
        assert!(d.message.contains(want), "{want}: {}", d.message);
        assert_eq!(d.file_offset, at);
        assert_eq!(
            j.points().len(),
            1,
            "{want}: the point before the defect stays"
        );
        assert_eq!(
            j.unavailable().len(),
            1,
            "{want}: the point after it is listed as lost"
        );
    }
}

/// A 4096-byte-sector disk: writes must be 4 KiB-aligned (the writer refuses others, the reader
/// flags them), and a point builds as for 512-byte sectors.
#[test]
fn four_kib_sectors() {
    let size = 64 * 1024;
    let base = vec![0u8; size];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let info = JournalInfo {
        disk_id: [4; 16],
        disk_size: size as u64,
        sector_size: 4096,
        base_root: root(&base),
    };
    let mut w = JournalWriter::create(&dir, info, WriterOptions::default()).unwrap();
    let data = vec![0x5a; 8192];
    w.write(1, 4096, &data).unwrap();
    let e = w.write(2, 512, &data[..4096]).unwrap_err();
    assert!(e.to_string().contains("4096-byte sector"), "{e}");
    let seq = w
        .marker(
            3,
            &Marker {
                consistency: Consistency::Crash,
                digest: None,
                group: None,
                label: "ok".into(),
            },
        )
        .unwrap();
    w.finish().unwrap();
    let j = Journal::open(&dir, ScanOptions::default()).unwrap();
    assert!(j.defect().is_none());
    let b = MemImage::new(base);
    let img = PointImage::new(&b, &j, seq).unwrap();
    let mut out = vec![0u8; size];
    img.read_exact_at(&mut out, 0).unwrap();
    assert!(out[4096..12288].iter().all(|&x| x == 0x5a));
    assert!(out[..4096].iter().chain(&out[12288..]).all(|&x| x == 0));
}
