//! Comparing two disks' contents, as `qemu-img compare` does: the common part must be equal, and
//! the part of the larger disk past the smaller one's end must read as zeros (unless strict, when
//! any size difference is a difference). Only ranges where either disk holds data are read, in
//! parallel, in batches whose results are taken in order, so the first difference reported is the
//! lowest offset.

use crate::error::Result;
use crate::image::{DiskImage, ExtentMap, bytes_at};
use crate::progress::Progress;
use rayon::prelude::*;
use serde::Serialize;

/// Comparison granularity.
const CHUNK: u64 = 2 << 20;
/// Chunks compared in parallel before looking for the first difference.
const BATCH: usize = 64;

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// `true` when the disks read the same (under the size rule above).
    pub identical: bool,
    /// Size of the first disk.
    pub size_a: u64,
    /// Size of the second disk.
    pub size_b: u64,
    /// The lowest offset at which the contents differ.
    pub first_difference: Option<u64>,
    /// `true` when the sizes differ (a difference only when strict).
    pub sizes_differ: bool,
}

/// Chunk indices where `a` or `b` has data, ascending, without repeats.
fn union_chunks<'a>(a: &'a ExtentMap, b: &'a ExtentMap) -> impl Iterator<Item = u64> + 'a {
    let mut x = a.data_chunks(CHUNK).peekable();
    let mut y = b.data_chunks(CHUNK).peekable();
    let mut last = None;
    std::iter::from_fn(move || {
        loop {
            let next = match (x.peek(), y.peek()) {
                (Some(&p), Some(&q)) if p <= q => x.next(),
                (Some(_), Some(_)) => y.next(),
                (Some(_), None) => x.next(),
                (None, Some(_)) => y.next(),
                (None, None) => return None,
            };
            if next != last {
                last = next;
                return next;
            }
        }
    })
}

/// Compares `a` and `b`.
///
/// # Errors
/// Read errors of either disk.
pub fn compare(
    a: &dyn DiskImage,
    b: &dyn DiskImage,
    strict: bool,
    progress: &dyn Progress,
) -> Result<Comparison> {
    let (size_a, size_b) = (a.len(), b.len());
    let size = size_a.max(size_b);
    // Past its end a disk reads as zeros: extend the smaller map with unallocated space.
    let map_a = a.extents()?.with_len(size);
    let map_b = b.extents()?.with_len(size);
    let sizes_differ = size_a != size_b;
    let mut first_difference = None;
    progress.begin("comparing", size);
    let mut chunks = union_chunks(&map_a, &map_b).peekable();
    let mut done = 0;
    while chunks.peek().is_some() {
        if progress.cancelled() {
            progress.finish();
            return Err(crate::Error::cancelled());
        }
        let batch: Vec<u64> = chunks.by_ref().take(BATCH).collect();
        let diffs: Vec<Option<u64>> = batch
            .par_iter()
            .map_init(
                || (vec![0u8; CHUNK as usize], vec![0u8; CHUNK as usize]),
                |(ba, bb), &c| -> Result<Option<u64>> {
                    let start = c * CHUNK;
                    let len = (size - start).min(CHUNK) as usize;
                    let x = bytes_at(a, &map_a, start, &mut ba[..len])?;
                    let y = bytes_at(b, &map_b, start, &mut bb[..len])?;
                    Ok(x.iter()
                        .zip(y)
                        .position(|(x, y)| x != y)
                        .map(|p| start + p as u64))
                },
            )
            .collect::<Result<_>>()?;
        if let Some(d) = diffs.into_iter().flatten().next() {
            first_difference = Some(d);
            break;
        }
        let last = batch.last().map_or(0, |&c| ((c + 1) * CHUNK).min(size));
        progress.advance(last - done);
        done = last;
    }
    progress.finish();
    if strict && sizes_differ && first_difference.is_none() {
        first_difference = Some(size_a.min(size_b));
    }
    Ok(Comparison {
        identical: first_difference.is_none(),
        size_a,
        size_b,
        first_difference,
        sizes_differ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ExtentKind, MemImage};
    use crate::progress::NoProgress;
    use proptest::prelude::*;

    fn sparse(data: Vec<u8>) -> MemImage {
        // Mark only the non-zero 4 KiB pages as data, to exercise the hole paths.
        let ranges: Vec<_> = data
            .chunks(4096)
            .enumerate()
            .filter(|(_, p)| p.iter().any(|&b| b != 0))
            .map(|(i, p)| (i as u64 * 4096, p.len() as u64, ExtentKind::Data))
            .collect();
        let m = ExtentMap::from_ranges(data.len() as u64, ranges);
        MemImage::with_extents(data, m).unwrap()
    }

    /// A 400 MiB disk of holes with 4 KiB data islands spread over several batches
    /// (BATCH × CHUNK = 128 MiB); bytes are a function of the offset, except at `flips`.
    struct Islands {
        flips: Vec<u64>,
    }
    const ISLANDS: [u64; 6] = [MIB, 127 * MIB, 129 * MIB, 200 * MIB, 300 * MIB, 399 * MIB];
    const MIB: u64 = 1 << 20;
    impl DiskImage for Islands {
        fn len(&self) -> u64 {
            400 * MIB
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> crate::Result<usize> {
            for (i, b) in buf.iter_mut().enumerate() {
                let o = offset + i as u64;
                let on_island = ISLANDS.iter().any(|&s| (s..s + 4096).contains(&o));
                *b = if on_island { (o % 251) as u8 | 1 } else { 0 };
                if self.flips.contains(&o) {
                    *b ^= 0x80;
                }
            }
            Ok(buf.len())
        }
        fn extents(&self) -> crate::Result<ExtentMap> {
            Ok(ExtentMap::from_ranges(
                self.len(),
                ISLANDS.iter().map(|&s| (s, 4096, ExtentKind::Data)),
            ))
        }
        fn format(&self) -> crate::Format {
            crate::Format::Raw
        }
    }

    #[test]
    fn first_difference_is_the_lowest_across_batches() {
        let a = Islands { flips: vec![] };
        for flips in [
            vec![399 * MIB + 5, 129 * MIB + 7],
            vec![300 * MIB + 1, 200 * MIB + 4095],
            vec![MIB],
        ] {
            let want = flips.iter().copied().min();
            let b = Islands { flips };
            let r = compare(&a, &b, true, &NoProgress).unwrap();
            assert_eq!(r.first_difference, want);
        }
        assert!(
            compare(&a, &Islands { flips: vec![] }, true, &NoProgress)
                .unwrap()
                .identical
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn first_difference_matches_model(
            a in prop::collection::vec(0u8..3, 0..20_000),
            extra in 0usize..9000,
            flips in prop::collection::vec((0usize..30_000, 1u8..255), 0..3),
            strict in any::<bool>(),
        ) {
            let a: Vec<u8> = a.into_iter().map(|x| if x == 0 { 0 } else { x * 40 }).collect();
            let mut b = a.clone();
            b.resize(a.len() + extra, 0);
            for &(i, v) in &flips {
                if i < b.len() { b[i] ^= v; }
            }
            let n = a.len().max(b.len());
            let (mut pa, mut pb) = (a.clone(), b.clone());
            pa.resize(n, 0);
            pb.resize(n, 0);
            let mut expect = pa.iter().zip(&pb).position(|(x, y)| x != y).map(|p| p as u64);
            if strict && a.len() != b.len() && expect.is_none() {
                expect = Some(a.len().min(b.len()) as u64);
            }
            let r = compare(&sparse(a), &sparse(b), strict, &NoProgress).unwrap();
            prop_assert_eq!(r.first_difference, expect);
            prop_assert_eq!(r.identical, expect.is_none());
        }
    }
}
