//! Where journals come from: [`simulate`], a seeded workload over a base image (for rehearsals,
//! tests and benchmarks), and [`diff`], the changed blocks of two images as EBS
//! ListChangedBlocks would give them.

use super::overlay::check_points;
use crate::bytes::is_zero;
use crate::digest::{BLOCK_SIZE, Digest, ManifestBuilder, sha256};
use crate::error::{Error, Result};
use crate::image::{DiskImage, bytes_at};
use crate::journal::{Consistency, JournalInfo, JournalWriter, Marker, WriterOptions};
use crate::progress::Progress;
use crate::sample::SplitMix64;
use rayon::prelude::*;
use std::path::Path;

/// What workload to simulate.
#[derive(Debug, Clone, Copy)]
pub struct SimSpec {
    /// Seed: the same seed and base give the same journal.
    pub seed: u64,
    /// Start time, milliseconds since the Unix epoch.
    pub start_ms: u64,
    /// How long, in milliseconds (whole crash-consistent intervals).
    pub duration_ms: u64,
    /// Bytes written per second, on average.
    pub write_rate: u64,
    /// Fraction of writes that land in the hot spot (a tenth of the disk).
    pub hot_fraction: f64,
    /// Fraction of records that zero a range instead of writing it.
    pub zero_fraction: f64,
    /// Largest write, bytes.
    pub max_write: u64,
    /// App-consistent tags every this many milliseconds (0: none).
    pub app_frequency_ms: u64,
    /// Crash-consistent markers every this many milliseconds.
    pub crash_interval_ms: u64,
    /// Multi-VM replication group: every marker carries the group and a tag from its time.
    pub group: Option<[u8; 16]>,
    /// Record each marker's root digest.
    pub digests: bool,
    /// Segment size.
    pub segment_size: u64,
}

impl Default for SimSpec {
    fn default() -> Self {
        SimSpec {
            seed: 1,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            duration_ms: 3_600_000,
            write_rate: 64 << 10,
            hot_fraction: 0.8,
            zero_fraction: 0.03,
            max_write: 256 << 10,
            app_frequency_ms: 3_600_000,
            crash_interval_ms: 300_000,
            group: None,
            digests: true,
            segment_size: 64 << 20,
        }
    }
}

/// What [`simulate`] wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SimReport {
    /// Write records.
    pub writes: u64,
    /// Zero-range records.
    pub zeros: u64,
    /// Bytes of write payload.
    pub data_bytes: u64,
    /// Points (markers).
    pub points: u64,
    /// Of which app-consistent.
    pub app_points: u64,
    /// Bytes of journal files.
    pub journal_bytes: u64,
    /// The base's root digest.
    pub base_root: Digest,
}

/// A new journal at `out` for a diff of a `size`-byte disk over the base with root
/// `base_root`, created at `time_ms` (what both diff sources write into).
fn diff_journal(out: &Path, base_root: Digest, size: u64, time_ms: u64) -> Result<JournalWriter> {
    let info = JournalInfo {
        disk_id: derive_disk_id(&base_root, 0),
        disk_size: size,
        sector_size: 512,
        base_root,
    };
    JournalWriter::create(
        out,
        info,
        WriterOptions {
            created_ms: time_ms,
            ..WriterOptions::default()
        },
    )
}

/// Ends a diff's journal with the crash-consistent marker carrying the new image's root, and
/// returns the journal's size.
fn finish_diff_journal(mut w: JournalWriter, time_ms: u64, root: Digest) -> Result<u64> {
    w.marker(
        time_ms,
        &Marker {
            consistency: Consistency::Crash,
            digest: Some(root),
            group: None,
            label: "diff".into(),
        },
    )?;
    w.finish()
}

/// The id of the disk a journal is made for: derived from the base and a seed, so the same
/// inputs give the same journal.
fn derive_disk_id(base_root: &Digest, seed: u64) -> [u8; 16] {
    let mut v = b"ec2azure disk".to_vec();
    v.extend_from_slice(base_root.as_bytes());
    v.extend_from_slice(&seed.to_le_bytes());
    let d = sha256(&v);
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

/// The group id of a replication group's name.
pub fn group_id(name: &str) -> [u8; 16] {
    let d = sha256(format!("ec2azure group {name}").as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

/// Writes a simulated journal for `base` (whose per-block digests are `base_digests`) to `out`.
///
/// Every crash-consistent interval gets `write_rate × interval` bytes of writes (4 KiB-aligned,
/// 4 KiB to `max_write`; a `hot_fraction` of them in a hot spot of a tenth of the disk; a
/// `zero_fraction` of the records zero their range), spread over the interval, then a marker:
/// app-consistent when its time is a multiple of the app frequency from the start, otherwise
/// crash-consistent. With `digests`, each marker records the disk's root digest there,
/// computed in one incremental pass.
///
/// # Errors
/// The base's size is not a non-zero multiple of 512 bytes, the spec is invalid, or writing
/// fails.
pub fn simulate(
    base: &dyn DiskImage,
    base_digests: &[Digest],
    out: &Path,
    spec: &SimSpec,
    progress: &dyn Progress,
) -> Result<SimReport> {
    let size = base.len();
    if size == 0 || !size.is_multiple_of(512) {
        return Err(Error::argument(format!(
            "a {size}-byte base: a journal needs a non-zero multiple of 512 bytes"
        )));
    }
    if spec.crash_interval_ms == 0 || spec.duration_ms < spec.crash_interval_ms {
        return Err(Error::argument(format!(
            "duration {} ms: expected at least one crash-consistent interval ({} ms)",
            spec.duration_ms, spec.crash_interval_ms
        )));
    }
    if !(0.0..=1.0).contains(&spec.hot_fraction) || !(0.0..=1.0).contains(&spec.zero_fraction) {
        return Err(Error::argument("fractions must lie between 0 and 1"));
    }
    let base_root = super::root_of(base_digests);
    let info = JournalInfo {
        disk_id: derive_disk_id(&base_root, spec.seed),
        disk_size: size,
        sector_size: 512,
        base_root,
    };
    let mut w = JournalWriter::create(
        out,
        info,
        WriterOptions {
            segment_size: spec.segment_size,
            sync: true,
            created_ms: spec.start_ms,
        },
    )?;
    let mut rng = SplitMix64(spec.seed ^ 0x005E_ED0F_1E55);
    let shape = Shape::new(size, spec, &mut rng);
    let intervals = spec.duration_ms / spec.crash_interval_ms;
    let budget = spec.write_rate.saturating_mul(spec.crash_interval_ms) / 1000;
    let mut report = SimReport {
        base_root,
        ..SimReport::default()
    };
    let mut buf = vec![0u8; (shape.max_units * shape.align) as usize];
    progress.begin("simulating", intervals);
    for i in 0..intervals {
        if progress.cancelled() {
            return Err(Error::cancelled());
        }
        let t0 = spec.start_ms + i * spec.crash_interval_ms;
        let ops = shape.interval_ops(&mut rng, budget, spec);
        let count = ops.len() as u64;
        for (k, (at, n, zero)) in ops.into_iter().enumerate() {
            let t = t0 + (k as u64 * spec.crash_interval_ms) / count.max(1);
            let len = shape.emit(&mut w, spec.seed, t, at, n, zero, &mut buf)?;
            if zero {
                report.zeros += 1;
            } else {
                report.writes += 1;
                report.data_bytes += len;
            }
        }
        let t1 = t0 + spec.crash_interval_ms;
        let app = interval_marker(&mut w, spec, t1)?;
        report.points += 1;
        report.app_points += u64::from(app);
        progress.advance(1);
    }
    progress.finish();
    if spec.digests {
        w.flush()?;
        let journal =
            crate::journal::Journal::open(w.temp_dir(), crate::journal::ScanOptions::default())?;
        let checks = check_points(base, base_digests, &journal, &|_| true, progress)?;
        drop(journal);
        for c in checks {
            w.set_marker_digest(c.seq, c.root)?;
        }
    }
    report.journal_bytes = w.finish()?;
    Ok(report)
}

/// Where a workload writes on a disk: 4 KiB units (512 bytes on disks under 1 MiB), a hot spot
/// of a tenth of them.
struct Shape {
    align: u64,
    units: u64,
    max_units: u64,
    hot_start: u64,
    hot_units: u64,
}

impl Shape {
    /// The shape of `spec`'s workload on a `size`-byte disk (the hot spot drawn from `rng`).
    fn new(size: u64, spec: &SimSpec, rng: &mut SplitMix64) -> Shape {
        let align: u64 = if size >= 1 << 20 { 4096 } else { 512 };
        let units = size / align;
        let max_units = (spec.max_write.clamp(align, crate::journal::MAX_WRITE) / align).min(units);
        let hot_units = (units / 10).max(1);
        let hot_start = rng.next_u64() % (units - hot_units + 1);
        Shape {
            align,
            units,
            max_units,
            hot_start,
            hot_units,
        }
    }

    /// One crash-consistent interval's writes, `budget` bytes in all: (unit, units, zero).
    fn interval_ops(
        &self,
        rng: &mut SplitMix64,
        budget: u64,
        spec: &SimSpec,
    ) -> Vec<(u64, u64, bool)> {
        let mut ops = Vec::new();
        let mut left = budget;
        while left > 0 {
            let n = (1 + rng.next_u64() % self.max_units)
                .min(left.div_ceil(self.align))
                .max(1);
            let (lo, span) = if rng.next_f64() < spec.hot_fraction {
                (self.hot_start, self.hot_units)
            } else {
                (0, self.units)
            };
            let n = n.min(span);
            let at = lo + rng.next_u64() % (span - n + 1);
            let zero = rng.next_f64() < spec.zero_fraction;
            ops.push((at, n, zero));
            left = left.saturating_sub(n * self.align);
        }
        ops
    }

    /// Appends one op at time `t`: a zeroing, or a write of seeded bytes (drawn from the seed
    /// and the record's sequence number). Returns its length in bytes.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        w: &mut JournalWriter,
        seed: u64,
        t: u64,
        at: u64,
        n: u64,
        zero: bool,
        buf: &mut [u8],
    ) -> Result<u64> {
        let (off, len) = (at * self.align, n * self.align);
        if zero {
            w.zero(t, off, len)?;
        } else {
            let data = &mut buf[..len as usize];
            SplitMix64(seed.wrapping_mul(0x9E37_79B9).wrapping_add(w.next_seq())).fill(data);
            w.write(t, off, data)?;
        }
        Ok(len)
    }
}

/// Appends the marker that ends the interval ending at `t1`: app-consistent when `t1` is a
/// multiple of the app frequency from the workload's start. Returns whether it is.
fn interval_marker(w: &mut JournalWriter, spec: &SimSpec, t1: u64) -> Result<bool> {
    let app =
        spec.app_frequency_ms > 0 && (t1 - spec.start_ms).is_multiple_of(spec.app_frequency_ms);
    w.marker(
        t1,
        &Marker {
            consistency: if app {
                Consistency::App
            } else {
                Consistency::Crash
            },
            digest: None,
            group: spec.group.map(|g| (g, t1 / spec.crash_interval_ms)),
            label: if app { "app".into() } else { String::new() },
        },
    )?;
    Ok(app)
}

/// The data change of one crash-consistent interval within a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IntervalChurn {
    /// The interval's end (its marker's time), milliseconds since the Unix epoch.
    pub end_ms: u64,
    /// How much of the interval the span covered, milliseconds.
    pub covered_ms: u64,
    /// Bytes written (and zeroed) in that part.
    pub bytes: u64,
}

/// What [`simulate_span`] appended.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SpanSim {
    /// Write records.
    pub writes: u64,
    /// Zero-range records.
    pub zeros: u64,
    /// Bytes of write payload.
    pub data_bytes: u64,
    /// Bytes zeroed.
    pub zeroed_bytes: u64,
    /// Markers.
    pub points: u64,
    /// Of which app-consistent.
    pub app_points: u64,
    /// Per interval the span touched: its data change.
    pub churn: Vec<IntervalChurn>,
}

/// Appends to `w` the part of `spec`'s workload whose records fall in the span `(from_ms,
/// to_ms]` of simulated time, on a `size`-byte disk: a workload cut into spans at any times
/// writes the same records, so the same bytes, as one run over their union.
///
/// The workload starts at `spec.start_ms`; interval `i` covers `(start + i·I, start + (i+1)·I]`
/// (I = `crash_interval_ms`), gets `write_rate × I` bytes of writes drawn from the seed and
/// `i` alone (spread strictly inside it: the n writes at `t0 + k·I/(n+1)`), and ends with a
/// marker at its end (app-consistent at multiples of the app frequency from the start, as
/// [`simulate`]). A record is appended only when `active(time)` holds: the machine is running
/// then (a stopped machine neither writes nor takes points). Marker digests are not computed
/// (the caller knows the disk at the span's start; [`check_points`] gives them).
///
/// # Errors
/// The spec is invalid, the span is empty or starts before the workload, or writing fails.
pub fn simulate_span(
    w: &mut JournalWriter,
    size: u64,
    spec: &SimSpec,
    from_ms: u64,
    to_ms: u64,
    active: &dyn Fn(u64) -> bool,
) -> Result<SpanSim> {
    if size == 0 || !size.is_multiple_of(512) {
        return Err(Error::argument(format!(
            "a {size}-byte disk: a journal needs a non-zero multiple of 512 bytes"
        )));
    }
    if spec.crash_interval_ms == 0 {
        return Err(Error::argument(
            "crash-consistent interval: expected more than 0",
        ));
    }
    if !(0.0..=1.0).contains(&spec.hot_fraction) || !(0.0..=1.0).contains(&spec.zero_fraction) {
        return Err(Error::argument("fractions must lie between 0 and 1"));
    }
    if from_ms < spec.start_ms || to_ms < from_ms {
        return Err(Error::argument(format!(
            "span {from_ms}..{to_ms} ms: expected a span from the workload's start ({} ms) on",
            spec.start_ms
        )));
    }
    let mut rng = SplitMix64(spec.seed ^ 0x005E_ED0F_1E55);
    let shape = Shape::new(size, spec, &mut rng);
    let interval = spec.crash_interval_ms;
    let budget = spec.write_rate.saturating_mul(interval) / 1000;
    let first = (from_ms - spec.start_ms) / interval;
    let last = (to_ms - spec.start_ms).div_ceil(interval);
    let mut report = SpanSim::default();
    let mut buf = vec![0u8; (shape.max_units * shape.align) as usize];
    for i in first..last {
        let t0 = spec.start_ms + i * interval;
        let t1 = t0 + interval;
        let (lo, hi) = (from_ms.max(t0), to_ms.min(t1));
        if hi <= lo {
            continue;
        }
        let mut irng =
            SplitMix64(spec.seed ^ 0x1A7E_57A1 ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let ops = shape.interval_ops(&mut irng, budget, spec);
        let count = ops.len() as u64;
        let mut churn = 0;
        for (k, (at, n, zero)) in ops.into_iter().enumerate() {
            let t = t0 + ((k as u64 + 1) * interval) / (count + 1);
            if t <= from_ms || t > to_ms || !active(t) {
                continue;
            }
            let len = shape.emit(w, spec.seed, t, at, n, zero, &mut buf)?;
            churn += len;
            if zero {
                report.zeros += 1;
                report.zeroed_bytes += len;
            } else {
                report.writes += 1;
                report.data_bytes += len;
            }
        }
        report.churn.push(IntervalChurn {
            end_ms: t1,
            covered_ms: hi - lo,
            bytes: churn,
        });
        if t1 > from_ms && t1 <= to_ms && active(t1) {
            let app = interval_marker(w, spec, t1)?;
            report.points += 1;
            report.app_points += u64::from(app);
        }
    }
    Ok(report)
}

/// What [`diff`] wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiffReport {
    /// Blocks that differ and hold data in the new image.
    pub changed_blocks: u64,
    /// Blocks that differ and are zero in the new image.
    pub zeroed_blocks: u64,
    /// Root digest of the old image: the journal's base.
    pub base_root: Digest,
    /// Root digest of the new image: the marker's digest.
    pub root: Digest,
    /// Bytes of journal files.
    pub journal_bytes: u64,
}

/// Writes to `out` a journal that turns `old` into `new`: one write per changed 512 KiB block
/// (a zero range when the new block is all zeros), then one crash-consistent marker at
/// `time_ms` carrying `new`'s root digest.
///
/// # Errors
/// The sizes differ or are not a multiple of 512 bytes; reading or writing fails.
pub fn diff(
    old: &dyn DiskImage,
    new: &dyn DiskImage,
    out: &Path,
    time_ms: u64,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    let size = old.len();
    if new.len() != size {
        return Err(Error::argument(format!(
            "the images differ in size: {} and {} bytes",
            size,
            new.len()
        )));
    }
    if size == 0 || !size.is_multiple_of(512) {
        return Err(Error::argument(format!(
            "a {size}-byte disk: a journal needs a non-zero multiple of 512 bytes"
        )));
    }
    let (eo, en) = (old.extents()?, new.extents()?);
    let blocks = crate::digest::Manifest::block_count(size);
    let (mo, mn) = (ManifestBuilder::new(size), ManifestBuilder::new(size));
    progress.begin("comparing blocks", blocks);
    let mut changed: Vec<(u64, bool)> = (0..blocks)
        .into_par_iter()
        .filter(|&b| {
            eo.has_data_in(b * BLOCK_SIZE, BLOCK_SIZE) || en.has_data_in(b * BLOCK_SIZE, BLOCK_SIZE)
        })
        .map_init(
            || {
                (
                    vec![0u8; BLOCK_SIZE as usize],
                    vec![0u8; BLOCK_SIZE as usize],
                )
            },
            |(ba, bb), b| -> Result<Option<(u64, bool)>> {
                let off = b * BLOCK_SIZE;
                let n = (size - off).min(BLOCK_SIZE) as usize;
                let a = bytes_at(old, &eo, off, &mut ba[..n])?;
                let c = bytes_at(new, &en, off, &mut bb[..n])?;
                mo.record(b, a);
                mn.record(b, c);
                progress.advance(1);
                Ok((a != c).then(|| (b, is_zero(c))))
            },
        )
        .filter_map(|r| r.transpose())
        .collect::<Result<_>>()?;
    progress.finish();
    changed.sort_unstable();
    let (mo, mn) = (mo.finish(), mn.finish());
    let (base_root, root) = (mo.root_digest()?, mn.root_digest()?);
    let mut w = diff_journal(out, base_root, size, time_ms)?;
    let mut report = DiffReport {
        base_root,
        root,
        ..DiffReport::default()
    };
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    for (b, zero) in changed {
        let off = b * BLOCK_SIZE;
        let n = (size - off).min(BLOCK_SIZE) as usize;
        if zero {
            w.zero(time_ms, off, n as u64)?;
            report.zeroed_blocks += 1;
        } else {
            let data = bytes_at(new, &en, off, &mut buf[..n])?;
            w.write(time_ms, off, data)?;
            report.changed_blocks += 1;
        }
    }
    report.journal_bytes = finish_diff_journal(w, time_ms, root)?;
    Ok(report)
}

/// [`diff`] when the old image is known by its manifest and the blocks that may differ are
/// listed (EBS ListChangedBlocks between two snapshots of one lineage): only `new`'s listed
/// blocks are read; `old` is not read at all. A listed block whose digest equals the old one is
/// skipped. The new root is the old manifest's with the listed blocks' digests replaced.
///
/// # Errors
/// The manifest's size differs from `new`'s or is not a multiple of 512 bytes; a listed block
/// lies past the end; reading or writing fails.
pub fn diff_changed(
    old: &crate::digest::Manifest,
    new: &dyn DiskImage,
    changed: &[u64],
    out: &Path,
    time_ms: u64,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    let size = old.size;
    if new.len() != size {
        return Err(Error::argument(format!(
            "the old image's manifest is for {size} bytes, the new image has {}",
            new.len()
        )));
    }
    if size == 0 || !size.is_multiple_of(512) {
        return Err(Error::argument(format!(
            "a {size}-byte disk: a journal needs a non-zero multiple of 512 bytes"
        )));
    }
    let base_root = old.root_digest()?;
    let mut w = diff_journal(out, base_root, size, time_ms)?;
    let mut report = diff_changed_into(old, new, changed, &mut w, time_ms, progress)?;
    report.journal_bytes = finish_diff_journal(w, time_ms, report.root)?;
    Ok(report)
}

/// [`diff_changed`] into a journal already open (a replica's source side, continuing earlier
/// spans): the changed blocks are appended at `time_ms`, without a marker (the caller appends
/// the point's marker with the returned root). `old` must describe the disk as the journal
/// leaves it before these records.
///
/// # Errors
/// As [`diff_changed`].
pub fn diff_changed_into(
    old: &crate::digest::Manifest,
    new: &dyn DiskImage,
    changed: &[u64],
    w: &mut JournalWriter,
    time_ms: u64,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    let size = old.size;
    if new.len() != size {
        return Err(Error::argument(format!(
            "the old image's manifest is for {size} bytes, the new image has {}",
            new.len()
        )));
    }
    let blocks = crate::digest::Manifest::block_count(size);
    if let Some(&b) = changed.iter().find(|&&b| b >= blocks) {
        return Err(Error::invalid(format!(
            "changed block {b} lies past the end of the {blocks}-block disk"
        )));
    }
    let mut digests = super::block_digests(old);
    let base_root = old.root_digest()?;
    let en = new.extents()?;
    let mut changed = changed.to_vec();
    changed.sort_unstable();
    changed.dedup();
    let mut report = DiffReport {
        base_root,
        ..DiffReport::default()
    };
    progress.begin("reading changed blocks", changed.len() as u64);
    // Each listed block is read once: a batch is fetched and hashed in parallel, then written
    // in order; 64 blocks (32 MiB) at a time bound the memory held.
    for batch in changed.chunks(64) {
        if progress.cancelled() {
            return Err(Error::cancelled());
        }
        let got: Vec<(u64, Vec<u8>)> = batch
            .par_iter()
            .map(|&b| -> Result<(u64, Vec<u8>)> {
                let off = b * BLOCK_SIZE;
                let n = (size - off).min(BLOCK_SIZE) as usize;
                let mut buf = vec![0u8; n];
                let data = bytes_at(new, &en, off, &mut buf)?.to_vec();
                progress.advance(1);
                Ok((b, data))
            })
            .collect::<Result<_>>()?;
        for (b, data) in got {
            let d = Digest::of(&data);
            if d == digests[b as usize] {
                continue;
            }
            digests[b as usize] = d;
            let off = b * BLOCK_SIZE;
            if is_zero(&data) {
                w.zero(time_ms, off, data.len() as u64)?;
                report.zeroed_blocks += 1;
            } else {
                w.write(time_ms, off, &data)?;
                report.changed_blocks += 1;
            }
        }
    }
    progress.finish();
    report.root = super::root_of(&digests);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::ebs::{
        BlockData, BlockPage, ChangedPage, EbsApi, EbsError, EbsSnapshot, FakeEbs, RetryPolicy,
        changed_blocks,
    };
    use crate::digest::Manifest;
    use crate::progress::NoProgress;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The fake EBS, counting the blocks fetched.
    struct Counting {
        inner: Arc<FakeEbs>,
        gets: AtomicU64,
    }

    impl EbsApi for Counting {
        fn list_snapshot_blocks(
            &self,
            snapshot: &str,
            next: Option<&str>,
        ) -> std::result::Result<BlockPage, EbsError> {
            self.inner.list_snapshot_blocks(snapshot, next)
        }
        fn get_snapshot_block(
            &self,
            snapshot: &str,
            index: u64,
            token: &str,
        ) -> std::result::Result<BlockData, EbsError> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.inner.get_snapshot_block(snapshot, index, token)
        }
        fn list_changed_blocks(
            &self,
            first: &str,
            second: &str,
            next: Option<&str>,
        ) -> std::result::Result<ChangedPage, EbsError> {
            self.inner.list_changed_blocks(first, second, next)
        }
    }

    #[test]
    fn a_diff_of_two_snapshots_reads_only_the_new_ones_changed_blocks() {
        let fake = Arc::new(FakeEbs::new(3));
        let block = |v: u8| vec![v; BLOCK_SIZE as usize];
        let old: BTreeMap<u64, Vec<u8>> = (0..20).map(|i| (i * 7, block(i as u8 + 1))).collect();
        fake.add_snapshot("snap-old", None, 1, old);
        // The child rewrites 3 blocks, zeroes one, writes one new block, and rewrites one with
        // the same bytes (the real service may list such a block; the fake does not, so it is
        // added to the list below).
        let mut new = BTreeMap::new();
        new.insert(0, block(0xA0));
        new.insert(7, block(0xA1));
        new.insert(14, vec![0u8; BLOCK_SIZE as usize]);
        new.insert(21, block(0xA2));
        new.insert(1000, block(0xA3));
        new.insert(28, block(5)); // block 28 held 5 already
        fake.add_snapshot("snap-new", Some("snap-old"), 1, new);
        let api = Arc::new(Counting {
            inner: fake.clone(),
            gets: AtomicU64::new(0),
        });
        let retry = RetryPolicy::default();
        let old_img = EbsSnapshot::open(api.clone(), "snap-old", retry).unwrap();
        let new_img = EbsSnapshot::open(api.clone(), "snap-new", retry).unwrap();
        let old_manifest = Manifest::compute(&old_img).unwrap();
        let mut changed = changed_blocks(&*api, "snap-old", "snap-new", retry).unwrap();
        assert_eq!(changed, [0, 7, 14, 21, 1000]);
        changed.push(28);
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("j");
        api.gets.store(0, Ordering::Relaxed);
        let r = diff_changed(&old_manifest, &new_img, &changed, &j, 5_000, &NoProgress).unwrap();
        assert_eq!(
            api.gets.load(Ordering::Relaxed),
            6,
            "each listed block read once"
        );
        assert_eq!((r.changed_blocks, r.zeroed_blocks), (4, 1));
        // The roots are exact: the old manifest's, and the new snapshot's own.
        let new_root = Manifest::compute(&new_img).unwrap().root_digest().unwrap();
        assert_eq!(r.base_root, old_manifest.root_digest().unwrap());
        assert_eq!(r.root, new_root);
        // The journal's point over OLD is NEW, byte for byte (as a manifest), and matches the
        // whole-image diff.
        let journal =
            crate::journal::Journal::open(&j, crate::journal::ScanOptions::default()).unwrap();
        let seq = journal.points()[0].seq;
        let point = super::super::PointImage::new(&old_img, &journal, seq).unwrap();
        assert_eq!(
            Manifest::compute(&point).unwrap().root_digest().unwrap(),
            new_root
        );
        let whole = diff(&old_img, &new_img, &d.path().join("w"), 5_000, &NoProgress).unwrap();
        assert_eq!((whole.changed_blocks, whole.zeroed_blocks), (4, 1));
        assert_eq!(whole.root, r.root);
        // A manifest of another size, a block past the end: refused.
        assert!(
            diff_changed(
                &old_manifest,
                &point,
                &[2048],
                &d.path().join("x"),
                0,
                &NoProgress
            )
            .is_err()
        );
    }
}
