//! The dashboard's own counters: per frontend and per backend, requests, 5xx answers and a small latency
//! histogram, as plain cumulative atomics. The request path adds to them where it counts a request for
//! Prometheus (`FrontendMetrics::record`); the admin listener's sampler reads them once a second and keeps the
//! rates and windows (`admin::dashboard`).
//!
//! Why not read Prometheus' own series: the exporter only renders text, so the dashboard would format and
//! parse every series of every frontend once a second, and its latency is per frontend only. These counters
//! cost the request a few relaxed atomic adds on memory that the frontend's own counters already share, take
//! no lock and never allocate.
//!
//! The counters of one id are kept in a process-wide registry and handed to every table generation (like the
//! Prometheus recorder, which is process-wide too), so a weight change does not reset them. The sampler drops
//! an id once no table holds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Latency buckets: the first holds answers under 50 µs, bucket `i` answers in `[50 µs·2^(i-1), 50 µs·2^i)`,
/// the last everything from about 26 s up. Percentiles are interpolated inside a bucket, so they are good to
/// well within the factor of two a bucket spans.
pub const BUCKETS: usize = 21;
/// The lower bound of bucket 1, in microseconds.
pub const BASE_MICROS: u64 = 50;

/// The cumulative counters of one frontend or backend.
pub struct Live {
    requests: AtomicU64,
    /// Answers with a 5xx status: what the gateway or the server failed, not what the client got wrong.
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

/// What [`Live::read`] returns: the counters at one moment. Serialized in the dashboard's JSON, where
/// `ficus canary --steps` reads them from every instance and judges a step by the difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub latency: [u64; BUCKETS],
}

impl Default for Totals {
    fn default() -> Self {
        Totals { requests: 0, errors: 0, latency: [0; BUCKETS] }
    }
}

impl Default for Live {
    fn default() -> Self {
        Live {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The bucket of one latency: a shift and a count of leading zeros, no float, no search.
#[inline]
pub fn bucket(elapsed: Duration) -> usize {
    let steps = (elapsed.as_micros() as u64) / BASE_MICROS;
    ((u64::BITS - steps.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// The lower and upper bound of a bucket in seconds (the last one's upper bound is twice its lower).
pub fn bucket_bounds(i: usize) -> (f64, f64) {
    let base = BASE_MICROS as f64 * 1e-6;
    match i {
        0 => (0.0, base),
        _ => (base * (1u64 << (i - 1)) as f64, base * (1u64 << i) as f64),
    }
}

impl Live {
    /// One answered request. Relaxed: the sampler needs each counter to be exact eventually, not the three
    /// to agree at every instant.
    #[inline]
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> Totals {
        Totals {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }
}

impl Totals {
    /// What happened between `earlier` and `self` (counters only grow; wrapping keeps a restart harmless).
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            requests: self.requests.wrapping_sub(earlier.requests),
            errors: self.errors.wrapping_sub(earlier.errors),
            latency: std::array::from_fn(|i| self.latency[i].wrapping_sub(earlier.latency[i])),
        }
    }

    /// The latency below which a fraction `q` of the answers fell, in seconds, interpolated linearly inside
    /// its bucket; `None` without answers.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.latency.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let (lo, hi) = bucket_bounds(i);
                let into = (rank - below as f64) / n as f64;
                return Some(lo + (hi - lo) * into);
            }
            below += n;
        }
        Some(bucket_bounds(BUCKETS - 1).1)
    }
}

/// Which counters: a frontend's or a backend's (ids of the two kinds may be equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Frontend,
    Backend,
}

type Entries = HashMap<(Kind, Arc<str>), Arc<Live>>;

fn registry() -> &'static Mutex<Entries> {
    static REGISTRY: OnceLock<Mutex<Entries>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// The counters of an id, the same ones for every table generation while some table holds them. Taken at
/// table build, never per request.
pub fn handle(kind: Kind, id: &str) -> Arc<Live> {
    let mut entries = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(live) = entries.get(&(kind, Arc::from(id))) {
        return live.clone();
    }
    let live = Arc::new(Live::default());
    entries.insert((kind, id.into()), live.clone());
    live
}

/// The counters of one id now, if some table holds it. For the admin side only: it takes the registry's lock.
pub fn read(kind: Kind, id: &str) -> Option<Totals> {
    let entries = registry().lock().unwrap_or_else(|p| p.into_inner());
    entries.get(&(kind, Arc::from(id))).map(|live| live.read())
}

/// Reads every registered id's counters, and forgets the ids no table holds any more (only the registry
/// has their `Arc`).
pub fn read_all(mut each: impl FnMut(Kind, &Arc<str>, Totals)) {
    let mut entries = registry().lock().unwrap_or_else(|p| p.into_inner());
    entries.retain(|_, live| Arc::strong_count(live) > 1);
    for ((kind, id), live) in entries.iter() {
        each(*kind, id, live.read());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_double_from_fifty_microseconds() {
        assert_eq!(bucket(Duration::from_micros(0)), 0);
        assert_eq!(bucket(Duration::from_micros(49)), 0);
        assert_eq!(bucket(Duration::from_micros(50)), 1);
        assert_eq!(bucket(Duration::from_micros(99)), 1);
        assert_eq!(bucket(Duration::from_micros(100)), 2);
        assert_eq!(bucket(Duration::from_millis(3)), 6);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
        for i in 1..BUCKETS {
            let (lo, hi) = bucket_bounds(i);
            assert_eq!(bucket(Duration::from_secs_f64(lo + 1e-9)), i, "{i}");
            assert!(hi > lo);
        }
    }

    #[test]
    fn quantiles_fall_inside_the_right_bucket() {
        let live = Live::default();
        for _ in 0..98 {
            live.record(200, Duration::from_millis(2));
        }
        live.record(502, Duration::from_millis(400));
        live.record(200, Duration::from_millis(400));
        let t = live.read();
        assert_eq!((t.requests, t.errors), (100, 1));
        let p50 = t.quantile(0.5).unwrap();
        assert!((0.0016..=0.0032).contains(&p50), "{p50}");
        let p99 = t.quantile(0.99).unwrap();
        assert!((0.2048..=0.4096).contains(&p99), "{p99}");
        assert_eq!(Totals::default().quantile(0.5), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_readings() {
        let live = Live::default();
        live.record(200, Duration::from_millis(1));
        let before = live.read();
        live.record(500, Duration::from_millis(1));
        let window = live.read().since(&before);
        assert_eq!((window.requests, window.errors), (1, 1));
        assert_eq!(window.latency.iter().sum::<u64>(), 1);
    }

    #[test]
    fn an_id_keeps_its_counters_while_held_and_is_forgotten_after() {
        let a = handle(Kind::Frontend, "live-test-a");
        a.record(200, Duration::from_millis(1));
        let again = handle(Kind::Frontend, "live-test-a");
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &handle(Kind::Backend, "live-test-a")));
        drop((a, again));
        let mut seen = false;
        read_all(|kind, id, _| seen |= kind == Kind::Frontend && &**id == "live-test-a");
        assert!(!seen);
    }
}
