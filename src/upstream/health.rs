//! Per-server health, kept on the [`Server`] so it outlives table generations and is shared by every frontend
//! that uses the backend. Two sources feed it: active checks (one task per server, `Settings.HealthCheck`)
//! and passive ejection (the proxy reports each exchange's outcome, `Settings.Outlier`). The pick phase reads
//! the result with two relaxed atomic loads ([`Health::usable`]); nothing on the request path takes a lock.
//!
//! Times are milliseconds on one process-wide monotonic clock ([`millis`]), so an ejection's end fits in an
//! `AtomicU64` and the proxy can compare it against the request's start without another clock read.

use super::pool::UpstreamIo;
use super::Server;
use crate::model::{HealthCheck, Outlier};
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
    tokio::time::sleep(check.interval.mul_f64(random_unit())).await;
    let mut conn: Option<CheckConn> = None;
    let (mut passes, mut fails) = (0u32, 0u32);
    // Worked out once: a server's address never changes (a new URL is a new server).
    let (counters, request) = match server.upgrade() {
        Some(s) => {
            let counter = |result: &'static str| {
                metrics::counter!(crate::telemetry::HEALTH_CHECKS_TOTAL, "backend" => s.backend.to_string(),
                    "server" => s.id.to_string(), "result" => result)
            };
            let host = check.hostname.clone().unwrap_or_else(|| s.authority.to_string());
            let request =
                format!("GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ficus-health-check\r\n\r\n", check.path);
            ([counter("fail"), counter("pass")], request.into_bytes())
        }
        None => return,
    };
    loop {
        let Some(s) = server.upgrade() else { return };
        let result = tokio::time::timeout(check.timeout, probe(&mut conn, &s, &request)).await;
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
        tokio::time::sleep(check.interval.mul_f64(0.9 + 0.2 * random_unit())).await;
    }
}

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

/// Health check bodies are read to their end so the connection can be reused, up to this size; a longer head
/// is a failure.
const MAX_CHECK_BODY: usize = 64 * 1024;
const MAX_CHECK_HEAD: usize = 16 * 1024;

/// A checker's kept-alive connection and its read buffer.
struct CheckConn {
    io: UpstreamIo,
    buf: Vec<u8>,
}

/// One check: the request (serialised once per checker) on the kept connection, or on a new one. Returns
/// the answer's status. Spoken by hand rather than through hyper's client: a check is one small request and
/// one small answer, and without a connection task per checker a thousand servers cost a third as much.
/// A kept connection the server closed while idle is noticed when nothing comes back, and the check goes
/// out again once on a new connection.
async fn probe(conn: &mut Option<CheckConn>, server: &Server, request: &[u8]) -> Result<http::StatusCode, String> {
    let reused = conn.is_some();
    match exchange(conn, server, request).await {
        Err(Exchange::NothingBack(_)) if reused => {
            *conn = None;
            exchange(conn, server, request).await.map_err(Exchange::into_message)
        }
        other => other.map_err(Exchange::into_message),
    }
}

enum Exchange {
    /// The connection ended (or broke) before any byte of an answer.
    NothingBack(String),
    Failed(String),
}

impl Exchange {
    fn into_message(self) -> String {
        match self {
            Exchange::NothingBack(m) | Exchange::Failed(m) => m,
        }
    }
}

async fn exchange(conn: &mut Option<CheckConn>, server: &Server, request: &[u8]) -> Result<http::StatusCode, Exchange> {
    if conn.is_none() {
        let io = server.pool.connect_io().await.map_err(|e| Exchange::Failed(e.to_string()))?;
        *conn = Some(CheckConn { io, buf: Vec::with_capacity(1024) });
    }
    let Some(c) = conn.as_mut() else { return Err(Exchange::Failed("no connection".to_string())) };
    let result = answer(c, request).await;
    match &result {
        Ok((_, true)) => {}
        // Not reusable (no length, `Connection: close`, too long), or broken.
        _ => *conn = None,
    }
    result.map(|(status, _)| status)
}

/// Sends the request and reads the answer; returns its status and whether the connection can be reused.
async fn answer(c: &mut CheckConn, request: &[u8]) -> Result<(http::StatusCode, bool), Exchange> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    c.io.write_all(request).await.map_err(|e| Exchange::NothingBack(e.to_string()))?;
    c.buf.clear();
    let head_end = loop {
        if let Some(at) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if c.buf.len() > MAX_CHECK_HEAD {
            return Err(Exchange::Failed("answer head too long".to_string()));
        }
        match c.io.read_buf(&mut c.buf).await {
            Ok(0) if c.buf.is_empty() => return Err(Exchange::NothingBack("closed without an answer".to_string())),
            Ok(0) => return Err(Exchange::Failed("closed in the middle of the answer".to_string())),
            Ok(_) => {}
            Err(e) if c.buf.is_empty() => return Err(Exchange::NothingBack(e.to_string())),
            Err(e) => return Err(Exchange::Failed(e.to_string())),
        }
    };
    let head =
        std::str::from_utf8(&c.buf[..head_end]).map_err(|_| Exchange::Failed("answer head is not text".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| http::StatusCode::from_u16(code).ok())
        .ok_or_else(|| Exchange::Failed(format!("not an HTTP/1 status line: {status_line:?}")))?;
    let (mut length, mut close) = (None, status_line.starts_with("HTTP/1.0"));
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // A chunked body is not worth parsing for a check: the status is known, the connection goes.
            close = true;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let Some(length) = length.filter(|l| *l <= MAX_CHECK_BODY && !close) else { return Ok((status, false)) };
    while c.buf.len() < head_end + length {
        match c.io.read_buf(&mut c.buf).await {
            Ok(0) | Err(_) => return Ok((status, false)),
            Ok(_) => {}
        }
    }
    // Anything past the body would be an answer to no request: the connection is not trusted again.
    Ok((status, c.buf.len() == head_end + length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection whose peer answers each request head with the next of `answers`, then closes.
    async fn conn(answers: Vec<&'static [u8]>) -> CheckConn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else { return };
            for a in answers {
                let mut buf = [0u8; 1024];
                if s.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = s.write_all(a).await;
            }
        });
        let io = UpstreamIo::Plain(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        CheckConn { io, buf: Vec::new() }
    }

    fn ok(r: Result<(http::StatusCode, bool), Exchange>) -> (u16, bool) {
        match r {
            Ok((s, reuse)) => (s.as_u16(), reuse),
            Err(e) => panic!("{}", e.into_message()),
        }
    }

    #[tokio::test]
    async fn answers_are_read_by_length_and_the_connection_kept_only_when_that_is_safe() {
        const REQ: &[u8] = b"GET /h HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut c = conn(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ])
        .await;
        assert_eq!(ok(answer(&mut c, REQ).await), (200, true));
        assert_eq!(ok(answer(&mut c, REQ).await), (503, true));
        assert_eq!(ok(answer(&mut c, REQ).await), (200, false), "a chunked answer is not read on");
        assert!(matches!(answer(&mut c, REQ).await, Err(Exchange::NothingBack(_))), "closed after the last");
        let mut c = conn(vec![b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"]).await;
        assert_eq!(ok(answer(&mut c, REQ).await), (200, false));
        let mut c = conn(vec![b"SSH-2.0-OpenSSH\r\n\r\n"]).await;
        assert!(matches!(answer(&mut c, REQ).await, Err(Exchange::Failed(_))));
    }
}
