//! The bodies of the fuzz targets, in the library so that the test suite runs them over the
//! committed seeds (fuzz/seeds) and every crash ever found: a property that breaks is caught by
//! `cargo test`, not only by a fuzzing session. Not part of the public API.

use crate::Manifest;
use crate::check::{Target, check_footer};
use crate::image::vhd::{DynamicVhd, FixedVhd, Footer, looks_like_footer};
use crate::image::{DiskImage, MemImage};
use std::path::Path;

/// Reads an opened image in bounded pieces: the first MiB, the last KiB, and its extents.
fn exercise(img: &dyn DiskImage) {
    let len = img.len();
    let mut buf = vec![0u8; 4096];
    let mut off = 0;
    while off < len.min(1 << 20) {
        match img.read_at(&mut buf, off) {
            Ok(0) | Err(_) => break,
            Ok(n) => off += n as u64,
        }
    }
    let _ = img.read_at(&mut buf, len.saturating_sub(1024));
    let _ = img.read_at(&mut buf, len);
    if let Ok(m) = img.extents() {
        assert_eq!(m.len(), len, "the extent map covers the disk");
    }
}

/// Arbitrary bytes as the last sector of a file, and as a whole fixed VHD.
pub fn vhd_footer(data: &[u8]) {
    let len = data.len() as u64;
    let tail: Option<&[u8; 512]> = data
        .len()
        .checked_sub(512)
        .and_then(|s| data[s..].try_into().ok());
    if let Some(t) = tail {
        let f = Footer::decode(t);
        let _ = looks_like_footer(t);
        let _ = f.to_json(t);
        // Encoding what was decoded gives the same fields (encode writes zero reserved bytes).
        let again = Footer::decode(&f.encode());
        assert_eq!(
            Footer {
                checksum: 0,
                ..again
            },
            Footer {
                checksum: 0,
                reserved_zero: true,
                ..f.clone()
            }
        );
    }
    for target in [Target::ManagedDisk, Target::PageBlob] {
        let _ = check_footer(Path::new("fuzz.vhd"), len, tail, target);
    }
    if let Ok(vhd) = FixedVhd::new(MemImage::new(data.to_vec())) {
        let f = vhd.footer();
        assert!(vhd.len() <= f.current_size);
        if !f.sized_by_chs() {
            assert_eq!(vhd.len() + 512, len);
        }
        exercise(&vhd);
    }
}

/// Arbitrary bytes as a dynamic or differencing VHD.
pub fn dynamic_vhd(data: &[u8]) {
    if let Ok(vhd) = DynamicVhd::parse(Box::new(MemImage::new(data.to_vec())), None, 0) {
        exercise(&vhd);
    }
}

/// Arbitrary bytes as a VHDX.
pub fn vhdx(data: &[u8]) {
    if let Ok(x) = crate::image::vhdx::Vhdx::parse(Box::new(MemImage::new(data.to_vec())), None) {
        exercise(&x);
    }
}

/// Arbitrary bytes as a VHDX log region: every 4 KiB page that starts an entry ("loge") gets
/// its CRC-32C repaired (so the fuzzer explores what lies behind the checksum), then the log is
/// replayed over a 1 MiB file and read back.
pub fn vhdx_log(data: &[u8]) {
    const MIB: usize = 1 << 20;
    let log_len = data.len().clamp(1, 4 * MIB).div_ceil(MIB) * MIB;
    let mut log = vec![0u8; log_len];
    log[..data.len().min(log_len)].copy_from_slice(&data[..data.len().min(log_len)]);
    let mut guid = [0u8; 16];
    for at in (0..log_len).step_by(4096) {
        if &log[at..at + 4] == b"loge" && at + 64 <= log_len {
            let len =
                u32::from_le_bytes([log[at + 8], log[at + 9], log[at + 10], log[at + 11]]) as usize;
            if len >= 4096 && len.is_multiple_of(4096) && at + len <= log_len {
                let crc = crate::image::vhdx::crc_with_zeroed_field(&log[at..at + len], 4);
                log[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
                guid.copy_from_slice(&log[at + 32..at + 48]);
            }
        }
    }
    let mut file = vec![0u8; MIB];
    file.extend_from_slice(&log);
    let inner = Box::new(MemImage::new(file));
    if let Ok(r) = crate::image::vhdx::log::Replayed::new(inner, MIB as u64, log_len as u64, &guid)
    {
        exercise(&r);
    }
}

/// Arbitrary bytes as a qcow2 file (through imago and our open gate). The bytes are written to a
/// private temporary folder and opened as a guessed format, so any backing or data file they
/// name is confined to that folder.
pub fn qcow2(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("fuzz.qcow2");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(img) = crate::image::qcow2::Qcow2Image::open_with(&path, false) {
        // Bound the work: the header may claim a huge disk.
        if img.len() <= 1 << 30 {
            exercise(&img);
        }
    }
}

/// Arbitrary text as a manifest: accepted manifests round-trip.
pub fn manifest_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Manifest::from_json(text) {
        let again = serde_json::to_string(&m).unwrap_or_default();
        assert_eq!(Manifest::from_json(&again).ok(), Some(m));
    }
}

/// Arbitrary bytes as a journal: split into segments at every later `E2AZJSEG`, read as is and
/// again with every CRC repaired (so the input reaches the record checks); every point offered
/// is built and read, and the one-pass verification must give the same root as hashing each
/// built point.
pub fn journal(data: &[u8]) {
    use crate::journal::{Journal, ScanOptions};
    let magic = b"E2AZJSEG";
    let mut cuts: Vec<usize> = (1..data.len().saturating_sub(7))
        .filter(|&i| &data[i..i + 8] == magic)
        .take(3)
        .collect();
    cuts.insert(0, 0);
    cuts.push(data.len());
    let segments: Vec<(u32, Vec<u8>)> = cuts
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i as u32 + 1, data[w[0]..w[1]].to_vec()))
        .collect();
    let repaired: Vec<(u32, Vec<u8>)> = segments
        .iter()
        .map(|(n, b)| (*n, repair_journal_crcs(b.clone())))
        .collect();
    for segs in [segments, repaired] {
        for (verify_payloads, start_seq) in [(false, 1), (true, 1), (false, 3)] {
            let opts = ScanOptions {
                verify_payloads,
                start_seq,
            };
            if let Ok(j) = Journal::from_bytes(Path::new("/fuzz"), segs.clone(), opts) {
                exercise_journal(&j);
            }
        }
    }
}

fn exercise_journal(j: &crate::journal::Journal) {
    use crate::recovery::{PointImage, base_digests, check_points};
    let _ = format!("{j:?}");
    let size = j.info().disk_size;
    if size > 1 << 20 {
        return;
    }
    let base = MemImage::new(vec![0u8; size as usize]);
    let Ok((digests, _)) = base_digests(&base) else {
        return;
    };
    let checks = check_points(&base, &digests, j, &|_| true, &crate::NoProgress);
    for (i, p) in j.points().iter().take(8).enumerate() {
        let Ok(img) = PointImage::new(&base, j, p.seq) else {
            continue;
        };
        exercise(&img);
        if let (Ok(m), Ok(c)) = (Manifest::compute(&img), &checks) {
            assert_eq!(
                m.root,
                c[i].root.to_string(),
                "one-pass root equals the built point's root"
            );
        }
    }
}

/// Fixes the segment header's CRC and every record's payload and header CRCs that lie inside
/// `b`, walking the records by their payload lengths.
fn repair_journal_crcs(mut b: Vec<u8>) -> Vec<u8> {
    if b.len() < 128 {
        return b;
    }
    let c = crc32c::crc32c(&b[..124]);
    b[124..128].copy_from_slice(&c.to_le_bytes());
    let mut pos = 128;
    while pos + 56 <= b.len() {
        let plen =
            u32::from_le_bytes([b[pos + 40], b[pos + 41], b[pos + 42], b[pos + 43]]) as usize;
        let pstart = pos + 56;
        if let Some(p) = b.get(pstart..pstart.saturating_add(plen)) {
            let c = crc32c::crc32c(p);
            b[pos + 44..pos + 48].copy_from_slice(&c.to_le_bytes());
        }
        let c = crc32c::crc32c(&b[pos..pos + 52]);
        b[pos + 52..pos + 56].copy_from_slice(&c.to_le_bytes());
        pos = pstart.saturating_add(plen);
    }
    b
}

/// Arbitrary bytes as a Get Page Ranges answer and as an error body: accepted page lists are
/// page aligned, ascending and disjoint, and survive being written out and parsed again.
pub fn page_list_xml(data: &[u8]) {
    use crate::cloud::azure::xml::{parse_error_body, parse_page_list};
    let text = String::from_utf8_lossy(data);
    let _ = parse_error_body(&text);
    if let Ok((ranges, next)) = parse_page_list(&text) {
        let mut end = 0;
        let mut xml = String::from("<PageList>");
        for &(o, l) in &ranges {
            assert!(o % 512 == 0 && l % 512 == 0 && l > 0 && o >= end);
            end = o + l;
            xml.push_str(&format!(
                "<PageRange><Start>{o}</Start><End>{}</End></PageRange>",
                end - 1
            ));
        }
        if let Some(n) = &next {
            assert!(
                !n.is_empty() && n.trim() == n,
                "a marker is trimmed and not empty"
            );
        }
        xml.push_str("</PageList>");
        assert_eq!(parse_page_list(&xml).ok(), Some((ranges, None)));
    }
}

/// The files a fuzzed VMDK descriptor names: every name but `missing` is the same small disk
/// image (the input's tail, as a file), so extent building, sizes and offsets are exercised.
struct FuzzFiles(std::sync::Arc<dyn DiskImage>);

impl crate::image::vmdk::Resolver for FuzzFiles {
    fn open(
        &self,
        name: &str,
    ) -> crate::Result<(std::sync::Arc<dyn DiskImage>, std::path::PathBuf)> {
        if name == "missing" {
            return Err(crate::Error::invalid("no such file"));
        }
        Ok((self.0.clone(), std::path::PathBuf::from(name)))
    }
}

/// Opens `data` as a VMDK from memory and reads it; extents must cover the disk and agree with
/// reads (nothing outside data extents is non-zero in the first MiB).
fn vmdk_from(data: Vec<u8>, files: &dyn crate::image::vmdk::Resolver) {
    use crate::image::vmdk::Vmdk;
    let file: std::sync::Arc<dyn DiskImage> = std::sync::Arc::new(MemImage::new(data));
    if let Ok(v) = Vmdk::open_in(file, Path::new("fuzz.vmdk"), files, 0) {
        exercise(&v);
        let _ = v.notes();
        if let Ok(m) = v.extents() {
            let mut buf = vec![0u8; 4096];
            for e in m.range(0, 1 << 20).filter(|e| !e.kind.is_data()) {
                let n = (e.len as usize).min(buf.len());
                if v.read_exact_at(&mut buf[..n], e.offset).is_ok() {
                    assert!(buf[..n].iter().all(|&b| b == 0), "a hole reads non-zero");
                }
            }
        }
    }
}

/// Arbitrary bytes as a hosted sparse VMDK extent: the magic is set and compression cleared,
/// so every input reaches the header checks, the grain directories (primary and redundant),
/// the tables and the grains.
pub fn vmdk_sparse(data: &[u8]) {
    let mut d = data.to_vec();
    if d.len() >= 512 {
        d[..4].copy_from_slice(b"KDMV");
        d[77] = 0;
        d[78] = 0;
    }
    vmdk_from(
        d,
        &FuzzFiles(std::sync::Arc::new(MemImage::new(Vec::new()))),
    );
}

/// Arbitrary bytes as a stream-optimized VMDK: magic, deflate and the marker flag are set, so
/// every input reaches the footer, the marker scan and the inflation of grains.
pub fn vmdk_stream(data: &[u8]) {
    let mut d = data.to_vec();
    if d.len() >= 512 {
        d[..4].copy_from_slice(b"KDMV");
        d[10] |= 0x3; // flags bits 16 and 17: compressed, markers
        d[77] = 1;
        d[78] = 0;
    }
    vmdk_from(
        d,
        &FuzzFiles(std::sync::Arc::new(MemImage::new(Vec::new()))),
    );
}

/// Arbitrary text as a VMDK descriptor: parsed, then opened with every named file (but
/// "missing") being the bytes after the input's first NUL (the descriptor parser stops there),
/// or without a NUL the input's last 64 KiB; so extent lines, sizes, offsets, delta chains and
/// SPARSE extents (a "KDMV" file after the NUL) run.
pub fn vmdk_descriptor(data: &[u8]) {
    use crate::image::vmdk::descriptor;
    let _ = descriptor::looks_like_descriptor(data);
    if let Ok(d) = descriptor::parse(data) {
        let _ = d.capacity_bytes();
    }
    let tail = match data.iter().position(|&c| c == 0) {
        Some(nul) => data[nul + 1..].to_vec(),
        None => data[data.len().saturating_sub(64 << 10)..].to_vec(),
    };
    let files = FuzzFiles(std::sync::Arc::new(MemImage::new(tail)));
    // Only the text goes in as the descriptor file (the reader refuses "KDMV" text here).
    if !data.starts_with(b"KDMV") && !data.starts_with(b"COWD") {
        vmdk_from(data.to_vec(), &files);
    }
}

/// Arbitrary bytes as an OVA: the tar members, the OVF, and every disk it names opened and
/// read inside the archive; the OVF parser is also fed the bytes as text.
pub fn ova(data: &[u8]) {
    use crate::image::ova::{Ova, parse_ovf};
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_ovf(text);
    }
    let tar: std::sync::Arc<dyn DiskImage> = std::sync::Arc::new(MemImage::new(data.to_vec()));
    if let Ok(o) = Ova::parse(tar, Path::new("fuzz.ova")) {
        for m in o.members() {
            assert!(
                m.offset + m.size <= data.len() as u64,
                "members lie inside the archive"
            );
        }
        for i in 1..=o.disks.len().min(4) {
            if let Ok(v) = o.open_disk(Some(&i.to_string())) {
                assert_eq!(v.len(), o.disks[i - 1].capacity);
                exercise(&v);
            }
        }
    }
}

/// Arbitrary bytes as a disk's first sectors: the MBR and GPT reader never panics, and what it
/// reports is consistent (the layout follows the table; entries from a valid GPT lie in order).
pub fn partition_table(data: &[u8]) {
    use crate::image::partition::{BootLayout, read};
    let disk = MemImage::new(data.to_vec());
    let Ok(t) = read(&disk) else { return };
    let _ = t.summary();
    let _ = t.bios_bootable();
    match t.boot_layout() {
        BootLayout::GptWithEsp => assert!(
            t.gpt
                .as_ref()
                .is_some_and(|g| g.entries.iter().any(|e| e.is_esp()))
        ),
        BootLayout::GptWithoutEsp => assert!(
            t.gpt
                .as_ref()
                .is_some_and(|g| !g.entries.iter().any(|e| e.is_esp()))
        ),
        BootLayout::Mbr => {
            assert!(t.gpt.is_none() && t.mbr.as_ref().is_some_and(|m| m.boot_signature))
        }
        BootLayout::None => assert!(t.gpt.is_none()),
    }
    if let Some(g) = &t.gpt {
        assert!(g.last_usable < disk.len() / 512);
        assert!(g.entries.windows(2).all(|w| w[0].index < w[1].index));
    }
    let _ = serde_json::to_string(&t);
}
