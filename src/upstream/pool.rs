//! The connection pool of one upstream server: HTTP/1.1 connections over hyper's connection-level client.
//!
//! A pool belongs to exactly one [`Server`](super::Server), so it needs no keyed map: idle connections sit on
//! a stack (the most recently used on top, its socket and buffers still warm) behind a lock that is taken
//! twice per request and never held across anything slow. A connection goes back on the stack only when
//! its response body was read to the end, which the proxy's response body reports when it finishes; no task
//! is spawned per request to watch for that, and no channel hands connections between tasks.
//!
//! A pooled connection the server closed while it sat idle is noticed either at checkout (its connection
//! task saw the close) or when the request is handed to it: hyper then gives the request back untouched, and
//! it is sent again on another connection. A request that has left for the server is never repeated.

use crate::model::UpstreamSettings;
use crate::proxy::RequestBody;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect to {target}: {source}")]
    Connect { target: String, source: std::io::Error },
    #[error("connect to {target} timed out after {}", crate::model::format_duration(*.after))]
    DialTimeout { target: String, after: Duration },
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Where connections go: an address known up front, or a name resolved at each dial (so DNS changes are
/// followed the way a fresh connection would follow them).
#[derive(Debug, Clone)]
enum Target {
    Addr(SocketAddr),
    Name(String, u16),
}

impl Target {
    fn new(authority: &Authority) -> Target {
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Name(bare.to_string(), port),
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

/// A connection checked out for one exchange. Hand it back with [`Pool::put`] once the response body was
/// read to its end; dropping it instead closes the connection (once hyper is done with it).
pub struct Conn {
    tx: SendRequest<RequestBody>,
}

struct Idle {
    tx: SendRequest<RequestBody>,
    since: Instant,
}

struct Inner {
    target: Target,
    dial_timeout: Duration,
    keep_alive: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Idle>>,
    /// A task closes connections idle past `idle_timeout` while any sit idle; it stops when none do.
    reaper: AtomicBool,
}

pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    pub fn new(authority: &Authority, settings: &UpstreamSettings) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                target: Target::new(authority),
                dial_timeout: settings.dial_timeout,
                keep_alive: settings.keep_alive_period,
                // As long as the connection-level keep-alive probes would take to call a silent peer dead.
                idle_timeout: settings.keep_alive_period * 3,
                max_idle: settings.max_idle_per_host as usize,
                idle: Mutex::new(Vec::new()),
                reaper: AtomicBool::new(false),
            }),
        }
    }

    /// Connections sitting idle now.
    pub fn idle_count(&self) -> usize {
        self.inner.lock().len()
    }

    /// Closes every idle connection (the server was cut off; nothing will reuse them).
    pub fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.inner.lock());
        drop(idle);
    }

    /// Sends `req` on an idle connection, or on a new one when none is usable. `now` is the request's start,
    /// read once by the caller, against which idle connections are aged.
    pub async fn send(
        &self,
        mut req: Request<RequestBody>,
        now: Instant,
    ) -> Result<(Response<Incoming>, Conn), PoolError> {
        loop {
            let (mut tx, reused) = match self.inner.checkout(now) {
                Some(tx) => (tx, true),
                None => (self.inner.dial().await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Conn { tx })),
                Err(mut e) => match e.take_message() {
                    // The pooled connection was closed before any of the request went out: the request is
                    // whole, so it goes again. Each try drops a dead idle connection, so this ends; a fresh
                    // connection that fails is not retried.
                    Some(back) if reused => req = back,
                    _ => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
    }

    /// Takes back a connection whose response was read to its end.
    pub fn put(&self, conn: Conn) {
        let Conn { tx } = conn;
        if tx.is_closed() || self.inner.max_idle == 0 {
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

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkout(&self, now: Instant) -> Option<SendRequest<RequestBody>> {
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.lock();
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

    fn push(this: &Arc<Inner>, tx: SendRequest<RequestBody>) {
        let since = Instant::now();
        {
            let mut idle = this.lock();
            if idle.len() >= this.max_idle {
                // Full: the oldest goes, so the stack keeps the warmest connections.
                let oldest = idle.remove(0);
                idle.push(Idle { tx, since });
                drop(idle);
                drop(oldest);
            } else {
                idle.push(Idle { tx, since });
            }
        }
        if !this.reaper.swap(true, Ordering::AcqRel) {
            Inner::start_reaper(this);
        }
    }

    fn start_reaper(this: &Arc<Inner>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            this.reaper.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(this);
        let period = (this.idle_timeout / 2).max(Duration::from_millis(100));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { return };
                let now = Instant::now();
                let expired: Vec<Idle> = {
                    let mut idle = inner.lock();
                    let (keep, expired) = std::mem::take(&mut *idle).into_iter().partition(|e: &Idle| {
                        !e.tx.is_closed() && now.saturating_duration_since(e.since) < inner.idle_timeout
                    });
                    *idle = keep;
                    if idle.is_empty() {
                        // Under the lock, so a connection pushed right after sees the flag down and restarts us.
                        inner.reaper.store(false, Ordering::Release);
                        drop(idle);
                        drop(expired);
                        return;
                    }
                    expired
                };
                drop(expired);
            }
        });
    }

    async fn dial(&self) -> Result<SendRequest<RequestBody>, PoolError> {
        let timeout = self.dial_timeout;
        let stream = match tokio::time::timeout(timeout, self.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(PoolError::Connect { target: self.target.to_string(), source }),
            Err(_) => return Err(PoolError::DialTimeout { target: self.target.to_string(), after: timeout }),
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(self.keep_alive);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (tx, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
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
