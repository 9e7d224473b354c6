//! Any disk into an Azure page blob, and a page blob back into a sparse file.
//!
//! [`upload`] takes a [`Source`]: the bytes of an Azure-ready fixed VHD file, sent as they are,
//! or any other disk ([`DiskImage`]: raw, qcow2, VHDX, dynamic VHD, an EBS snapshot), which is
//! converted on the fly — virtual size rounded up to a whole MiB, footer from
//! [`export::new_footer`](crate::export::new_footer) — with no temporary file ([`VhdView`]).
//!
//! ```text
//!  identity: manifest root of the disk (+ MD5 of the whole VHD, for Content-MD5)
//!  blob state ─> fresh: create at the VHD's length           ─┐
//!             ├> same source (metadata root + size): resume  ─┼─> 4 MiB windows, N workers:
//!             ├> empty blob of the right length: fill it      │   non-zero 512-byte pages,
//!             └> another source: refused, or --overwrite      ─┘   coalesced Put Page ≤ 4 MiB;
//!                                                                  pages on the blob that are
//!                                                                  zero in the source: cleared
//!  then: footer, Content-MD5, metadata "complete"; --verify reads every page range back.
//! ```
//!
//! Memory is bounded by the number of workers times 4 MiB. Every call is retried on transient
//! failures (503, 500, timeouts, dropped connections) with exponential backoff, a bounded number
//! of times; every window is attempted and every failed range reported. The blob's metadata
//! records the source's identity (`ec2azure_size`, `ec2azure_root`) and progress
//! (`ec2azure_state`: `uploading` until the last page is in, then `complete`), so a second run
//! asks Get Page Ranges and sends only the pages that are missing.
//!
//! [`download`] fetches only the page ranges into a sparse file written under a temporary name.

use super::ebs::RetryPolicy;
use super::pageblob::{BlobError, BlobName, MAX_PUT, PAGE, PageBlobStore, RangeSet};
use crate::check::{MAX_MANAGED_DISK_UPLOAD, MAX_PAGE_BLOB, MIN_MANAGED_DISK_UPLOAD, Target};
use crate::digest::Manifest;
use crate::error::{Error, ErrorKind, Result};
use crate::export::{MAX_VHD_SIZE, align_mib, is_zero};
use crate::image::vhd::{DiskType, FOOTER_SIZE, Footer, checksum};
use crate::image::{DiskImage, ExtentKind, ExtentMap, Format, bytes_at};
use crate::progress::Progress;
use md5::Digest;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Work unit: one window of the blob, at most one Put Page per run of pages in it.
const WINDOW: u64 = MAX_PUT;
/// Default of [`UploadOptions::merge_gap`]: 64 KiB.
pub const DEFAULT_MERGE_GAP: u64 = 64 << 10;
/// Metadata names (C# identifiers, as Azure requires).
const META_STATE: &str = "ec2azure_state";
/// The state of a blob whose pages are being replaced by another source's.
const OVERWRITING: &str = "overwriting";
const META_SIZE: &str = "ec2azure_size";
const META_ROOT: &str = "ec2azure_root";
const META_SENT: &str = "ec2azure_sent";
/// SHA-256 of the footer, hex: a VHD sent as it is must match its footer too.
const META_FOOTER: &str = "ec2azure_footer";

/// A disk seen as the bytes of its fixed VHD: the disk, zeros up to the virtual size, then the
/// footer. Implements [`DiskImage`] over the whole VHD file's length.
pub struct VhdView<'a> {
    disk: &'a dyn DiskImage,
    vsize: u64,
    footer: [u8; 512],
    extents: ExtentMap,
}

impl<'a> VhdView<'a> {
    /// `disk`'s first `vsize` bytes (zeros past its end) followed by `footer`.
    ///
    /// # Errors
    /// The disk's extent map cannot be read.
    pub fn new(disk: &'a dyn DiskImage, vsize: u64, footer: [u8; 512]) -> Result<Self> {
        let inner = disk.extents()?.with_len(vsize);
        let extents = ExtentMap::from_ranges(
            vsize + FOOTER_SIZE,
            inner.iter().map(|e| (e.offset, e.len, e.kind)).chain([(
                vsize,
                FOOTER_SIZE,
                ExtentKind::Data,
            )]),
        );
        Ok(VhdView {
            disk,
            vsize,
            footer,
            extents,
        })
    }

    /// The virtual size (the file's length less the footer).
    pub fn virtual_size(&self) -> u64 {
        self.vsize
    }
}

impl DiskImage for VhdView<'_> {
    fn len(&self) -> u64 {
        self.vsize + FOOTER_SIZE
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let len = self.len();
        if offset >= len {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(usize::try_from(len - offset).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            if pos >= self.vsize {
                let at = (pos - self.vsize) as usize;
                let k = (512 - at).min(n - done);
                buf[done..done + k].copy_from_slice(&self.footer[at..at + k]);
                done += k;
            } else {
                let k = (n - done).min(usize::try_from(self.vsize - pos).unwrap_or(usize::MAX));
                let piece = &mut buf[done..done + k];
                if pos < self.disk.len() {
                    let avail = piece
                        .len()
                        .min(usize::try_from(self.disk.len() - pos).unwrap_or(usize::MAX));
                    self.disk.read_exact_at(&mut piece[..avail], pos)?;
                    piece[avail..].fill(0);
                } else {
                    piece.fill(0);
                }
                done += k;
            }
        }
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        Ok(self.extents.clone())
    }

    fn format(&self) -> Format {
        Format::Vhd
    }

    fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        if offset.checked_add(len as u64)? <= self.vsize.min(self.disk.len()) {
            self.disk.as_slice(offset, len)
        } else {
            None
        }
    }
}

/// What to upload.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// The bytes of a fixed VHD file that passed Azure's rules (see [`open_source`]): sent as
    /// they are, footer included.
    Vhd(&'a dyn DiskImage),
    /// Any disk: converted to a fixed VHD on the fly.
    Disk(&'a dyn DiskImage),
}

/// An input opened for upload by [`open_source`].
pub struct OpenedSource {
    /// The image.
    pub image: Box<dyn DiskImage>,
    /// `true` when the image is the bytes of an Azure-ready fixed VHD file, to be sent as is.
    pub as_vhd: bool,
}

impl OpenedSource {
    /// The [`Source`] to upload.
    pub fn source(&self) -> Source<'_> {
        if self.as_vhd {
            Source::Vhd(&*self.image)
        } else {
            Source::Disk(&*self.image)
        }
    }
}

/// Opens `path` for upload: a fixed VHD is checked against Azure's rules for `target` and, if
/// ready, sent as it is (refused with the rules' messages if not); any other input (raw,
/// qcow2, VHDX, dynamic VHD, `ebs://snap-…`) is opened as a disk to be converted on the fly.
///
/// # Errors
/// The input cannot be opened, or it is a fixed VHD that Azure would refuse.
pub fn open_source(path: &Path, format: Option<Format>, target: Target) -> Result<OpenedSource> {
    let is_ebs = path.to_str().is_some_and(|s| s.starts_with("ebs://"));
    if !is_ebs && matches!(format, None | Some(Format::Vhd)) {
        let raw = crate::image::RawImage::open(path)?;
        if let Some(tail) = raw.tail_sector()?
            && crate::image::vhd::looks_like_footer(&tail)
            && Footer::decode(&tail).disk_type == DiskType::Fixed
        {
            let report = crate::check::check_footer(path, raw.len(), Some(&tail), target);
            if !report.ready {
                let why: Vec<String> = report
                    .failed()
                    .filter(|r| r.severity == crate::check::Severity::Error)
                    .map(|r| format!("{} ({}): {}", r.rule, r.detail, r.azure_message))
                    .collect();
                return Err(Error::invalid(format!(
                    "this fixed VHD is not ready for Azure, and a fixed VHD is uploaded as it \
                     is:\n  {}\n(repair it with `ec2azure convert -f raw` or `ec2azure convert`)",
                    why.join("\n  ")
                ))
                .with_path(path));
            }
            return Ok(OpenedSource {
                image: Box::new(raw),
                as_vhd: true,
            });
        }
    }
    Ok(OpenedSource {
        image: crate::image::open(path, format)?,
        as_vhd: false,
    })
}

/// Live counters of an upload, for a progress display.
#[derive(Debug, Default)]
pub struct UploadCounters {
    /// Bytes sent in Put Page calls that succeeded.
    pub sent: AtomicU64,
    /// Bytes not sent: zero pages, and pages already on the blob.
    pub skipped: AtomicU64,
    /// Bytes cleared.
    pub cleared: AtomicU64,
}

/// How to upload.
#[derive(Clone, Copy)]
pub struct UploadOptions<'a> {
    /// Replace a blob made from another source (or not by this tool).
    pub overwrite: bool,
    /// Read the blob back and compare it with the source after the upload.
    pub verify: bool,
    /// Compute the MD5 of the whole VHD (every byte, holes too: about 8 s for 4 GiB) while the
    /// pages go out, and set it as the blob's Content-MD5, as azure-vhd-utils does.
    pub content_md5: bool,
    /// Requests in flight at most (each holds one 4 MiB buffer).
    pub parallel: usize,
    /// Retries of each call.
    pub retry: RetryPolicy,
    /// Whose size limits apply.
    pub target: Target,
    /// The converted VHD's unique id (random when `None`).
    pub unique_id: Option<[u8; 16]>,
    /// The converted VHD's timestamp (now when `None`).
    pub timestamp: Option<u32>,
    /// Send every page, zeros too, ignoring holes (for benchmarks: the naive way).
    pub naive: bool,
    /// Zero gaps of at most this many bytes between two runs of data in one 4 MiB window are
    /// sent as zeros, making one Put Page of the two: a request costs about what sending a few
    /// hundred KiB does (Azurite: ~1.4 ms ≈ 350 KB at 250 MB/s). 0 sends non-zero pages only.
    pub merge_gap: u64,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
    /// Live counters, if the caller wants them.
    pub counters: Option<&'a UploadCounters>,
    /// The root digest (hex) the source's disk must have, checked before anything is sent
    /// (a recovery point's marker digest).
    pub expect_root: Option<&'a str>,
}

impl Default for UploadOptions<'_> {
    fn default() -> Self {
        UploadOptions {
            overwrite: false,
            verify: false,
            content_md5: false,
            parallel: 8,
            retry: RetryPolicy::default(),
            target: Target::ManagedDisk,
            unique_id: None,
            timestamp: None,
            naive: false,
            merge_gap: DEFAULT_MERGE_GAP,
            progress: &crate::progress::NoProgress,
            counters: None,
            expect_root: None,
        }
    }
}

/// What an upload did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct UploadReport {
    /// `container/blob`.
    pub blob: String,
    /// The blob's length: the VHD file's.
    pub blob_len: u64,
    /// The disk's virtual size.
    pub virtual_size: u64,
    /// `true` when the source was converted to a fixed VHD on the fly.
    pub converted: bool,
    /// How the blob was found: "created", "resumed", "empty", "overwritten", "recreated".
    pub start: String,
    /// Non-zero bytes of the VHD (512-byte pages that are not all zero).
    pub data_bytes: u64,
    /// Bytes sent in Put Page calls that succeeded.
    pub bytes_sent: u64,
    /// Bytes not sent: zero pages and pages already on the blob.
    pub bytes_skipped: u64,
    /// Bytes already on the blob from an earlier run (resume).
    pub bytes_already_there: u64,
    /// Bytes cleared because the blob held data where the source has zeros.
    pub bytes_cleared: u64,
    /// Successful Put Page (update) calls.
    pub put_calls: u64,
    /// Successful Put Page (clear) calls.
    pub clear_calls: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// The manifest root of the disk (the source's identity).
    pub source_root: String,
    /// Base64 MD5 of the whole VHD, set as Content-MD5.
    pub content_md5: Option<String>,
    /// `true` when the blob was read back and matched.
    pub verified: bool,
    /// `false` when the credentials may not set metadata or properties (a managed disk's upload
    /// URL allows only page writes): the upload then cannot be resumed by identity.
    pub metadata_written: bool,
    /// Wall-clock seconds.
    pub seconds: f64,
}

struct Shared<'a> {
    store: &'a dyn PageBlobStore,
    blob: &'a BlobName,
    retry: RetryPolicy,
    retries: AtomicU64,
    progress: &'a dyn Progress,
}

impl Shared<'_> {
    /// Runs `call` with retries; the error names the blob and `what`.
    fn run<T>(&self, what: &str, call: impl FnMut() -> Result<T, BlobError>) -> Result<T> {
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

/// The runs of non-zero 512-byte pages of `buf` (which starts at `base`), as `(start, end)`.
pub fn nonzero_runs(buf: &[u8], base: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (i, page) in buf.chunks(PAGE as usize).enumerate() {
        if is_zero(page) {
            continue;
        }
        let s = base + i as u64 * PAGE;
        let e = s + page.len() as u64;
        match out.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => out.push((s, e)),
        }
    }
    out
}

/// `runs` (ascending, disjoint) with every gap of at most `gap` bytes filled in.
pub fn merge_runs(runs: Vec<(u64, u64)>, gap: u64) -> Vec<(u64, u64)> {
    if gap == 0 {
        return runs;
    }
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (s, e) in runs {
        match out.last_mut() {
            Some(last) if s - last.1 <= gap => last.1 = e,
            _ => out.push((s, e)),
        }
    }
    out
}

/// The requests for one window: its non-zero runs merged across gaps of at most `gap`
/// bytes (the "data" of the window), then [`plan_window`], then the pieces to send merged again
/// across pages that are already there (on a resume they hold the same bytes). Returns
/// `(data, send, clear)`.
pub fn window_requests(
    nonzero: Vec<(u64, u64)>,
    present: &RangeSet,
    window: (u64, u64),
    present_is_ours: bool,
    gap: u64,
) -> (Ranges, Ranges, Ranges) {
    let data = merge_runs(nonzero, gap);
    let (send, clear) = plan_window(&data, present, window, present_is_ours);
    (data, merge_runs(send, gap), clear)
}

/// Byte ranges `(start, end)`, ascending.
pub type Ranges = Vec<(u64, u64)>;

/// `(send, clear)`: byte ranges `(start, end)` to write and to clear.
pub type WindowPlan = (Ranges, Ranges);

/// The plan for one window: what to send and what to clear, given the window's non-zero runs,
/// the pages already on the blob, and whether those pages are known to hold this source's bytes.
pub fn plan_window(
    data: &[(u64, u64)],
    present: &RangeSet,
    (start, end): (u64, u64),
    present_is_ours: bool,
) -> WindowPlan {
    let data_set = RangeSet::from_ranges(data.iter().map(|&(s, e)| (s, e - s)));
    let mut send = Vec::new();
    for &(s, e) in data {
        if present_is_ours {
            send.extend(present.missing(s, e));
        } else {
            send.push((s, e));
        }
    }
    let mut clear = Vec::new();
    for (s, e) in present.overlapping(start, end) {
        clear.extend(data_set.missing(s, e));
    }
    (send, clear)
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

/// MD5 of `view`'s first `len` bytes, reading only data extents (holes hashed from zeros).
fn md5_of(
    view: &dyn DiskImage,
    extents: &ExtentMap,
    len: u64,
    stop: &dyn Fn() -> bool,
) -> Result<md5::Md5> {
    let mut h = md5::Md5::new();
    let zeros = vec![0u8; WINDOW as usize];
    let mut buf = vec![0u8; WINDOW as usize];
    let mut pos = 0;
    while pos < len {
        if stop() {
            return Err(Error::cancelled());
        }
        let n = (len - pos).min(WINDOW) as usize;
        if extents.has_data_in(pos, n as u64) {
            h.update(bytes_at(view, extents, pos, &mut buf[..n])?);
        } else {
            h.update(&zeros[..n]);
        }
        pos += n as u64;
    }
    Ok(h)
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
    // The virtual size and a provisional footer.
    let (vsize, mut footer) = if converted {
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
    let identity = {
        struct Head<'a>(&'a VhdView<'a>);
        impl DiskImage for Head<'_> {
            fn len(&self) -> u64 {
                self.0.vsize
            }
            fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
                let n = crate::image::readable(self.0.vsize, offset, buf.len());
                self.0.read_at(&mut buf[..n], offset)
            }
            fn extents(&self) -> Result<ExtentMap> {
                Ok(self.0.extents.with_len(self.0.vsize))
            }
            fn format(&self) -> Format {
                Format::Raw
            }
            fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
                self.0.as_slice(offset, len)
            }
        }
        Manifest::compute(&Head(&disk_view))?
    };
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

    // What is on the blob already.
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
        m.get(META_ROOT) == Some(&identity.root)
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
            create(&sh)?;
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
            if converted && let Some(f) = adopt_footer(&sh, vsize, &present)? {
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
                        identity.root
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
                create(&sh)?;
                "recreated"
            }
        }
    };

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

    // MD5 of the whole VHD alongside the upload (one sequential reader).
    let md5_result: Mutex<Option<Result<[u8; 16]>>> = Mutex::new(None);
    let counters_local = UploadCounters::default();
    let counters = opts.counters.unwrap_or(&counters_local);
    let data_total = AtomicU64::new(0);
    let already = AtomicU64::new(0);
    let put_calls = AtomicU64::new(0);
    let clear_calls = AtomicU64::new(0);
    let failures: Mutex<Vec<(u64, u64, Error)>> = Mutex::new(Vec::new());
    let cancelled = AtomicBool::new(false);
    let next = AtomicU64::new(0);
    let windows = blob_len.div_ceil(WINDOW);
    let workers = if opts.naive {
        1
    } else {
        opts.parallel.clamp(1, 64)
    };
    opts.progress.begin("uploading", blob_len);
    std::thread::scope(|s| {
        if opts.content_md5 || overwriting {
            s.spawn(|| {
                let stop = || cancelled.load(Relaxed) || opts.progress.cancelled();
                let r = md5_of(&view, &extents, blob_len, &stop).map(|h| h.finalize().into());
                *md5_result.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            });
        }
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
                    let bytes = match bytes_at(&view, &extents, ws, &mut buf[..wlen as usize]) {
                        Ok(b) => b,
                        Err(e) => {
                            lock(&failures).push((ws, wlen, e.with_offset(ws)));
                            opts.progress.advance(wlen);
                            continue;
                        }
                    };
                    let nonzero = nonzero_runs(bytes, ws);
                    data_total.fetch_add(nonzero.iter().map(|(s, e)| e - s).sum(), Relaxed);
                    let (data, send, clear) = if opts.naive {
                        let all = vec![(ws, we)];
                        let (send, clear) = plan_window(&all, &present, (ws, we), false);
                        (all, send, clear)
                    } else {
                        window_requests(
                            nonzero,
                            &present,
                            (ws, we),
                            present_is_ours,
                            opts.merge_gap,
                        )
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
                            Err(e2) => lock(&failures).push((s, e - s, e2)),
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
                            Err(e2) => lock(&failures).push((s, e - s, e2)),
                        }
                    }
                    counters
                        .skipped
                        .fetch_add(wlen.saturating_sub(sent_here), Relaxed);
                    opts.progress.advance(wlen);
                }
            });
        }
    });
    opts.progress.finish();
    let sent = counters.sent.load(Relaxed);
    if cancelled.load(Relaxed) {
        record_progress(&sh, &meta, sent);
        return Err(Error::cancelled());
    }
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
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

    let md5 = match md5_result.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(r) => Some(r?),
        None => None,
    };
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
        data_bytes: data_total.load(Relaxed),
        bytes_sent: sent,
        bytes_skipped: blob_len.saturating_sub(sent),
        bytes_already_there: already.load(Relaxed),
        bytes_cleared: counters.cleared.load(Relaxed),
        put_calls: put_calls.load(Relaxed),
        clear_calls: clear_calls.load(Relaxed),
        retries: 0,
        source_root: identity.root,
        content_md5: md5_b64,
        verified: false,
        metadata_written,
        seconds: 0.0,
    };
    if opts.verify {
        verify(&sh, &view, &extents, md5.filter(|_| metadata_written), opts)?;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Best effort: records how far an interrupted upload got.
fn record_progress(sh: &Shared, meta: &BTreeMap<String, String>, sent: u64) {
    let mut m = meta.clone();
    m.insert(META_SENT.to_string(), sent.to_string());
    let _ = sh.store.set_metadata(sh.blob, &m);
}

/// Reads the blob back and compares it with `view`: the length, Content-MD5, every non-zero
/// page of the source present, and every page range's bytes equal to the source's.
fn verify(
    sh: &Shared,
    view: &VhdView,
    extents: &ExtentMap,
    md5: Option<[u8; 16]>,
    opts: &UploadOptions,
) -> Result<()> {
    let blob = sh.blob;
    let props = sh
        .run("getting the blob's properties", || {
            sh.store.properties(blob)
        })?
        .ok_or_else(|| Error::not_found(format!("verify: blob {blob} is gone")))?;
    if props.len != view.len() {
        return Err(Error::invalid(format!(
            "verify: blob {blob} is {} bytes, expected {}",
            props.len,
            view.len()
        )));
    }
    if let Some(m) = md5
        && props.content_md5 != Some(m)
    {
        return Err(Error::checksum(format!(
            "verify: blob {blob}'s Content-MD5 is {}, expected {}",
            props.content_md5.map_or("unset".into(), hex::encode),
            hex::encode(m)
        )));
    }
    let ranges =
        RangeSet::from_ranges(sh.run("listing page ranges", || sh.store.page_ranges(blob))?);
    let mut pieces: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges.iter() {
        let mut p = s;
        while p < e {
            let q = (p + WINDOW).min(e);
            pieces.push((p, q));
            p = q;
        }
    }
    // Windows of the source with data must be covered wherever they are non-zero.
    let windows: Vec<u64> = extents.data_chunks(WINDOW).collect();
    opts.progress.begin("verifying", ranges.total());
    let problems: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let next = AtomicU64::new(0);
    let total = (pieces.len() + windows.len()) as u64;
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.clamp(1, 64) {
            s.spawn(|| {
                let mut src = vec![0u8; WINDOW as usize];
                let mut got = vec![0u8; WINDOW as usize];
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= total || opts.progress.cancelled() {
                        break;
                    }
                    let r = if let Some(&(a, b)) = pieces.get(i as usize) {
                        let n = (b - a) as usize;
                        (|| -> Result<Option<String>> {
                            let want = bytes_at(view, extents, a, &mut src[..n])?;
                            sh.run(&format!("reading {n} bytes at offset {a}"), || {
                                sh.store.read(blob, a, &mut got[..n])
                            })?;
                            opts.progress.advance(n as u64);
                            Ok(want.iter().zip(&got[..n]).position(|(x, y)| x != y).map(|k| {
                                let o = a + k as u64;
                                format!(
                                    "offset {o} (0x{o:x}): blob has 0x{:02x}, source has 0x{:02x}",
                                    got[k], want[k]
                                )
                            }))
                        })()
                    } else {
                        let w = windows[i as usize - pieces.len()];
                        let a = w * WINDOW;
                        let n = (view.len() - a).min(WINDOW) as usize;
                        (|| -> Result<Option<String>> {
                            let want = bytes_at(view, extents, a, &mut src[..n])?;
                            Ok(nonzero_runs(want, a)
                                .into_iter()
                                .flat_map(|(s, e)| ranges.missing(s, e))
                                .next()
                                .map(|(s, e)| {
                                    format!(
                                        "offset {s} (0x{s:x}): {} bytes of data are not on the \
                                         blob (no page range)",
                                        e - s
                                    )
                                }))
                        })()
                    };
                    match r {
                        Ok(None) => {}
                        Ok(Some(m)) => lock(&problems).push(m),
                        Err(e) => lock(&problems).push(e.to_string()),
                    }
                }
            });
        }
    });
    opts.progress.finish();
    if opts.progress.cancelled() {
        return Err(Error::cancelled());
    }
    let mut problems = problems.into_inner().unwrap_or_else(|p| p.into_inner());
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort();
    let n = problems.len();
    problems.truncate(20);
    Err(Error::checksum(format!(
        "verify: blob {blob} differs from the source in {n} place(s):\n  {}",
        problems.join("\n  ")
    )))
}

/// How to download.
#[derive(Clone, Copy)]
pub struct DownloadOptions<'a> {
    /// Requests in flight at most.
    pub parallel: usize,
    /// Retries of each call.
    pub retry: RetryPolicy,
    /// Sync the file before renaming it into place.
    pub sync: bool,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
}

impl Default for DownloadOptions<'_> {
    fn default() -> Self {
        DownloadOptions {
            parallel: 8,
            retry: RetryPolicy::default(),
            sync: true,
            progress: &crate::progress::NoProgress,
        }
    }
}

/// What a download did.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    /// `container/blob`.
    pub blob: String,
    /// The file's length (the blob's).
    pub len: u64,
    /// Bytes fetched (the page ranges).
    pub bytes_fetched: u64,
    /// Bytes written (non-zero 4 KiB pieces; the rest are holes).
    pub bytes_written: u64,
    /// Page ranges on the blob.
    pub ranges: u64,
}

/// Downloads the page blob `blob` into `output`: only its page ranges are fetched, only their
/// non-zero pieces written; the file is written under a temporary name and renamed when
/// complete.
///
/// # Errors
/// The blob does not exist, a call keeps failing (every failed range is listed), or the file
/// cannot be written.
pub fn download(
    store: &dyn PageBlobStore,
    blob: &BlobName,
    output: &Path,
    opts: &DownloadOptions,
) -> Result<DownloadReport> {
    use std::os::unix::fs::FileExt;
    let sh = Shared {
        store,
        blob,
        retry: opts.retry,
        retries: AtomicU64::new(0),
        progress: opts.progress,
    };
    let props = sh
        .run("getting the blob's properties", || store.properties(blob))?
        .ok_or_else(|| Error::argument(format!("blob {blob} does not exist")))?;
    if !props.page_blob {
        return Err(Error::argument(format!("blob {blob} is not a page blob")));
    }
    let ranges = sh.run("listing page ranges", || store.page_ranges(blob))?;
    if let Some(&(o, l)) = ranges.last()
        && o + l > props.len
    {
        return Err(Error::invalid(format!(
            "blob {blob}: page range {o}+{l} goes past the blob's {} bytes",
            props.len
        )));
    }
    let out = crate::export::PendingOutput::create(output)?;
    out.file()
        .set_len(props.len)
        .map_err(|e| Error::io("sizing the output", e).with_path(output))?;
    let mut pieces: Vec<(u64, u64)> = Vec::new();
    for &(s, l) in &ranges {
        let mut p = s;
        while p < s + l {
            let q = (p + WINDOW).min(s + l);
            pieces.push((p, q));
            p = q;
        }
    }
    let fetched: u64 = ranges.iter().map(|r| r.1).sum();
    opts.progress.begin("downloading", fetched);
    let written = AtomicU64::new(0);
    let next = AtomicU64::new(0);
    let failures: Mutex<Vec<(u64, Error)>> = Mutex::new(Vec::new());
    let cancelled = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.clamp(1, 64) {
            s.spawn(|| {
                let mut buf = vec![0u8; WINDOW as usize];
                loop {
                    let i = next.fetch_add(1, Relaxed) as usize;
                    if i >= pieces.len() || cancelled.load(Relaxed) {
                        break;
                    }
                    if opts.progress.cancelled() {
                        cancelled.store(true, Relaxed);
                        break;
                    }
                    let (a, b) = pieces[i];
                    let n = (b - a) as usize;
                    let r = sh
                        .run(&format!("reading {n} bytes at offset {a}"), || {
                            store.read(blob, a, &mut buf[..n])
                        })
                        .and_then(|()| {
                            for (k, piece) in buf[..n].chunks(4096).enumerate() {
                                if is_zero(piece) {
                                    continue;
                                }
                                let at = a + (k * 4096) as u64;
                                out.file().write_all_at(piece, at).map_err(|e| {
                                    Error::io("writing", e).with_offset(at).with_path(output)
                                })?;
                                written.fetch_add(piece.len() as u64, Relaxed);
                            }
                            Ok(())
                        });
                    match r {
                        Ok(()) => opts.progress.advance(n as u64),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {
                            cancelled.store(true, Relaxed)
                        }
                        Err(e) => lock(&failures).push((a, e)),
                    }
                }
            });
        }
    });
    opts.progress.finish();
    if cancelled.load(Relaxed) {
        return Err(Error::cancelled());
    }
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    if !failures.is_empty() {
        failures.sort_by_key(|f| f.0);
        let list: Vec<String> = failures
            .iter()
            .take(50)
            .map(|(_, e)| e.to_string())
            .collect();
        let message = format!(
            "blob {blob}: {} range(s) could not be downloaded:\n  {}",
            failures.len(),
            list.join("\n  ")
        );
        return Err(crate::cloud::retry::many_failed(
            message,
            failures.swap_remove(0).1,
        ));
    }
    out.commit(output, opts.sync)?;
    Ok(DownloadReport {
        blob: blob.to_string(),
        len: props.len,
        bytes_fetched: fetched,
        bytes_written: written.into_inner(),
        ranges: ranges.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::pageblob::{FakePageBlobs, Fault, Op};
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
            let r = upload(Source::Disk(&d), &f, &name(), &o)
                .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
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
}
