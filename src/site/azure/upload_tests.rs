//! The upload engine ([`transfer`](crate::transfer)) over a site's file-backed page blobs
//! ([`FileBlobs`]), unchanged: a round trip through upload and download byte-compared, a
//! resume, an overwrite that clears stale pages, and a crash between a page's data and its
//! record survived by a retry. (Here, above `transfer` in the layers, rather than beside
//! `FileBlobs` in `cloud`.)

use crate::cloud::fake::file_pageblob::{CrashAt, FileBlobs};
use crate::cloud::pageblob::{BlobName, PageBlobStore};

fn files() -> (tempfile::TempDir, FileBlobs) {
    let dir = tempfile::tempdir().unwrap();
    let f = FileBlobs::new(dir.path().join("acct")).without_sync();
    (dir, f)
}

#[test]
fn the_upload_engine_round_trips_a_disk_through_files() {
    use crate::transfer::{DownloadOptions, Source, UploadOptions, download, upload};
    let mut bytes = vec![0u8; (9 << 20) + 1000];
    for (o, l, seed) in [
        (512usize, 1024usize, 1u8),
        ((4 << 20) - 512, 2048, 2),
        (5 << 20, 3 << 20, 3),
    ] {
        for (i, b) in bytes[o..o + l].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed) | 1;
        }
    }
    let disk = crate::image::MemImage::new(bytes.clone());
    let (d, f) = files();
    f.create_container("vhds").unwrap();
    let blob = BlobName::new("vhds", "disk.vhd");
    let opts = UploadOptions {
        target: crate::check::Target::PageBlob,
        unique_id: Some([7; 16]),
        timestamp: Some(1000),
        verify: true,
        content_md5: true,
        parallel: 4,
        ..UploadOptions::default()
    };
    let r = upload(Source::Disk(&disk), &f, &blob, &opts).unwrap();
    assert!(r.verified && r.metadata_written, "{r:?}");
    assert_eq!(r.start, "created");
    // A second run finds the blob complete and sends nothing (resume by identity).
    let again = upload(
        Source::Disk(&disk),
        &FileBlobs::new(d.path().join("acct")),
        &blob,
        &opts,
    )
    .unwrap();
    assert_eq!(again.bytes_sent, 0, "{again:?}");
    let out = d.path().join("back.vhd");
    download(
        &f,
        &blob,
        &out,
        &DownloadOptions {
            sync: false,
            ..DownloadOptions::default()
        },
    )
    .unwrap();
    let back = std::fs::read(&out).unwrap();
    let vsize = crate::export::align_mib(bytes.len() as u64) as usize;
    assert_eq!(back.len(), vsize + 512);
    assert_eq!(&back[..bytes.len()], &bytes[..]);
    assert!(back[bytes.len()..vsize].iter().all(|&b| b == 0));
    let footer = crate::image::vhd::Footer::new_fixed(vsize as u64, [7; 16], 1000).encode();
    assert_eq!(&back[vsize..], &footer[..]);
    // Holes stay holes: the data file holds about the data, not the whole length.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(d.path().join("acct/vhds/disk%2Evhd")).unwrap();
    assert!(
        m.blocks() * 512 < 6 << 20,
        "{} bytes allocated",
        m.blocks() * 512
    );
}

/// A disk of `len` bytes with non-zero runs at `(offset, len, seed)`.
fn mem_disk(len: usize, runs: &[(usize, usize, u8)]) -> crate::image::MemImage {
    let mut d = vec![0u8; len];
    for &(o, l, seed) in runs {
        for (i, b) in d[o..o + l].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed) | 1;
        }
    }
    crate::image::MemImage::new(d)
}

fn quick_opts() -> crate::transfer::UploadOptions<'static> {
    crate::transfer::UploadOptions {
        target: crate::check::Target::PageBlob,
        unique_id: Some([7; 16]),
        timestamp: Some(1000),
        retry: crate::transfer::RetryPolicy {
            attempts: 4,
            base_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(2),
        },
        merge_gap: 0,
        ..crate::transfer::UploadOptions::default()
    }
}

/// The engine's `another_source_is_refused_unless_overwrite_which_clears_stale_pages`, and a
/// crash between a page's data and its record survived by a retry, over files.
#[test]
fn the_engine_overwrites_clears_stale_pages_and_survives_a_crash_over_files() {
    use crate::transfer::{Source, UploadOptions, upload};
    const MIB: usize = 1 << 20;
    let a = mem_disk(9 * MIB + 1000, &[(512, 1024, 1), (5 * MIB, 3 * MIB, 3)]);
    let b = mem_disk(10 * MIB - 100, &[(1024, 512, 9)]);
    let (_d, f) = files();
    f.create_container("vhds").unwrap();
    let blob = BlobName::new("vhds", "d.vhd");
    // A crash after the first Put Page's bytes, before its record: the call fails, the engine
    // retries it, and the blob still ends equal to the source.
    f.crash_at(Some(CrashAt::PutAfterData));
    let o = UploadOptions {
        verify: true,
        ..quick_opts()
    };
    let r = upload(Source::Disk(&a), &f, &blob, &o).unwrap();
    assert!(r.verified && r.retries >= 1, "{r:?}");
    let e = upload(Source::Disk(&b), &f, &blob, &o).unwrap_err();
    assert!(e.to_string().contains("another source"), "{e}");
    let o = UploadOptions {
        overwrite: true,
        ..o
    };
    let r = upload(Source::Disk(&b), &f, &blob, &o).unwrap();
    assert_eq!(r.start, "overwritten");
    assert!(r.bytes_cleared > 0 && r.verified, "{r:?}");
    assert_eq!(
        f.page_ranges(&blob).unwrap(),
        vec![(1024, 512), (10 << 20, 512)],
        "only data pages remain"
    );
}
