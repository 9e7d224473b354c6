//! The extent map: an ordered, gap-free list of ranges covering a disk, each saying whether it
//! holds data (to be read), is known to read as zeros, or is unallocated (a hole, also zeros).
//!
//! Maps are normalised on construction: sorted, contiguous from 0 to the disk size, adjacent
//! extents of one kind merged, empty extents dropped. Lookups are binary searches.

use serde::Serialize;

/// What a range of the disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtentKind {
    /// Allocated; must be read (it may still contain zeros).
    Data,
    /// Known to read as zeros (e.g. a VHDX or qcow2 zero block), possibly allocated.
    Zero,
    /// Not allocated: a hole, reads as zeros.
    Unallocated,
}

impl ExtentKind {
    /// `true` when the range must be read to know its contents.
    pub fn is_data(self) -> bool {
        self == ExtentKind::Data
    }
}

/// One range of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// Virtual offset of the first byte.
    pub offset: u64,
    /// Length in bytes (never 0 in a normalised map).
    pub len: u64,
    /// What the range holds.
    pub kind: ExtentKind,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Appends `(offset, len, kind)` to `ranges`, merging it into the last range when that one ends
/// at `offset` and has the same kind: per-block loops then produce one range per run of blocks,
/// not one per block.
pub(crate) fn push_run(
    ranges: &mut Vec<(u64, u64, ExtentKind)>,
    offset: u64,
    len: u64,
    kind: ExtentKind,
) {
    if let Some(last) = ranges.last_mut()
        && last.2 == kind
        && last.0 + last.1 == offset
    {
        last.1 += len;
        return;
    }
    ranges.push((offset, len, kind));
}

/// An ordered, gap-free map of a disk's extents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtentMap {
    extents: Vec<Extent>,
    len: u64,
}

impl ExtentMap {
    /// A map of a disk of `len` bytes from ranges `(offset, len, kind)`; uncovered space is
    /// [`ExtentKind::Unallocated`], ranges past `len` are clipped, and where ranges overlap the
    /// later one wins.
    pub fn from_ranges(len: u64, ranges: impl IntoIterator<Item = (u64, u64, ExtentKind)>) -> Self {
        let mut rs: Vec<(u64, u64, ExtentKind)> = ranges
            .into_iter()
            .filter_map(|(o, l, k)| {
                let end = o.saturating_add(l).min(len);
                (o < end).then_some((o, end, k))
            })
            .collect();
        let sorted = rs.windows(2).all(|w| w[0].1 <= w[1].0);
        if !sorted {
            // Overlaps or disorder: paint in order, later ranges winning, on a map of disjoint
            // pieces (start → (end, kind)), so n ranges cost O(n log n).
            let mut map: std::collections::BTreeMap<u64, (u64, ExtentKind)> = Default::default();
            for (o, e, k) in rs {
                if let Some((&s, &(pe, pk))) = map.range(..o).next_back()
                    && pe > o
                {
                    map.insert(s, (o, pk));
                    if pe > e {
                        map.insert(e, (pe, pk));
                    }
                }
                let inside: Vec<u64> = map.range(o..e).map(|(&s, _)| s).collect();
                for s in inside {
                    if let Some((pe, pk)) = map.remove(&s)
                        && pe > e
                    {
                        map.insert(e, (pe, pk));
                    }
                }
                map.insert(o, (e, k));
            }
            rs = map.into_iter().map(|(s, (e, k))| (s, e, k)).collect();
        }
        let mut extents: Vec<Extent> = Vec::with_capacity(rs.len() * 2 + 1);
        let mut pos = 0;
        let push = |extents: &mut Vec<Extent>, offset: u64, end: u64, kind: ExtentKind| {
            if end <= offset {
                return;
            }
            if let Some(last) = extents.last_mut()
                && last.kind == kind
                && last.end() == offset
            {
                last.len += end - offset;
                return;
            }
            extents.push(Extent {
                offset,
                len: end - offset,
                kind,
            });
        };
        for (o, e, k) in rs {
            push(&mut extents, pos, o, ExtentKind::Unallocated);
            push(&mut extents, o, e, k);
            pos = e;
        }
        push(&mut extents, pos, len, ExtentKind::Unallocated);
        ExtentMap { extents, len }
    }

    /// A map where the whole disk is data.
    pub fn all_data(len: u64) -> Self {
        Self::from_ranges(len, [(0, len, ExtentKind::Data)])
    }

    /// The disk size the map covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// `true` for a map of an empty disk.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The extents in order.
    pub fn iter(&self) -> impl Iterator<Item = &Extent> + '_ {
        self.extents.iter()
    }

    /// The extents as a slice.
    pub fn as_slice(&self) -> &[Extent] {
        &self.extents
    }

    /// Total bytes of each kind: (data, zero, unallocated).
    pub fn totals(&self) -> (u64, u64, u64) {
        let mut t = (0, 0, 0);
        for e in &self.extents {
            match e.kind {
                ExtentKind::Data => t.0 += e.len,
                ExtentKind::Zero => t.1 += e.len,
                ExtentKind::Unallocated => t.2 += e.len,
            }
        }
        t
    }

    /// The extent containing `offset`, if `offset < len()`.
    pub fn at(&self, offset: u64) -> Option<&Extent> {
        let i = self.extents.partition_point(|e| e.end() <= offset);
        self.extents.get(i).filter(|e| e.offset <= offset)
    }

    /// The extents overlapping `offset..offset+len`, clipped to that range.
    pub fn range(&self, offset: u64, len: u64) -> impl Iterator<Item = Extent> + '_ {
        let end = offset.saturating_add(len).min(self.len);
        let first = self.extents.partition_point(|e| e.end() <= offset);
        self.extents[first..]
            .iter()
            .take_while(move |e| e.offset < end)
            .map(move |e| {
                let o = e.offset.max(offset);
                Extent {
                    offset: o,
                    len: e.end().min(end) - o,
                    kind: e.kind,
                }
            })
    }

    /// `true` when any byte of `offset..offset+len` must be read.
    pub fn has_data_in(&self, offset: u64, len: u64) -> bool {
        self.range(offset, len).any(|e| e.kind.is_data())
    }

    /// The indices of the `chunk`-sized pieces of the disk (piece `i` is `i*chunk..(i+1)*chunk`)
    /// that hold any data, ascending, each once, computed lazily from the extents.
    pub fn data_chunks(&self, chunk: u64) -> impl Iterator<Item = u64> + Send + '_ {
        let mut last: Option<u64> = None;
        self.extents
            .iter()
            .filter(|e| e.kind.is_data())
            .flat_map(move |e| (e.offset / chunk)..e.end().div_ceil(chunk))
            .filter(move |&c| {
                let new = last != Some(c);
                last = Some(c);
                new
            })
    }

    /// The same map cut or extended (with unallocated space) to `len`.
    pub fn with_len(&self, len: u64) -> Self {
        Self::from_ranges(len, self.extents.iter().map(|e| (e.offset, e.len, e.kind)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExtentKind::*;
    use proptest::prelude::*;

    #[test]
    fn fills_gaps_and_merges() {
        let m = ExtentMap::from_ranges(100, [(10, 10, Data), (20, 5, Data), (50, 100, Zero)]);
        let v: Vec<_> = m.iter().map(|e| (e.offset, e.len, e.kind)).collect();
        assert_eq!(
            v,
            vec![
                (0, 10, Unallocated),
                (10, 15, Data),
                (25, 25, Unallocated),
                (50, 50, Zero)
            ]
        );
        assert_eq!(m.totals(), (15, 50, 35));
        assert_eq!(m.at(12).map(|e| e.kind), Some(Data));
        assert_eq!(m.at(100), None);
        assert!(m.has_data_in(0, 11));
        assert!(!m.has_data_in(0, 10));
        let r: Vec<_> = m.range(15, 40).map(|e| (e.offset, e.len)).collect();
        assert_eq!(r, vec![(15, 10), (25, 25), (50, 5)]);
    }

    #[test]
    fn empty_disk() {
        let m = ExtentMap::from_ranges(0, [(0, 10, Data)]);
        assert!(m.is_empty());
        assert_eq!(m.iter().count(), 0);
    }

    proptest! {
        /// Against a model: one kind per byte, later ranges painting over earlier ones.
        #[test]
        fn matches_byte_model(len in 0u64..200, ranges in prop::collection::vec((0u64..220, 0u64..80, 0u8..3), 0..12)) {
            let kind = |k: u8| [Data, Zero, Unallocated][k as usize];
            let mut model = vec![Unallocated; len as usize];
            for &(o, l, k) in &ranges {
                for b in o..(o + l).min(len) { model[b as usize] = kind(k); }
            }
            let m = ExtentMap::from_ranges(len, ranges.iter().map(|&(o, l, k)| (o, l, kind(k))));
            let mut pos = 0;
            for (i, e) in m.iter().enumerate() {
                prop_assert_eq!(e.offset, pos);
                prop_assert!(e.len > 0);
                if i > 0 { prop_assert_ne!(m.as_slice()[i - 1].kind, e.kind); }
                for b in e.offset..e.end() { prop_assert_eq!(model[b as usize], e.kind); }
                pos = e.end();
            }
            prop_assert_eq!(pos, len);
            for chunk in [1u64, 7, 64] {
                let want: Vec<u64> = (0..len.div_ceil(chunk))
                    .filter(|&c| (c * chunk..((c + 1) * chunk).min(len)).any(|b| model[b as usize] == Data))
                    .collect();
                prop_assert_eq!(m.data_chunks(chunk).collect::<Vec<_>>(), want);
            }
        }
    }
}
