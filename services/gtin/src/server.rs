//! The serving process: bind, load the newest snapshot, accept connections (HTTP/1.1 and h2c on one port), and
//! shut down cleanly. Requests are answered by [`crate::api`]; this file owns only connection lifecycles.
//!
//! The accept loop, header timeout, connection cap and drain are the serving kit's (`serve::http`), the same
//! as the other binaries'; the shutdown future is its two-signal one (`serve::signals`), installed by `main`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
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
    Bind { addr: SocketAddr, source: std::io::Error },
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
        tokio::spawn(serve::upkeep::metrics_upkeep(handle, std::future::pending()));
    }
    let app = Arc::new(App { store, metrics });
    // Tests and scripts that bind port 0 read the real address from this line.
    println!("listening on {addr}");
    tracing::info!(%addr, data = %options.data.display(), "gtin-service listening");
    run(listener, app, options.drain_timeout, options.max_connections, shutdown).await;
    Ok(())
}

/// How long a client may take to send a request head before its connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The accept loop (the serving kit's): returns when `shutdown` has resolved and connections have drained
/// (or the deadline passed). A full service leaves new clients in the accept queue rather than closing them.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    drain_timeout: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let options = serve::http::Options {
        name: "gtin",
        max_connections,
        when_full: serve::http::WhenFull::Queue,
        refused: metrics::counter!(t::CONNECTIONS_WAITED),
        open: Some(metrics::gauge!(t::CONNECTIONS)),
        header_read_timeout: HEADER_READ_TIMEOUT,
        drain_timeout,
        http2_max_concurrent_streams: 256,
        max_head_bytes: serve::http::DEFAULT_MAX_HEAD_BYTES,
    };
    let request_ids = Arc::new(AtomicU64::new(0));
    let service = move |_peer| {
        let app = Arc::clone(&app);
        let ids = Arc::clone(&request_ids);
        service_fn(move |req: hyper::Request<Incoming>| {
            let app = Arc::clone(&app);
            let id = ids.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, Infallible>(api::handle(app, req).await) }
                .instrument(tracing::info_span!("request", id))
        })
    };
    serve::http::serve(listener, options, service, shutdown).await;
}
