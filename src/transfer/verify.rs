//! Read-back verification of an upload: the blob's length and Content-MD5, every non-zero page
//! of the source present, and every page range's bytes equal to the source's.

use super::engine::{Shared, lock};
use super::*;
use crate::cloud::pageblob::RangeSet;
use crate::image::{ExtentMap, bytes_at};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Reads the blob back and compares it with `view`: the length, Content-MD5, every non-zero
/// page of the source present, and every page range's bytes equal to the source's.
pub(crate) fn verify(
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
