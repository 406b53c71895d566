//! Client-facing listeners: accept, TLS with SNI and ALPN, HTTP/1.1 and HTTP/2 (h2c prior knowledge and h2
//! over TLS), connection accounting, and the graceful drain at shutdown.
//!
//! Each connection gets a tracing span with both addresses. At shutdown the listener stops accepting, every
//! connection is told to finish (HTTP/1.1: close after the current response; HTTP/2: GOAWAY), and the drain
//! waits for them up to the deadline. HTTP/1.1 connections are told on their next response and closed only
//! once quiet (`drain`), so a drain never races a client's next request. Listening sockets may be inherited
//! from the process a hot upgrade replaces, and are kept on a list to hand to the next one
//! (`lifecycle::inherit`).

mod conn;
mod drain;
mod h1;
mod head;
mod tls;

pub use tls::{server_config, SniResolver};

use crate::lifecycle::inherit;
use crate::lifecycle::tracker::Tracker;
use crate::lifecycle::Shutdown;
use crate::model::Protocol;
use crate::proxy::limits::Limits;
use crate::proxy::{ConnInfo, Proxy, ProxyBody};
use crate::telemetry;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("listener {name}: cannot listen on {addr}: {source}")]
pub struct BindError {
    pub name: String,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

struct ConnCtx {
    proxy: Arc<Proxy>,
    info: ConnInfo,
    draining: drain::Draining,
    state: Arc<drain::ConnState>,
}

/// The per-connection service hyper calls for each request.
struct ConnService(Arc<ConnCtx>);

/// The codec's handler: the proxy, called from the connection's own task (`h1`).
impl h1::Handler for ConnCtx {
    type Body = ProxyBody;

    fn call(
        &self,
        req: http::Request<crate::proxy::ClientBody>,
    ) -> impl Future<Output = http::Response<ProxyBody>> + Send {
        self.proxy.handle(&self.info, req)
    }

    fn finish(&self, resp: &mut http::Response<ProxyBody>) {
        self.draining.mark(http::Version::HTTP_11, resp);
    }
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for ConnService {
    type Response = http::Response<InFlight>;
    type Error = Infallible;
    // Boxed: hyper keeps room for the service future in every connection for its whole life, so an unboxed
    // one (the whole proxy state machine, kilobytes) would cost that much per connection.
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let ctx = self.0.clone();
        // Counted when hyper hands the request over, before an HTTP/2 stream task first runs it, so a drain
        // starting meanwhile already knows the connection speaks HTTP/2.
        let version = req.version();
        ctx.state.request_started(version);
        Box::pin(async move {
            let mut resp = ctx.proxy.handle(&ctx.info, req.map(crate::proxy::ClientBody::Hyper)).await;
            ctx.draining.mark(version, &mut resp);
            Ok(resp.map(|body| InFlight { body, ctx }))
        })
    }
}

/// The response body, which also tells the connection's state when the response is done (written out, or
/// given up), so the header read timeout never cuts a connection with a response still streaming.
struct InFlight {
    body: ProxyBody,
    ctx: Arc<ConnCtx>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ctx.state.request_done();
    }
}

impl http_body::Body for InFlight {
    type Data = bytes::Bytes;
    type Error = <ProxyBody as http_body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A listener as configured.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub trust_forward_header: bool,
    /// Head sizes and the connection cap.
    pub limits: Limits,
}

/// Takes the inherited socket for this listener (hot upgrade, socket activation) or binds a new one with a
/// large accept backlog and SO_REUSEADDR, so a restart does not wait out TIME_WAIT.
pub fn bind(cfg: &ListenerConfig) -> Result<TcpListener, BindError> {
    let err = |source| BindError { name: cfg.name.clone(), addr: cfg.addr, source };
    let std_listener = match inherit::take_tcp(&cfg.name, cfg.addr) {
        Some(inherited) => {
            tracing::info!(listener = %cfg.name, addr = %cfg.addr, "using the inherited socket");
            inherited.set_nonblocking(true).map_err(err)?;
            inherited
        }
        None => bind_new(cfg).map_err(err)?,
    };
    // On the handover list from now until `serve` stops, so an upgrade at any moment passes it on.
    inherit::register(&cfg.name, std_listener.as_fd()).map_err(err)?;
    TcpListener::from_std(std_listener).map_err(err)
}

fn bind_new(cfg: &ListenerConfig) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(cfg.addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&cfg.addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// The admin listener: inherited or bound, and handed on at an upgrade for as long as the process lives.
pub fn bind_admin(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let cfg = ListenerConfig {
        name: inherit::ADMIN.into(),
        addr,
        protocol: Protocol::Http,
        trust_forward_header: false,
        limits: Limits::default(),
    };
    // Listed for the life of the process (`bind` registered it and nothing unregisters it).
    bind(&cfg).map_err(|e| e.source)
}

/// How a listener's loop accepts. With one runtime, through tokio, which registers each socket with that
/// runtime. In thread-per-core mode, straight from the kernel (readiness still through tokio), so a socket
/// handed to another worker is registered once, with that worker's IO driver, and never with the accepting
/// thread's: two `epoll_ctl` calls fewer per handed-over connection.
enum Acceptor {
    Tokio(TcpListener),
    Raw(tokio::io::unix::AsyncFd<std::net::TcpListener>),
}

/// An accepted socket, registered with this runtime (`Tokio`) or not yet with any (`Raw`).
enum Accepted {
    Tokio(TcpStream),
    Raw(std::net::TcpStream),
}

impl Acceptor {
    fn new(listener: TcpListener) -> std::io::Result<Acceptor> {
        if crate::worker::get().is_none() {
            return Ok(Acceptor::Tokio(listener));
        }
        let std_listener = listener.into_std()?;
        // SAFETY: the std listener owns its descriptor, and the AsyncFd owns the listener: the descriptor is
        // neither closed nor replaced while registered.
        Ok(Acceptor::Raw(unsafe { tokio::io::unix::AsyncFd::register(std_listener)? }))
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Acceptor::Tokio(l) => l.local_addr(),
            Acceptor::Raw(l) => l.get_ref().local_addr(),
        }
    }

    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Acceptor::Tokio(l) => l.as_fd(),
            Acceptor::Raw(l) => l.get_ref().as_fd(),
        }
    }

    async fn accept(&self) -> std::io::Result<(Accepted, SocketAddr)> {
        let raw = match self {
            Acceptor::Tokio(l) => return l.accept().await.map(|(s, peer)| (Accepted::Tokio(s), peer)),
            Acceptor::Raw(l) => l,
        };
        loop {
            let mut ready = raw.readable().await?;
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            match ready.try_io(|l| socket2::SockRef::from(l.get_ref()).accept4(flags)) {
                Ok(Ok((socket, addr))) => {
                    let peer = addr.as_socket().ok_or_else(|| std::io::Error::other("a peer without an IP address"))?;
                    return Ok((Accepted::Raw(socket.into()), peer));
                }
                Ok(Err(e)) => return Err(e),
                // Nothing to accept after all: readiness was cleared, wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

impl Accepted {
    fn set_nodelay(&self) -> std::io::Result<()> {
        match self {
            Accepted::Tokio(s) => s.set_nodelay(true),
            Accepted::Raw(s) => s.set_nodelay(true),
        }
    }
}

/// Starts a connection's task: on this runtime, or on the worker it was assigned to (thread-per-core mode).
/// There the socket becomes a tokio one inside the task, so it registers with that worker's IO driver and
/// its reads and writes wake that worker only.
fn place<F, Fut>(stream: Accepted, assigned: Option<crate::worker::Assigned>, run: F)
where
    F: FnOnce(TcpStream, Option<crate::worker::Assigned>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let std_stream = match stream {
        Accepted::Tokio(stream) => return drop(tokio::spawn(run(stream, assigned))),
        Accepted::Raw(stream) => stream,
    };
    // The assigned worker's runtime; from that worker's own thread this is a plain local spawn.
    let handle = assigned.as_ref().map(|w| w.handle().clone());
    let start = async move {
        match TcpStream::from_std(std_stream) {
            Ok(stream) => run(stream, assigned).await,
            Err(e) => tracing::debug!(error = %e, "cannot register the connection with its worker"),
        }
    };
    match handle {
        Some(handle) => drop(handle.spawn(start)),
        None => drop(tokio::spawn(start)),
    }
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
    let listener = match Acceptor::new(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listener = %name, error = %e, "cannot accept on the listener");
            return;
        }
    };
    let local = listener.local_addr().ok();
    let connections = Tracker::new();
    let draining = drain::Draining(shutdown.clone());
    let open = metrics::gauge!(telemetry::OPEN_CONNECTIONS, "listener" => cfg.name.clone());
    let accepted = metrics::counter!(telemetry::CONNECTIONS_TOTAL, "listener" => cfg.name.clone());
    // The header read timeout is kept per connection by `conn::serve` with one timer, instead of hyper's, which
    // arms (and allocates) a timer at every request head.
    let mut h1 = hyper::server::conn::http1::Builder::new();
    // hyper's read buffer is capped at the head limit, so an unfinished head costs at most that much: hyper
    // answers 431 when the buffer fills without a complete head.
    let limits = cfg.limits;
    h1.timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(limits.max_head_bytes.max(crate::proxy::limits::MIN_HEAD_BYTES));
    // hyper's own default is 100 on an uninitialised stack array; any other count makes it fill one per
    // request head, so it is only set when it differs.
    if limits.max_headers != crate::proxy::limits::DEFAULT_MAX_HEADERS {
        h1.max_headers(limits.max_headers);
    }
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX));
    let parked = metrics::gauge!(telemetry::PARKED_CONNECTIONS, "listener" => cfg.name.clone());
    let codec = h1::Settings {
        limits: h1::head::HeadLimits {
            max_head_bytes: limits.max_head_bytes.max(crate::proxy::limits::MIN_HEAD_BYTES),
            max_headers: limits.max_headers,
            max_request_line: limits.max_request_line_bytes,
        },
        head_timeout: limits.header_timeout,
    };
    let protocols = Arc::new(conn::Protocols {
        h1,
        h2,
        parked,
        max_request_line: limits.max_request_line_bytes,
        // Decided once per listener: with more fields allowed than the codec parses, hyper serves every head.
        codec: (limits.max_headers <= h1::head::MAX_HEADERS).then_some(codec),
    });
    let refused = metrics::counter!(telemetry::CONNECTIONS_REFUSED_TOTAL, "listener" => cfg.name.clone());
    let mut cap = serve::accept::Cap::new(limits.connection_cap(), refused);
    let mut backoff = serve::accept::Backoff::default();
    tracing::info!(listener = %name, addr = ?local, protocol = ?cfg.protocol, max_connections = limits.connection_cap(),
        "listening");

    loop {
        let (stream, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(pair) => pair,
                Err(e) => {
                    backoff.failed(&name, &e).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        backoff.succeeded();
        let Some(permit) = cap.admit(&name) else { continue };
        let _ = stream.set_nodelay();
        accepted.increment(1);
        let token = connections.enter();
        let state = drain::ConnState::new();
        // Everything a request needs from its connection, behind one reference count per request.
        let ctx = Arc::new(ConnCtx {
            proxy: proxy.clone(),
            info: ConnInfo::new(peer, name.clone(), tls.is_some(), cfg.trust_forward_header),
            draining: draining.clone(),
            state: state.clone(),
        });
        let service = ConnService(ctx);
        let span = tracing::debug_span!("conn", listener = %name, peer = %peer, local = ?local);
        let open = open.clone();
        let protocols = protocols.clone();
        let drain_signal = shutdown.clone();
        // In thread-per-core mode the connection goes to the worker with the fewest open ones, and its whole
        // life (and every task it spawns) stays there.
        let assigned = crate::worker::get().map(|w| w.assign());
        match &tls {
            None => {
                let run = move |stream: TcpStream, assigned: Option<crate::worker::Assigned>| {
                    async move {
                        let _held = (token, permit, assigned);
                        let io = drain::ActivityIo::new(stream, state.clone());
                        open.increment(1.0);
                        conn::serve(io, service, state, drain_signal, protocols, limits.header_timeout).await;
                        open.decrement(1.0);
                    }
                    .instrument(span)
                };
                place(stream, assigned, run);
            }
            Some(acceptor) => {
                // The handshake is bounded and counted as a connection, so a drain waits for it too.
                let acceptor = acceptor.clone();
                let run = move |stream: TcpStream, assigned: Option<crate::worker::Assigned>| {
                    async move {
                        let _held = (token, permit, assigned);
                        let io = drain::ActivityIo::new(stream, state.clone());
                        let tls_stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
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
                        conn::serve(tls_stream, service, state, drain_signal, protocols, limits.header_timeout).await;
                        open.decrement(1.0);
                    }
                    .instrument(span)
                };
                place(stream, assigned, run);
            }
        }
    }
    inherit::unregister(listener.as_fd());
    drop(listener);
    tracing::info!(listener = %name, connections = connections.count(), "stopped accepting; draining connections");
    // Connections first, then tunnels (WebSocket and other upgrades, which hyper no longer tracks), all
    // within one deadline.
    let drained = async {
        connections.wait_idle().await;
        proxy.tunnels.wait_idle().await;
    };
    if tokio::time::timeout(drain_timeout, drained).await.is_err() {
        tracing::warn!(listener = %name, deadline_s = drain_timeout.as_secs_f64(), connections = connections.count(),
            tunnels = proxy.tunnels.count(), "drain deadline reached; closing remaining connections");
    }
}
