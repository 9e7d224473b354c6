//! A recovery point as a [`DiskImage`]: the base image with the journal's writes and zeroings up
//! to the point painted over it.
//!
//! The overlay is an interval map from disk ranges to where their bytes are now: a range of some
//! write record's payload, or zeros. Painting a record replaces whatever it covers, so after the
//! whole journal prefix is painted each byte points at its last write only: a block rewritten
//! ten times is read (and written out) once. Building the map reads record headers only; the
//! payloads are read when the point's bytes are, and each is CRC-checked on first use.

use crate::digest::{BLOCK_SIZE, Digest, zero_digest};
use crate::error::{Error, Result};
use crate::image::{DiskImage, ExtentKind, ExtentMap, Format};
use crate::journal::{Journal, PointRecord, Record, RecordKind};
use crate::progress::Progress;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Where a piece of the disk's bytes is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    /// Record `rec`'s payload from byte `delta` on.
    Write { rec: u32, delta: u64 },
    /// Zeros.
    Zero,
}

impl Src {
    fn shifted(self, by: u64) -> Src {
        match self {
            Src::Write { rec, delta } => Src::Write {
                rec,
                delta: delta + by,
            },
            Src::Zero => Src::Zero,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    end: u64,
    src: Src,
}

/// The interval map of a journal prefix: disjoint pieces keyed by their start.
#[derive(Debug, Default, Clone)]
pub struct Overlay {
    map: BTreeMap<u64, Piece>,
}

impl Overlay {
    /// An empty overlay: the base as it is.
    pub fn new() -> Self {
        Overlay::default()
    }

    /// Paints record `index` of the journal (markers are ignored).
    pub fn apply(&mut self, index: usize, r: &Record) {
        let src = match r.kind {
            RecordKind::Write => Src::Write {
                rec: index as u32,
                delta: 0,
            },
            RecordKind::Zero => Src::Zero,
            RecordKind::Marker => return,
        };
        self.paint(r.offset, r.offset + r.length, src);
    }

    fn paint(&mut self, start: u64, end: u64, src: Src) {
        // A piece that starts before `start` and reaches into the new range is cut short (and,
        // if it also reaches past `end`, keeps its tail).
        if let Some((&k, &p)) = self.map.range(..start).next_back()
            && p.end > start
        {
            if let Some(q) = self.map.get_mut(&k) {
                q.end = start;
            }
            if p.end > end {
                self.map.insert(
                    end,
                    Piece {
                        end: p.end,
                        src: p.src.shifted(end - k),
                    },
                );
            }
        }
        // Pieces that start inside the new range go; the last one may keep its tail.
        let inside: Vec<u64> = self.map.range(start..end).map(|(&k, _)| k).collect();
        for k in inside {
            if let Some(p) = self.map.remove(&k)
                && p.end > end
            {
                self.map.insert(
                    end,
                    Piece {
                        end: p.end,
                        src: p.src.shifted(end - k),
                    },
                );
            }
        }
        self.map.insert(start, Piece { end, src });
    }

    /// The pieces overlapping `start..end`, as `(piece start, piece)`.
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, Piece)> + '_ {
        let first = match self.map.range(..=start).next_back() {
            Some((&k, p)) if p.end > start => k,
            _ => start,
        };
        self.map
            .range(first..end)
            .map(|(&k, &p)| (k, p))
            .filter(move |(_, p)| p.end > start)
    }

    /// Fills `buf` with the disk's bytes at `offset` (the range must lie inside the disk).
    fn read(
        &self,
        journal: &Journal,
        base: &dyn DiskImage,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<()> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        for (k, p) in self.overlapping(offset, end) {
            if k > pos {
                let (a, b) = ((pos - offset) as usize, (k.min(end) - offset) as usize);
                base.read_exact_at(&mut buf[a..b], pos)?;
                pos = k.min(end);
            }
            let stop = p.end.min(end);
            let out = &mut buf[(pos - offset) as usize..(stop - offset) as usize];
            match p.src {
                Src::Zero => out.fill(0),
                Src::Write { rec, delta } => {
                    let payload = journal.payload(rec as usize)?;
                    let from = (delta + (pos - k)) as usize;
                    out.copy_from_slice(&payload[from..from + out.len()]);
                }
            }
            pos = stop;
        }
        if pos < end {
            base.read_exact_at(&mut buf[(pos - offset) as usize..], pos)?;
        }
        Ok(())
    }
}

/// A recovery point: `base` with the journal's records before sequence number `upto` applied.
pub struct PointImage<'a> {
    base: &'a dyn DiskImage,
    journal: &'a Journal,
    overlay: Overlay,
    size: u64,
}

impl<'a> PointImage<'a> {
    /// The point just before record `upto` (a marker's sequence number: the point it marks).
    ///
    /// # Errors
    /// The base's size differs from the journal's disk size.
    pub fn new(base: &'a dyn DiskImage, journal: &'a Journal, upto: u64) -> Result<Self> {
        check_base_size(base, journal)?;
        let mut overlay = Overlay::new();
        for (i, r) in journal.records().iter().enumerate() {
            if r.seq >= upto {
                break;
            }
            overlay.apply(i, r);
        }
        Ok(PointImage {
            base,
            journal,
            overlay,
            size: base.len(),
        })
    }
}

/// The base must be exactly the journal's disk.
pub fn check_base_size(base: &dyn DiskImage, journal: &Journal) -> Result<()> {
    if base.len() != journal.info().disk_size {
        return Err(Error::argument(format!(
            "the base image is {} bytes, the journal's disk {} bytes",
            base.len(),
            journal.info().disk_size
        ))
        .with_path(journal.dir()));
    }
    Ok(())
}

impl DiskImage for PointImage<'_> {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = crate::image::readable(self.size, offset, buf.len());
        self.overlay
            .read(self.journal, self.base, &mut buf[..n], offset)?;
        Ok(n)
    }

    fn extents(&self) -> Result<ExtentMap> {
        let base = self.base.extents()?;
        let ranges =
            base.iter()
                .map(|e| (e.offset, e.len, e.kind))
                .chain(self.overlay.map.iter().map(|(&k, p)| {
                    let kind = match p.src {
                        Src::Write { .. } => ExtentKind::Data,
                        Src::Zero => ExtentKind::Zero,
                    };
                    (k, p.end - k, kind)
                }));
        Ok(ExtentMap::from_ranges(self.size, ranges))
    }

    fn format(&self) -> Format {
        Format::Raw
    }

    fn as_slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len as u64)?;
        if end > self.size {
            return None;
        }
        let mut it = self.overlay.overlapping(offset, end);
        match it.next() {
            None => self.base.as_slice(offset, len),
            Some((k, p)) if k <= offset && p.end >= end => match p.src {
                Src::Write { rec, delta } => {
                    let payload = self.journal.payload(rec as usize).ok()?;
                    let from = (delta + (offset - k)) as usize;
                    payload.get(from..from + len)
                }
                Src::Zero => None,
            },
            Some(_) => None,
        }
    }
}

/// The per-block digests of a manifest (zero blocks as the digest of their zeros).
pub fn block_digests(m: &crate::Manifest) -> Vec<Digest> {
    let n = m.blocks.len();
    let full_zero = Digest(zero_digest(BLOCK_SIZE));
    let last_zero = Digest(zero_digest(last_block_len(m.size)));
    m.blocks
        .iter()
        .enumerate()
        .map(|(i, b)| match b {
            Some(d) => *d,
            None if i + 1 == n => last_zero,
            None => full_zero,
        })
        .collect()
}

fn last_block_len(size: u64) -> u64 {
    match size % BLOCK_SIZE {
        0 => BLOCK_SIZE,
        r => r,
    }
}

/// The root digest over block digests, as [`crate::digest`] defines it.
pub fn root_of(digests: &[Digest]) -> Digest {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    Digest(h.finalize().into())
}

/// The outcome of checking one point.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PointCheck {
    /// The point's id (marker sequence number).
    pub seq: u64,
    /// The point's time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The root digest the point's disk has.
    pub root: Digest,
    /// The digest its marker carries, if any.
    pub expected: Option<Digest>,
    /// `Some(true)` when the marker's digest matches, `Some(false)` when not, `None` when the
    /// marker carries none.
    pub matches: Option<bool>,
    /// Blocks re-hashed for this point (changed since the previous point checked).
    pub rehashed_blocks: u64,
}

/// Computes the root digest of every point `select` picks, in one pass over the journal:
/// the overlay is painted record by record and, at each selected point, only the blocks written
/// since the previous selected point are read and re-hashed (in parallel); the root is then
/// recomputed from the block digests, which is exact. `base_digests` are the base's per-block
/// digests.
///
/// # Errors
/// The base's size is wrong, a payload is corrupt, or the work is cancelled.
pub fn check_points(
    base: &dyn DiskImage,
    base_digests: &[Digest],
    journal: &Journal,
    select: &dyn Fn(&PointRecord) -> bool,
    progress: &dyn Progress,
) -> Result<Vec<PointCheck>> {
    check_base_size(base, journal)?;
    let size = base.len();
    let blocks = crate::digest::Manifest::block_count(size);
    if base_digests.len() as u64 != blocks {
        return Err(Error::argument(format!(
            "base manifest: expected {blocks} block digests, found {}",
            base_digests.len()
        )));
    }
    let mut digests = base_digests.to_vec();
    let mut dirty = vec![false; digests.len()];
    let mut dirty_list: Vec<u64> = Vec::new();
    let mut overlay = Overlay::new();
    let mut out = Vec::new();
    let points = journal.points();
    let mut next_point = 0;
    progress.begin("checking points", points.len() as u64);
    for (i, r) in journal.records().iter().enumerate() {
        match r.kind {
            RecordKind::Write | RecordKind::Zero => {
                overlay.apply(i, r);
                let (a, b) = (
                    r.offset / BLOCK_SIZE,
                    (r.offset + r.length - 1) / BLOCK_SIZE,
                );
                for blk in a..=b {
                    if !dirty[blk as usize] {
                        dirty[blk as usize] = true;
                        dirty_list.push(blk);
                    }
                }
            }
            RecordKind::Marker => {
                let p = &points[next_point];
                next_point += 1;
                if !select(p) {
                    progress.advance(1);
                    continue;
                }
                if progress.cancelled() {
                    return Err(Error::cancelled());
                }
                let fresh: Vec<(u64, Digest)> = dirty_list
                    .par_iter()
                    .map_init(
                        || vec![0u8; BLOCK_SIZE as usize],
                        |buf, &blk| -> Result<(u64, Digest)> {
                            let off = blk * BLOCK_SIZE;
                            let n = (size - off).min(BLOCK_SIZE) as usize;
                            overlay.read(journal, base, &mut buf[..n], off)?;
                            Ok((blk, Digest::of(&buf[..n])))
                        },
                    )
                    .collect::<Result<_>>()?;
                for (blk, d) in fresh {
                    digests[blk as usize] = d;
                    dirty[blk as usize] = false;
                }
                let rehashed = dirty_list.len() as u64;
                dirty_list.clear();
                let root = root_of(&digests);
                let expected = p.marker.digest;
                out.push(PointCheck {
                    seq: p.seq,
                    time_ms: p.time_ms,
                    root,
                    expected,
                    matches: expected.map(|e| e == root),
                    rehashed_blocks: rehashed,
                });
                progress.advance(1);
            }
        }
    }
    progress.finish();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The overlay's pieces against a byte-per-byte model of who wrote each byte.
    fn model_check(ops: &[(u64, u64, bool)], size: u64) {
        let mut o = Overlay::new();
        let mut model: Vec<Option<(u32, u64)>> = vec![None; size as usize];
        for (i, &(off, len, zero)) in ops.iter().enumerate() {
            let src = if zero {
                Src::Zero
            } else {
                Src::Write {
                    rec: i as u32,
                    delta: 0,
                }
            };
            o.paint(off, off + len, src);
            for b in off..off + len {
                model[b as usize] = Some(if zero {
                    (u32::MAX, 0)
                } else {
                    (i as u32, b - off)
                });
            }
        }
        let mut got: Vec<Option<(u32, u64)>> = vec![None; size as usize];
        let mut last_end = 0;
        for (&k, p) in &o.map {
            assert!(k >= last_end && p.end > k, "pieces overlap or are empty");
            last_end = p.end;
            for b in k..p.end {
                got[b as usize] = Some(match p.src {
                    Src::Zero => (u32::MAX, 0),
                    Src::Write { rec, delta } => (rec, delta + (b - k)),
                });
            }
        }
        assert_eq!(got, model);
    }

    proptest! {
        #[test]
        fn painting_matches_a_byte_model(
            ops in proptest::collection::vec((0u64..60, 1u64..20, any::<bool>()), 0..40)
        ) {
            let ops: Vec<_> = ops.into_iter().map(|(o, l, z)| (o, l.min(64 - o), z)).collect();
            model_check(&ops, 64);
        }
    }
}
