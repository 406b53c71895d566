//! Vulcand's `connlimit`: at most `Connections` requests in flight per value of the middleware's variable.
//! Run by the chain in `request_filter`; the slot a request takes is held by a [`ConnGuard`] that the proxy
//! keeps until the response body ends (or drops on the error exit). Kept across reloads by the registry while
//! the middleware's value is unchanged, so requests in flight across a reload still count.
//!
//! Counts live in a few mutex-guarded shards (see `ratelimit` for why a lock here); a value's entry exists only
//! while it has requests in flight, so memory is bounded by the requests in flight.

use super::{key_of, shard_of, Input, Shards, SHARDS};
use crate::model::ConnLimitConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct ConnLimiter {
    pub config: ConnLimitConfig,
    shards: Shards,
}

/// One request's slot; dropping it gives the slot back.
pub struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    key: Box<[u8]>,
}

impl ConnLimiter {
    pub fn new(config: ConnLimitConfig) -> Self {
        ConnLimiter { config, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    /// Takes a slot for the request, or `None` when its value already has `Connections` in flight.
    pub fn acquire(self: &Arc<Self>, input: &Input<'_>) -> Option<ConnGuard> {
        let mut buf = [0u8; 16];
        let key = key_of(&self.config.variable, input, &mut buf);
        let mut shard = self.shards[shard_of(key, SHARDS)].lock().unwrap_or_else(|p| p.into_inner());
        match shard.get_mut(key) {
            Some(n) if *n >= self.config.connections => return None,
            Some(n) => *n += 1,
            None => {
                shard.insert(key.into(), 1);
            }
        }
        Some(ConnGuard { limiter: self.clone(), key: key.into() })
    }

    /// Requests in flight for all values together.
    pub fn inflight(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).values().sum::<u64>()).sum()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut shard = self.limiter.shards[shard_of(&self.key, SHARDS)].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = shard.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Variable;
    use http::HeaderMap;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn the_n_plus_first_is_refused_until_one_ends() {
        let l = Arc::new(ConnLimiter::new(ConnLimitConfig { connections: 2, variable: Variable::ClientIp }));
        let headers = HeaderMap::new();
        let input = Input::get(&headers, IpAddr::V4(Ipv4Addr::LOCALHOST), "/");
        let a = l.acquire(&input).expect("first");
        let _b = l.acquire(&input).expect("second");
        assert!(l.acquire(&input).is_none());
        drop(a);
        assert!(l.acquire(&input).is_some());
        assert_eq!(l.inflight(), 1, "the temporary third guard gave its slot back");
    }
}
