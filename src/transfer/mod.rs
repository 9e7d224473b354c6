//! Transfers between disks and Azure page blobs: any disk into a page blob, a page blob back
//! into a sparse file. This module is the API (sources, options, reports); the work is split by
//! job: [`plan`] (pure: which page ranges to send and clear), [`engine`] (sending with bounded
//! parallelism, resume, the blob's metadata state), [`verify`](mod@verify) (reading the blob back),
//! [`download`](mod@download).
//!
//! [`upload`] takes a [`Source`]: the bytes of an Azure-ready fixed VHD file, sent as they are,
//! or any other disk ([`DiskImage`]: raw, qcow2, VHDX, dynamic VHD, an EBS snapshot), which is
//! converted on the fly — virtual size rounded up to a whole MiB, footer from
//! [`export::new_footer`](crate::export::new_footer) — with no temporary file ([`VhdView`](crate::export::vhd_view::VhdView)).
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

pub mod download;
pub mod engine;
pub mod plan;
#[cfg(test)]
mod tests;
pub mod verify;

pub use crate::cloud::retry::RetryPolicy;
pub use crate::export::vhd_view::VhdView;
pub use download::{DownloadOptions, DownloadReport, download};
pub use engine::upload;
pub use plan::{Ranges, WindowPlan, merge_runs, nonzero_runs, plan_window, window_requests};

use crate::check::Target;
use crate::cloud::pageblob::MAX_PUT;
use crate::error::{Error, Result};
use crate::image::vhd::{DiskType, Footer};
use crate::image::{DiskImage, Format};
use crate::progress::Progress;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::AtomicU64;

/// Work unit: one window of the blob, at most one Put Page per run of pages in it.
pub(crate) const WINDOW: u64 = MAX_PUT;
/// Default of [`UploadOptions::merge_gap`]: 64 KiB.
pub const DEFAULT_MERGE_GAP: u64 = 64 << 10;
/// Metadata names (C# identifiers, as Azure requires).
pub(crate) const META_STATE: &str = "ec2azure_state";
/// The state of a blob whose pages are being replaced by another source's.
pub(crate) const OVERWRITING: &str = "overwriting";
pub(crate) const META_SIZE: &str = "ec2azure_size";
pub(crate) const META_ROOT: &str = "ec2azure_root";
pub(crate) const META_SENT: &str = "ec2azure_sent";
/// SHA-256 of the footer, hex: a VHD sent as it is must match its footer too.
pub(crate) const META_FOOTER: &str = "ec2azure_footer";

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
    open_source_with(
        path,
        &crate::image::OpenOptions { format, disk: None },
        target,
    )
}

/// [`open_source`] with every open option (the disk of an OVA).
///
/// # Errors
/// As [`open_source`].
pub fn open_source_with(
    path: &Path,
    opts: &crate::image::OpenOptions,
    target: Target,
) -> Result<OpenedSource> {
    let format = opts.format;
    let is_file = matches!(
        crate::source::parse(path)?,
        crate::source::SourceRef::File(_)
    );
    if is_file && opts.disk.is_none() && matches!(format, None | Some(Format::Vhd)) {
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
        image: crate::source::open_with(path, opts)?,
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
