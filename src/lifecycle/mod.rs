//! Shutdown, passed everywhere: one signal every task listens for, and a drain deadline.
//!
//! The first SIGTERM/SIGINT starts a graceful drain (stop accepting, let in-flight requests finish, close
//! keep-alive connections politely); a second one exits at once. `upgrade` hands the listening sockets to a
//! new process (SIGUSR2, `ficus upgrade`), `systemd` speaks sd_notify, `tracker` counts what a drain waits for.

pub mod inherit;
pub mod systemd;
pub mod tracker;
pub mod upgrade;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::watch;

/// A cloneable shutdown signal.
#[derive(Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
    /// The same fact as the channel's value, readable without the channel's lock: every response asks.
    triggered: Arc<AtomicBool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown { tx: watch::channel(false).0, triggered: Arc::new(AtomicBool::new(false)) }
    }

    pub fn trigger(&self) {
        // The flag first: a waiter woken by the channel must find it set (see `Waiter`).
        self.triggered.store(true, Ordering::Release);
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// [`wait`](Self::wait) for a task that polls it at every turn of a loop while it mostly waits on
    /// something else (a client connection between requests): see [`Waiter`].
    pub fn waiter(&self) -> Waiter<'_> {
        Waiter { shutdown: self, wait: Box::pin(self.wait()), registered: None }
    }

    /// Resolves once shutdown was triggered (immediately if it already was).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// Resolves once shutdown was triggered, like [`Shutdown::wait`], but polled again by the same task it costs
/// an atomic load. The channel's waiter takes a lock each time it is polled; once it holds this task's waker,
/// a trigger wakes the task anyway (`trigger` sets the flag before it notifies), so until then there is
/// nothing to ask it.
pub struct Waiter<'a> {
    shutdown: &'a Shutdown,
    wait: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    registered: Option<Waker>,
}

impl Future for Waiter<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.shutdown.is_triggered() && self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        match self.wait.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                self.registered = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Waits for SIGTERM or SIGINT and triggers `shutdown`; a second signal exits the process at once. The
/// two-signal rule is the serving kit's, the same in every binary; the handlers are installed when this is
/// called.
pub fn watch_signals(shutdown: Shutdown, drain_timeout: Duration) -> impl std::future::Future<Output = ()> {
    let first = serve::signals::shutdown_on_signal();
    async move {
        let first = match first {
            Ok(first) => first,
            Err(e) => {
                tracing::error!(error = %e, "SIGTERM will kill the process without draining");
                return;
            }
        };
        first.await;
        tracing::info!(deadline_s = drain_timeout.as_secs_f64(), "waiting for in-flight requests");
        shutdown.trigger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_polled_again_and_again_still_sees_the_trigger() {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        let task = tokio::spawn(async move {
            let mut waiter = std::pin::pin!(shutdown.waiter());
            let mut turns = 0u32;
            // Other work wakes the task many times while the waiter holds its waker: each turn polls it.
            loop {
                tokio::select! {
                    biased;
                    () = &mut waiter => return turns,
                    () = tokio::task::yield_now() => turns += 1,
                }
            }
        });
        // Let it take turns first (one test thread: each yield here runs one of its turns).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        trigger.trigger();
        let turns = tokio::time::timeout(Duration::from_secs(5), task).await.expect("the trigger went unseen");
        assert!(turns.unwrap() >= 5);
        // Already triggered: a new waiter is ready at once.
        let waiter = trigger.waiter();
        assert!(tokio::time::timeout(Duration::from_secs(5), waiter).await.is_ok());
    }
}
