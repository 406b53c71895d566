//! A count of live things (connections, tunnels) that a drain can wait on, in the lifecycle layer.
//!
//! Each thing holds a [`Token`]; dropping it decrements the count. `wait_idle` resolves when the count is
//! zero. hyper's own graceful tracker forgets a connection once it is upgraded (WebSocket), so tunnels are
//! counted here to keep them inside the drain deadline.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Tracker {
    tx: watch::Sender<usize>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    pub fn new() -> Self {
        Tracker { tx: watch::channel(0).0 }
    }

    pub fn enter(&self) -> Token {
        self.tx.send_modify(|n| *n += 1);
        Token { tx: self.tx.clone() }
    }

    pub fn count(&self) -> usize {
        *self.tx.borrow()
    }

    /// Resolves once nothing is tracked.
    pub async fn wait_idle(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// One tracked thing; counted until dropped.
pub struct Token {
    tx: watch::Sender<usize>,
}

impl Drop for Token {
    fn drop(&mut self) {
        self.tx.send_modify(|n| *n = n.saturating_sub(1));
    }
}
