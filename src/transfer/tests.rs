//! Tests of the upload, verify and download against the in-process page-blob fake.

use super::engine::*;
use super::plan::*;
use super::*;
use crate::cloud::pageblob::*;
use crate::error::ErrorKind;
use crate::export::{MAX_VHD_SIZE, align_mib, is_zero};
use crate::image::vhd::Footer;
use crate::image::{DiskImage, ExtentMap, Format};
use md5::Digest;

use crate::image::MemImage;
use proptest::prelude::*;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 6,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
    }
}

fn opts() -> UploadOptions<'static> {
    UploadOptions {
        retry: quick(),
        target: Target::PageBlob,
        unique_id: Some([7; 16]),
        timestamp: Some(1000),
        parallel: 4,
        merge_gap: 0,
        content_md5: true,
        ..UploadOptions::default()
    }
}

/// A disk of `len` bytes with non-zero runs at `(offset, len, seed)`.
fn disk(len: usize, runs: &[(usize, usize, u8)]) -> MemImage {
    let mut d = vec![0u8; len];
    for &(o, l, seed) in runs {
        for (i, b) in d[o..o + l].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed) | 1;
        }
    }
    MemImage::new(d)
}

fn sample() -> MemImage {
    // Not a whole MiB; data across window edges, a lone page, a long run.
    disk(
        (9 * MIB + 1000) as usize,
        &[
            (512, 1024, 1),
            ((4 * MIB - 512) as usize, 2048, 2),
            ((5 * MIB) as usize, (3 * MIB + 4096) as usize, 3),
            ((9 * MIB + 512) as usize, 488, 4),
        ],
    )
}

/// The fixed VHD the library's converter makes of `d` (same id and time).
fn expected_vhd(d: &MemImage) -> Vec<u8> {
    let mut v = d.bytes().to_vec();
    let vsize = align_mib(v.len() as u64);
    v.resize(vsize as usize, 0);
    v.extend_from_slice(&Footer::new_fixed(vsize, [7; 16], 1000).encode());
    v
}

fn nonzero_pages(v: &[u8]) -> u64 {
    v.chunks(512).filter(|p| !is_zero(p)).count() as u64 * 512
}

fn name() -> BlobName {
    BlobName::new("disks", "d.vhd")
}

fn assert_requests_legal(f: &FakePageBlobs) {
    for r in f.requests() {
        if r.op == Op::PutPages {
            assert!(r.len > 0 && r.len <= MAX_PUT, "{r:?}");
            assert!(r.offset % 512 == 0 && r.len % 512 == 0, "{r:?}");
        }
    }
}

fn puts(f: &FakePageBlobs) -> Vec<(u64, u64)> {
    f.requests()
        .iter()
        .filter(|r| r.op == Op::PutPages && r.ok)
        .map(|r| (r.offset, r.len))
        .collect()
}

#[test]
fn converts_on_the_fly_and_sends_only_non_zero_pages() {
    let d = sample();
    let f = FakePageBlobs::new();
    let r = upload(Source::Disk(&d), &f, &name(), &opts()).unwrap();
    let want = expected_vhd(&d);
    assert_eq!(f.contents(&name()).unwrap(), want);
    assert_eq!(r.bytes_sent, nonzero_pages(&want));
    assert_eq!(r.data_bytes, nonzero_pages(&want));
    assert_eq!(r.bytes_skipped, want.len() as u64 - r.bytes_sent);
    assert_eq!(puts(&f).iter().map(|p| p.1).sum::<u64>(), r.bytes_sent);
    assert_eq!((r.start.as_str(), r.converted), ("created", true));
    assert_requests_legal(&f);
    // Coalesced: the 3 MiB run is one Put Page per 4 MiB window it touches, not per page.
    assert!(r.put_calls <= 8, "{r:?}");
    use base64::Engine;
    let md5: [u8; 16] = md5::Md5::digest(&want).into();
    assert_eq!(
        r.content_md5,
        Some(base64::engine::general_purpose::STANDARD.encode(md5))
    );
    let p = f.properties(&name()).unwrap().unwrap();
    assert_eq!(p.content_md5, Some(md5));
    assert_eq!(p.metadata.get(META_STATE).unwrap(), "complete");
}

#[test]
fn a_ready_vhd_is_sent_as_it_is_and_verified() {
    let d = sample();
    let mut bytes = expected_vhd(&d);
    // A footer of its own (another id): the blob must keep it.
    let vsize = bytes.len() as u64 - 512;
    let footer = Footer::new_fixed(vsize, [9; 16], 5).encode();
    let n = bytes.len();
    bytes[n - 512..].copy_from_slice(&footer);
    let img = MemImage::new(bytes.clone());
    let f = FakePageBlobs::new();
    let o = UploadOptions {
        verify: true,
        ..opts()
    };
    let r = upload(Source::Vhd(&img), &f, &name(), &o).unwrap();
    assert!(r.verified && !r.converted);
    assert_eq!(f.contents(&name()).unwrap(), bytes);
    // The same disk with another footer is another file: not resumed onto.
    let n = bytes.len();
    bytes[n - 512..].copy_from_slice(&Footer::new_fixed(vsize, [1; 16], 5).encode());
    let img2 = MemImage::new(bytes.clone());
    let e = upload(Source::Vhd(&img2), &f, &name(), &o).unwrap_err();
    assert!(e.to_string().contains("--overwrite"), "{e}");
    let o2 = UploadOptions {
        overwrite: true,
        ..o
    };
    upload(Source::Vhd(&img2), &f, &name(), &o2).unwrap();
    assert_eq!(f.contents(&name()).unwrap(), bytes);
}

#[test]
fn every_fault_kind_is_survived_and_the_blob_equals_the_file() {
    let d = sample();
    let want = expected_vhd(&d);
    for fault in [
        Fault::ServerBusy,
        Fault::InternalError,
        Fault::Timeout { applied: false },
        Fault::Timeout { applied: true },
        Fault::Dropped { partial: false },
        Fault::Dropped { partial: true },
        Fault::Slow(Duration::from_millis(3)),
    ] {
        let f = FakePageBlobs::new();
        f.inject_every(2, fault.clone());
        // And one on a non-page call.
        f.inject(Some(Op::Properties), fault.clone());
        let o = UploadOptions {
            verify: true,
            ..opts()
        };
        let r =
            upload(Source::Disk(&d), &f, &name(), &o).unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(f.contents(&name()).unwrap(), want, "{fault:?}");
        assert!(r.verified);
        if !matches!(fault, Fault::Slow(_)) {
            assert!(r.retries > 0, "{fault:?}: {r:?}");
        }
        assert_requests_legal(&f);
    }
}

#[test]
fn failures_are_all_reported_then_a_resume_sends_only_the_missing_ranges() {
    let d = sample();
    let want = expected_vhd(&d);
    let f = FakePageBlobs::new();
    f.inject_every(2, Fault::ServerBusy);
    let o = UploadOptions {
        retry: RetryPolicy {
            attempts: 1,
            ..quick()
        },
        parallel: 1,
        ..opts()
    };
    let e = upload(Source::Disk(&d), &f, &name(), &o).unwrap_err();
    let failed: Vec<Op> = f
        .requests()
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.op)
        .collect();
    // The first Put Blob fails too: the container did not exist yet.
    assert_eq!(failed[0], Op::Create);
    let failed = &failed[1..];
    assert!(failed.len() >= 2, "{e}");
    assert!(failed.iter().all(|&op| op == Op::PutPages), "{failed:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("{} range(s) failed", failed.len())),
        "{msg}"
    );
    assert_eq!(msg.matches("ServerBusy").count(), failed.len(), "{msg}");
    let first = puts(&f);
    assert_eq!(
        f.properties(&name()).unwrap().unwrap().metadata[META_STATE],
        "uploading"
    );
    // The second run: no faults, resumes, sends only what the first did not.
    f.inject_every(0, Fault::ServerBusy);
    f.clear_log();
    let r = upload(Source::Disk(&d), &f, &name(), &opts()).unwrap();
    assert_eq!(r.start, "resumed");
    let second = puts(&f);
    let a = RangeSet::from_ranges(first.iter().copied());
    for &(o, l) in &second {
        assert!(
            a.missing(o, o + l) == vec![(o, o + l)],
            "{o}+{l} sent twice"
        );
    }
    assert_eq!(
        a.total() + second.iter().map(|p| p.1).sum::<u64>(),
        nonzero_pages(&want)
    );
    assert_eq!(r.bytes_already_there, a.total());
    assert_eq!(f.contents(&name()).unwrap(), want);
}

/// Cancels once the fake has seen `n` Put Page calls.
struct CancelAfter<'a>(&'a FakePageBlobs, usize);
impl Progress for CancelAfter<'_> {
    fn cancelled(&self) -> bool {
        self.0
            .requests()
            .iter()
            .filter(|r| r.op == Op::PutPages)
            .count()
            >= self.1
    }
}

#[test]
fn a_cancelled_upload_resumes_with_its_own_footer() {
    let d = sample();
    let f = FakePageBlobs::new();
    let cancel = CancelAfter(&f, 2);
    let o = UploadOptions {
        progress: &cancel,
        parallel: 1,
        unique_id: None,
        ..opts()
    };
    let e = upload(Source::Disk(&d), &f, &name(), &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Interrupted);
    let first = puts(&f);
    assert!(!first.is_empty());
    // The footer window comes last: finish the upload with another random id — the
    // footer of the first run is not on the blob yet, so the new one is used; then a
    // third run (complete, same source) changes nothing.
    f.clear_log();
    let o2 = UploadOptions {
        unique_id: None,
        ..opts()
    };
    let r = upload(Source::Disk(&d), &f, &name(), &o2).unwrap();
    assert_eq!(r.start, "resumed");
    let blob = f.contents(&name()).unwrap();
    let footer: [u8; 512] = blob[blob.len() - 512..].try_into().unwrap();
    f.clear_log();
    let r3 = upload(Source::Disk(&d), &f, &name(), &o2).unwrap();
    assert_eq!((r3.bytes_sent, r3.put_calls), (0, 0), "{r3:?}");
    let blob3 = f.contents(&name()).unwrap();
    assert_eq!(
        &blob3[blob3.len() - 512..],
        &footer[..],
        "the footer was kept"
    );
    let mut want = expected_vhd(&d);
    let n = want.len();
    want[n - 512..].copy_from_slice(&footer);
    assert_eq!(blob3, want);
}

/// An overwrite interrupted half-way, then resumed (without --overwrite: the blob now
/// carries this source's identity): pages the first run did not reach still hold the old
/// disk's bytes and must not count as sent.
#[test]
fn an_interrupted_overwrite_resumes_without_keeping_old_pages() {
    let len = (8 * MIB) as usize;
    let a = disk(len, &[(0, 6 * MIB as usize, 1)]);
    let b = disk(len, &[(0, 6 * MIB as usize, 2)]);
    let f = FakePageBlobs::new();
    upload(Source::Disk(&a), &f, &name(), &opts()).unwrap();
    f.clear_log();
    let cancel = CancelAfter(&f, 1);
    let o = UploadOptions {
        overwrite: true,
        progress: &cancel,
        parallel: 1,
        ..opts()
    };
    let e = upload(Source::Disk(&b), &f, &name(), &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Interrupted);
    let r = upload(Source::Disk(&b), &f, &name(), &opts()).unwrap();
    assert_eq!(r.start, "resumed");
    assert!(
        f.contents(&name()).unwrap() == expected_vhd(&b),
        "old pages kept"
    );
    // The Content-MD5 is the new file's (computed because the blob was overwritten).
    let md5: [u8; 16] = md5::Md5::digest(expected_vhd(&b)).into();
    assert_eq!(
        f.properties(&name()).unwrap().unwrap().content_md5,
        Some(md5)
    );
}

/// A resume asked for another VHD id rewrites the footer page (the data pages are the same).
#[test]
fn a_resume_with_another_id_rewrites_the_footer() {
    let d = sample();
    let f = FakePageBlobs::new();
    upload(Source::Disk(&d), &f, &name(), &opts()).unwrap();
    let o = UploadOptions {
        unique_id: Some([8; 16]),
        ..opts()
    };
    let r = upload(Source::Disk(&d), &f, &name(), &o).unwrap();
    assert_eq!(r.start, "resumed");
    assert_eq!(r.bytes_sent, 512, "only the footer page: {r:?}");
    let mut want = expected_vhd(&d);
    let n = want.len();
    let vsize = (n - 512) as u64;
    want[n - 512..].copy_from_slice(&Footer::new_fixed(vsize, [8; 16], 1000).encode());
    assert!(f.contents(&name()).unwrap() == want);
}

#[test]
fn another_source_is_refused_unless_overwrite_which_clears_stale_pages() {
    let a = sample();
    let b = disk((10 * MIB - 100) as usize, &[(1024, 512, 9)]);
    let f = FakePageBlobs::new();
    upload(Source::Disk(&a), &f, &name(), &opts()).unwrap();
    let e = upload(Source::Disk(&b), &f, &name(), &opts()).unwrap_err();
    assert!(e.to_string().contains("--overwrite"), "{e}");
    assert!(e.to_string().contains("another source"), "{e}");
    let o = UploadOptions {
        overwrite: true,
        verify: true,
        ..opts()
    };
    let r = upload(Source::Disk(&b), &f, &name(), &o).unwrap();
    assert_eq!(r.start, "overwritten");
    assert!(r.bytes_cleared > 0, "{r:?}");
    assert_eq!(f.contents(&name()).unwrap(), expected_vhd(&b));
    let ranges = f.page_ranges(&name()).unwrap();
    assert_eq!(
        ranges,
        vec![(1024, 512), (10 * MIB, 512)],
        "only data pages remain"
    );
    // A blob of another length is recreated.
    let c = disk((3 * MIB) as usize, &[(0, 512, 1)]);
    let r = upload(Source::Disk(&c), &f, &name(), &o).unwrap();
    assert_eq!(r.start, "recreated");
    assert_eq!(f.contents(&name()).unwrap(), expected_vhd(&c));
}

#[test]
fn an_empty_blob_of_the_right_length_is_filled_and_managed_disk_sizes_are_checked() {
    let d = disk((21 * MIB) as usize, &[(4096, 4096, 3)]);
    let f = FakePageBlobs::managed_disk();
    f.create_container("disks").unwrap();
    f.create(&name(), 21 * MIB + 512).unwrap();
    let o = UploadOptions {
        target: Target::ManagedDisk,
        ..opts()
    };
    let r = upload(Source::Disk(&d), &f, &name(), &o).unwrap();
    assert_eq!(r.start, "empty");
    assert_eq!(f.contents(&name()).unwrap(), expected_vhd(&d));
    let small = sample();
    let e = upload(Source::Disk(&small), &f, &BlobName::new("disks", "s"), &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit, "{e}");
    assert!(e.to_string().contains("20 MiB + 512"), "{e}");
}

#[test]
fn verify_catches_a_tampered_blob() {
    let d = sample();
    let f = FakePageBlobs::new();
    upload(Source::Disk(&d), &f, &name(), &opts()).unwrap();
    f.put_pages(&name(), 5 * MIB, &[0xEE; 512]).unwrap();
    f.put_pages(&name(), 7 * 512 * 1024, &[0; 512]).unwrap();
    let o = UploadOptions {
        verify: true,
        ..opts()
    };
    let e = upload(Source::Disk(&d), &f, &name(), &o).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("differs") && m.contains(&format!("offset {}", 5 * MIB)),
        "{m}"
    );
}

#[test]
fn download_fetches_only_page_ranges_into_a_sparse_file() {
    let d = sample();
    let f = FakePageBlobs::new();
    upload(Source::Disk(&d), &f, &name(), &opts()).unwrap();
    f.clear_log();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("back.vhd");
    let r = download(
        &f,
        &name(),
        &out,
        &DownloadOptions {
            retry: quick(),
            sync: false,
            ..DownloadOptions::default()
        },
    )
    .unwrap();
    let want = expected_vhd(&d);
    assert_eq!(std::fs::read(&out).unwrap(), want);
    let reads: u64 = f
        .requests()
        .iter()
        .filter(|r| r.op == Op::Read)
        .map(|r| r.len)
        .sum();
    assert_eq!(reads, nonzero_pages(&want));
    assert_eq!(r.bytes_fetched, reads);
    let e = download(
        &f,
        &BlobName::new("disks", "nope"),
        &out,
        &DownloadOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("disks/nope"), "{e}");
}

#[test]
fn credentials_that_may_not_set_metadata_still_upload() {
    let d = sample();
    let f = FakePageBlobs::new();
    f.inject(Some(Op::SetMetadata), Fault::Forbidden);
    f.inject(Some(Op::SetContentMd5), Fault::Forbidden);
    let o = UploadOptions {
        verify: true,
        ..opts()
    };
    let r = upload(Source::Disk(&d), &f, &name(), &o).unwrap();
    assert!(!r.metadata_written && r.verified, "{r:?}");
    assert_eq!(f.contents(&name()).unwrap(), expected_vhd(&d));
    // Any other refusal is an error.
    f.inject(Some(Op::PutPages), Fault::Forbidden);
    let o = UploadOptions {
        overwrite: true,
        ..opts()
    };
    f.clear_pages(&name(), 512, 512).unwrap();
    let e = upload(Source::Disk(&d), &f, &name(), &o).unwrap_err();
    assert!(e.to_string().contains("403"), "{e}");
}

#[test]
fn small_zero_gaps_are_merged_into_one_put_and_a_resume_keeps_them() {
    // Data runs 8 KiB apart: one Put Page with the default gap, many without.
    let runs: Vec<(usize, usize, u8)> =
        (0..40).map(|i| (i * 12288 + 4096, 4096, i as u8)).collect();
    let d = disk((3 * MIB) as usize, &runs);
    let want = expected_vhd(&d);
    let f = FakePageBlobs::new();
    let o = UploadOptions {
        merge_gap: DEFAULT_MERGE_GAP,
        ..opts()
    };
    let r = upload(Source::Disk(&d), &f, &name(), &o).unwrap();
    assert_eq!(f.contents(&name()).unwrap(), want);
    assert_eq!(
        r.put_calls, 2,
        "one for the data, one for the footer: {r:?}"
    );
    assert_eq!(r.data_bytes, nonzero_pages(&want));
    assert_eq!(r.bytes_sent, 39 * 12288 + 4096 + 512);
    // Running again with the same gap: nothing sent, nothing cleared.
    let r = upload(Source::Disk(&d), &f, &name(), &o).unwrap();
    assert_eq!((r.bytes_sent, r.bytes_cleared), (0, 0), "{r:?}");
    // Two pages lost in the middle: a resume sends them, and what lies between, in one call.
    let a = 5 * 12288 + 4096;
    let b = 7 * 12288 + 4096;
    f.clear_pages(&name(), a, 512).unwrap();
    f.clear_pages(&name(), b, 512).unwrap();
    f.clear_log();
    let r = upload(Source::Disk(&d), &f, &name(), &o).unwrap();
    assert_eq!((r.start.as_str(), r.put_calls), ("resumed", 1), "{r:?}");
    assert_eq!(puts(&f), vec![(a, b + 512 - a)]);
    assert_eq!(f.contents(&name()).unwrap(), want);
    // Without merging, the zero pages the first run wrote are cleared: the blob still
    // equals the file.
    let r = upload(Source::Disk(&d), &f, &name(), &opts()).unwrap();
    assert_eq!((r.bytes_sent, r.bytes_cleared), (0, 39 * 8192), "{r:?}");
    assert_eq!(f.contents(&name()).unwrap(), want);
    assert_eq!(
        merge_runs(vec![(0, 512), (1024, 1536), (70000, 70144)], 512),
        vec![(0, 1536), (70000, 70144)]
    );
}

/// A disk of any size that holds nothing (never read by the size checks).
struct Empty(u64);
impl DiskImage for Empty {
    fn len(&self) -> u64 {
        self.0
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = crate::image::readable(self.0, offset, buf.len());
        buf[..n].fill(0);
        Ok(n)
    }
    fn extents(&self) -> Result<ExtentMap> {
        Ok(ExtentMap::from_ranges(self.0, []))
    }
    fn format(&self) -> Format {
        Format::Raw
    }
}

#[test]
fn size_limits_are_checked_before_any_request() {
    let f = FakePageBlobs::new();
    let too_big_blob = Empty(MAX_PAGE_BLOB);
    let e = upload(Source::Disk(&too_big_blob), &f, &name(), &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit, "{e}");
    assert!(e.to_string().contains("largest page blob"), "{e}");
    let too_big_disk = Empty(MAX_VHD_SIZE + 1);
    let o = UploadOptions {
        target: Target::ManagedDisk,
        ..opts()
    };
    let e = upload(Source::Disk(&too_big_disk), &f, &name(), &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit, "{e}");
    // 32 TiB exactly is a managed disk's largest upload (plus the footer).
    let largest = Empty(MAX_VHD_SIZE);
    let e = upload(Source::Disk(&largest), &f, &name(), &opts()).unwrap_err();
    assert!(e.to_string().contains("largest page blob"), "{e}");
    assert!(f.requests().is_empty());
    let tiny = MemImage::new(vec![1; 100]);
    let e = upload(Source::Vhd(&tiny), &f, &name(), &opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidFormat, "{e}");
}

#[test]
fn naive_mode_sends_every_page() {
    let d = sample();
    let f = FakePageBlobs::new();
    let o = UploadOptions {
        naive: true,
        ..opts()
    };
    let r = upload(Source::Disk(&d), &f, &name(), &o).unwrap();
    assert_eq!(r.bytes_sent, r.blob_len);
    assert_eq!(f.contents(&name()).unwrap(), expected_vhd(&d));
}

proptest! {
    /// A window's requests, applied to a model blob (per page: present, and whether it holds
    /// the source's bytes), in the engine's order (writes, then clears), make every page read
    /// as the source; no page is sent twice; clears touch only zero pages; without merging no
    /// zero page is sent and, on a resume, no page already there is sent again.
    #[test]
    fn window_requests_make_the_blob_equal_the_source(
        data in proptest::collection::vec(any::<bool>(), 16),
        present in proptest::collection::vec(any::<bool>(), 16),
        ours in any::<bool>(),
        gap_pages in 0u64..4,
    ) {
        let page = |i: usize| i as u64 * 512;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (i, &d) in data.iter().enumerate() {
            if d {
                match runs.last_mut() {
                    Some(l) if l.1 == page(i) => l.1 = page(i + 1),
                    _ => runs.push((page(i), page(i + 1))),
                }
            }
        }
        let set = RangeSet::from_ranges(
            present.iter().enumerate().filter(|p| *p.1).map(|(i, _)| (page(i), 512)),
        );
        // Model: (present, holds the source's bytes — zeros for a zero page).
        let mut blob: Vec<(bool, bool)> = present.iter().map(|&p| (p, ours)).collect();
        let gap = gap_pages * 512;
        let (_, send, clear) = window_requests(runs, &set, (0, page(16)), ours, gap);
        let mut sent = [0; 16];
        for (s, e) in send {
            prop_assert!(s % 512 == 0 && e % 512 == 0 && s < e && e - s <= MAX_PUT);
            for i in (s / 512)..(e / 512) {
                let i = i as usize;
                if gap == 0 {
                    prop_assert!(data[i], "sent a zero page");
                    prop_assert!(!(ours && present[i]), "resent a page already there");
                }
                sent[i] += 1;
                blob[i] = (true, true);
            }
        }
        prop_assert!(sent.iter().all(|&n| n <= 1));
        for (s, e) in clear {
            for i in (s / 512)..(e / 512) {
                let i = i as usize;
                prop_assert!(present[i] && !data[i]);
                blob[i] = (false, false);
            }
        }
        for i in 0..16 {
            if data[i] {
                prop_assert_eq!(blob[i], (true, true), "page {}", i);
            } else {
                prop_assert!(!blob[i].0 || blob[i].1, "page {} holds stale bytes", i);
            }
        }
    }

    /// nonzero_runs against a per-page model.
    #[test]
    fn nonzero_runs_match_pages(pages in proptest::collection::vec(any::<bool>(), 0..24)) {
        let mut buf = vec![0u8; pages.len() * 512];
        for (i, &p) in pages.iter().enumerate() {
            if p {
                buf[i * 512 + (i * 37) % 512] = 1;
            }
        }
        let runs = nonzero_runs(&buf, 4096);
        let mut got = vec![false; pages.len()];
        for w in runs.windows(2) {
            prop_assert!(w[0].1 < w[1].0, "runs are merged");
        }
        for (s, e) in runs {
            for i in (s - 4096) / 512..(e - 4096) / 512 {
                got[i as usize] = true;
            }
        }
        prop_assert_eq!(got, pages);
    }
}

/// A disk that counts the bytes read from it (and lends no slices, so every byte is counted).
struct Counting<'a>(&'a dyn DiskImage, std::sync::atomic::AtomicU64);

impl DiskImage for Counting<'_> {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = self.0.read_at(buf, offset)?;
        self.1
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn extents(&self) -> Result<ExtentMap> {
        self.0.extents()
    }
    fn format(&self) -> Format {
        self.0.format()
    }
}

/// Bytes read from the source per byte sent, for a fresh upload with Content-MD5 and verify
/// (the most reading an upload does): the source's data is read once to learn its identity
/// (manifest root and MD5, from the same bytes) and once to send it; verify reads the blob.
#[test]
fn the_source_is_read_twice_at_most_and_verify_reads_only_the_blob() {
    let d = sample();
    let c = Counting(&d, Default::default());
    let f = FakePageBlobs::new();
    let o = UploadOptions {
        verify: true,
        ..opts()
    };
    let r = upload(Source::Disk(&c), &f, &name(), &o).unwrap();
    let read = c.1.load(std::sync::atomic::Ordering::Relaxed);
    let ratio = read as f64 / r.bytes_sent as f64;
    let data = d.extents().unwrap().totals().0;
    let passes = read as f64 / data as f64;
    eprintln!(
        "read {read} bytes from the source ({data} bytes of data extents) for {} sent: \
         {ratio:.2} per byte sent, {passes:.2} passes over the source's data",
        r.bytes_sent
    );
    assert!(r.verified);
    assert!(passes <= 2.0 + 0.01, "{passes}");
}
