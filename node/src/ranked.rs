//! The ordered half of a sorted set: a sorted sequence with rank and select in O(log n).
//!
//! Redis answers ZRANK, ZRANGE by index and ZCOUNT in O(log n) from a skiplist whose links
//! carry spans; a plain `BTreeSet` can only count its way to a position. [`Ranked`] keeps the
//! elements in sorted chunks of at most [`MAX`] (a few KiB each, so inserting is one short
//! `memmove`) and a Fenwick tree over the chunk lengths: the chunk holding position `i`, or
//! the position of a chunk, is one O(log chunks) walk. Chunks split when full and merge with
//! a neighbour when they fall under [`MIN`]; the tree is rebuilt only then.

use std::cmp::Ordering;

/// A chunk splits in two before it would grow past this many elements.
const MAX: usize = 256;
/// A chunk smaller than this merges with a neighbour.
const MIN: usize = 32;

/// A sorted sequence of distinct elements with positional access.
#[derive(Debug, Clone)]
pub struct Ranked<T> {
    /// Sorted, non-empty chunks; every element of a chunk is below every element of the next.
    chunks: Vec<Vec<T>>,
    /// Fenwick tree over the chunk lengths (1-based: `tree[i]` covers chunks `i - lowbit(i)
    /// .. i`).
    tree: Vec<usize>,
    len: usize,
}

impl<T> Default for Ranked<T> {
    fn default() -> Self {
        Ranked {
            chunks: Vec::new(),
            tree: vec![0],
            len: 0,
        }
    }
}

impl<T: PartialEq> PartialEq for Ranked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.range(0, self.len).eq(other.range(0, other.len))
    }
}

impl<T: Ord> Ranked<T> {
    /// Inserts `x`; false (and `x` dropped) when an equal element is present.
    pub fn insert(&mut self, x: T) -> bool {
        if self.chunks.is_empty() {
            self.chunks.push(vec![x]);
            self.len = 1;
            self.rebuild();
            return true;
        }
        let last = self.chunks.len() - 1;
        let mut ci = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|l| *l < x))
            .min(last);
        let mut pos = match self.chunks[ci].binary_search(&x) {
            Ok(_) => return false,
            Err(p) => p,
        };
        if self.chunks[ci].len() >= MAX {
            // Split before inserting, so a chunk never reallocates past MAX.
            let half = self.chunks[ci].len() / 2;
            let tail = self.chunks[ci].split_off(half);
            self.chunks.insert(ci + 1, tail);
            if pos > half {
                ci += 1;
                pos -= half;
            }
            self.chunks[ci].insert(pos, x);
            self.len += 1;
            self.rebuild();
            return true;
        }
        self.chunks[ci].insert(pos, x);
        self.len += 1;
        self.add(ci, 1);
        true
    }
}

impl<T> Ranked<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes and returns the element for which `cmp` (the element's order against the one
    /// sought) is `Equal`.
    pub fn remove_by(&mut self, cmp: impl Fn(&T) -> Ordering) -> Option<T> {
        let ci = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|l| cmp(l) == Ordering::Less));
        let chunk = self.chunks.get_mut(ci)?;
        let pos = chunk.binary_search_by(&cmp).ok()?;
        let x = chunk.remove(pos);
        self.len -= 1;
        let n = chunk.len();
        if n == 0 {
            self.chunks.remove(ci);
            self.rebuild();
        } else if n < MIN && self.chunks.len() > 1 {
            // Merge with a neighbour (the next one, or the previous for the last chunk), then
            // split again if that made it too big.
            let a = if ci + 1 < self.chunks.len() {
                ci
            } else {
                ci - 1
            };
            let b = self.chunks.remove(a + 1);
            self.chunks[a].extend(b);
            if self.chunks[a].len() > MAX {
                let half = self.chunks[a].len() / 2;
                let tail = self.chunks[a].split_off(half);
                self.chunks.insert(a + 1, tail);
            }
            self.rebuild();
        } else {
            self.add(ci, -1);
        }
        Some(x)
    }

    /// Number of leading elements for which `pred` holds; `pred` must hold for a prefix of
    /// the order and not after it.
    pub fn partition_point(&self, pred: impl Fn(&T) -> bool) -> usize {
        let ci = self.chunks.partition_point(|c| c.last().is_some_and(&pred));
        match self.chunks.get(ci) {
            Some(c) => self.prefix(ci) + c.partition_point(&pred),
            None => self.len,
        }
    }

    /// The element at position `i`.
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let (ci, off) = self.locate(i);
        self.chunks.get(ci)?.get(off)
    }

    /// Elements at positions `lo..hi` (clamped to the length), in order; double-ended.
    pub fn range(&self, lo: usize, hi: usize) -> impl DoubleEndedIterator<Item = &T> + '_ {
        let hi = hi.min(self.len);
        let lo = lo.min(hi);
        let (c0, o0) = self.locate(lo);
        let (c1, o1) = self.locate(hi);
        // Chunks c0..=c1, trimmed to [o0.. in the first and ..o1) in the last; when hi is the
        // end, c1 is one past the last chunk.
        let end = c1.min(self.chunks.len().saturating_sub(1));
        let chunks = if lo == hi {
            &self.chunks[..0]
        } else {
            &self.chunks[c0..=end]
        };
        chunks.iter().enumerate().flat_map(move |(j, c)| {
            let ci = c0 + j;
            let s = if ci == c0 { o0 } else { 0 };
            let e = if ci == c1 { o1 } else { c.len() };
            c[s.min(e)..e].iter()
        })
    }

    /// (chunk, offset) of position `i`; (chunks, 0) for `i == len`.
    fn locate(&self, i: usize) -> (usize, usize) {
        let n = self.chunks.len();
        let (mut pos, mut rem) = (0usize, i);
        let mut step = if n == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= rem {
                pos = next;
                rem -= self.tree[next];
            }
            step >>= 1;
        }
        (pos, rem)
    }

    /// Total length of chunks `..ci`.
    fn prefix(&self, ci: usize) -> usize {
        let mut i = ci;
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i &= i - 1;
        }
        sum
    }

    /// Adds `delta` to the length of chunk `ci` in the Fenwick tree.
    fn add(&mut self, ci: usize, delta: isize) {
        let mut i = ci + 1;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Rebuilds the Fenwick tree after chunks were added or removed (O(chunks)).
    fn rebuild(&mut self) {
        let n = self.chunks.len();
        self.tree.clear();
        self.tree.resize(n + 1, 0);
        for i in 1..=n {
            self.tree[i] += self.chunks[i - 1].len();
            let j = i + (i & i.wrapping_neg());
            if j <= n {
                self.tree[j] += self.tree[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Checks every query of `r` against the same elements in a `BTreeSet`.
    fn check(r: &Ranked<u32>, model: &BTreeSet<u32>) {
        let all: Vec<u32> = model.iter().copied().collect();
        assert_eq!(r.len(), all.len());
        assert_eq!(r.range(0, usize::MAX).copied().collect::<Vec<_>>(), all);
        assert_eq!(
            r.range(0, usize::MAX).rev().copied().collect::<Vec<_>>(),
            all.iter().rev().copied().collect::<Vec<_>>()
        );
        let n = all.len();
        for i in [0, 1, n / 3, n / 2, n.saturating_sub(1), n, n + 1] {
            assert_eq!(r.get(i), all.get(i));
            for j in [i, i + 1, i + 700, n] {
                let want: Vec<u32> = all
                    .iter()
                    .skip(i)
                    .take(j.saturating_sub(i))
                    .copied()
                    .collect();
                assert_eq!(r.range(i, j).copied().collect::<Vec<_>>(), want, "{i}..{j}");
            }
        }
        for probe in [0u32, 1, 500, 999, 5000, u32::MAX] {
            assert_eq!(
                r.partition_point(|x| *x < probe),
                model.range(..probe).count()
            );
        }
    }

    #[test]
    fn splits_and_merges_keep_every_position_right() {
        let (mut r, mut model) = (Ranked::default(), BTreeSet::new());
        // Enough to split many times, in an order that hits every chunk.
        for i in 0..5000u32 {
            let x = i.wrapping_mul(2_654_435_761) % 10_000;
            assert_eq!(r.insert(x), model.insert(x));
        }
        check(&r, &model);
        // Remove most of them: chunks shrink under MIN and merge.
        for i in 0..4900u32 {
            let x = i.wrapping_mul(2_654_435_761) % 10_000;
            assert_eq!(r.remove_by(|e| e.cmp(&x)), model.take(&x));
        }
        check(&r, &model);
        assert_eq!(r.remove_by(|e| e.cmp(&10_001)), None);
    }

    proptest! {
        #[test]
        fn behaves_as_a_sorted_set(ops in proptest::collection::vec((any::<bool>(), 0u32..3000), 0..4000)) {
            let (mut r, mut model) = (Ranked::default(), BTreeSet::new());
            for (add, x) in ops {
                if add {
                    prop_assert_eq!(r.insert(x), model.insert(x));
                } else {
                    prop_assert_eq!(r.remove_by(|e| e.cmp(&x)), model.take(&x));
                }
            }
            check(&r, &model);
        }
    }
}
