//! Vulcand's `ratelimit`: a token bucket per value of the middleware's variable (client IP, host, a header),
//! `Burst` requests at once, refilled at `Requests` per `PeriodSeconds`. Run by the chain in `request_filter`;
//! kept across reloads by the registry while the middleware's value is unchanged.
//!
//! Each bucket is one number, its theoretical arrival time (the generic cell rate algorithm, the token bucket
//! written as a schedule): a request passes when it comes no earlier than `Burst - 1` intervals before the
//! schedule, and moves the schedule on by one interval. A bucket whose schedule lies in the past is full,
//! which is the same as no bucket: those are the ones evicted when a shard reaches its cap, so memory stays
//! bounded however many clients come.
//!
//! The buckets sit in a few mutex-guarded shards. This is the one lock on the request path, and only on a
//! frontend with a rate limit: held for a hash lookup and an addition, split so that concurrent requests
//! rarely meet on it. A lock-free map would need a new dependency for the same few nanoseconds.

use super::{key_of, shard_of, Input, Shards, SHARDS};
use crate::model::RateLimitConfig;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept per shard before idle ones are evicted: 16 x 4096 clients per middleware.
const SHARD_CAP: usize = 4096;

pub struct RateLimiter {
    pub config: RateLimitConfig,
    /// Nanoseconds between two tokens.
    interval: u64,
    /// How far ahead of now the schedule may run: `(Burst - 1)` intervals.
    tolerance: u64,
    origin: Instant,
    shards: Shards,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        let period_ns = config.period_seconds.saturating_mul(1_000_000_000);
        // Validation keeps Requests, PeriodSeconds and Burst above 0.
        let interval = (period_ns / config.requests.max(1)).max(1);
        let tolerance = interval.saturating_mul(config.burst.saturating_sub(1));
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        RateLimiter { config, interval, tolerance, origin: Instant::now(), shards }
    }

    /// Takes a token for the request, or says in how many whole seconds one will be there. With `RateVar`,
    /// rates the request's header gives replace the configured ones, each its own bucket per value (the
    /// header's rates are part of the bucket's key, so a client cannot reset its bucket by changing them
    /// back and forth without being counted under each).
    pub fn admit(&self, input: &Input<'_>) -> Result<(), u64> {
        let mut buf = [0u8; 16];
        let key = key_of(&self.config.variable, input, &mut buf);
        if let Some(rates) =
            self.config.rate_var.as_ref().and_then(|h| input.headers.get(h)).and_then(|v| rates(v.as_bytes()))
        {
            let mut wait = None;
            let mut k = Vec::with_capacity(key.len() + 24);
            for r in rates {
                k.clear();
                k.extend_from_slice(key);
                for n in [r.period_sec, r.average, r.burst] {
                    k.extend_from_slice(&n.to_le_bytes());
                }
                let interval = (r.period_sec.saturating_mul(1_000_000_000) / r.average).max(1);
                let tolerance = interval.saturating_mul(r.burst.saturating_sub(1));
                if let Err(w) = self.take(&k, interval, tolerance) {
                    wait = Some(wait.map_or(w, |old: u64| old.max(w)));
                }
            }
            return wait.map_or(Ok(()), Err);
        }
        self.take(key, self.interval, self.tolerance)
    }

    fn take(&self, key: &[u8], interval: u64, tolerance: u64) -> Result<(), u64> {
        let now = self.origin.elapsed().as_nanos() as u64;
        let mut shard = self.shards[shard_of(key, SHARDS)].lock().unwrap_or_else(|p| p.into_inner());
        let tat = match shard.get_mut(key) {
            Some(tat) => tat,
            None => {
                if shard.len() >= SHARD_CAP {
                    evict(&mut shard, now);
                }
                shard.entry(key.into()).or_insert(now)
            }
        };
        let scheduled = (*tat).max(now);
        let ahead = scheduled - now;
        if ahead > tolerance {
            let wait_ns = ahead - tolerance;
            return Err(wait_ns.div_ceil(1_000_000_000).max(1));
        }
        // Saturating: a period of billions of seconds (in config, or in a client's `RateVar` header) makes an
        // interval near `u64::MAX`, and a wrapped sum would put the bucket back at full.
        *tat = scheduled.saturating_add(interval);
        Ok(())
    }

    /// Buckets held, for tests of the memory bound.
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }
}

/// One rate of a `RateVar` header, as Vulcand reads it: `{"PeriodSec":1,"Average":10,"Burst":20}`, `Burst`
/// defaulting to `Average`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HeaderRate {
    period_sec: u64,
    average: u64,
    #[serde(default)]
    burst: u64,
}

/// Rates a request may give in its `RateVar` header.
const MAX_HEADER_RATES: usize = 4;

/// The rates of a `RateVar` header; `None` (the configured rates apply) when it is not a JSON list of 1 to
/// `MAX_HEADER_RATES` rates with periods and averages above 0.
fn rates(value: &[u8]) -> Option<Vec<HeaderRate>> {
    let mut rates: Vec<HeaderRate> = serde_json::from_slice(value).ok()?;
    if rates.is_empty() || rates.len() > MAX_HEADER_RATES || rates.iter().any(|r| r.period_sec == 0 || r.average == 0) {
        return None;
    }
    for r in &mut rates {
        if r.burst == 0 {
            r.burst = r.average;
        }
    }
    Some(rates)
}

/// Makes room in a full shard: buckets that refilled are dropped (forgetting them changes nothing); if every
/// bucket is still in use, the one closest to full goes, so a flood of new keys cannot grow memory.
fn evict(shard: &mut HashMap<Box<[u8]>, u64>, now: u64) {
    shard.retain(|_, tat| *tat > now);
    if shard.len() >= SHARD_CAP {
        if let Some(oldest) = shard.iter().min_by_key(|(_, tat)| **tat).map(|(k, _)| k.clone()) {
            shard.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Variable;
    use http::{HeaderMap, HeaderValue};
    use std::net::{IpAddr, Ipv4Addr};

    fn limiter(requests: u64, period: u64, burst: u64, variable: Variable) -> RateLimiter {
        RateLimiter::new(RateLimitConfig { requests, period_seconds: period, burst, variable, rate_var: None })
    }

    #[test]
    fn exactly_burst_pass_then_the_wait_is_one_interval() {
        let l = limiter(1, 60, 3, Variable::ClientIp);
        let headers = HeaderMap::new();
        let input = Input::get(&headers, IpAddr::V4(Ipv4Addr::LOCALHOST), "/");
        for _ in 0..3 {
            assert_eq!(l.admit(&input), Ok(()));
        }
        let wait = l.admit(&input).unwrap_err();
        assert!((59..=60).contains(&wait), "{wait}");
        let other = Input::get(&headers, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), "/");
        assert_eq!(l.admit(&other), Ok(()), "another client has its own bucket");
    }

    #[test]
    fn a_period_too_long_to_count_in_nanoseconds_still_limits() {
        let l = limiter(1, 18_446_744_073_709, 1, Variable::ClientIp);
        let headers = HeaderMap::new();
        let input = Input::get(&headers, IpAddr::V4(Ipv4Addr::LOCALHOST), "/");
        assert_eq!(l.admit(&input), Ok(()));
        assert!(l.admit(&input).is_err(), "the second request in the period is refused");
        assert!(l.admit(&input).is_err());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let l = limiter(1, 3600, 1, Variable::Header(http::HeaderName::from_static("x-user")));
        let mut headers = HeaderMap::new();
        for i in 0..(SHARD_CAP * SHARDS * 2) {
            headers.insert("x-user", HeaderValue::from_str(&i.to_string()).unwrap());
            let input = Input::get(&headers, IpAddr::V4(Ipv4Addr::LOCALHOST), "/");
            assert_eq!(l.admit(&input), Ok(()));
        }
        assert!(l.tracked() <= SHARD_CAP * SHARDS);
    }
}
