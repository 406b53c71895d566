//! One HTTP/1.1 + h2c accept loop for the listeners that need no TLS and no connection parking: the gateway's
//! admin listener, `gtin-service` and `legacy-catalog`. It sits between the listening socket and each
//! binary's request handler, and owns only connection lifecycles:
//!
//! - a cap on open connections ([`crate::accept::Cap`]): over it, either close new connections at once
//!   (the admin listener, which must stay answerable with few descriptors) or leave them in the kernel's
//!   accept queue (the services: backpressure); both counted, and logged at a bounded rate;
//! - accept errors (EMFILE and the like) backed off and logged at a bounded rate ([`crate::accept::Backoff`]);
//! - a header read timeout on every connection, so an idle client cannot hold a slot: hyper's own timeout
//!   covers an HTTP/1 head once it has begun, but the auto builder first waits, unbounded, for the bytes that
//!   tell HTTP/1 from the h2c preface; [`first_bytes`] bounds that wait too;
//! - on shutdown (mini-redis style, one future): stop accepting, close idle keep-alive connections, let
//!   in-flight requests finish (HTTP/1.1 then closes, HTTP/2 sends GOAWAY), bounded by a drain deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::accept::{Backoff, Cap};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What to do with a new connection when the cap is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Accept and close it at once.
    Close,
    /// Stop accepting until a connection ends; new clients wait in the kernel's queue.
    Queue,
}

/// How one listener serves.
pub struct Options {
    /// Names the listener in logs (`admin`, `gtin`, `legacy-catalog`).
    pub name: &'static str,
    pub max_connections: usize,
    pub when_full: WhenFull,
    /// Counts connections that found the listener full.
    pub refused: metrics::Counter,
    /// Open connections, when the binary exports them.
    pub open: Option<metrics::Gauge>,
    /// How long an HTTP/1 client may take to send a request head (also between keep-alive requests).
    pub header_read_timeout: Duration,
    /// How long in-flight requests get to finish once shutdown begins.
    pub drain_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    /// The largest request head taken (HTTP/1 read buffer, HTTP/2 header list); a larger one is refused
    /// (431 where the protocol allows it). hyper's own HTTP/1 default is about 400 KB per connection.
    pub max_head_bytes: usize,
}

/// A request head limit for these listeners: twice the gateway's default (32 KiB), so a head the gateway
/// took still fits once it added its forwarding fields.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;

/// How the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished within the drain deadline.
    Drained,
    /// The deadline passed; the connections still open are cut when the caller returns or exits.
    DeadlinePassed,
}

/// Serves `listener` until `shutdown` resolves, then drains. `service` builds the handler of one connection
/// from its peer address.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    options: Options,
    service: F,
    shutdown: impl Future<Output = ()>,
) -> Stopped
where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let name = options.name;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper refuses a buffer limit under 8 KiB.
    let max_head = options.max_head_bytes.max(8192);
    builder.http1().timer(TokioTimer::new()).header_read_timeout(options.header_read_timeout).max_buf_size(max_head);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX));
    // Shared with each connection's task, which starts serving only once the client has begun its request.
    let builder = Arc::new(builder);
    let header_read_timeout = options.header_read_timeout;
    let graceful = GracefulShutdown::new();
    let mut cap = Cap::new(options.max_connections, options.refused);
    let mut backoff = Backoff::default();
    let local = listener.local_addr().map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    tokio::pin!(shutdown);
    loop {
        let queued = match options.when_full {
            WhenFull::Queue => tokio::select! {
                () = &mut shutdown => break,
                permit = cap.wait(name) => Some(permit),
            },
            WhenFull::Close => None,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    backoff.failed(name, &e).await;
                    continue;
                }
            },
        };
        backoff.succeeded();
        let permit = match queued {
            Some(permit) => permit,
            None => match cap.admit(name) {
                Some(permit) => permit,
                None => continue, // dropping the stream closes it
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "could not set TCP_NODELAY");
        }
        let service = service(peer);
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let open = options.open.clone();
        if let Some(g) = &open {
            g.increment(1.0);
        }
        tokio::spawn(
            async move {
                if first_bytes(&stream, header_read_timeout).await {
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                } else {
                    tracing::debug!(?header_read_timeout, "closed: no request within the header timeout");
                }
                if let Some(g) = open {
                    g.decrement(1.0);
                }
                drop(permit);
            }
            .instrument(tracing::info_span!("conn", listener = name, %peer, %local)),
        );
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(listener = name, open, deadline = ?options.drain_timeout, "stopped accepting, draining");
    match tokio::time::timeout(options.drain_timeout, graceful.shutdown()).await {
        Ok(()) => {
            tracing::info!(listener = name, "drained");
            Stopped::Drained
        }
        Err(_) => {
            tracing::warn!(listener = name, "drain deadline passed; cutting the remaining connections");
            Stopped::DeadlinePassed
        }
    }
}

/// What an h2c client sends first; anything else is HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, at most `within`, until the client has sent enough for hyper to tell HTTP/1 from h2c: one byte
/// that is not the start of the h2c preface, or the whole preface. `false` when the client sent nothing in
/// time or closed: the caller drops the connection.
async fn first_bytes(stream: &TcpStream, within: Duration) -> bool {
    let wait = async {
        let mut buf = [0u8; 24];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] => return true,
                // A part of the preface: `peek` would return the same bytes at once, so wait a little for more.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(within, wait).await.unwrap_or(false)
}
