//! The accept loop and the connection lifecycle: bind, accept (HTTP/1.1 or h2c), cap connections, and on
//! shutdown stop accepting and drain within a grace period.
//!
//! `main` binds with `bind`, installs the signal handlers and calls `serve`; each connection runs in its own
//! task with a span naming the peer, and every request goes to `routes::handle`. Shutdown follows the
//! gateway's own rules at a smaller scale: the listener is closed first, in-flight requests finish
//! (keep-alive connections get `Connection: close` or a GOAWAY), and whatever is still running at the
//! deadline, typically a long export, is cut when the process exits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

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

/// Serves `app` on `listener` until `shutdown` completes, then drains for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Stopped {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let local = listener.local_addr().map_or_else(|_| "unknown".to_string(), |addr| addr.to_string());
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed; if it were, there is nothing left to serve.
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE or a connection reset before accept; back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        let service = service_fn(move |req| routes::handle(app.clone(), req));
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        let span = tracing::info_span!("conn", %peer, %local);
        tokio::spawn(
            async move {
                tracing::debug!("accepted");
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }

    drop(listener);
    let open = graceful.count();
    tracing::info!(open, grace_ms = grace.as_millis() as u64, "stopped accepting, draining");
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => {
            tracing::info!("drained");
            Stopped::Drained
        }
        Err(_) => {
            tracing::warn!("grace period over, cutting the remaining connections");
            Stopped::GraceExpired
        }
    }
}
