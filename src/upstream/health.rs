//! Per-server health, kept on the [`Server`] so it outlives table generations and is shared by every frontend
//! that uses the backend. Two sources feed it: active checks (one task per server, `Settings.HealthCheck`)
//! and passive ejection (the proxy reports each exchange's outcome, `Settings.Outlier`). The pick phase reads
//! the result with two relaxed atomic loads ([`Health::usable`]); nothing on the request path takes a lock.
//!
//! Times are milliseconds on one process-wide monotonic clock ([`millis`]), so an ejection's end fits in an
//! `AtomicU64` and the proxy can compare it against the request's start without another clock read.

use super::Server;
use crate::model::{HealthCheck, Outlier};
use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `at` in milliseconds on the health clock; never 0, which stands for "not ejected".
#[inline]
pub fn millis(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_millis() as u64 + 1
}

/// What `/status` and the metrics say about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Healthy,
    /// Its active checks failed `Unhealthy` times in a row; back after `Healthy` passes.
    Failing,
    /// Passive ejection: too many connect errors or 5xx in a row; back when the ejection ends.
    Ejected,
}

/// The health of one server.
#[derive(Debug, Default)]
pub struct Health {
    /// Set by the active checker.
    down: AtomicBool,
    /// End of the current ejection on the health clock; 0 (or a past time) when not ejected.
    ejected_until: AtomicU64,
    /// Consecutive failed exchanges seen by the proxy.
    failures: AtomicU32,
    /// Ejections in a row without a calm period between them: the next ejection lasts one more period.
    streak: AtomicU32,
    ejections: AtomicU64,
    checks_passed: AtomicU64,
    checks_failed: AtomicU64,
}

impl Health {
    /// Whether the server may take new requests at `now` (health clock).
    #[inline]
    pub fn usable(&self, now: u64) -> bool {
        !self.down.load(Relaxed) && self.ejected_until.load(Relaxed) <= now
    }

    pub fn state(&self, now: u64) -> State {
        if self.down.load(Relaxed) {
            State::Failing
        } else if self.ejected_until.load(Relaxed) > now {
            State::Ejected
        } else {
            State::Healthy
        }
    }

    pub fn ejections(&self) -> u64 {
        self.ejections.load(Relaxed)
    }

    /// Active checks passed and failed so far.
    pub fn checks(&self) -> (u64, u64) {
        (self.checks_passed.load(Relaxed), self.checks_failed.load(Relaxed))
    }

    fn ejected_at(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) > now
    }
}

/// What a backend does with its servers' health: compiled with the backend, read by the pick phase and fed by
/// the send phase.
#[derive(Debug, Default)]
pub struct Policy {
    pub outlier: Option<Outlier>,
    /// Servers of this backend have active checks.
    pub checked: bool,
    /// Every server was unusable at the last pick, so the pick failed open (logged once per transition).
    all_down: AtomicBool,
}

/// How one exchange with a server went, as passive health sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500.
    Answered,
    /// No connection, a reset, or a 5xx answer.
    Failed,
    /// Neither (a timeout, a cut, a client that went away): not the server's fault as far as we know.
    Unknown,
}

impl Policy {
    pub fn new(outlier: Option<Outlier>, checked: bool) -> Self {
        Policy { outlier, checked, all_down: AtomicBool::new(false) }
    }

    /// Whether picks must look at health at all; false costs the pick phase nothing.
    #[inline]
    pub fn active(&self) -> bool {
        self.checked || self.outlier.is_some()
    }

    /// The pick found no usable server and takes any: better some answers than a 503 for all.
    pub fn failed_open(&self, backend: &str) {
        if !self.all_down.load(Relaxed) && !self.all_down.swap(true, Relaxed) {
            tracing::error!(%backend, "every server of the backend is unhealthy; sending to all of them (fail open)");
        }
    }

    /// The pick found a usable server.
    #[inline]
    pub fn picked_healthy(&self, backend: &str) {
        if self.all_down.load(Relaxed) && self.all_down.swap(false, Relaxed) {
            tracing::warn!(%backend, "a server of the backend is healthy again; no longer failing open");
        }
    }

    /// Feeds passive health with one exchange's outcome. `servers` are the backend's servers (for the share
    /// that may be ejected at once).
    pub fn observe(&self, servers: &[Arc<Server>], server: &Server, outcome: Outcome, now: u64) {
        let Some(o) = &self.outlier else { return };
        let h = &server.health;
        match outcome {
            Outcome::Unknown => {}
            Outcome::Answered => {
                // Loads before stores: the common case writes nothing, so the line stays shared between cores.
                if h.failures.load(Relaxed) != 0 {
                    h.failures.store(0, Relaxed);
                }
                let streak = h.streak.load(Relaxed);
                if streak != 0 && now >= h.ejected_until.load(Relaxed) + o.ejection.as_millis() as u64 {
                    // A calm period after the last ejection: the next one starts short again.
                    h.streak.store(0, Relaxed);
                }
            }
            Outcome::Failed => {
                let n = h.failures.fetch_add(1, Relaxed) + 1;
                if n < o.consecutive || h.ejected_at(now) {
                    return;
                }
                let allowed = match o.max_ejected_percent {
                    0 => 0,
                    p => (servers.len() * p as usize / 100).max(1),
                };
                let ejected = servers.iter().filter(|s| s.health.ejected_at(now)).count();
                if ejected >= allowed {
                    return;
                }
                let streak = h.streak.fetch_add(1, Relaxed) + 1;
                let period = o.ejection.saturating_mul(streak).min(o.max_ejection);
                h.ejected_until.store(now + period.as_millis() as u64, Relaxed);
                h.failures.store(0, Relaxed);
                h.ejections.fetch_add(1, Relaxed);
                metrics::counter!(crate::telemetry::EJECTIONS_TOTAL,
                    "backend" => server.backend.to_string(), "server" => server.id.to_string())
                .increment(1);
                tracing::warn!(backend = %server.backend, server = %server.id, failures = n,
                    period = %crate::model::format_duration(period), "server ejected after consecutive failures");
            }
        }
    }
}

/// A random factor in [0, 1): std's hasher keys are random per process and per `RandomState`.
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(millis(Instant::now()));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Starts the active checker of `server`; it stops when aborted or when the server is gone.
pub(super) fn spawn_checker(server: &Arc<Server>, check: Arc<HealthCheck>) -> Option<tokio::task::AbortHandle> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let weak = Arc::downgrade(server);
    Some(runtime.spawn(check_loop(weak, check)).abort_handle())
}

/// Stops counting active results for a server whose checks were switched off: it is healthy as far as
/// checks go.
pub(super) fn unchecked(server: &Server) {
    if server.health.down.swap(false, Relaxed) {
        tracing::info!(backend = %server.backend, server = %server.id, "health checks off; the server takes requests");
    }
}

async fn check_loop(server: Weak<Server>, check: Arc<HealthCheck>) {
    // Spread over the first interval, so a backend of many servers (or a restart) does not check all at once.
    tokio::time::sleep_until(slot_after(check.interval.mul_f64(random_unit()), check.interval)).await;
    let mut conn: Option<SendRequest<Empty<Bytes>>> = None;
    let (mut passes, mut fails) = (0u32, 0u32);
    // Worked out once: a server's address never changes (a new URL is a new server).
    let (counters, host) = match server.upgrade() {
        Some(s) => {
            let counter = |result: &'static str| {
                metrics::counter!(crate::telemetry::HEALTH_CHECKS_TOTAL, "backend" => s.backend.to_string(),
                    "server" => s.id.to_string(), "result" => result)
            };
            let host = check.hostname.clone().unwrap_or_else(|| s.authority.to_string());
            ([counter("fail"), counter("pass")], host)
        }
        None => return,
    };
    loop {
        let Some(s) = server.upgrade() else { return };
        let result = tokio::time::timeout(check.timeout, probe(&mut conn, &s, &check.path, &host)).await;
        let passed = match result {
            Ok(Ok(status)) if status.is_success() => true,
            Ok(Ok(status)) => {
                tracing::debug!(backend = %s.backend, server = %s.id, %status, "health check failed");
                false
            }
            Ok(Err(error)) => {
                tracing::debug!(backend = %s.backend, server = %s.id, %error, "health check failed");
                false
            }
            Err(_) => false,
        };
        if !passed {
            conn = None;
        }
        counters[usize::from(passed)].increment(1);
        record(&s, &check, passed, &mut passes, &mut fails);
        drop(s);
        // ±10% so checks that started together drift apart.
        tokio::time::sleep_until(slot_after(check.interval.mul_f64(0.9 + 0.2 * random_unit()), check.interval)).await;
    }
}

/// The start of the first time slot at or after `delay` from now. Checks wake only on slot boundaries, shared
/// by every checker with the same `interval`, so one wake-up of the runtime sends all the checks of a slot
/// instead of each check waking it on its own.
fn slot_after(delay: std::time::Duration, interval: std::time::Duration) -> tokio::time::Instant {
    let slot = (interval.as_nanos() / SLOTS_PER_INTERVAL).clamp(1_000_000, MAX_SLOT.as_nanos());
    let base = epoch();
    let at = (Instant::now() + delay).saturating_duration_since(base).as_nanos();
    let rounded = at.div_ceil(slot) * slot;
    tokio::time::Instant::from_std(base + std::time::Duration::from_nanos(rounded as u64))
}

/// Slots an interval is cut into (at most [`MAX_SLOT`] long): the ±10% jitter still spans four of them.
const SLOTS_PER_INTERVAL: u128 = 20;
const MAX_SLOT: std::time::Duration = std::time::Duration::from_millis(100);

fn record(s: &Server, check: &HealthCheck, passed: bool, passes: &mut u32, fails: &mut u32) {
    let h = &s.health;
    if passed {
        h.checks_passed.fetch_add(1, Relaxed);
        *fails = 0;
        *passes = passes.saturating_add(1);
        if *passes >= check.healthy && h.down.swap(false, Relaxed) {
            tracing::warn!(backend = %s.backend, server = %s.id, passes = *passes,
                "server passed its health checks; it takes requests again");
        }
    } else {
        h.checks_failed.fetch_add(1, Relaxed);
        *passes = 0;
        *fails = fails.saturating_add(1);
        if *fails >= check.unhealthy && !h.down.swap(true, Relaxed) {
            tracing::warn!(backend = %s.backend, server = %s.id, failures = *fails, path = %check.path,
                "server failed its health checks; no new requests until it passes again");
        }
    }
}

/// Health check bodies are read to their end so the connection can be reused, up to this size.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// One check: `GET path` on the kept connection (or a new one). Returns the answer's status.
async fn probe(
    conn: &mut Option<SendRequest<Empty<Bytes>>>,
    server: &Server,
    path: &str,
    host: &str,
) -> Result<http::StatusCode, String> {
    let reusable = conn.as_ref().is_some_and(|c| c.is_ready());
    if !reusable {
        // Through the server's own dialer: the same TLS (CA, SNI, client certificate) as its requests.
        let stream = server.pool.open_h1().await.map_err(|e| e.to_string())?;
        let (tx, c) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = c.await;
        });
        *conn = Some(tx);
    }
    let Some(tx) = conn.as_mut() else { return Err("no connection".to_string()) };
    let req = Request::get(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "ficus-health-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        read += frame.data_ref().map_or(0, |d| d.len());
        if read > MAX_CHECK_BODY {
            // Not worth reading on: the status is known, the connection is given up.
            *conn = None;
            break;
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn checks_wake_on_the_shared_slot_boundary_at_or_after_their_time() {
        let slot =
            |interval: Duration| (interval / SLOTS_PER_INTERVAL as u32).clamp(Duration::from_millis(1), MAX_SLOT);
        for (interval, delay) in [
            (Duration::from_secs(2), Duration::from_millis(1_850)),
            (Duration::from_secs(30), Duration::from_secs(27)),
            (Duration::from_millis(50), Duration::from_millis(47)),
        ] {
            let before = tokio::time::Instant::now() + delay;
            let at = slot_after(delay, interval);
            let after = tokio::time::Instant::now() + delay;
            let step = slot(interval);
            assert!(at >= before, "{interval:?}: woken before its time");
            assert!(at < after + step, "{interval:?}: later than the next slot");
            let since_epoch = at.into_std().duration_since(epoch());
            assert_eq!(since_epoch.as_nanos() % step.as_nanos(), 0, "{interval:?}: not on a slot boundary");
        }
    }
}
