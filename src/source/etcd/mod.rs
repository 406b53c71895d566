//! The etcd source: how production Ficus learns about config. It sits at the very top of the data flow, beside
//! the routes directory, and speaks the same protocol to the reload loop: one [`SourceEvent::Snapshot`] (a
//! ranged, paged read of the prefix at one revision R), then one [`SourceEvent::Changes`] per etcd revision
//! from a watch started at R+1, so a transaction is one table swap.
//!
//! etcd can fail in three ways and each one ends the session the same way, with a [`SourceEvent::Problem`] and
//! a reconnect after a jittered backoff while the last table keeps serving: down (connect refused, stream
//! reset), hung (stopped with SIGSTOP or a dead link: HTTP/2 keep-alive pings plus our own progress requests and
//! timeouts notice), and compacted (the revision we would resume from is gone: re-list and let the reload loop
//! diff). A session resumes from the last revision seen + 1, so no write is missed across a reconnect.

mod connect;

pub use connect::{connect, EtcdSettings};

use super::{Locations, SourceEvent};
use crate::model::Change;
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Keys per page of the initial listing: keeps each response far below gRPC's 4 MiB message limit.
const PAGE: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd {endpoints}: {what}: {source}")]
    Rpc { endpoints: String, what: &'static str, source: etcd_client::Error },
    #[error("etcd {endpoints}: {what}: no answer within {after:?}")]
    Timeout { endpoints: String, what: &'static str, after: Duration },
    #[error("etcd {endpoints}: watch on {prefix}: {why}")]
    Watch { endpoints: String, prefix: String, why: String },
    #[error("etcd settings: {0}")]
    Settings(String),
    #[error("etcd settings: reading {path}: {source}")]
    File { path: std::path::PathBuf, source: std::io::Error },
}

/// What ended a watch session.
enum End {
    /// The reload loop is gone: stop.
    Closed,
    /// Our revision was compacted away: list again right now.
    Relist { compacted: i64 },
}

/// Follows the prefix until `events` closes. Never returns an error: every fault is reported as a
/// [`SourceEvent::Problem`] and retried, because giving up would leave the gateway deaf to config forever.
pub async fn watch(settings: EtcdSettings, events: mpsc::Sender<SourceEvent>) {
    let mut last: Option<u64> = None;
    let mut backoff = Backoff::new(settings.retry_min, settings.retry_max);
    loop {
        let err = match session(&settings, &events, &mut last, &mut backoff).await {
            Ok(End::Closed) => return,
            Ok(End::Relist { compacted }) => {
                let message = format!(
                    "etcd {}: revision {} was compacted (oldest kept {compacted}); listing {} again",
                    settings.endpoints_label(),
                    last.map(|r| r + 1).unwrap_or(0),
                    settings.prefix
                );
                last = None;
                if events.send(SourceEvent::Problem { message }).await.is_err() {
                    return;
                }
                continue;
            }
            Err(e) => e,
        };
        let wait = backoff.next();
        let message = format!("{err}; retrying in {wait:?}, the last good table keeps serving");
        tracing::warn!(target: "config", "{message}");
        if events.send(SourceEvent::Problem { message }).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = events.closed() => return,
        }
    }
}

/// One connection: list if we have no revision, then watch until something goes wrong.
async fn session(
    settings: &EtcdSettings,
    events: &mpsc::Sender<SourceEvent>,
    last: &mut Option<u64>,
    backoff: &mut Backoff,
) -> Result<End, EtcdError> {
    let mut client = connect(settings).await?;
    let start = match *last {
        Some(rev) => rev + 1,
        None => {
            let (revision, entries) = list(settings, &mut client).await?;
            *last = Some(revision);
            if events.send(SourceEvent::Snapshot { revision, entries, locations: Locations::new() }).await.is_err() {
                return Ok(End::Closed);
            }
            revision + 1
        }
    };

    let endpoints = settings.endpoints_label();
    let watch_err =
        |why: String| EtcdError::Watch { endpoints: endpoints.clone(), prefix: settings.prefix.clone(), why };
    let opts = WatchOptions::new().with_prefix().with_start_revision(start as i64).with_progress_notify();
    let mut stream = rpc(settings, "watch", client.watch(settings.watch_prefix(), Some(opts))).await?;
    let mut created = false;
    // Ask for progress when the stream has been quiet this long; a hung etcd then shows within `timeout` more.
    let mut awaiting_progress = false;
    loop {
        let quiet = if awaiting_progress { settings.request_timeout } else { settings.keepalive };
        let msg = match timeout(quiet, stream.message()).await {
            Err(_) if awaiting_progress => {
                return Err(watch_err(format!(
                    "no progress answer within {:?}: etcd looks hung",
                    settings.request_timeout
                )))
            }
            Err(_) => {
                rpc(settings, "watch progress request", stream.request_progress()).await?;
                awaiting_progress = true;
                continue;
            }
            Ok(Err(source)) => return Err(EtcdError::Rpc { endpoints, what: "watch", source }),
            Ok(Ok(None)) => return Err(watch_err("stream closed by the server".into())),
            Ok(Ok(Some(msg))) => msg,
        };
        awaiting_progress = false;
        if msg.compact_revision() > 0 {
            return Ok(End::Relist { compacted: msg.compact_revision() });
        }
        if msg.canceled() {
            return Err(watch_err(format!("cancelled by etcd: {}", msg.cancel_reason())));
        }
        if msg.created() && !created {
            created = true;
            backoff.reset();
            tracing::info!(target: "config", endpoints = %endpoints, prefix = %settings.prefix, from = start, "watching etcd");
            if events.send(SourceEvent::Watching { revision: start - 1 }).await.is_err() {
                return Ok(End::Closed);
            }
        }
        if msg.events().is_empty() {
            // A progress notification: everything up to the header's revision has been delivered.
            if !msg.created() {
                if let Some(rev) = msg.header().map(|h| h.revision()).filter(|r| *r > 0) {
                    let rev = rev as u64;
                    if !matches!(*last, Some(l) if l >= rev) {
                        *last = Some(rev);
                        if events.send(SourceEvent::Watching { revision: rev }).await.is_err() {
                            return Ok(End::Closed);
                        }
                    }
                }
            }
            continue;
        }
        for (revision, changes) in group_by_revision(settings, msg.events()) {
            *last = Some(revision);
            if events.send(SourceEvent::Changes { revision, changes, locations: Locations::new() }).await.is_err() {
                return Ok(End::Closed);
            }
        }
    }
}

/// etcd never splits one revision across watch responses, but one response may carry several revisions.
fn group_by_revision(settings: &EtcdSettings, events: &[etcd_client::Event]) -> Vec<(u64, Vec<Change>)> {
    let mut out: Vec<(u64, Vec<Change>)> = Vec::new();
    for ev in events {
        let Some(kv) = ev.kv() else { continue };
        let revision = kv.mod_revision().max(0) as u64;
        let Some(key) = settings.relative_key(kv.key()) else { continue };
        if crate::model::is_own_state(&key) {
            continue;
        }
        let change = match ev.event_type() {
            EventType::Put => Change::Put { key, value: kv.value().to_vec() },
            EventType::Delete => Change::Delete { key },
        };
        match out.last_mut() {
            Some((r, list)) if *r == revision => list.push(change),
            _ => out.push((revision, vec![change])),
        }
    }
    out
}

/// The whole prefix at one revision, in pages. Returns that revision and `(relative key, value)` pairs.
pub async fn list(settings: &EtcdSettings, client: &mut Client) -> Result<(u64, Vec<(String, Vec<u8>)>), EtcdError> {
    let prefix = settings.watch_prefix();
    let end = prefix_end(prefix.as_bytes());
    let mut from = prefix.clone().into_bytes();
    let mut revision = 0i64;
    let mut entries = Vec::new();
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let resp = rpc(settings, "list", client.get(from.clone(), Some(opts))).await?;
        if revision == 0 {
            revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        for kv in resp.kvs() {
            if let Some(key) = settings.relative_key(kv.key()).filter(|k| !crate::model::is_own_state(k)) {
                entries.push((key, kv.value().to_vec()));
            }
        }
        match (resp.more(), resp.kvs().last()) {
            (true, Some(kv)) => {
                from = kv.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    Ok((revision.max(0) as u64, entries))
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // A prefix of only 0xff bytes: "to the end of the keyspace".
    vec![0]
}

/// Runs one etcd call with the request timeout, naming it in the error.
pub async fn rpc<T>(
    settings: &EtcdSettings,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match timeout(settings.request_timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(EtcdError::Rpc { endpoints: settings.endpoints_label(), what, source }),
        Err(_) => {
            Err(EtcdError::Timeout { endpoints: settings.endpoints_label(), what, after: settings.request_timeout })
        }
    }
}

/// Exponential backoff with full jitter in the upper half, so a fleet of gateways does not reconnect in step.
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    seed: RandomState,
    n: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, current: min, seed: RandomState::new(), n: 0 }
    }

    fn next(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        self.n += 1;
        let mut h = self.seed.build_hasher();
        h.write_u64(self.n);
        let frac = (h.finish() % 1000) as f64 / 1000.0;
        base.mul_f64(0.5 + frac / 2.0)
    }

    fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/vulcand/"), b"/vulcand0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        // Wait k lies in the upper half of min * 2^k, capped at max: each doubling shows in the lower bound.
        let mut at_cap = Vec::new();
        for k in 0..30u32 {
            let base = min.saturating_mul(2u32.saturating_pow(k)).min(max);
            let wait = b.next();
            assert!(wait >= base / 2 && wait <= base, "wait {k}: {wait:?} not in [{:?}, {base:?}]", base / 2);
            if base == max {
                at_cap.push(wait);
            }
        }
        assert!(at_cap.len() > 20, "the cap was reached late: {at_cap:?}");
        at_cap.sort();
        at_cap.dedup();
        assert!(at_cap.len() > 1, "no jitter at the cap: {at_cap:?}");
        b.reset();
        let wait = b.next();
        assert!(wait >= min / 2 && wait <= min, "after a reset: {wait:?}");
    }
}
