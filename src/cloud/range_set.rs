//! [`RangeSet`]: ordered, merged, half-open byte ranges — the arithmetic both the page-blob
//! fake and the upload engine use for "which pages hold data".

use std::collections::BTreeMap;

/// Half-open byte ranges, ordered, disjoint and merged (adjacent ranges become one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of `(offset, len)` ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut s = Self::new();
        for (o, l) in ranges {
            s.insert(o, o.saturating_add(l));
        }
        s
    }

    /// Adds `start..end`.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with a range that starts before and reaches start.
        if let Some((&s, &e)) = self.map.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
        }
        let inside: Vec<(u64, u64)> = self.map.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            self.map.remove(&s);
            end = end.max(e);
        }
        self.map.insert(start, end);
    }

    /// Removes `start..end`.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let hit: Vec<(u64, u64)> = self.overlapping(start, end).collect();
        for (s, _) in &hit {
            // The stored range that holds this overlap starts at or before it.
            if let Some((&ks, &ke)) = self.map.range(..=*s).next_back() {
                self.map.remove(&ks);
                if ks < start {
                    self.map.insert(ks, start);
                }
                if ke > end {
                    self.map.insert(end, ke);
                }
            }
        }
    }

    /// The parts of the set inside `start..end`, clipped, in order.
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self
            .map
            .range(..start)
            .next_back()
            .filter(|(_, e)| **e > start)
            .map(|(&s, &e)| (s, e));
        first
            .into_iter()
            .chain(self.map.range(start..end).map(|(&s, &e)| (s, e)))
            .map(move |(s, e)| (s.max(start), e.min(end)))
            .filter(|(s, e)| s < e)
    }

    /// The parts of `start..end` not in the set, in order.
    pub fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = start;
        for (s, e) in self.overlapping(start, end) {
            if s > pos {
                out.push((pos, s));
            }
            pos = e;
        }
        if pos < end {
            out.push((pos, end));
        }
        out
    }

    /// `true` when every byte of `start..end` is in the set.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        self.missing(start, end).is_empty()
    }

    /// Every range, `(start, end)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    /// Bytes in the set.
    pub fn total(&self) -> u64 {
        self.iter().map(|(s, e)| e - s).sum()
    }

    /// `true` when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// RangeSet against a model: one bool per 512-byte unit of a 64-unit space.
        #[test]
        fn range_set_matches_a_bitmap(ops in proptest::collection::vec(
            (any::<bool>(), 0u64..64, 0u64..20), 0..40),
            probe in (0u64..64, 0u64..64)) {
            let mut set = RangeSet::new();
            let mut model = [false; 64];
            for (add, s, l) in ops {
                let e = (s + l).min(64);
                if add { set.insert(s * 512, e * 512) } else { set.remove(s * 512, e * 512) }
                for m in model.iter_mut().take(e as usize).skip(s as usize) { *m = add; }
            }
            let ranges: Vec<(u64, u64)> = set.iter().collect();
            for w in ranges.windows(2) {
                prop_assert!(w[0].1 < w[1].0, "ranges must be disjoint and not adjacent");
            }
            let bits: Vec<bool> = (0..64).map(|i| set.covers(i * 512, i * 512 + 512)).collect();
            prop_assert_eq!(&bits[..], &model[..]);
            let (a, b) = (probe.0.min(probe.1) * 512, probe.0.max(probe.1) * 512);
            let missing: u64 = set.missing(a, b).iter().map(|(s, e)| e - s).sum();
            let present: u64 = set.overlapping(a, b).map(|(s, e)| e - s).sum();
            prop_assert_eq!(missing + present, b - a);
            let want_present = (a / 512..b / 512).filter(|&i| model[i as usize]).count() as u64 * 512;
            prop_assert_eq!(present, want_present);
        }
    }
}
