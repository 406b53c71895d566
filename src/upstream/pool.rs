//! The connection pool of one upstream server: HTTP/1.1 connections over hyper's connection-level client.
//!
//! A pool belongs to exactly one [`Server`](super::Server), so it needs no keyed map: idle connections sit on
//! a stack (the most recently used on top, its socket and buffers still warm) behind a lock that is taken
//! twice per request and never held across anything slow. A connection goes back on the stack only when
//! its response body was read to the end, which the proxy's response body reports when it finishes; no task
//! is spawned per request to watch for that, and no channel hands connections between tasks.
//!
//! In thread-per-core mode (`crate::worker`) there is one such stack pair per worker: a socket is registered
//! with the IO driver of the runtime that opened it, so a connection opened on one worker and used from another
//! would wake the first at every read. A request takes and returns connections of its own worker, and
//! `MaxIdleConnsPerHost` caps each worker's stacks (as nginx's `keepalive N` is per worker process).
//!
//! A pooled connection the server closed while it sat idle is noticed either at checkout (its connection
//! task saw the close) or when the request is handed to it: hyper then gives the request back untouched, and
//! it is sent again on another connection. A request that has left for the server is never repeated.
//!
//! Every connection's socket is listed while it is open (`sockets`), so the server's drain deadline can cut all
//! of them at once ([`Pool::cut`]) without a request registering anything to be woken by it.
//!
//! Plain-TCP HTTP/1.1 requests without a body (almost every GET) or with a small declared one do not use
//! hyper's client at all: they go
//! through Ficus's own codec (`super::h1`), driven from the request's task, on connections kept on a second
//! stack beside hyper's, under the same lock ([`Pool::send`] decides; [`uses_codec`] is the one switch).
//! Their response body puts the connection back itself when it ends cleanly.
//!
//! `https://` servers are dialed with the backend's TLS (SNI, verification, client certificate; see
//! `model::upstream_tls`). When ALPN picks `h2`, or the backend says `HTTP2: prior-knowledge`, the server is
//! spoken to over one shared HTTP/2 connection instead of the stack: every request opens a stream on it (so
//! gRPC, trailers included, passes), read lock-free, and replaced when the server closes it. Requests that
//! upgrade the connection (WebSocket) always get an HTTP/1.1 connection of their own.

use super::forwarded::Forwarded;
use super::h1;
use super::sockets::{Sockets, Tracked};
use crate::model::{Http2, UpstreamSettings, UpstreamTls};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{header, HeaderMap, Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect to {target}: {source}")]
    Connect { target: String, source: std::io::Error },
    #[error("connect to {target} timed out after {}", crate::model::format_duration(*.after))]
    DialTimeout { target: String, after: Duration },
    #[error("TLS handshake with {target}: {source}")]
    Tls { target: String, source: std::io::Error },
    #[error("TLS handshake with {target} timed out after {}", crate::model::format_duration(*.after))]
    TlsTimeout { target: String, after: Duration },
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error(transparent)]
    H1(#[from] h1::Error),
    /// The client's body failed while it was read for the codec (it went away, or passed the frontend's limit).
    #[error("request body: {0}")]
    RequestBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the server's drain deadline passed")]
    Cut,
    /// No response head by the deadline `Pool::send` was given (the backend's read timeout).
    #[error("no response within the read timeout")]
    ReadTimeout,
}

/// `$fut` awaited, bounded by `$deadline` when there is one: the parts of an exchange outside the codec's own
/// timer (reading a small body whole, dialing, hyper's client). A macro, not an `async fn`: one of those keeps
/// its future argument twice in its state (as the argument and inside the timeout), and hyper's client
/// future is large enough that the handler's future then crosses into a much slower copy.
macro_rules! within {
    ($deadline:expr, $fut:expr) => {
        match $deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, $fut).await.map_err(|_| PoolError::ReadTimeout),
            None => Ok($fut.await),
        }
    };
}

/// Where connections go: an address known up front, or a name resolved at each dial (so DNS changes are
/// followed the way a fresh connection would follow them).
#[derive(Debug, Clone)]
enum Target {
    Addr(SocketAddr),
    Name(String, u16),
}

impl Target {
    fn new(authority: &Authority, scheme: &Scheme) -> Target {
        let port = authority.port_u16().unwrap_or(if *scheme == Scheme::HTTPS { 443 } else { 80 });
        let host = authority.host();
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Name(bare.to_string(), port),
        }
    }
}

impl Target {
    fn authority(&self) -> Option<Authority> {
        Authority::try_from(self.to_string()).ok()
    }

    /// The host part, as SNI and certificate checks name it.
    fn host(&self) -> String {
        match self {
            Target::Addr(a) => a.ip().to_string(),
            Target::Name(h, _) => h.clone(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Name(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// A request body that can stand in, empty, for the body of a request sent again. Only requests whose body
/// was empty to begin with are ever sent again, so nothing of the original body is lost.
pub trait Replay {
    fn empty() -> Self;
}

/// What is kept of a request so it can go out again if the pooled connection it was sent on turns out to
/// have been closed by the server (the close and the request crossed on the wire).
struct Copy {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Copy {
    /// Only idempotent requests without a body: sending one twice is harmless (RFC 9110 section 9.2.2).
    fn of<B: Body>(req: &Request<B>) -> Option<Copy> {
        (idempotent(req.method()) && req.body().is_end_stream()).then(|| Copy {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    fn into_request<B: Replay>(self) -> Request<B> {
        let mut req = Request::new(B::empty());
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Sending the request twice is harmless (RFC 9110 section 9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Whether a request to a server of this pool goes through Ficus's own codec: a plain-TCP HTTP/1.1 server,
/// and a request without a body, or with a declared one of at most `h1::SMALL_BODY` bytes, that does not ask
/// to upgrade. Everything else (large or chunked bodies, upgrades, CONNECT, TLS, HTTP/2) stays on hyper's
/// client.
fn uses_codec<B: Body>(plain_h1: bool, req: &Request<B>) -> bool {
    plain_h1
        && req.body().size_hint().exact().is_some_and(|n| n <= h1::SMALL_BODY)
        && *req.method() != Method::CONNECT
        && !req.headers().contains_key(header::UPGRADE)
}

/// A response body from the server: read by hyper's client, or by Ficus's own codec.
pub enum UpstreamBody {
    Hyper(Incoming),
    H1(h1::ResponseBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::H1(b) => b.size_hint(),
        }
    }
}

/// True when the exchange failed the way it does when the server closed the connection as the request
/// went out: the connection ended (or was reset) before a response came.
fn closed_under_us(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof);
        }
        src = s.source();
    }
    false
}

/// A connection checked out for one exchange. Hand it back with [`Pool::put`] once the response body was
/// read to its end; dropping it instead closes the connection (once hyper is done with it). An HTTP/2 stream
/// needs no handing back: its connection stays shared in the pool.
pub struct Conn<B> {
    tx: Option<SendRequest<B>>,
}

/// How `https://` servers are dialed.
struct Tls {
    connector: tokio_rustls::TlsConnector,
    /// `http/1.1` only, for upgrades.
    h1_connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    handshake_timeout: Duration,
}

/// A fresh connection: HTTP/1.1 for the stack, or HTTP/2 to share.
enum Dialed<B> {
    H1(SendRequest<B>),
    H2(http2::SendRequest<B>),
}

/// A byte stream to a server, plain or TLS: one handshake function serves both.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Stream for T {}

struct Idle<B> {
    tx: SendRequest<B>,
    since: Instant,
}

struct IdleH1 {
    conn: Box<h1::Connection>,
    since: Instant,
}

/// The idle connections, under one lock: hyper's senders, and the codec's connections. Together they hold at
/// most `max_idle` (`MaxIdleConnsPerHost` counts connections to the server, whichever path made them).
struct Stacks<B> {
    hyper: Vec<Idle<B>>,
    h1: Vec<IdleH1>,
}

impl<B> Stacks<B> {
    fn len(&self) -> usize {
        self.hyper.len() + self.h1.len()
    }

    /// When the stacks are full, takes out the oldest idle connection of either (so the pool keeps the
    /// warmest ones) and returns it, to be closed once the lock is released.
    fn make_room(&mut self, max_idle: usize) -> (Option<Idle<B>>, Option<IdleH1>) {
        if self.len() < max_idle {
            return (None, None);
        }
        let hyper_older = match (self.hyper.first(), self.h1.first()) {
            (Some(a), Some(b)) => a.since <= b.since,
            (a, _) => a.is_some(),
        };
        if hyper_older {
            (Some(self.hyper.remove(0)), None)
        } else {
            (None, (!self.h1.is_empty()).then(|| self.h1.remove(0)))
        }
    }
}

/// One worker's idle connections, on a cache line of its own: each worker takes its slot's lock twice per
/// request.
#[repr(align(128))]
struct Slot<B> {
    stacks: Mutex<Stacks<B>>,
    /// A task on the slot's worker closes connections idle past `idle_timeout` while any sit idle; it stops
    /// when none do.
    reaper: AtomicBool,
}

impl<B> Slot<B> {
    fn new() -> Self {
        Slot { stacks: Mutex::new(Stacks { hyper: Vec::new(), h1: Vec::new() }), reaper: AtomicBool::new(false) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stacks<B>> {
        self.stacks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner<B> {
    target: Target,
    scheme: Scheme,
    tls: Option<Tls>,
    http2: Http2,
    /// The shared HTTP/2 connection, once the server speaks HTTP/2.
    h2: ArcSwapOption<http2::SendRequest<B>>,
    /// Whether this server can ever speak HTTP/2 (TLS with ALPN, or prior knowledge): a plain HTTP/1.1 server
    /// skips the shared-connection check and the upgrade probe on every request.
    may_h2: bool,
    /// A plain-TCP server spoken to in HTTP/1.1: bodyless requests use the codec (see [`uses_codec`]).
    plain_h1: bool,
    dial_timeout: Duration,
    keep_alive: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// One slot per worker (`crate::worker`; one outside thread-per-core mode): a request takes and returns
    /// connections of its own worker, whose IO driver their sockets are registered with.
    idle: Box<[Slot<B>]>,
    /// Every open connection's socket, for [`Pool::cut`].
    sockets: Sockets,
    /// This pool, for the reaper, which must not keep it alive.
    me: Weak<Inner<B>>,
}

/// The pool of one server; `B` is the request body type.
pub struct Pool<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Pool<B>
where
    B: Body + Replay + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(scheme: &Scheme, authority: &Authority, settings: &UpstreamSettings, tls: Option<&UpstreamTls>) -> Self {
        let target = Target::new(authority, scheme);
        let tls = tls.filter(|_| *scheme == Scheme::HTTPS).map(|t| {
            let host = t.server_name.clone().unwrap_or_else(|| target.host());
            Tls {
                connector: tokio_rustls::TlsConnector::from(t.config.clone()),
                h1_connector: tokio_rustls::TlsConnector::from(t.h1_config.clone()),
                // Checked at validation; a URL host that is not a valid name (it came from a parsed URI) falls
                // back to the literal, which verification then refuses with a clear error.
                name: ServerName::try_from(host).unwrap_or_else(|_| ServerName::try_from("invalid.").expect("static")),
                handshake_timeout: settings.tls_handshake_timeout,
            }
        });
        let may_h2 = settings.http2 == Http2::PriorKnowledge || (tls.is_some() && settings.http2 != Http2::Off);
        let plain_h1 = tls.is_none() && settings.http2 != Http2::PriorKnowledge;
        Pool {
            inner: Arc::new_cyclic(|me| Inner {
                target,
                scheme: scheme.clone(),
                tls,
                http2: settings.http2,
                h2: ArcSwapOption::empty(),
                may_h2,
                plain_h1,
                dial_timeout: settings.dial_timeout,
                keep_alive: settings.keep_alive_period,
                // As long as the connection-level keep-alive probes would take to call a silent peer dead.
                idle_timeout: settings.keep_alive_period * 3,
                max_idle: settings.max_idle_per_host as usize,
                idle: (0..crate::worker::count()).map(|_| Slot::new()).collect(),
                sockets: Sockets::default(),
                me: me.clone(),
            }),
        }
    }

    /// Connections sitting idle now.
    pub fn idle_count(&self) -> usize {
        self.inner.idle.iter().map(|slot| slot.lock().len()).sum()
    }

    /// Ends every exchange with the server (its drain deadline passed): each open connection's socket is shut
    /// down, so what runs on it fails at once, and no connection is dialed or reused after.
    pub fn cut(&self) {
        self.inner.sockets.cut();
        self.close_idle();
    }

    /// Closes every idle connection (the server was cut off; nothing will reuse them).
    pub fn close_idle(&self) {
        for slot in self.inner.idle.iter() {
            let idle = {
                let mut stacks = slot.lock();
                (std::mem::take(&mut stacks.hyper), std::mem::take(&mut stacks.h1))
            };
            drop(idle);
        }
        // Streams still open on it keep it alive until they end.
        self.inner.h2.store(None);
    }

    /// Sends `req` on an idle connection, or on a new one when none is usable. `now` is the request's start,
    /// read once by the caller, against which idle connections are aged. `forwarded`: the fields the proxy
    /// sets on the request, not in its map: the codec writes them into the head, and for hyper's client they
    /// go into the map here. `deadline`: the backend's read timeout, by when the response head must be in
    /// (failing with [`PoolError::ReadTimeout`]); `None` for a caller that bounds the exchange itself.
    pub async fn send(
        &self,
        mut req: Request<B>,
        forwarded: Option<&Forwarded>,
        now: Instant,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Response<UpstreamBody>, Conn<B>), PoolError> {
        if uses_codec(self.inner.plain_h1, &req) {
            return self.send_h1(&mut req, forwarded, now, deadline).await;
        }
        if let Some(forwarded) = forwarded {
            forwarded.apply(req.headers_mut());
        }
        let (resp, conn) = within!(deadline, self.send_hyper(req, now))??;
        Ok((resp.map(UpstreamBody::Hyper), conn))
    }

    /// Whether [`Pool::send`] takes `req` through the codec. The proxy asks first and awaits
    /// [`Pool::send_h1`] itself: `send`'s future around `send_h1`'s is one more future built and copied into
    /// its caller's state per request, and one more copy of the request moved in.
    pub fn takes_codec(&self, req: &Request<B>) -> bool {
        uses_codec(self.inner.plain_h1, req)
    }

    /// One exchange through the codec, from this task: an idle connection that still looks open, or a new
    /// one. A small declared body is read whole first. A pooled connection that turns out closed before any
    /// response byte (the server's close crossed the request) is dropped and the request sent again on
    /// another, when it is idempotent; nothing is copied to send it again. Only for a request
    /// [`Pool::takes_codec`] said yes to; [`Pool::send`] decides for callers that do not ask. The request is
    /// borrowed, not moved into the exchange's future: the codec only reads it (and takes a small body out).
    pub async fn send_h1(
        &self,
        req: &mut Request<B>,
        forwarded: Option<&Forwarded>,
        now: Instant,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Response<UpstreamBody>, Conn<B>), PoolError> {
        let body = if req.body().is_end_stream() {
            Bytes::new()
        } else {
            use http_body_util::BodyExt;
            let streamed = std::mem::replace(req.body_mut(), B::empty());
            match within!(deadline, streamed.collect())? {
                Ok(whole) => whole.to_bytes(),
                Err(e) => return Err(PoolError::RequestBody(e.into())),
            }
        };
        loop {
            if self.inner.sockets.is_cut() {
                return Err(PoolError::Cut);
            }
            let (mut conn, reused) = match self.inner.checkout_h1(now) {
                Some(conn) => (conn, true),
                None => (h1::Connection::new(within!(deadline, Box::pin(self.inner.tcp()))??), false),
            };
            // The wait for the response head is bounded by the connection's own timer (`h1::Connection`),
            // not by a timer made for this exchange.
            match conn.request(req, forwarded, &body, deadline).await {
                Ok(head) => {
                    let h1::Head { status, version, headers, framing, keep_alive } = head;
                    let shelf: Arc<dyn h1::Shelf> = self.inner.clone();
                    let body = h1::ResponseBody::new(conn, framing, keep_alive, shelf);
                    let mut resp = Response::new(UpstreamBody::H1(body));
                    *resp.status_mut() = status;
                    *resp.version_mut() = version;
                    *resp.headers_mut() = headers;
                    return Ok((resp, Conn { tx: None }));
                }
                Err(e) if reused && e.before_response() && idempotent(req.method()) => continue,
                Err(h1::Error::Timeout) => return Err(PoolError::ReadTimeout),
                Err(e) => return Err(PoolError::H1(e)),
            }
        }
    }

    /// One exchange through hyper's client connection.
    async fn send_hyper(&self, mut req: Request<B>, now: Instant) -> Result<(Response<Incoming>, Conn<B>), PoolError> {
        let upgrade = self.inner.may_h2 && req.headers().contains_key(header::UPGRADE);
        loop {
            if self.inner.sockets.is_cut() {
                return Err(PoolError::Cut);
            }
            if self.inner.may_h2 && !upgrade {
                if let Some(h2) = self.inner.h2.load_full() {
                    if !h2.is_closed() {
                        return self.inner.send_h2(&h2, req).await;
                    }
                    self.inner.h2.store(None);
                }
            }
            let (mut tx, reused) = match self.inner.checkout(now) {
                Some(tx) => (tx, true),
                // Boxed: dialing is rare, and its future is large; unboxed it would swell every request's future.
                None => match Box::pin(self.inner.dial(upgrade)).await? {
                    Dialed::H1(tx) => (tx, false),
                    Dialed::H2(h2) => {
                        let h2 = Arc::new(h2);
                        self.inner.h2.store(Some(h2.clone()));
                        return self.inner.send_h2(&h2, req).await;
                    }
                },
            };
            // Each retry below drops a pooled connection that failed, so this ends; a request on a fresh
            // connection is never sent again.
            let copy = if reused { Copy::of(&req) } else { None };
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Conn { tx: Some(tx) })),
                Err(mut e) => match (e.take_message(), copy) {
                    // hyper gave the request back: none of it went out.
                    (Some(back), _) if reused => req = back,
                    (None, Some(copy)) if closed_under_us(e.error()) => req = copy.into_request(),
                    _ => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
    }

    /// A connection of its own to the server (TLS included), for a health check's HTTP/1.1 exchange.
    pub async fn open_h1(&self) -> Result<Box<dyn Stream>, PoolError> {
        self.inner.open_h1().await
    }

    /// Takes back a connection whose response was read to its end.
    pub fn put(&self, conn: Conn<B>) {
        let Conn { tx: Some(tx) } = conn else { return };
        if tx.is_closed() || self.inner.max_idle == 0 || self.inner.sockets.is_cut() {
            return;
        }
        if tx.is_ready() {
            Inner::push(&self.inner, tx);
        } else {
            // Its connection task has not yet seen the end of the exchange (it runs after this one). Rare:
            // usually the body's end and the connection's readiness arrive in the same read.
            let weak = Arc::downgrade(&self.inner);
            let limit = self.inner.idle_timeout;
            tokio::spawn(async move {
                let mut tx = tx;
                if let Ok(Ok(())) = tokio::time::timeout(limit, tx.ready()).await {
                    if let Some(inner) = weak.upgrade() {
                        Inner::push(&inner, tx);
                    }
                }
            });
        }
    }
}

impl<B> Inner<B>
where
    B: Body + Replay + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// This worker's slot (the first for a thread outside the workers, or a pool made before they started).
    fn slot_index(&self) -> usize {
        let i = crate::worker::current();
        if i < self.idle.len() {
            i
        } else {
            0
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stacks<B>> {
        self.idle[self.slot_index()].lock()
    }

    /// The warmest idle codec connection that is neither past the idle timeout nor closed by the server.
    fn checkout_h1(&self, now: Instant) -> Option<Box<h1::Connection>> {
        let mut stale = Vec::new();
        let found = {
            let mut stacks = self.lock();
            loop {
                let Some(entry) = stacks.h1.pop() else { break None };
                if now.saturating_duration_since(entry.since) < self.idle_timeout && entry.conn.is_open() {
                    break Some(entry.conn);
                }
                stale.push(entry);
            }
        };
        // Closed outside the lock.
        drop(stale);
        found
    }

    fn checkout(&self, now: Instant) -> Option<SendRequest<B>> {
        let mut stale = Vec::new();
        let found = {
            let mut stacks = self.lock();
            let idle = &mut stacks.hyper;
            loop {
                let Some(entry) = idle.pop() else { break None };
                if entry.tx.is_ready() && now.saturating_duration_since(entry.since) < self.idle_timeout {
                    break Some(entry.tx);
                }
                stale.push(entry);
            }
        };
        // Closed outside the lock.
        drop(stale);
        found
    }

    fn push(this: &Arc<Self>, tx: SendRequest<B>) {
        let since = Instant::now();
        let at = this.slot_index();
        let slot = &this.idle[at];
        {
            let mut stacks = slot.lock();
            let oldest = stacks.make_room(this.max_idle);
            stacks.hyper.push(Idle { tx, since });
            drop(stacks);
            drop(oldest);
        }
        if !slot.reaper.swap(true, Ordering::AcqRel) {
            this.start_reaper(at);
        }
    }

    /// Started on the runtime of the worker that owns slot `at`, the one that just put a connection there.
    fn start_reaper(&self, at: usize) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.idle[at].reaper.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<Self> = self.me.clone();
        let period = (self.idle_timeout / 2).max(Duration::from_millis(100));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { return };
                let now = Instant::now();
                let slot = &inner.idle[at];
                let expired: (Vec<Idle<B>>, Vec<IdleH1>) = {
                    let mut stacks = slot.lock();
                    let fresh = |since: Instant| now.saturating_duration_since(since) < inner.idle_timeout;
                    let (keep, expired) = std::mem::take(&mut stacks.hyper)
                        .into_iter()
                        .partition(|e: &Idle<B>| !e.tx.is_closed() && fresh(e.since));
                    stacks.hyper = keep;
                    let (keep, expired_h1) = std::mem::take(&mut stacks.h1)
                        .into_iter()
                        .partition(|e: &IdleH1| fresh(e.since) && e.conn.is_open());
                    stacks.h1 = keep;
                    if stacks.len() == 0 {
                        // Under the lock, so a connection pushed right after sees the flag down and restarts us.
                        slot.reaper.store(false, Ordering::Release);
                        drop(stacks);
                        drop((expired, expired_h1));
                        return;
                    }
                    (expired, expired_h1)
                };
                drop(expired);
            }
        });
    }

    /// A new connection: TCP, then TLS for `https://` servers, then HTTP/1.1 or HTTP/2 as ALPN or the
    /// backend's `HTTP2` decides. `h1_only` for upgrades.
    async fn dial(&self, h1_only: bool) -> Result<Dialed<B>, PoolError> {
        let stream = self.tcp().await?;
        let Some(tls) = &self.tls else {
            // Plain connections keep their concrete type: no dynamic dispatch on every read and write.
            return self.handshake(stream, self.http2 == Http2::PriorKnowledge && !h1_only).await;
        };
        let stream = self.tls(tls, stream, h1_only).await?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        self.handshake(stream, h2).await
    }

    /// A byte stream to the server outside the pool, TLS included (HTTP/1.1 by ALPN): for health checks,
    /// which must reach a server the way requests do.
    async fn open_h1(&self) -> Result<Box<dyn Stream>, PoolError> {
        let stream = self.tcp().await?;
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some(tls) => Ok(Box::new(self.tls(tls, stream, true).await?)),
        }
    }

    async fn tcp(&self) -> Result<Tracked, PoolError> {
        let timeout = self.dial_timeout;
        let stream = match tokio::time::timeout(timeout, self.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(PoolError::Connect { target: self.target.to_string(), source }),
            Err(_) => return Err(PoolError::DialTimeout { target: self.target.to_string(), after: timeout }),
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(self.keep_alive);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(self.sockets.track(stream))
    }

    async fn tls(
        &self,
        tls: &Tls,
        stream: Tracked,
        h1_only: bool,
    ) -> Result<tokio_rustls::client::TlsStream<Tracked>, PoolError> {
        let connector = if h1_only { &tls.h1_connector } else { &tls.connector };
        let target = || self.target.to_string();
        match tokio::time::timeout(tls.handshake_timeout, connector.connect(tls.name.clone(), stream)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(source)) => Err(PoolError::Tls { target: target(), source }),
            Err(_) => Err(PoolError::TlsTimeout { target: target(), after: tls.handshake_timeout }),
        }
    }

    async fn handshake<S: Stream>(&self, stream: S, h2: bool) -> Result<Dialed<B>, PoolError> {
        if h2 {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(self.keep_alive)
                .keep_alive_while_idle(true)
                .handshake(TokioIo::new(stream))
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
                }
            });
            return Ok(Dialed::H2(tx));
        }
        let (tx, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Dialed::H1(tx))
    }

    /// One exchange as a stream of the shared HTTP/2 connection. The request gets HTTP/2's form: an absolute
    /// target whose authority is the Host header the proxy chose (`:authority`), and no Host header.
    async fn send_h2(
        &self,
        h2: &http2::SendRequest<B>,
        mut req: Request<B>,
    ) -> Result<(Response<Incoming>, Conn<B>), PoolError> {
        let authority = req
            .headers_mut()
            .remove(header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .or_else(|| self.target.authority());
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = authority;
        parts.path_and_query = req.uri().path_and_query().cloned();
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = Version::HTTP_2;
        let mut tx = h2.clone();
        match tx.try_send_request(req).await {
            Ok(resp) => Ok((resp, Conn { tx: None })),
            Err(mut e) => {
                if tx.is_closed() {
                    // Gone (GOAWAY or a broken connection): the next request dials a new one.
                    if self.h2.load().as_ref().is_some_and(|cur| std::ptr::eq(&**cur, h2)) {
                        self.h2.store(None);
                    }
                }
                let _ = e.take_message();
                Err(PoolError::Http(e.into_error()))
            }
        }
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        match &self.target {
            Target::Addr(addr) => TcpStream::connect(*addr).await,
            Target::Name(host, port) => {
                let mut last = None;
                for addr in tokio::net::lookup_host((host.as_str(), *port)).await? {
                    match TcpStream::connect(addr).await {
                        Ok(s) => return Ok(s),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolved to no address")
                }))
            }
        }
    }
}

impl<B> h1::Shelf for Inner<B>
where
    B: Body + Replay + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Takes back a codec connection whose exchange ended cleanly.
    fn put(&self, conn: Box<h1::Connection>) {
        if self.max_idle == 0 || self.sockets.is_cut() {
            return;
        }
        let since = Instant::now();
        let at = self.slot_index();
        let slot = &self.idle[at];
        let (oldest, start_reaper) = {
            let mut stacks = slot.lock();
            let oldest = stacks.make_room(self.max_idle);
            stacks.h1.push(IdleH1 { conn, since });
            (oldest, !slot.reaper.swap(true, Ordering::AcqRel))
        };
        drop(oldest);
        if start_reaper {
            self.start_reaper(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    impl Replay for Empty<Bytes> {
        fn empty() -> Self {
            Empty::new()
        }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    fn pool(addr: SocketAddr, max_idle: u32, keep_alive: Duration) -> Pool<Empty<Bytes>> {
        let settings =
            UpstreamSettings { max_idle_per_host: max_idle, keep_alive_period: keep_alive, ..Default::default() };
        Pool::new(&Scheme::HTTP, &Authority::try_from(addr.to_string().as_str()).expect("authority"), &settings, None)
    }

    fn read_head(s: &mut std::net::TcpStream) -> bool {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    /// Answers every request head on every connection until the peer closes; counts connections.
    fn keep_alive_server(listener: std::net::TcpListener, accepted: Arc<AtomicUsize>) {
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                accepted.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || while read_head(&mut stream) && stream.write_all(OK).is_ok() {});
            }
        });
    }

    async fn exchange(pool: &Pool<Empty<Bytes>>, method: Method) -> Result<(), PoolError> {
        let req =
            Request::builder().method(method).uri("/").header("host", "test").body(Empty::new()).expect("request");
        let (resp, conn) = pool.send(req, None, Instant::now(), None).await?;
        let body = resp.into_body().collect().await.expect("the body arrives whole").to_bytes();
        assert_eq!(&body[..], b"ok");
        pool.put(conn);
        Ok(())
    }

    /// A server that answers one request on its first connection, closes it when told, then serves
    /// normally. Returns the pool's address, a trigger that closes the first connection and returns once it
    /// is closed, and the count of accepted connections.
    fn closing_first_connection() -> (SocketAddr, impl Fn(), Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (close, close_rx) = mpsc::channel::<()>();
        let (closed_tx, closed) = mpsc::channel::<()>();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        std::thread::spawn(move || {
            let Ok((mut first, _)) = listener.accept() else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            if read_head(&mut first) {
                let _ = first.write_all(OK);
            }
            let _ = close_rx.recv();
            drop(first);
            let _ = closed_tx.send(());
            keep_alive_server(listener, counted);
        });
        // Blocking on purpose: the connection's task cannot run meanwhile, so the pool still takes the
        // connection for open and the request crosses the server's close, as it does on a busy proxy.
        let trigger = move || {
            close.send(()).expect("server thread");
            closed.recv().expect("server closed the connection");
        };
        (addr, trigger, accepted)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_get_that_crossed_the_servers_close_goes_out_again_on_a_new_connection() {
        let (addr, close_first, accepted) = closing_first_connection();
        let pool = pool(addr, 4, Duration::from_secs(30));
        exchange(&pool, Method::GET).await.expect("first exchange");
        assert_eq!(pool.idle_count(), 1);
        close_first();
        exchange(&pool, Method::GET).await.expect("the request is sent again on a new connection");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        exchange(&pool, Method::GET).await.expect("third exchange");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the new connection is pooled and reused");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_post_that_crossed_the_servers_close_is_not_sent_twice() {
        let (addr, close_first, accepted) = closing_first_connection();
        let pool = pool(addr, 4, Duration::from_secs(30));
        exchange(&pool, Method::POST).await.expect("first exchange");
        close_first();
        assert!(matches!(exchange(&pool, Method::POST).await, Err(PoolError::H1(_) | PoolError::Http(_))));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn idle_connections_expire_and_zero_max_idle_keeps_none() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        keep_alive_server(listener, accepted.clone());

        // Idle timeout is three keep-alive periods: 150 ms here.
        let expiring = pool(addr, 4, Duration::from_millis(50));
        exchange(&expiring, Method::GET).await.expect("exchange");
        assert_eq!(expiring.idle_count(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while expiring.idle_count() > 0 {
            assert!(Instant::now() < deadline, "the idle connection never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let none = pool(addr, 0, Duration::from_secs(30));
        exchange(&none, Method::GET).await.expect("exchange");
        exchange(&none, Method::GET).await.expect("exchange");
        assert_eq!(none.idle_count(), 0);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    impl Replay for http_body_util::Full<Bytes> {
        fn empty() -> Self {
            http_body_util::Full::new(Bytes::new())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_small_declared_body_goes_out_with_its_head_and_the_connection_is_reused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (seen_tx, seen) = mpsc::channel::<Vec<u8>>();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let seen_tx = seen_tx.clone();
                std::thread::spawn(move || loop {
                    // Head, then the 5 declared bytes.
                    let mut got = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") || !got.ends_with(b"hello") {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = seen_tx.send(got);
                    if stream.write_all(OK).is_err() {
                        return;
                    }
                });
            }
        });
        let pool: Pool<http_body_util::Full<Bytes>> = Pool::new(
            &Scheme::HTTP,
            &Authority::try_from(addr.to_string().as_str()).expect("authority"),
            &UpstreamSettings { max_idle_per_host: 4, ..Default::default() },
            None,
        );
        for _ in 0..2 {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/in")
                .header("host", "test")
                .header("content-length", "5")
                .body(http_body_util::Full::new(Bytes::from_static(b"hello")))
                .expect("request");
            let (resp, _) = pool.send(req, None, Instant::now(), None).await.expect("exchange");
            assert!(matches!(resp.body(), UpstreamBody::H1(_)), "a small body goes through the codec");
            let body = resp.into_body().collect().await.expect("the body arrives whole").to_bytes();
            assert_eq!(&body[..], b"ok");
            let got = seen.recv().expect("the server saw the request");
            assert_eq!(got, b"POST /in HTTP/1.1\r\nhost: test\r\ncontent-length: 5\r\n\r\nhello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the connection went back and was reused");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn max_idle_counts_the_connections_of_both_paths_together() {
        // Reads a head and the body its Content-Length declares, answers, and goes on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || loop {
                    let mut got = Vec::new();
                    let mut byte = [0u8; 1];
                    while !got.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => got.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: ")?.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).is_err() || stream.write_all(OK).is_err() {
                        return;
                    }
                });
            }
        });
        let pool: Pool<http_body_util::Full<Bytes>> = Pool::new(
            &Scheme::HTTP,
            &Authority::try_from(addr.to_string().as_str()).expect("authority"),
            &UpstreamSettings { max_idle_per_host: 1, ..Default::default() },
            None,
        );
        let send = |body: Bytes| {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/")
                .header("host", "test")
                .header("content-length", body.len().to_string())
                .body(http_body_util::Full::new(body))
                .expect("request");
            pool.send(req, None, Instant::now(), None)
        };
        // A small body goes through the codec, a large one through hyper's client: two connections at once.
        let (small, _) = send(Bytes::from_static(b"hello")).await.expect("small");
        let (large, conn) = send(Bytes::from(vec![b'x'; 64 * 1024])).await.expect("large");
        assert!(matches!(small.body(), UpstreamBody::H1(_)) && matches!(large.body(), UpstreamBody::Hyper(_)));
        small.into_body().collect().await.expect("small body");
        large.into_body().collect().await.expect("large body");
        pool.put(conn);
        assert_eq!(pool.idle_count(), 1, "one idle connection to the server, whichever path made it");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connect_failures_are_reported_not_retried() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("addr");
        let pool = pool(addr, 4, Duration::from_secs(30));
        assert!(matches!(exchange(&pool, Method::GET).await, Err(PoolError::Connect { .. })));
    }
}
