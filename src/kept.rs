//! State that outlives one routing table (a rate limiter's buckets, a breaker's window, a frontend's retry
//! budget): held by the tables that use it, found again by its key when the next table is compiled, and
//! forgotten once no table holds it. Only the table compiler touches a [`Kept`] map; requests reach the state
//! through the compiled table's `Arc`s, never through the map.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

/// Values by key, held weakly.
pub struct Kept<K, T> {
    inner: Mutex<Map<K, T>>,
}

struct Map<K, T> {
    map: HashMap<K, Weak<T>>,
    /// The size at which dead entries are next swept out: sweeping on every insert would make a full build of
    /// many frontends quadratic; sweeping when the map doubled keeps it linear.
    sweep_at: usize,
}

impl<K, T> Default for Kept<K, T> {
    fn default() -> Self {
        Kept { inner: Mutex::new(Map { map: HashMap::new(), sweep_at: 64 }) }
    }
}

impl<K: Hash + Eq, T> Kept<K, T> {
    /// The value some table still holds under `key`, or a new one from `make`.
    pub fn get_or_make(&self, key: K, make: impl FnOnce() -> T) -> Arc<T> {
        let mut kept = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = kept.map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        if kept.map.len() >= kept.sweep_at {
            kept.map.retain(|_, w| w.strong_count() > 0);
            kept.sweep_at = (kept.map.len() * 2).max(64);
        }
        let made = Arc::new(make());
        kept.map.insert(key, Arc::downgrade(&made));
        made
    }

    /// The value some table still holds under `key`.
    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<Arc<T>>
    where
        K: Borrow<Q>,
    {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).map.get(key).and_then(Weak::upgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_found_while_held_and_made_anew_once_dropped() {
        let kept: Kept<String, u32> = Kept::default();
        let first = kept.get_or_make("a".into(), || 1);
        assert!(Arc::ptr_eq(&first, &kept.get_or_make("a".into(), || 2)));
        assert_eq!(kept.get("a").as_deref(), Some(&1));
        drop(first);
        assert!(kept.get("a").is_none());
        assert_eq!(*kept.get_or_make("a".into(), || 3), 3);
        // Dead entries are swept as the map grows, so it stays the size of what is held.
        let held: Vec<_> = (0..10).map(|i| kept.get_or_make(format!("held{i}"), || i)).collect();
        for i in 0..1000 {
            kept.get_or_make(format!("gone{i}"), || i);
        }
        assert!(kept.inner.lock().unwrap().map.len() < 200);
        assert!(held.iter().enumerate().all(|(i, v)| **v == i as u32));
    }
}
