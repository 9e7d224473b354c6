//! The upload engine: decides from the blob's state whether to create, resume, fill or overwrite
//! it, then sends the source's 4 MiB windows with bounded parallelism (each window planned by
//! [`plan`](super::plan)), retries every call, records progress in the blob's metadata and sets
//! Content-MD5 at the end.

use super::plan::{nonzero_runs, plan_window, window_requests};
use super::verify::verify;
use super::*;
use crate::check::{MAX_MANAGED_DISK_UPLOAD, MAX_PAGE_BLOB, MIN_MANAGED_DISK_UPLOAD};
use crate::cloud::pageblob::{BlobError, BlobName, PageBlobStore, RangeSet};
use crate::digest::{BLOCK_SIZE, Manifest, ManifestBuilder};
use crate::error::ErrorKind;
use crate::export::{MAX_VHD_SIZE, align_mib};
use crate::image::vhd::{FOOTER_SIZE, checksum};
use crate::image::{ExtentMap, bytes_at};
use crate::progress::Progress;
use md5::Digest;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

pub(crate) struct Shared<'a> {
    pub(crate) store: &'a dyn PageBlobStore,
    pub(crate) blob: &'a BlobName,
    pub(crate) retry: RetryPolicy,
    pub(crate) retries: AtomicU64,
    pub(crate) progress: &'a dyn Progress,
}

impl Shared<'_> {
    /// Runs `call` with retries; the error names the blob and `what`.
    pub(crate) fn run<T>(
        &self,
        what: &str,
        call: impl FnMut() -> Result<T, BlobError>,
    ) -> Result<T> {
        self.retry.run_with(
            &format!("blob {}: {what}", self.blob),
            &|| self.progress.cancelled(),
            &|| {
                self.retries.fetch_add(1, Relaxed);
            },
            call,
        )
    }
}

/// Reads a footer the blob already has at `vsize`, if it is a valid fixed footer for `vsize`.
fn adopt_footer(sh: &Shared, vsize: u64, present: &RangeSet) -> Result<Option<[u8; 512]>> {
    if !present.covers(vsize, vsize + FOOTER_SIZE) {
        return Ok(None);
    }
    let mut b = [0u8; 512];
    sh.run("reading the footer", || {
        sh.store.read(sh.blob, vsize, &mut b)
    })?;
    let f = Footer::decode(&b);
    Ok((f.cookie == *crate::image::vhd::COOKIE
        && checksum(&b) == f.checksum
        && f.disk_type == DiskType::Fixed
        && f.current_size == vsize)
        .then_some(b))
}

/// The source's identity in one read of its data: the manifest of the disk's first `vsize`
/// bytes (the VHD less its footer) and, when `want_md5`, the MD5 state after those bytes (the
/// footer, decided later, is hashed last). Windows are read in parallel batches of `parallel`
/// (holes are not read: they hash as zeros); the MD5 takes each batch in order.
fn identity_pass(
    view: &VhdView,
    want_md5: bool,
    parallel: usize,
    stop: &dyn Fn() -> bool,
) -> Result<(Manifest, Option<md5::Md5>)> {
    use rayon::prelude::*;
    let vsize = view.vsize;
    let extents = view.extents.with_len(vsize);
    let builder = ManifestBuilder::new(vsize);
    let mut md5 = want_md5.then(md5::Md5::new);
    let k = parallel.clamp(1, 64) as u64;
    let mut bufs: Vec<Vec<u8>> = (0..k).map(|_| vec![0u8; WINDOW as usize]).collect();
    let zeros = vec![0u8; WINDOW as usize];
    let windows = vsize.div_ceil(WINDOW);
    let mut w = 0;
    while w < windows {
        if stop() {
            return Err(Error::cancelled());
        }
        let batch = (windows - w).min(k) as usize;
        let read: Vec<Result<bool>> = bufs[..batch]
            .par_iter_mut()
            .enumerate()
            .map(|(i, buf)| {
                let ws = (w + i as u64) * WINDOW;
                let n = (vsize - ws).min(WINDOW) as usize;
                if !extents.has_data_in(ws, n as u64) {
                    return Ok(false);
                }
                let own = buf.as_ptr();
                let lent = {
                    let bytes = bytes_at(view, &extents, ws, &mut buf[..n])?;
                    for (j, block) in bytes.chunks(BLOCK_SIZE as usize).enumerate() {
                        builder.record(ws / BLOCK_SIZE + j as u64, block);
                    }
                    // Bytes lent by the image (a mapped file) are copied for the MD5.
                    (want_md5 && bytes.as_ptr() != own).then(|| bytes.to_vec())
                };
                if let Some(v) = lent {
                    buf[..n].copy_from_slice(&v);
                }
                // Done with the image's bytes (only the copy in `buf` is used later).
                view.release(ws, n as u64);
                Ok(true)
            })
            .collect();
        for (i, r) in read.into_iter().enumerate() {
            let had_data = r?;
            if let Some(h) = md5.as_mut() {
                let ws = (w + i as u64) * WINDOW;
                let n = (vsize - ws).min(WINDOW) as usize;
                h.update(if had_data { &bufs[i][..n] } else { &zeros[..n] });
            }
        }
        w += batch as u64;
    }
    Ok((builder.finish(), md5))
}

/// The VHD's virtual size and a provisional footer (a converted disk's own, or the footer of a
/// VHD sent as it is), checked against the size limits of `opts.target`.
fn vhd_layout(
    disk: &dyn DiskImage,
    converted: bool,
    blob: &BlobName,
    opts: &UploadOptions,
) -> Result<(u64, [u8; 512])> {
    // The virtual size and a provisional footer.
    let (vsize, footer) = if converted {
        let vsize = align_mib(disk.len());
        if vsize > MAX_VHD_SIZE {
            return Err(Error::limit(format!(
                "a {}-byte disk is larger than the 32 TiB ({MAX_VHD_SIZE} bytes) that Azure \
                 accepts for a managed disk",
                disk.len()
            )));
        }
        let f = crate::export::new_footer(vsize, opts.unique_id, opts.timestamp)?;
        (vsize, f.encode())
    } else {
        let len = disk.len();
        if len < FOOTER_SIZE {
            return Err(Error::invalid(
                "a VHD file shorter than its 512-byte footer",
            ));
        }
        let mut f = [0u8; 512];
        disk.read_exact_at(&mut f, len - FOOTER_SIZE)?;
        (len - FOOTER_SIZE, f)
    };
    let blob_len = vsize + FOOTER_SIZE;
    match opts.target {
        Target::PageBlob if blob_len > MAX_PAGE_BLOB => {
            return Err(Error::limit(format!(
                "blob {blob}: a {blob_len}-byte VHD is larger than the largest page blob \
                 ({MAX_PAGE_BLOB} bytes)"
            )));
        }
        Target::ManagedDisk
            if !(MIN_MANAGED_DISK_UPLOAD..=MAX_MANAGED_DISK_UPLOAD).contains(&blob_len) =>
        {
            return Err(Error::limit(format!(
                "blob {blob}: a managed disk upload must be between {MIN_MANAGED_DISK_UPLOAD} \
                 (20 MiB + 512) and {MAX_MANAGED_DISK_UPLOAD} (32 TiB + 512) bytes, but this VHD \
                 is {blob_len} bytes (use --target page-blob for a plain page blob)"
            )));
        }
        _ => {}
    }
    Ok((vsize, footer))
}

/// How the upload found the blob, and what that means for sending.
struct Start {
    /// "created", "resumed", "empty", "overwritten", "recreated".
    how: &'static str,
    /// The pages the blob holds.
    present: RangeSet,
    /// `true` when those pages hold this source's bytes (a resume of this source).
    present_is_ours: bool,
    /// `true` while another source's pages are being replaced: a resume must not trust them,
    /// and the old Content-MD5 must be replaced.
    overwriting: bool,
    /// The footer to send (on a resume, the one the first run wrote).
    footer: [u8; 512],
}

/// Looks at the blob and decides: create it, resume this source's upload, fill an empty blob of
/// the right length, or (with `overwrite`) replace another source's; anything else is refused.
fn blob_start(
    sh: &Shared,
    vsize: u64,
    converted: bool,
    footer: [u8; 512],
    root: &str,
    opts: &UploadOptions,
) -> Result<Start> {
    let (store, blob) = (sh.store, sh.blob);
    let blob_len = vsize + FOOTER_SIZE;
    let mut footer = footer;
    let props = sh.run("getting the blob's properties", || store.properties(blob))?;
    let mut present = RangeSet::new();
    let mut present_is_ours = true;
    // Replacing another source's pages: until it completes, a resume must not trust them; and
    // the blob's Content-MD5 (the old file's) must be replaced.
    let mut overwriting = false;
    // A VHD sent as it is is the same source only with the same footer; a converted disk
    // adopts the footer the blob has.
    let file_footer = hex::encode(crate::digest::sha256(&footer));
    let ours = |m: &BTreeMap<String, String>| {
        m.get(META_ROOT).map(String::as_str) == Some(root)
            && m.get(META_SIZE).map(String::as_str) == Some(&vsize.to_string())
            && (converted || m.get(META_FOOTER) == Some(&file_footer))
    };
    let create = |sh: &Shared| -> Result<()> {
        match store.create(blob, blob_len) {
            Err(e) if e.code() == Some("ContainerNotFound") => {
                sh.run("creating the container", || {
                    store.create_container(&blob.container)
                })?;
                sh.run("creating the page blob", || store.create(blob, blob_len))
            }
            Err(e) if e.retryable() => {
                sh.run("creating the page blob", || store.create(blob, blob_len))
            }
            Err(e) => Err(Error::from_cloud(
                format!("blob {blob}: creating the page blob of {blob_len} bytes: {e}"),
                crate::cloud::retry::Transient::cloud(&e),
                e,
            )),
            Ok(()) => Ok(()),
        }
    };
    let start = match &props {
        None => {
            create(sh)?;
            "created"
        }
        Some(p) if p.page_blob && p.len == blob_len && ours(&p.metadata) => {
            present =
                RangeSet::from_ranges(sh.run("listing page ranges", || store.page_ranges(blob))?);
            if p.metadata.get(META_STATE).map(String::as_str) == Some(OVERWRITING) {
                // An overwrite was interrupted: pages it did not reach still hold the old
                // disk's bytes, so nothing on the blob can be trusted to be ours.
                present_is_ours = false;
                overwriting = true;
            }
            if converted && let Some(f) = adopt_footer(sh, vsize, &present)? {
                // The same disk, resumed: keep the footer the first run wrote, unless an id or
                // time given explicitly differs from it (the footer page is then rewritten).
                let had = Footer::decode(&f);
                if opts.unique_id.is_none_or(|u| u == had.unique_id)
                    && opts.timestamp.is_none_or(|t| t == had.timestamp)
                {
                    footer = f;
                }
            }
            if converted
                && p.metadata.get(META_FOOTER) != Some(&hex::encode(crate::digest::sha256(&footer)))
            {
                // The footer asked for is not the one on the blob: send its page again.
                present.remove(vsize, vsize + FOOTER_SIZE);
            }
            "resumed"
        }
        Some(p) => {
            let ranges = if p.page_blob && p.len == blob_len {
                sh.run("listing page ranges", || store.page_ranges(blob))?
            } else {
                Vec::new()
            };
            let foreign_meta = p.metadata.contains_key(META_ROOT);
            if p.page_blob && p.len == blob_len && ranges.is_empty() && !foreign_meta {
                // An empty blob of the right size (a managed disk's upload URL): fill it.
                "empty"
            } else if !opts.overwrite {
                let why = if !p.page_blob {
                    "it is not a page blob".to_string()
                } else if p.len != blob_len {
                    format!("it is {} bytes, this VHD is {blob_len}", p.len)
                } else if foreign_meta {
                    format!(
                        "it was made from another source or holds another VHD footer (root {}, virtual size {}); this \
                         source's root is {}",
                        p.metadata.get(META_ROOT).map_or("?", String::as_str),
                        p.metadata.get(META_SIZE).map_or("?", String::as_str),
                        root
                    )
                } else {
                    "it holds data that this tool did not write".to_string()
                };
                return Err(Error::argument(format!(
                    "blob {blob} already exists and {why}; use --overwrite to replace it"
                )));
            } else if p.page_blob && p.len == blob_len {
                present = RangeSet::from_ranges(ranges);
                present_is_ours = false;
                overwriting = true;
                "overwritten"
            } else {
                create(sh)?;
                "recreated"
            }
        }
    };
    Ok(Start {
        how: start,
        present,
        present_is_ours,
        overwriting,
        footer,
    })
}

/// What sending the windows did.
#[derive(Default)]
struct Tally {
    /// Non-zero bytes of the VHD seen.
    data_total: AtomicU64,
    /// Bytes already on the blob from an earlier run.
    already: AtomicU64,
    /// Successful Put Page (update) calls.
    put_calls: AtomicU64,
    /// Successful Put Page (clear) calls.
    clear_calls: AtomicU64,
    /// Every range that failed: offset, length, why.
    failures: Mutex<Vec<(u64, u64, Error)>>,
    /// Stopped on request.
    cancelled: AtomicBool,
}

/// Sends `view`'s 4 MiB windows with bounded parallelism: each window is read once (if it has
/// data or the blob holds pages in it), planned ([`window_requests`]) and sent; pages the blob
/// holds where the source has zeros are cleared. Every window is attempted; failures are
/// collected, not fatal.
fn send_windows(
    sh: &Shared,
    view: &VhdView,
    extents: &ExtentMap,
    present: &RangeSet,
    present_is_ours: bool,
    counters: &UploadCounters,
    opts: &UploadOptions,
) -> Tally {
    let (store, blob) = (sh.store, sh.blob);
    let blob_len = view.len();
    let tally = Tally::default();
    let Tally {
        data_total,
        already,
        put_calls,
        clear_calls,
        failures,
        cancelled,
    } = &tally;
    let next = AtomicU64::new(0);
    let windows = blob_len.div_ceil(WINDOW);
    let workers = if opts.naive {
        1
    } else {
        opts.parallel.clamp(1, 64)
    };
    opts.progress.begin("uploading", blob_len);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut buf = vec![0u8; WINDOW as usize];
                loop {
                    let w = next.fetch_add(1, Relaxed);
                    if w >= windows || cancelled.load(Relaxed) {
                        break;
                    }
                    if opts.progress.cancelled() {
                        cancelled.store(true, Relaxed);
                        break;
                    }
                    let ws = w * WINDOW;
                    let we = (ws + WINDOW).min(blob_len);
                    let wlen = we - ws;
                    let has_data = extents.has_data_in(ws, wlen);
                    let has_present = present.overlapping(ws, we).next().is_some();
                    if !has_data && !has_present && !opts.naive {
                        counters.skipped.fetch_add(wlen, Relaxed);
                        opts.progress.advance(wlen);
                        continue;
                    }
                    let bytes = match bytes_at(view, extents, ws, &mut buf[..wlen as usize]) {
                        Ok(b) => b,
                        Err(e) => {
                            lock(failures).push((ws, wlen, e.with_offset(ws)));
                            opts.progress.advance(wlen);
                            continue;
                        }
                    };
                    let nonzero = nonzero_runs(bytes, ws);
                    data_total.fetch_add(nonzero.iter().map(|(s, e)| e - s).sum(), Relaxed);
                    let (data, send, clear) = if opts.naive {
                        let all = vec![(ws, we)];
                        let (send, clear) = plan_window(&all, present, (ws, we), false);
                        (all, send, clear)
                    } else {
                        window_requests(nonzero, present, (ws, we), present_is_ours, opts.merge_gap)
                    };
                    let mut sent_here = 0;
                    for (s, e) in send {
                        let piece = &bytes[(s - ws) as usize..(e - ws) as usize];
                        let what = format!("Put Page at offset {s} ({} bytes)", e - s);
                        match sh.run(&what, || store.put_pages(blob, s, piece)) {
                            Ok(()) => {
                                sent_here += e - s;
                                put_calls.fetch_add(1, Relaxed);
                                counters.sent.fetch_add(e - s, Relaxed);
                            }
                            Err(e2) if e2.kind() == ErrorKind::Interrupted => {
                                cancelled.store(true, Relaxed);
                            }
                            Err(e2) => lock(failures).push((s, e - s, e2)),
                        }
                    }
                    if present_is_ours {
                        let there: u64 = data
                            .iter()
                            .map(|&(s, e)| {
                                present.overlapping(s, e).map(|(a, b)| b - a).sum::<u64>()
                            })
                            .sum();
                        already.fetch_add(there, Relaxed);
                    }
                    for (s, e) in clear {
                        let what = format!("Clear Page at offset {s} ({} bytes)", e - s);
                        match sh.run(&what, || store.clear_pages(blob, s, e - s)) {
                            Ok(()) => {
                                clear_calls.fetch_add(1, Relaxed);
                                counters.cleared.fetch_add(e - s, Relaxed);
                            }
                            Err(e2) if e2.kind() == ErrorKind::Interrupted => {
                                cancelled.store(true, Relaxed);
                            }
                            Err(e2) => lock(failures).push((s, e - s, e2)),
                        }
                    }
                    counters
                        .skipped
                        .fetch_add(wlen.saturating_sub(sent_here), Relaxed);
                    // Sent: a mapped source drops these pages again (RSS stays bounded).
                    view.release(ws, wlen);
                    opts.progress.advance(wlen);
                }
            });
        }
    });
    tally
}

/// Uploads `src` to the page blob `blob` in `store`. See the module documentation.
///
/// # Errors
/// A source over the size limits, a blob made from another source (without `overwrite`), calls
/// that keep failing (every failed range is listed), a cancellation, or a verification mismatch.
pub fn upload(
    src: Source,
    store: &dyn PageBlobStore,
    blob: &BlobName,
    opts: &UploadOptions,
) -> Result<UploadReport> {
    let t0 = std::time::Instant::now();
    let (disk, converted) = match src {
        Source::Vhd(d) => (d, false),
        Source::Disk(d) => (d, true),
    };
    let (vsize, footer) = vhd_layout(disk, converted, blob, opts)?;
    let blob_len = vsize + FOOTER_SIZE;
    let sh = Shared {
        store,
        blob,
        retry: opts.retry,
        retries: AtomicU64::new(0),
        progress: opts.progress,
    };

    // The source's identity: the manifest root of the disk's virtual bytes.
    opts.progress.begin("hashing", 0);
    let disk_view = VhdView::new(disk, vsize, footer)?;
    // The MD5 is needed for Content-MD5, and after an overwrite (the old file's is wrong).
    let want_md5 = opts.content_md5 || opts.overwrite;
    let (identity, md5_head) = identity_pass(&disk_view, want_md5, opts.parallel, &|| {
        opts.progress.cancelled()
    })?;
    opts.progress.finish();
    if opts.progress.cancelled() {
        return Err(Error::cancelled());
    }
    if let Some(want) = opts.expect_root
        && want != identity.root
    {
        return Err(Error::invalid(format!(
            "the disk to upload has root digest {}, expected {want}; nothing was sent",
            identity.root
        )));
    }

    // What is on the blob already, and so where to start.
    let Start {
        how: start,
        present,
        present_is_ours,
        overwriting,
        footer,
    } = blob_start(&sh, vsize, converted, footer, &identity.root, opts)?;

    // The bytes to send, with the footer now decided.
    let view = VhdView::new(disk, vsize, footer)?;
    drop(disk_view);
    let extents = view.extents()?;
    let mut meta = BTreeMap::new();
    meta.insert(
        META_STATE.to_string(),
        if overwriting {
            OVERWRITING
        } else {
            "uploading"
        }
        .to_string(),
    );
    meta.insert(META_SIZE.to_string(), vsize.to_string());
    meta.insert(META_ROOT.to_string(), identity.root.clone());
    meta.insert(
        META_FOOTER.to_string(),
        hex::encode(crate::digest::sha256(&footer)),
    );
    let mut metadata_written = sh.run("setting metadata", || {
        permitted(store.set_metadata(blob, &meta))
    })?;

    let counters_local = UploadCounters::default();
    let counters = opts.counters.unwrap_or(&counters_local);
    let tally = send_windows(
        &sh,
        &view,
        &extents,
        &present,
        present_is_ours,
        counters,
        opts,
    );
    opts.progress.finish();
    let sent = counters.sent.load(Relaxed);
    if tally.cancelled.load(Relaxed) {
        record_progress(&sh, &meta, sent);
        return Err(Error::cancelled());
    }
    let mut failures = crate::sync::into_inner(tally.failures);
    if !failures.is_empty() {
        record_progress(&sh, &meta, sent);
        failures.sort_by_key(|f| f.0);
        let n = failures.len();
        let list: Vec<String> = failures
            .iter()
            .take(50)
            .map(|(o, l, e)| format!("offset {o} (0x{o:x}), {l} bytes: {}", e.message()))
            .collect();
        let more = if n > 50 {
            format!("\n  … and {} more", n - 50)
        } else {
            String::new()
        };
        let offset = failures[0].0;
        let message = format!(
            "blob {blob}: {n} range(s) failed; the blob is incomplete (run the upload again \
             to resume):\n  {}{more}",
            list.join("\n  ")
        );
        return Err(
            crate::cloud::retry::many_failed(message, failures.swap_remove(0).2)
                .with_offset(offset),
        );
    }

    // The MD5 of the whole VHD: the disk's bytes hashed in the identity pass, then the footer.
    let md5: Option<[u8; 16]> =
        md5_head
            .filter(|_| opts.content_md5 || overwriting)
            .map(|mut h| {
                h.update(footer);
                h.finalize().into()
            });
    use base64::Engine;
    let md5_b64 = md5.map(|m| base64::engine::general_purpose::STANDARD.encode(m));
    if let Some(m) = &md5 {
        metadata_written &= sh.run("setting Content-MD5", || {
            permitted(store.set_content_md5(blob, m))
        })?;
    }
    meta.insert(META_STATE.to_string(), "complete".to_string());
    meta.insert(META_SENT.to_string(), sent.to_string());
    if metadata_written {
        metadata_written = sh.run("setting metadata", || {
            permitted(store.set_metadata(blob, &meta))
        })?;
    }

    let mut report = UploadReport {
        blob: blob.to_string(),
        blob_len,
        virtual_size: vsize,
        converted,
        start: start.to_string(),
        data_bytes: tally.data_total.load(Relaxed),
        bytes_sent: sent,
        bytes_skipped: blob_len.saturating_sub(sent),
        bytes_already_there: tally.already.load(Relaxed),
        bytes_cleared: counters.cleared.load(Relaxed),
        put_calls: tally.put_calls.load(Relaxed),
        clear_calls: tally.clear_calls.load(Relaxed),
        retries: 0,
        source_root: identity.root.clone(),
        content_md5: md5_b64,
        verified: false,
        metadata_written,
        seconds: 0.0,
    };
    if opts.verify {
        verify(
            &sh,
            vsize,
            &footer,
            &identity,
            md5.filter(|_| metadata_written),
            opts,
        )?;
        report.verified = true;
    }
    report.retries = sh.retries.load(Relaxed);
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// `Ok(true)` when done, `Ok(false)` when the credentials do not allow it (403).
fn permitted(r: Result<(), BlobError>) -> Result<bool, BlobError> {
    match r {
        Ok(()) => Ok(true),
        Err(BlobError::Status { status: 403, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) use crate::sync::lock;

/// Best effort: records how far an interrupted upload got.
fn record_progress(sh: &Shared, meta: &BTreeMap<String, String>, sent: u64) {
    let mut m = meta.clone();
    m.insert(META_SENT.to_string(), sent.to_string());
    let _ = sh.store.set_metadata(sh.blob, &m);
}
