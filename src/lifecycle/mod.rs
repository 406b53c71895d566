//! Shutdown, passed everywhere: one signal every task listens for, and a drain deadline.
//!
//! The first SIGTERM/SIGINT starts a graceful drain (stop accepting, let in-flight requests finish, close
//! keep-alive connections politely); a second one exits at once. `upgrade` hands the listening sockets to a
//! new process (SIGUSR2, `ficus upgrade`), `systemd` speaks sd_notify, `tracker` counts what a drain waits for.

pub mod inherit;
pub mod systemd;
pub mod tracker;
pub mod upgrade;

use std::time::Duration;
use tokio::sync::watch;

/// A cloneable shutdown signal.
#[derive(Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown { tx: watch::channel(false).0 }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once shutdown was triggered (immediately if it already was).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
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
