//! The accept loop and the connection lifecycle: bind, accept (HTTP/1.1 or h2c), cap connections, and on
//! shutdown stop accepting and drain within a grace period.
//!
//! `main` binds with `bind`, installs the signal handlers and calls `serve`; the loop itself is the serving
//! kit's (`serve::http`, the same as the other binaries'), each connection in its own task with a span naming
//! the peer, and every request goes to `routes::handle`. Shutdown follows the gateway's own rules: the listener is closed first, in-flight requests finish
//! (keep-alive connections get `Connection: close` or a GOAWAY), and whatever is still running at the
//! deadline, typically a long export, is cut when the process exits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::net::TcpListener;

use crate::routes::{self, App};

/// At most this many connections are served at once; further clients wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long a client may take to send request headers before the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// How the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished within the grace period.
    Drained,
    /// The grace period ran out; the connections still open are cut when the process exits.
    GraceExpired,
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })
}

/// Serves `app` on `listener` until `shutdown` completes, then drains for at most `grace`, with the serving
/// kit's loop: at [`MAX_CONNECTIONS`] new clients wait in the accept queue.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Stopped {
    let options = serve::http::Options {
        name: "legacy-catalog",
        max_connections: MAX_CONNECTIONS,
        when_full: serve::http::WhenFull::Queue,
        // No metrics recorder in this process: the wait is logged, not counted.
        refused: metrics::Counter::noop(),
        open: None,
        header_read_timeout: HEADER_READ_TIMEOUT,
        drain_timeout: grace,
        http2_max_concurrent_streams: 200,
        max_head_bytes: serve::http::DEFAULT_MAX_HEAD_BYTES,
    };
    let service = move |_peer| {
        let app = app.clone();
        service_fn(move |req| routes::handle(app.clone(), req))
    };
    match serve::http::serve(listener, options, service, shutdown).await {
        serve::http::Stopped::Drained => Stopped::Drained,
        serve::http::Stopped::DeadlinePassed => Stopped::GraceExpired,
    }
}
