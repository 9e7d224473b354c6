//! A page blob back into a sparse file: only the blob's page ranges are fetched, only their
//! non-zero pieces written, under a temporary name renamed into place when complete.

use super::engine::{Shared, lock};
use super::*;
use crate::cloud::pageblob::{BlobName, PageBlobStore};
use crate::error::ErrorKind;
use crate::export::is_zero;
use crate::progress::Progress;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

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
    let mut failures = crate::sync::into_inner(failures);
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
