//! Vulcand's `cbreaker`: watches its frontend's recent answers and, when the condition holds, answers with the
//! fallback instead of the backend for a while, then lets traffic back gradually. Run by the chain in
//! `request_filter` (admit or fall back) and fed by the proxy once the answer's status is known
//! ([`super::Admitted::observe`]); kept across reloads by the registry while the middleware's key and value are
//! unchanged, so a reload neither closes a tripped breaker nor forgets its window.
//!
//! States, as Vulcand documents them: `Standby` (every request passes; the condition is evaluated at most once
//! per `CheckPeriod`) -> `Tripped` (every request gets the fallback for `FallbackDuration`) -> `Recovering`
//! (the window starts empty; the share of requests let through grows linearly from 0 to all over
//! `RecoveryDuration`; the condition holding again trips it) -> `Standby`. Entering `Tripped` sends the
//! `OnTripped` webhook and going back to `Standby` the `OnStandby` one, each from a task of its own.
//!
//! The window is ten one-second slots of atomic counters (requests, network errors, the status ranges the
//! condition names, a latency histogram when it asks for quantiles), so recording takes no lock. A slot is
//! reused when its second comes round again: the first recorder of the new second swaps its epoch and zeroes
//! it; a racing recorder may land its count in the old second or be lost, a bounded inaccuracy a breaker can
//! live with. Everything the condition needs is worked out at compile time from its calls.

use super::Stop;
use crate::model::{BreakerFn, CircuitBreakerConfig, Fallback, Webhook};
use crate::predicate::{Env, Literal, Value};
use bytes::Bytes;
use http::HeaderValue;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SLOTS: usize = 10;
const SLOT_NS: u64 = 1_000_000_000;
/// Latency histogram: slot 0 is under 100 µs, slot i above holds up to 100 µs x 2^(i/4), about 19% wide.
const LATENCY_SLOTS: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Standby = 0,
    Tripped = 1,
    Recovering = 2,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Tripped,
            2 => State::Recovering,
            _ => State::Standby,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Standby => "standby",
            State::Tripped => "tripped",
            State::Recovering => "recovering",
        }
    }
}

struct Slot {
    epoch: AtomicU64,
    total: AtomicU64,
    net_errors: AtomicU64,
    /// One counter per status range the condition names, in `CircuitBreaker::ranges` order.
    ranges: Box<[AtomicU64]>,
    /// Empty unless the condition asks for a latency quantile.
    latency: Box<[AtomicU64]>,
}

impl Slot {
    fn zero(&self) {
        for c in [&self.total, &self.net_errors].into_iter().chain(self.ranges.iter()).chain(self.latency.iter()) {
            c.store(0, Ordering::Relaxed);
        }
    }
}

pub struct CircuitBreaker {
    pub config: CircuitBreakerConfig,
    frontend: Arc<str>,
    middleware: Arc<str>,
    origin: Instant,
    state: AtomicU8,
    /// When the current state was entered (ns since `origin`).
    since: AtomicU64,
    next_check: AtomicU64,
    recover_seen: AtomicU64,
    recover_let: AtomicU64,
    /// The distinct `[from, to)` status ranges `ResponseCodeRatio` calls name.
    ranges: Box<[(i64, i64)]>,
    slots: Box<[Slot]>,
    /// The fallback answer, built once.
    fallback: FallbackAnswer,
}

enum FallbackAnswer {
    Response { status: http::StatusCode, content_type: HeaderValue, body: Bytes },
    Redirect { url: String, preserve_path: bool },
}

/// What the window holds when the condition is evaluated: the sums over the live slots.
struct Snapshot<'a> {
    breaker: &'a CircuitBreaker,
    total: u64,
    net_errors: u64,
    ranges: [u64; 16],
    latency: [u64; LATENCY_SLOTS],
}

impl Env<BreakerFn> for Snapshot<'_> {
    fn call<'a>(&'a self, func: BreakerFn, args: &'a [Literal]) -> Value<'a> {
        match func {
            BreakerFn::NetworkErrorRatio => Value::Float(ratio(self.net_errors, self.total)),
            BreakerFn::LatencyAtQuantileMs => {
                Value::Float(self.quantile_ms(args.first().map_or(50.0, Literal::as_float)))
            }
            BreakerFn::ResponseCodeRatio => {
                let count = |a: &[Literal]| {
                    let range = (a[0].as_int(), a[1].as_int());
                    self.breaker.ranges.iter().position(|r| *r == range).map_or(0, |i| self.ranges[i])
                };
                if args.len() < 4 {
                    return Value::Float(0.0);
                }
                Value::Float(ratio(count(&args[0..2]), count(&args[2..4])))
            }
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Snapshot<'_> {
    fn quantile_ms(&self, q: f64) -> f64 {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let want = ((q.clamp(0.0, 100.0) / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= want {
                return upper_bound_us(i) / 1000.0;
            }
        }
        upper_bound_us(LATENCY_SLOTS - 1) / 1000.0
    }
}

fn upper_bound_us(i: usize) -> f64 {
    100.0 * 2f64.powf(i as f64 / 4.0)
}

fn latency_slot(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us < 100.0 {
        return 0;
    }
    ((4.0 * (us / 100.0).log2()).ceil() as usize).clamp(1, LATENCY_SLOTS - 1)
}

/// At most this many distinct status ranges per condition (each `ResponseCodeRatio` names two).
const MAX_RANGES: usize = 16;

impl CircuitBreaker {
    pub fn new(config: CircuitBreakerConfig, frontend: &str, middleware: &str) -> Self {
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        let mut latency = false;
        for (func, args) in config.condition.calls() {
            match func {
                BreakerFn::ResponseCodeRatio if args.len() == 4 => {
                    for r in [(args[0].as_int(), args[1].as_int()), (args[2].as_int(), args[3].as_int())] {
                        if !ranges.contains(&r) && ranges.len() < MAX_RANGES {
                            ranges.push(r);
                        }
                    }
                }
                BreakerFn::LatencyAtQuantileMs => latency = true,
                _ => {}
            }
        }
        let slots = (0..SLOTS)
            .map(|_| Slot {
                epoch: AtomicU64::new(u64::MAX),
                total: AtomicU64::new(0),
                net_errors: AtomicU64::new(0),
                ranges: ranges.iter().map(|_| AtomicU64::new(0)).collect(),
                latency: (0..if latency { LATENCY_SLOTS } else { 0 }).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        let fallback = match &config.fallback {
            Fallback::Response { status, content_type, body } => FallbackAnswer::Response {
                status: *status,
                content_type: content_type.clone(),
                body: Bytes::from(body.clone()),
            },
            Fallback::Redirect { url, preserve_path } => {
                FallbackAnswer::Redirect { url: url.clone(), preserve_path: *preserve_path }
            }
        };
        CircuitBreaker {
            config,
            frontend: frontend.into(),
            middleware: middleware.into(),
            origin: Instant::now(),
            state: AtomicU8::new(State::Standby as u8),
            since: AtomicU64::new(0),
            next_check: AtomicU64::new(0),
            recover_seen: AtomicU64::new(0),
            recover_let: AtomicU64::new(0),
            ranges: ranges.into_boxed_slice(),
            slots,
            fallback,
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Decides one request: `Ok` lets it through (its answer is then to be [`record`](Self::record)ed),
    /// `Err` is the fallback.
    pub fn admit(&self, target: &str) -> Result<(), Stop> {
        let now = self.now();
        self.check(now);
        match self.state() {
            State::Standby => Ok(()),
            State::Tripped => {
                let since = self.since.load(Ordering::Acquire);
                if now.saturating_sub(since) < self.config.fallback_duration.as_nanos() as u64 {
                    return Err(self.fallback(target));
                }
                if self.move_to(State::Tripped, State::Recovering, now) {
                    self.reset_window();
                    self.recover_seen.store(0, Ordering::Relaxed);
                    self.recover_let.store(0, Ordering::Relaxed);
                    // Let the window fill before the condition is asked again.
                    self.next_check.store(now + self.config.check_period.as_nanos() as u64, Ordering::Relaxed);
                }
                self.ramp(now, target)
            }
            State::Recovering => self.ramp(now, target),
        }
    }

    fn ramp(&self, now: u64, target: &str) -> Result<(), Stop> {
        let since = self.since.load(Ordering::Acquire);
        let recovery = self.config.recovery_duration.as_nanos().max(1) as u64;
        let elapsed = now.saturating_sub(since);
        if elapsed >= recovery {
            if self.move_to(State::Recovering, State::Standby, now) {
                self.fire(self.config.on_standby.as_ref(), State::Standby);
            }
            return Ok(());
        }
        let share = elapsed as f64 / recovery as f64;
        let seen = self.recover_seen.fetch_add(1, Ordering::Relaxed) + 1;
        let let_through = self.recover_let.load(Ordering::Relaxed);
        if (let_through as f64) < share * seen as f64 {
            self.recover_let.fetch_add(1, Ordering::Relaxed);
            Ok(())
        } else {
            Err(self.fallback(target))
        }
    }

    /// Evaluates the condition when a check period has passed since the last one (one request does it).
    fn check(&self, now: u64) {
        let next = self.next_check.load(Ordering::Relaxed);
        if now < next {
            return;
        }
        let period = self.config.check_period.as_nanos() as u64;
        if self.next_check.compare_exchange(next, now + period, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return;
        }
        let from = self.state();
        if from == State::Tripped {
            return;
        }
        if self.config.condition.eval(&self.snapshot(now)) && self.move_to(from, State::Tripped, now) {
            tracing::warn!(target: "config", frontend = %self.frontend, middleware = %self.middleware,
                condition = self.config.condition.text(), "circuit breaker tripped");
            self.fire(self.config.on_tripped.as_ref(), State::Tripped);
        }
    }

    fn move_to(&self, from: State, to: State, now: u64) -> bool {
        if self.state.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        self.since.store(now, Ordering::Release);
        if to == State::Standby {
            tracing::info!(target: "config", frontend = %self.frontend, middleware = %self.middleware,
                "circuit breaker recovered");
        }
        true
    }

    fn fallback(&self, target: &str) -> Stop {
        match &self.fallback {
            FallbackAnswer::Response { status, content_type, body } => Stop::Respond {
                middleware: self.middleware.clone(),
                status: *status,
                content_type: content_type.clone(),
                body: body.clone(),
            },
            FallbackAnswer::Redirect { url, preserve_path: false } => Stop::Redirect(url.clone()),
            FallbackAnswer::Redirect { url, preserve_path: true } => {
                Stop::Redirect(format!("{}{}", url.trim_end_matches('/'), target))
            }
        }
    }

    /// Counts one answer of a request the breaker let through.
    pub fn record(&self, status: u16, latency: Duration) {
        let now = self.now();
        let epoch = now / SLOT_NS;
        let slot = &self.slots[(epoch % SLOTS as u64) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != epoch && slot.epoch.compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            slot.zero();
        }
        slot.total.fetch_add(1, Ordering::Relaxed);
        if status == 502 || status == 504 {
            slot.net_errors.fetch_add(1, Ordering::Relaxed);
        }
        let code = i64::from(status);
        for (i, (from, to)) in self.ranges.iter().enumerate() {
            if (*from..*to).contains(&code) {
                slot.ranges[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        if !slot.latency.is_empty() {
            slot.latency[latency_slot(latency)].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reset_window(&self) {
        for s in self.slots.iter() {
            s.epoch.store(u64::MAX, Ordering::Release);
            s.zero();
        }
    }

    fn snapshot(&self, now: u64) -> Snapshot<'_> {
        let epoch = now / SLOT_NS;
        let mut snap =
            Snapshot { breaker: self, total: 0, net_errors: 0, ranges: [0; MAX_RANGES], latency: [0; LATENCY_SLOTS] };
        for s in self.slots.iter() {
            let e = s.epoch.load(Ordering::Acquire);
            if e > epoch || epoch - e >= SLOTS as u64 {
                continue;
            }
            snap.total += s.total.load(Ordering::Relaxed);
            snap.net_errors += s.net_errors.load(Ordering::Relaxed);
            for (i, c) in s.ranges.iter().enumerate() {
                snap.ranges[i] += c.load(Ordering::Relaxed);
            }
            for (i, c) in s.latency.iter().enumerate() {
                snap.latency[i] += c.load(Ordering::Relaxed);
            }
        }
        snap
    }

    /// Sends a state change's webhook from a task of its own: never on the request's time.
    fn fire(&self, hook: Option<&Webhook>, to: State) {
        let Some(hook) = hook else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(frontend = %self.frontend, "no runtime to send the breaker's webhook from");
            return;
        };
        let (frontend, middleware, hook) = (self.frontend.clone(), self.middleware.clone(), hook.clone());
        rt.spawn(async move {
            match tokio::time::timeout(WEBHOOK_TIMEOUT, send_webhook(&hook)).await {
                Ok(Ok(status)) => tracing::info!(target: "config", %frontend, %middleware, state = to.as_str(),
                    url = %hook.url, status, "circuit breaker webhook sent"),
                Ok(Err(e)) => tracing::warn!(target: "config", %frontend, %middleware, state = to.as_str(),
                    url = %hook.url, error = %e, "circuit breaker webhook failed"),
                Err(_) => tracing::warn!(target: "config", %frontend, %middleware, state = to.as_str(),
                    url = %hook.url, "circuit breaker webhook timed out"),
            }
        });
    }
}

const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

type HookClient =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, http_body_util::Full<Bytes>>;

static HOOK_CLIENT: std::sync::LazyLock<HookClient> = std::sync::LazyLock::new(|| {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
});

async fn send_webhook(hook: &Webhook) -> Result<u16, String> {
    let https = hook.url.scheme_str() == Some("https");
    // An https request goes over a connection of its own (origin-form target, Host header); http through the
    // shared client.
    let target =
        if https { hook.url.path_and_query().map_or("/", |pq| pq.as_str()).to_string() } else { hook.url.to_string() };
    let mut req = http::Request::builder().method(hook.method.clone()).uri(target);
    if let Some(authority) = hook.url.authority().filter(|_| https) {
        req = req.header(http::header::HOST, authority.as_str());
    }
    for (n, v) in &hook.headers {
        req = req.header(n, v);
    }
    let req = req.body(http_body_util::Full::new(Bytes::from(hook.body.clone()))).map_err(|e| e.to_string())?;
    if !https {
        let resp = HOOK_CLIENT.request(req).await.map_err(|e| e.to_string())?;
        return Ok(resp.status().as_u16());
    }
    let host = hook.url.host().ok_or("no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = hook.url.port_u16().unwrap_or(443);
    let config = crate::model::system_client_config()?;
    let tcp = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BREAKER_VOCABULARY;

    fn breaker(condition: &str, fallback_ms: u64, recovery_ms: u64) -> CircuitBreaker {
        let config = CircuitBreakerConfig {
            condition: crate::predicate::compile(condition, BREAKER_VOCABULARY).unwrap(),
            fallback: Fallback::Response {
                status: http::StatusCode::BAD_REQUEST,
                content_type: HeaderValue::from_static("text/plain"),
                body: "Come back later".into(),
            },
            fallback_duration: Duration::from_millis(fallback_ms),
            recovery_duration: Duration::from_millis(recovery_ms),
            check_period: Duration::from_nanos(1),
            on_tripped: None,
            on_standby: None,
        };
        CircuitBreaker::new(config, "f", "cb")
    }

    #[test]
    fn the_window_answers_the_conditions_functions() {
        let b = breaker("ResponseCodeRatio(500, 600, 0, 600) > 0.5 || LatencyAtQuantileMS(50.0) > 5", 1000, 1000);
        for _ in 0..3 {
            b.record(503, Duration::from_millis(1));
        }
        b.record(200, Duration::from_millis(1));
        b.record(502, Duration::from_millis(20));
        let snap = b.snapshot(b.now());
        assert_eq!((snap.total, snap.net_errors), (5, 1));
        let p = crate::predicate::compile("ResponseCodeRatio(500, 600, 0, 600) > 0.79", BREAKER_VOCABULARY).unwrap();
        assert!(p.eval(&snap), "4 of 5 in [500, 600)");
        let p50 = snap.quantile_ms(50.0);
        assert!((1.0..1.3).contains(&p50), "{p50}");
        assert!(snap.quantile_ms(99.0) >= 20.0);
    }

    #[test]
    fn trips_falls_back_then_ramps_back_to_standby() {
        let b = breaker("NetworkErrorRatio() > 0.5", 30, 60);
        assert!(b.admit("/").is_ok());
        b.record(502, Duration::from_millis(1));
        assert!(matches!(b.admit("/"), Err(Stop::Respond { .. })), "tripped on the next request");
        assert_eq!(b.state(), State::Tripped);
        std::thread::sleep(Duration::from_millis(40));
        // Recovering: the window starts empty; early on, most requests still get the fallback.
        let first = b.admit("/");
        assert_eq!(b.state(), State::Recovering);
        assert!(first.is_err(), "nothing passes at the very start of the ramp");
        let mut passed = 0;
        while b.state() == State::Recovering {
            if b.admit("/").is_ok() {
                passed += 1;
                b.record(200, Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(passed > 0, "some traffic passed during the ramp");
        assert_eq!(b.state(), State::Standby);
        assert!(b.admit("/").is_ok());
    }
}
