//! Shutdown, passed everywhere: one signal every task listens for, and a drain deadline.
//!
//! The first SIGTERM/SIGINT starts a graceful drain (stop accepting, let in-flight requests finish, close
//! keep-alive connections politely); a second one exits at once. `upgrade` hands the listening sockets to a
//! new process (SIGUSR2, `ficus upgrade`), `systemd` speaks sd_notify, `tracker` counts what a drain waits for.

pub mod accept;
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

/// Waits for SIGTERM or SIGINT, triggers `shutdown`, then exits the process on a second signal.
pub async fn watch_signals(shutdown: Shutdown, drain_timeout: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; SIGTERM will kill the process without draining");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    tracing::info!(
        deadline_s = drain_timeout.as_secs_f64(),
        "stopped accepting; waiting for in-flight requests (send the signal again to exit now)"
    );
    shutdown.trigger();
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::warn!("second signal: exiting without waiting");
    std::process::exit(130);
}
