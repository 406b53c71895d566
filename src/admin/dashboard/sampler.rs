//! The dashboard's memory of the last minutes, kept by a task on the admin side: once a second it reads the
//! telemetry's cumulative live counters (`telemetry::live`), adds each backend's new requests to its role's
//! line of the strangling chart, and every few seconds keeps a snapshot per id from which the windows (req/s
//! over 10 s, error rate and p50/p99 over 60 s) are differences. The request path never waits for any of it.
//!
//! Memory: an id without traffic since the last snapshot shares that snapshot (one `Arc`), so 10,000 quiet
//! frontends cost little; a busy id keeps [`SNAPSHOTS`] readings of [`Totals`].

use crate::model::{Role, ValidatedConfig};
use crate::telemetry::live::{self, Kind, Totals};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds of the strangling chart.
pub const HISTORY_SECONDS: usize = 300;
/// A snapshot per id every this many seconds...
pub const SNAPSHOT_EVERY: u64 = 5;
/// ...and this many of them: a little over a minute.
pub const SNAPSHOTS: usize = 14;
/// The window of req/s (short: it is what moves when weights change).
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// The window of error rate and latency (long enough for p99 to mean something).
pub const QUALITY_WINDOW: Duration = Duration::from_secs(60);

/// One second of the strangling chart: requests answered by backends of each role.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RolePoint {
    /// Unix time, seconds.
    pub t: u64,
    pub legacy: u64,
    pub new: u64,
    /// Backends without a `Role`.
    pub unmarked: u64,
}

struct Entry {
    now: Totals,
    at: Instant,
    /// Oldest first; always at least one (taken when the id was first seen).
    snapshots: VecDeque<(Instant, Arc<Totals>)>,
    seen: u64,
}

/// Windows of one id, ready to show.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Rates {
    /// Requests per second over the last [`RATE_WINDOW`] (or since the id was first seen).
    pub rps: f64,
    /// Requests over [`QUALITY_WINDOW`].
    pub requests: u64,
    /// Share of 5xx answers over [`QUALITY_WINDOW`], 0..1; `None` without requests.
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

pub struct Sampler {
    tick: u64,
    entries: HashMap<(Kind, Arc<str>), Entry>,
    history: VecDeque<RolePoint>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler { tick: 0, entries: HashMap::new(), history: VecDeque::with_capacity(HISTORY_SECONDS) }
    }
}

fn role_of(config: &ValidatedConfig, backend: &str) -> Option<Role> {
    config.backends.get(backend).and_then(|b| b.role)
}

impl Sampler {
    /// One second's reading. `config` says each backend's role.
    pub fn sample(&mut self, config: &ValidatedConfig) {
        let now = Instant::now();
        self.tick += 1;
        let tick = self.tick;
        let snapshot = tick % SNAPSHOT_EVERY == 0;
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut point = RolePoint { t, ..RolePoint::default() };
        let entries = &mut self.entries;
        live::read_all(|kind, id, totals| {
            let entry = entries.entry((kind, id.clone())).or_insert_with(|| Entry {
                now: totals,
                at: now,
                snapshots: VecDeque::from([(now, Arc::new(totals))]),
                seen: tick,
            });
            if kind == Kind::Backend {
                let new_requests = totals.requests.wrapping_sub(entry.now.requests);
                match role_of(config, id) {
                    Some(Role::Legacy) => point.legacy += new_requests,
                    Some(Role::New) => point.new += new_requests,
                    None => point.unmarked += new_requests,
                }
            }
            entry.now = totals;
            entry.at = now;
            entry.seen = tick;
            if snapshot {
                let last = entry.snapshots.back().map(|(_, s)| s.clone());
                let shared = match last {
                    Some(last) if *last == totals => last,
                    _ => Arc::new(totals),
                };
                if entry.snapshots.len() == SNAPSHOTS {
                    entry.snapshots.pop_front();
                }
                entry.snapshots.push_back((now, shared));
            }
        });
        entries.retain(|_, e| e.seen == tick);
        if self.history.len() == HISTORY_SECONDS {
            self.history.pop_front();
        }
        self.history.push_back(point);
    }

    /// The chart's points, oldest first.
    pub fn history(&self) -> impl ExactSizeIterator<Item = &RolePoint> {
        self.history.iter()
    }

    /// The windows of an id; zeros for an id not sampled yet.
    pub fn rates(&self, kind: Kind, id: &str) -> Rates {
        let Some(e) = self.entries.get(&(kind, Arc::from(id))) else { return Rates::default() };
        let base = |window: Duration| {
            // The oldest snapshot still inside the window (a second of slack for the sampler's own jitter).
            e.snapshots.iter().find(|(at, _)| e.at.duration_since(*at) <= window + Duration::from_secs(1))
        };
        let mut rates = Rates::default();
        if let Some((at, then)) = base(RATE_WINDOW) {
            let secs = e.at.duration_since(*at).as_secs_f64();
            if secs >= 0.5 {
                rates.rps = round(e.now.requests.wrapping_sub(then.requests) as f64 / secs, 2);
            }
        }
        if let Some((_, then)) = base(QUALITY_WINDOW) {
            let w = e.now.since(then);
            rates.requests = w.requests;
            if w.requests > 0 {
                rates.error_rate = Some(round(w.errors as f64 / w.requests as f64, 4));
                rates.p50_ms = w.quantile(0.5).map(|s| round(s * 1e3, 3));
                rates.p99_ms = w.quantile(0.99).map(|s| round(s * 1e3, 3));
            }
        }
        rates
    }

    /// Requests per second by role over the last `seconds` of the chart.
    pub fn role_rates(&self, seconds: usize) -> RoleRates {
        let n = seconds.min(self.history.len()).max(1);
        let mut r = RoleRates::default();
        for p in self.history.iter().rev().take(n) {
            r.legacy += p.legacy as f64;
            r.new += p.new as f64;
            r.unmarked += p.unmarked as f64;
        }
        let n = n as f64;
        RoleRates { legacy: round(r.legacy / n, 2), new: round(r.new / n, 2), unmarked: round(r.unmarked / n, 2) }
    }
}

/// Fewer digits in the JSON than a float's noise (`1.5599999999999998`); more than the page shows.
fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// Requests per second by role.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RoleRates {
    pub legacy: f64,
    pub new: f64,
    pub unmarked: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_the_chart_count_what_happened_since_an_id_was_first_seen() {
        let frontend = live::handle(Kind::Frontend, "sampler-test-f");
        let backend = live::handle(Kind::Backend, "sampler-test-b");
        frontend.record(200, Duration::from_millis(1));
        let mut sampler = Sampler::default();
        let config = ValidatedConfig::default();
        sampler.sample(&config);
        for status in [200, 200, 200, 503] {
            frontend.record(status, Duration::from_millis(2));
            backend.record(status, Duration::from_millis(2));
        }
        sampler.sample(&config);
        let rates = sampler.rates(Kind::Frontend, "sampler-test-f");
        assert_eq!(rates.requests, 4);
        assert_eq!(rates.error_rate, Some(0.25));
        let p50 = rates.p50_ms.unwrap();
        assert!((1.6..=3.2).contains(&p50), "{p50}");
        // The backend has no role in this config: its requests are on the unmarked line.
        let last = sampler.history().last().copied().unwrap();
        assert!(last.unmarked >= 4, "{last:?}");
        assert_eq!(sampler.history().len(), 2);
        assert_eq!(sampler.rates(Kind::Frontend, "never-seen"), Rates::default());
    }
}
