//! A frontend's middleware chain: compiled at reload from the frontend's [`ValidatedMiddleware`]s, stored in the
//! compiled frontend of the routing table, and run by the proxy's `request_filter` phase, after `route` and
//! before `pick`. Each middleware may end the request (429, or a rewrite's 302), change where it goes (a
//! rewrite's path and query), or let it through holding what it must hold until the response ends (a
//! connection slot).
//!
//! Why an enum-dispatched slice and not tower layers: the chain runs inside a phase function over a borrowed
//! request, not as a `Service` that owns the request and returns a future. Tower layers would box a service
//! stack per frontend, turn every middleware into a future and a `poll_ready`, and make an empty chain cost a
//! call through the stack; a `Box<[Middleware]>` costs one length check when empty and one `match` per
//! middleware otherwise, and a rejection is a plain `Err` for the proxy's one error exit. Middlewares that
//! act on the answer (a circuit breaker's window, a trace record, a body template) leave what they need in
//! the [`Admitted`] the request carries, and the proxy hands them the answer's status and head once it has
//! it ([`Admitted::observe`]), or the body for a template ([`Admitted::template`]).
//!
//! State that must outlive a table (token buckets, connection counts, a breaker's state and window, a
//! tracer's socket) lives in limiters kept by the
//! [`Registry`], keyed by frontend id, middleware id and value: a reload that leaves a middleware's key and
//! value alone hands the new table the same limiter, so an unrelated write never resets a bucket, and a changed
//! value starts fresh with the new settings.

mod cbreaker;
mod connlimit;
mod ratelimit;
mod rewrite;
pub mod template;
mod trace;

pub use cbreaker::{CircuitBreaker, State as BreakerState};
pub use connlimit::{ConnGuard, ConnLimiter};
pub use ratelimit::RateLimiter;
pub use rewrite::Rewriter;
pub use trace::Tracer;

use crate::model::{MiddlewareConfig, ValidatedMiddleware, Variable};
use crate::telemetry;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use metrics::Counter;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A compiled chain, in order (smaller Priority first, ties by id). Empty for most frontends: no allocation.
pub type Chain = Box<[Middleware]>;

pub struct Middleware {
    pub id: Arc<str>,
    pub kind: Kind,
    /// `ficus_middleware_rejected_total{frontend,middleware,reason}`, resolved at compile time; for the
    /// middlewares that refuse requests.
    rejected: Option<Counter>,
}

pub enum Kind {
    RateLimit(Arc<RateLimiter>),
    ConnLimit(Arc<ConnLimiter>),
    Rewrite(Rewriter),
    CircuitBreaker(Arc<CircuitBreaker>),
    Trace(Arc<Tracer>),
}

impl Kind {
    fn reason(&self) -> Option<&'static str> {
        match self {
            Kind::RateLimit(_) => Some("rate"),
            Kind::ConnLimit(_) => Some("connections"),
            Kind::CircuitBreaker(_) => Some("circuit_open"),
            Kind::Rewrite(_) | Kind::Trace(_) => None,
        }
    }
}

/// What the chain reads of a request: worked out by the proxy, borrowed here.
pub struct Input<'a> {
    pub method: &'a Method,
    pub client_ip: IpAddr,
    pub host: Option<&'a HeaderValue>,
    pub headers: &'a HeaderMap,
    /// The client spoke TLS (or a trusted proxy in front says `X-Forwarded-Proto: https`): the URL a rewrite
    /// matches starts `https://`.
    pub https: bool,
    /// The request target as received (path and query).
    pub target: &'a str,
}

impl<'a> Input<'a> {
    /// A GET of `target` from `client_ip` with `headers`, over plain HTTP and without a host: what the
    /// middlewares' unit tests feed them.
    #[cfg(test)]
    pub(crate) fn get(headers: &'a HeaderMap, client_ip: IpAddr, target: &'a str) -> Self {
        Input { method: &Method::GET, client_ip, host: None, headers, https: false, target }
    }

    /// The request's URL as Vulcand's rewrite sees it: `scheme://host` and the request target.
    fn url(&self) -> String {
        let host = self.host.map_or("", |h| h.to_str().unwrap_or(""));
        format!("{}://{host}{}", if self.https { "https" } else { "http" }, self.target)
    }
}

/// A request a middleware refused.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub middleware: Arc<str>,
    pub reason: &'static str,
    /// Seconds until a request may pass again (rate limits), for `Retry-After`.
    pub retry_after: Option<u64>,
}

/// What an admitted request holds until its response ends (the connection slots it took), the path and
/// query a rewrite gave it, and what wants to see the answer (breakers, traces, a body template). Empty (no
/// allocation) unless the chain has one of those.
#[derive(Default)]
pub struct Admitted {
    #[allow(dead_code)] // Held for its Drop, which gives the slots back.
    slots: Vec<ConnGuard>,
    /// The path and query to send upstream instead of the client's.
    pub rewritten: Option<String>,
    observers: Vec<Observer>,
    /// Set by a rewrite with `RewriteBody`: the request as the response body's template reads it.
    template: Option<Box<template::RequestView>>,
}

enum Observer {
    Breaker(Arc<CircuitBreaker>),
    Trace(Box<trace::Pending>),
}

impl Admitted {
    /// Gives the connection slots back (a connlimit's count) before the rest of the request's bookkeeping.
    pub fn release_slots(&mut self) {
        self.slots.clear();
    }

    /// Hands the answer to what watches it (a breaker's window, a trace record): the status, the response
    /// head when there is one, the time since the request started. Once per request; no-op for most chains.
    #[inline]
    /// `start` rather than the time taken: the clock is read only when someone observes.
    pub fn observe(&mut self, status: u16, headers: Option<&HeaderMap>, start: Instant) {
        if self.observers.is_empty() {
            return;
        }
        let elapsed = start.elapsed();
        for o in self.observers.drain(..) {
            match o {
                Observer::Breaker(b) => b.record(status, elapsed),
                Observer::Trace(t) => t.finish(status, headers, elapsed),
            }
        }
    }

    /// The request view a `RewriteBody` template reads, when the chain had one that applied.
    pub fn template(&mut self) -> Option<Box<template::RequestView>> {
        self.template.take()
    }
}

/// Why the chain ended a request before a server was picked.
#[derive(Debug, Clone)]
pub enum Stop {
    Rejected(Rejected),
    /// A rewrite with `Redirect` matched, or a tripped breaker's redirect fallback: answer 302 with this
    /// `Location`.
    Redirect(String),
    /// A tripped breaker's response fallback.
    Respond {
        middleware: Arc<str>,
        status: StatusCode,
        content_type: HeaderValue,
        body: Bytes,
    },
}

/// Runs the chain in order. The first middleware that refuses or redirects ends it; slots taken by earlier
/// ones are given back as the partial `Admitted` drops. Each rewrite sees the URL as earlier rewrites left it.
pub fn run(chain: &[Middleware], input: &Input<'_>) -> Result<Admitted, Stop> {
    let mut admitted = Admitted::default();
    let mut url: Option<String> = None;
    let mut rewritten = false;
    for m in chain {
        let refused = match &m.kind {
            Kind::RateLimit(r) => r.admit(input).err().map(Some),
            Kind::ConnLimit(c) => match c.acquire(input) {
                Some(slot) => {
                    admitted.slots.push(slot);
                    None
                }
                None => Some(None),
            },
            Kind::CircuitBreaker(b) => match b.admit(input.target) {
                Ok(()) => {
                    admitted.observers.push(Observer::Breaker(b.clone()));
                    None
                }
                Err(stop) => {
                    if let Some(c) = &m.rejected {
                        c.increment(1);
                    }
                    return Err(stop);
                }
            },
            Kind::Trace(t) => {
                admitted.observers.push(Observer::Trace(Box::new(t.capture(input))));
                None
            }
            Kind::Rewrite(rw) => {
                if rw.config.rewrite_body && admitted.template.is_none() {
                    admitted.template = Some(Box::new(template::RequestView {
                        method: input.method.clone(),
                        host: input.host.map_or("", |h| h.to_str().unwrap_or("")).to_string(),
                        target: input.target.to_string(),
                        remote_addr: input.client_ip.to_string(),
                        headers: input.headers.clone(),
                    }));
                }
                if rw.config.regexp.is_none() {
                    continue;
                }
                let current = url.get_or_insert_with(|| input.url());
                if let Some(new) = rw.apply(current, input) {
                    if rw.config.redirect && new != *current {
                        return Err(Stop::Redirect(new));
                    }
                    *current = new;
                    rewritten = true;
                }
                None
            }
        };
        if let Some(retry_after) = refused {
            if let Some(c) = &m.rejected {
                c.increment(1);
            }
            let reason = m.kind.reason().unwrap_or("refused");
            return Err(Stop::Rejected(Rejected { middleware: m.id.clone(), reason, retry_after }));
        }
    }
    if rewritten {
        admitted.rewritten = url.as_deref().map(rewrite::path_and_query);
    }
    Ok(admitted)
}

/// The variable's value for one request, as bytes, written into `buf` when it has to be built (an IP).
fn key_of<'a>(variable: &Variable, input: &'a Input<'_>, buf: &'a mut [u8; 16]) -> &'a [u8] {
    match variable {
        Variable::ClientIp => match input.client_ip {
            IpAddr::V4(v4) => {
                buf[..4].copy_from_slice(&v4.octets());
                &buf[..4]
            }
            IpAddr::V6(v6) => {
                *buf = v6.octets();
                &buf[..]
            }
        },
        Variable::RequestHost => input.host.map_or(&[][..], HeaderValue::as_bytes),
        // A missing header counts as the empty value, as in Vulcand: such requests share one bucket.
        Variable::Header(name) => input.headers.get(name).map_or(&[][..], HeaderValue::as_bytes),
    }
}

/// Limiters by frontend id, middleware id and value, kept while some table uses them. Owned by the table
/// compiler; only reloads touch it, never requests.
#[derive(Default)]
pub struct Registry {
    rate: Kept<RateLimiter>,
    conn: Kept<ConnLimiter>,
    breakers: Kept<CircuitBreaker>,
    tracers: Kept<Tracer>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles one frontend's chain, reusing the limiters of unchanged middlewares.
    pub fn compile(&self, frontend: &str, middlewares: &[ValidatedMiddleware]) -> Chain {
        let mut chain = Vec::with_capacity(middlewares.len());
        for m in middlewares {
            let key = (frontend.to_string(), m.id.clone(), m.value.clone());
            let kind = match &m.config {
                MiddlewareConfig::RateLimit(c) => {
                    Kind::RateLimit(self.rate.get_or_make(key, || RateLimiter::new(c.clone())))
                }
                MiddlewareConfig::ConnLimit(c) => {
                    Kind::ConnLimit(self.conn.get_or_make(key, || ConnLimiter::new(c.clone())))
                }
                MiddlewareConfig::Rewrite(c) => Kind::Rewrite(Rewriter::new(c.clone())),
                MiddlewareConfig::CircuitBreaker(c) => Kind::CircuitBreaker(
                    self.breakers.get_or_make(key, || CircuitBreaker::new((**c).clone(), frontend, &m.id)),
                ),
                MiddlewareConfig::Trace(c) => {
                    Kind::Trace(self.tracers.get_or_make(key, || Tracer::new(c.clone(), frontend)))
                }
                MiddlewareConfig::Unsupported => continue,
            };
            let rejected = kind.reason().map(|reason| {
                metrics::counter!(telemetry::MIDDLEWARE_REJECTED_TOTAL,
                    "frontend" => frontend.to_string(), "middleware" => m.id.clone(), "reason" => reason)
            });
            chain.push(Middleware { id: m.id.as_str().into(), kind, rejected });
        }
        chain.into_boxed_slice()
    }
}

impl Registry {
    /// The live breaker of a frontend's middleware, for `/status`.
    pub fn breaker(&self, frontend: &str, m: &ValidatedMiddleware) -> Option<Arc<CircuitBreaker>> {
        self.breakers.get(&(frontend.to_string(), m.id.clone(), m.value.clone()))
    }
}

/// A breaker's state as `/status` shows it: read when the status is served, not when it was built.
#[derive(Clone)]
pub struct BreakerView(pub Arc<CircuitBreaker>);

impl std::fmt::Debug for BreakerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.state().as_str())
    }
}

impl serde::Serialize for BreakerView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.state().as_str())
    }
}

/// The shard a key's state lives in: limiters split their maps so concurrent requests rarely meet on a lock.
fn shard_of(key: &[u8], shards: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = SHARD_HASH.build_hasher();
    h.write(key);
    (h.finish() as usize) % shards
}

static SHARD_HASH: std::sync::LazyLock<std::collections::hash_map::RandomState> =
    std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);

/// Shards per limiter.
const SHARDS: usize = 16;

/// A limiter's per-value state (a schedule, a count) in `SHARDS` maps.
type Shards = Box<[Mutex<HashMap<Box<[u8]>, u64>>]>;

/// Limiters by (frontend id, middleware id, value), held weakly: a limiter lives as long as a table uses it.
type Kept<T> = crate::kept::Kept<(String, String, String), T>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RateLimitConfig, Variable};

    fn rl(id: &str, priority: i32, burst: u64) -> ValidatedMiddleware {
        let config =
            RateLimitConfig { requests: 1, period_seconds: 1, burst, variable: Variable::ClientIp, rate_var: None };
        ValidatedMiddleware {
            id: id.into(),
            kind: "ratelimit".into(),
            priority,
            value: format!("ratelimit:{burst}"),
            config: MiddlewareConfig::RateLimit(config),
        }
    }

    fn limiter(chain: &Chain) -> &Arc<RateLimiter> {
        match &chain[0].kind {
            Kind::RateLimit(r) => r,
            _ => panic!("a rate limit"),
        }
    }

    #[test]
    fn state_is_kept_while_key_and_value_are_unchanged() {
        let registry = Registry::new();
        let first = registry.compile("f", &[rl("m", 1, 3)]);
        let again = registry.compile("f", &[rl("m", 7, 3)]);
        assert!(Arc::ptr_eq(limiter(&first), limiter(&again)), "priority is not part of the state");
        let changed = registry.compile("f", &[rl("m", 1, 4)]);
        assert!(!Arc::ptr_eq(limiter(&first), limiter(&changed)), "a new value starts afresh");
        let other = registry.compile("g", &[rl("m", 1, 3)]);
        assert!(!Arc::ptr_eq(limiter(&first), limiter(&other)), "another frontend has its own");
        assert!(registry.compile("f", &[]).is_empty());
    }
}
