//! The serving process: bind, load the newest snapshot, accept connections (HTTP/1.1 and h2c on one port), and
//! shut down cleanly. Requests are answered by [`crate::api`]; this file owns only connection lifecycles.
//!
//! Shutdown follows mini-redis: one shutdown future stops the accept loop; every connection is watched by a
//! `GracefulShutdown`, which closes idle keep-alive connections, lets in-flight requests finish (HTTP/1.1 then
//! closes, HTTP/2 sends GOAWAY) and resolves when the last one is gone, bounded by a drain deadline. A
//! semaphore caps open connections so a flood cannot exhaust file descriptors.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::api::{self, App};
use crate::store::{Store, StoreError};
use crate::telemetry as t;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data: PathBuf,
    /// How long in-flight requests get to finish after a shutdown signal.
    pub drain_timeout: Duration,
    pub max_connections: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Binds, loads the newest snapshot if there is one, and serves until `shutdown` resolves.
pub async fn serve(
    options: ServeOptions,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener =
        TcpListener::bind(options.listen).await.map_err(|source| ServeError::Bind { addr: options.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: options.listen, source })?;
    let store = Store::new(&options.data);
    match store.reload() {
        Ok(outcome) => tracing::info!(?outcome, "initial snapshot loaded"),
        Err(e @ StoreError::NoSnapshot { .. }) => {
            tracing::warn!(error = %e, "not ready until a snapshot is published and /admin/reload is called")
        }
        Err(e) => tracing::error!(error = %e, "could not load a snapshot; not ready"),
    }
    if let Some(loaded) = store.loaded() {
        api::publish_gauges(&loaded);
    }
    if let Some(handle) = metrics.clone() {
        // Histograms need periodic upkeep; the recorder does not run any task of its own.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let app = Arc::new(App { store, metrics });
    // Tests and scripts that bind port 0 read the real address from this line.
    println!("listening on {addr}");
    tracing::info!(%addr, data = %options.data.display(), "gtin-service listening");
    run(listener, app, options.drain_timeout, options.max_connections, shutdown).await;
    Ok(())
}

/// The accept loop. Returns when `shutdown` has resolved and connections have drained (or the deadline passed).
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    drain_timeout: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that opens a connection and never finishes its headers must not hold a slot forever.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let request_ids = Arc::new(AtomicU64::new(0));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed; stop rather than spin if it were
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let ids = Arc::clone(&request_ids);
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let app = Arc::clone(&app);
            let id = ids.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, Infallible>(api::handle(app, req).await) }
                .instrument(tracing::info_span!("request", id))
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        metrics::gauge!(t::CONNECTIONS).increment(1.0);
        tokio::spawn(
            async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                metrics::gauge!(t::CONNECTIONS).decrement(1.0);
                drop(permit);
            }
            .instrument(tracing::info_span!("connection", %peer)),
        );
    }
    drop(listener);
    tracing::info!("shutting down: no longer accepting, draining connections");
    match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!(?drain_timeout, "drain deadline passed; closing remaining connections"),
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when it is first
/// polled, so a signal that arrives while the process is still starting up is not lost (or fatal). Must be
/// called inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let wait = |stream: io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
            match stream {
                Ok(mut stream) => {
                    stream.recv().await;
                    tracing::info!("{name} received");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = wait(terminate, "SIGTERM") => {}
            _ = wait(interrupt, "SIGINT") => {}
        }
    }
}
