//! The accept step of every listener (the proxy's in `listen`, the admin one): a cap on open connections,
//! and a bounded back-off when accept itself fails. Here, beside shutdown and drain, because every serving
//! loop needs it; the caller hands in the counter the cap bites on, so this knows no metric names.
//!
//! The cap keeps the process under its open-file limit, so when a flood of idle connections arrives the
//! connections already open go on being served and the admin listener, capped separately out of the
//! descriptors reserved for it, still answers. A connection over the cap is accepted and closed at once
//! (rather than left in the kernel's queue, where its client would hang) and counted. Accept errors
//! (EMFILE, ENFILE, ENOBUFS) back off from 5 ms up to 1 s instead of spinning, and are logged at most once
//! per [`LOG_EVERY`] with the number that were not.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most one log line per kind of event and listener in this period.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The open-connection cap of one listener.
pub struct Cap {
    permits: Arc<Semaphore>,
    limit: usize,
    refused: metrics::Counter,
    log: RateLog,
}

impl Cap {
    /// `refused` counts the connections closed at the cap.
    pub fn new(limit: usize, refused: metrics::Counter) -> Self {
        Cap { permits: Arc::new(Semaphore::new(limit)), limit, refused, log: RateLog::default() }
    }

    /// A permit held for the life of the connection, or `None` when the listener is full (counted, and
    /// logged at a bounded rate; the caller drops the stream).
    pub fn admit(&mut self, listener: &str) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                self.refused.increment(1);
                if let Some(missed) = self.log.due() {
                    tracing::warn!(
                        listener,
                        limit = self.limit,
                        not_logged = missed,
                        "connection limit reached; closing new connections"
                    );
                }
                None
            }
        }
    }
}

/// Back-off after failed accepts, reset by the next success.
#[derive(Default)]
pub struct Backoff {
    next: Option<Duration>,
    log: RateLog,
}

impl Backoff {
    pub async fn failed(&mut self, listener: &str, error: &std::io::Error) {
        let wait = self.next.map_or(BACKOFF_MIN, |d| (d * 2).min(BACKOFF_MAX));
        self.next = Some(wait);
        if let Some(missed) = self.log.due() {
            tracing::warn!(listener, %error, not_logged = missed, backoff_ms = wait.as_millis() as u64, "accept failed");
        }
        tokio::time::sleep(wait).await;
    }

    pub fn succeeded(&mut self) {
        self.next = None;
    }
}

/// Lets one line through per [`LOG_EVERY`] and counts the ones it held back.
#[derive(Default)]
struct RateLog {
    last: Option<std::time::Instant>,
    missed: u64,
}

impl RateLog {
    /// `Some(held back since the last line)` when a line may be written now.
    fn due(&mut self) -> Option<u64> {
        self.due_at(std::time::Instant::now())
    }

    fn due_at(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < LOG_EVERY => {
                self.missed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.missed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_refuses_past_its_limit_and_frees_with_the_permit() {
        let mut cap = Cap::new(2, metrics::Counter::noop());
        let a = cap.admit("t").unwrap();
        let _b = cap.admit("t").unwrap();
        assert!(cap.admit("t").is_none());
        drop(a);
        assert!(cap.admit("t").is_some());
    }

    #[test]
    fn logs_are_rate_limited_and_count_what_they_held_back() {
        let mut log = RateLog::default();
        let t = std::time::Instant::now();
        assert_eq!(log.due_at(t), Some(0));
        assert_eq!(log.due_at(t), None);
        assert_eq!(log.due_at(t + LOG_EVERY / 2), None);
        assert_eq!(log.due_at(t + LOG_EVERY), Some(2));
    }
}
