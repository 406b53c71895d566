//! Weighted choice, exact over every window: a precomputed smooth weighted round-robin sequence read through
//! one atomic counter.
//!
//! Built at table-compile time for every split (frontend -> backends) and every backend (-> servers); per
//! request it costs one `fetch_add` and one index. With weights 95/5 any 100 consecutive picks are exactly
//! 95 and 5, and the minority side is spread out instead of bunched (smooth WRR never picks the 5% side twice
//! in a row). The counter is handed in by the caller so it survives table swaps and the sequence does not
//! restart at every reload.

pub mod sticky;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest sequence kept; larger weight sums are scaled down (and stay within 1/`MAX_SEQUENCE` of exact).
pub const MAX_SEQUENCE: u64 = 1 << 16;

#[derive(Debug)]
pub struct Weighted<T> {
    items: Vec<T>,
    sequence: Box<[u32]>,
    /// The items with a weight above zero, for the fallback of [`pick_indexed_where`](Self::pick_indexed_where).
    positive: Box<[u32]>,
    counter: Arc<AtomicUsize>,
}

impl<T> Weighted<T> {
    /// `items` with their weights; zero-weight items are kept (for status) but never picked.
    pub fn new(items: Vec<(T, u32)>, counter: Arc<AtomicUsize>) -> Self {
        let weights: Vec<u64> = items.iter().map(|(_, w)| u64::from(*w)).collect();
        let sequence = smooth_sequence(&weights).into_boxed_slice();
        let positive = weights.iter().enumerate().filter(|(_, w)| **w > 0).map(|(i, _)| i as u32).collect();
        Weighted { items: items.into_iter().map(|(t, _)| t).collect(), sequence, positive, counter }
    }

    /// The next item, or `None` when every weight is zero or there are no items.
    #[inline]
    pub fn pick(&self) -> Option<&T> {
        if self.sequence.is_empty() {
            return None;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let idx = self.sequence[n % self.sequence.len()];
        self.items.get(idx as usize)
    }

    /// Like [`pick`](Self::pick), with the item's position (used to find per-item metric handles).
    #[inline]
    pub fn pick_indexed(&self) -> Option<(usize, &T)> {
        if self.sequence.is_empty() {
            return None;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let idx = self.sequence[n % self.sequence.len()] as usize;
        self.items.get(idx).map(|t| (idx, t))
    }

    /// Picks like [`pick`](Self::pick) but skips items for which `usable` is false, trying each slot at most once.
    pub fn pick_where(&self, usable: impl Fn(&T) -> bool) -> Option<&T> {
        if self.sequence.is_empty() {
            return None;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let len = self.sequence.len();
        (0..len.min(self.items.len() * 2 + 1))
            .map(|i| &self.items[self.sequence[(n + i) % len] as usize])
            .find(|t| usable(t))
    }

    /// The item at `index` (a position [`pick_indexed`](Self::pick_indexed) or a sticky split returned).
    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        self.items.get(index)
    }

    /// Like [`pick_indexed`](Self::pick_indexed), skipping items for which `usable` is false. The next few
    /// slots of the sequence are tried first (weights hold among the usable items); when those are all
    /// unusable, every item with a weight is tried once, so a usable one is found if there is one.
    #[inline]
    pub fn pick_indexed_where(&self, usable: impl Fn(usize, &T) -> bool) -> Option<(usize, &T)> {
        if self.sequence.is_empty() {
            return None;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let len = self.sequence.len();
        let found = (0..len.min(self.items.len() * 2 + 1))
            .map(|i| self.sequence[(n + i) % len] as usize)
            .find(|&idx| usable(idx, &self.items[idx]))
            .or_else(|| {
                let p = self.positive.len();
                (0..p).map(|i| self.positive[(n + i) % p] as usize).find(|&idx| usable(idx, &self.items[idx]))
            });
        found.map(|idx| (idx, &self.items[idx]))
    }

    pub fn items(&self) -> &[T] {
        &self.items
    }

    pub fn is_empty(&self) -> bool {
        self.sequence.is_empty()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The smooth weighted round-robin order for one full cycle of the (reduced) weights.
fn smooth_sequence(weights: &[u64]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut reduced: Vec<u64> = weights.iter().map(|w| w / g).collect();
    let mut total: u64 = reduced.iter().sum();
    if total > MAX_SEQUENCE {
        // Scale down, keeping every non-zero weight at least 1 so no server silently starves.
        reduced = reduced.iter().map(|w| if *w == 0 { 0 } else { (w * MAX_SEQUENCE / total).max(1) }).collect();
        total = reduced.iter().sum();
    }
    let mut current = vec![0i64; reduced.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in reduced.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(w: &Weighted<&'static str>, n: usize) -> std::collections::BTreeMap<&'static str, usize> {
        let mut m = std::collections::BTreeMap::new();
        for _ in 0..n {
            *m.entry(*w.pick().unwrap()).or_default() += 1;
        }
        m
    }

    #[test]
    fn exact_over_every_window_of_100() {
        let w = Weighted::new(vec![("blue", 95), ("green", 5)], Arc::default());
        let picks: Vec<&str> = (0..1000).map(|_| *w.pick().unwrap()).collect();
        for window in picks.windows(100) {
            assert_eq!(window.iter().filter(|p| **p == "green").count(), 5);
        }
    }

    #[test]
    fn smooth_and_proportional() {
        let w = Weighted::new(vec![("a", 50), ("b", 30), ("c", 20)], Arc::default());
        let m = counts(&w, 100);
        assert_eq!((m["a"], m["b"], m["c"]), (50, 30, 20));
        let w = Weighted::new(vec![("a", 1), ("b", 1)], Arc::default());
        let seq: Vec<&str> = (0..4).map(|_| *w.pick().unwrap()).collect();
        assert_eq!(seq, ["a", "b", "a", "b"]);
    }

    #[test]
    fn zero_weights_are_never_picked() {
        let w = Weighted::new(vec![("a", 0), ("b", 3)], Arc::default());
        assert_eq!(counts(&w, 30)["b"], 30);
        let w: Weighted<&str> = Weighted::new(vec![("a", 0)], Arc::default());
        assert!(w.pick().is_none());
        let w: Weighted<&str> = Weighted::new(vec![], Arc::default());
        assert!(w.pick().is_none());
    }

    #[test]
    fn large_sums_are_bounded() {
        let w = Weighted::new(vec![("a", 9_999), ("b", 9_998), ("c", 1)], Arc::default());
        assert!(w.sequence.len() as u64 <= MAX_SEQUENCE);
        let w = Weighted::new(
            vec![("a", 10_000), ("b", 9_999), ("c", 9_997), ("d", 9_991), ("e", 9_973), ("f", 9_967), ("g", 9_949)],
            Arc::default(),
        );
        assert!(w.sequence.len() as u64 <= MAX_SEQUENCE + 7);
    }

    #[test]
    fn pick_where_skips_unusable() {
        let w = Weighted::new(vec![("a", 1), ("b", 1)], Arc::default());
        for _ in 0..10 {
            assert_eq!(*w.pick_where(|s| *s == "b").unwrap(), "b");
        }
        assert!(w.pick_where(|_| false).is_none());
        let w = Weighted::new(vec![("a", 1), ("b", 1), ("c", 1)], Arc::default());
        for _ in 0..10 {
            assert_ne!(w.pick_indexed_where(|_, s| *s != "b").map(|(_, s)| *s), Some("b"));
        }
        assert_eq!(w.pick_indexed_where(|_, s| *s == "c").map(|(i, s)| (i, *s)), Some((2, "c")));
        assert!(w.pick_indexed_where(|_, _| false).is_none());
        // The usable item is rare in the sequence: found all the same, every time.
        let w = Weighted::new(vec![("big", 999), ("small", 1), ("none", 0)], Arc::default());
        for _ in 0..20 {
            assert_eq!(w.pick_indexed_where(|_, s| *s != "big").map(|(i, s)| (i, *s)), Some((1, "small")));
        }
    }
}
