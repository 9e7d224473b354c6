//! Upload planning, pure arithmetic on byte ranges: the non-zero 512-byte pages of a window,
//! small zero gaps merged into one Put Page, and, given the pages already on the blob, which
//! ranges to send and which to clear.

use crate::cloud::pageblob::{PAGE, RangeSet};
use crate::export::is_zero;

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
