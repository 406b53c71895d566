//! Client-facing listeners: accept, TLS with SNI and ALPN, HTTP/1.1 and HTTP/2 (h2c prior knowledge and h2
//! over TLS), connection accounting, and the graceful drain at shutdown.
//!
//! Each connection gets a tracing span with both addresses. At shutdown the listener stops accepting, every
//! connection is told to finish (HTTP/1.1: close after the current response; HTTP/2: GOAWAY), and the drain
//! waits for them up to the deadline.

mod tls;

pub use tls::{server_config, SniResolver};

use crate::lifecycle::Shutdown;
use crate::model::Protocol;
use crate::proxy::{ConnInfo, Proxy};
use crate::telemetry;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::Instrument;

/// Slow clients get this long to send a request head (slowloris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("listener {name}: cannot listen on {addr}: {source}")]
pub struct BindError {
    pub name: String,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// A listener as configured.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub trust_forward_header: bool,
}

/// Binds with a large accept backlog and SO_REUSEADDR, so a restart does not wait out TIME_WAIT.
pub fn bind(cfg: &ListenerConfig) -> Result<TcpListener, BindError> {
    let err = |source| BindError { name: cfg.name.clone(), addr: cfg.addr, source };
    let domain = socket2::Domain::for_address(cfg.addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&cfg.addr.into()).map_err(err)?;
    socket.listen(4096).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Serves one listener until shutdown, then drains its connections (bounded by `drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    cfg: ListenerConfig,
    proxy: Arc<Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: Shutdown,
    drain_timeout: Duration,
) {
    let name: Arc<str> = cfg.name.as_str().into();
    let local = listener.local_addr().ok();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = metrics::gauge!(telemetry::OPEN_CONNECTIONS, "listener" => cfg.name.clone());
    let accepted = metrics::counter!(telemetry::CONNECTIONS_TOTAL, "listener" => cfg.name.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    tracing::info!(listener = %name, addr = ?local, protocol = ?cfg.protocol, "listening");

    loop {
        let (stream, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        accepted.increment(1);
        let conn = Arc::new(ConnInfo::new(peer, name.clone(), tls.is_some(), cfg.trust_forward_header));
        let proxy = proxy.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(proxy.handle(&conn, req).await) }
        });
        let span = tracing::debug_span!("conn", listener = %name, peer = %peer, local = ?local);
        let open = open.clone();
        let builder = builder.clone();
        match &tls {
            None => {
                let watched = graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned());
                tokio::spawn(
                    async move {
                        open.increment(1.0);
                        if let Err(e) = watched.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        open.decrement(1.0);
                    }
                    .instrument(span),
                );
            }
            Some(acceptor) => {
                // The handshake happens before the connection is known to the graceful tracker; a shutdown
                // during a handshake simply drops it, which the client sees as a failed connect, not a
                // failed request.
                let acceptor = acceptor.clone();
                let graceful_watcher = graceful.watcher();
                tokio::spawn(
                    async move {
                        let tls_stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        };
                        open.increment(1.0);
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service).into_owned();
                        if let Err(e) = graceful_watcher.watch(conn).await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        open.decrement(1.0);
                    }
                    .instrument(span),
                );
            }
        }
    }
    drop(listener);
    tracing::info!(listener = %name, "stopped accepting; draining connections");
    if tokio::time::timeout(drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(listener = %name, deadline_s = drain_timeout.as_secs_f64(), "drain deadline reached; closing remaining connections");
    }
}
