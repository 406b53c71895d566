//! The polite drain of one client connection, in the listen layer: used at shutdown and when a hot upgrade
//! hands the listeners to a new process.
//!
//! HTTP/2 gets GOAWAY at once (the protocol tells the client which streams were taken, so nothing is lost).
//! HTTP/1.1 has no such signal: closing a keep-alive connection just as the client sends on it fails that
//! request. So an HTTP/1.1 connection is not closed at the start of a drain; its next response carries
//! `Connection: close` (see [`Draining::mark`]), and only a connection that has seen no I/O for
//! [`IDLE_GRACE`] since the drain began is closed. A busy client therefore always learns to reconnect from an
//! answer, never from a reset.
//!
//! I/O is counted, not timestamped: reading the clock on every read and write costs more than the rest of
//! this bookkeeping, and the drain can time the quiet itself from the counts it samples.

use crate::lifecycle::Shutdown;
use hyper_util::server::graceful::GracefulConnection;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long an HTTP/1.1 connection must be quiet before a drain closes it.
pub const IDLE_GRACE: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(50);

/// What the drain and the request-head timeout know about one connection.
#[derive(Default)]
pub struct ConnState {
    /// Reads and writes that moved bytes so far. Only the connection's own task changes it.
    io: AtomicU64,
    /// The connection speaks HTTP/2 (seen on its first request).
    h2: AtomicBool,
    /// Request heads received so far, and requests whose response has not been written out yet.
    requests: AtomicU64,
    inflight: AtomicU64,
    /// The last write to the client could not go out (its receive window is full): whatever hyper still
    /// holds for it must not be dropped. Only the connection's own task changes it.
    write_blocked: AtomicBool,
}

impl ConnState {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnState::default())
    }

    fn touch(&self) {
        // A plain load and store, not a read-modify-write: there is one writer.
        self.io.store(self.io.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    pub fn io_count(&self) -> u64 {
        self.io.load(Ordering::Relaxed)
    }

    /// A request head arrived; [`request_done`](Self::request_done) follows when its response is written.
    pub fn request_started(&self, v: http::Version) {
        if v == http::Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inflight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_done(&self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> bool {
        self.inflight.load(Ordering::Relaxed) > 0
    }

    pub fn write_blocked(&self) -> bool {
        self.write_blocked.load(Ordering::Relaxed)
    }

    fn wrote<T>(&self, res: &Poll<std::io::Result<T>>) {
        let blocked = res.is_pending();
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Relaxed);
        }
    }

    /// Resolves once a whole `limit` went by with no request in progress and no new request head: a client
    /// that keeps the connection idle, or trickles a head too slowly (slowloris), is then let go. Checked
    /// once per `limit` with one timer per connection, rather than a timer armed at every request head,
    /// so a connection goes between one and two `limit`s after its last request. HTTP/2 connections are
    /// left to their own keep-alive.
    pub async fn stalled(&self, limit: Duration) {
        let mut seen = self.requests.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(limit).await;
            let requests = self.requests.load(Ordering::Relaxed);
            if requests == seen && self.inflight.load(Ordering::Relaxed) == 0 && !self.h2.load(Ordering::Relaxed) {
                return;
            }
            seen = requests;
        }
    }
}

/// The drain state of one listener, shared by its connections' services.
#[derive(Clone)]
pub struct Draining(pub Shutdown);

impl Draining {
    /// During a drain, an HTTP/1.x response (not a protocol switch) tells the client to close the connection.
    pub fn mark<B>(&self, version: http::Version, resp: &mut http::Response<B>) {
        if self.0.is_triggered()
            && version < http::Version::HTTP_2
            && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
        {
            resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
    }
}

/// Runs a connection to its end; once `drain` fires, shuts it down politely as described above. A
/// connection [stalled](ConnState::stalled) for `head_timeout` is closed.
pub async fn drive<C>(conn: C, state: Arc<ConnState>, drain: Shutdown, head_timeout: Duration) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => return res,
        _ = drain.wait() => {}
        _ = state.stalled(head_timeout) => {
            tracing::debug!("no request within the header read timeout; closing");
            return Ok(());
        }
    }
    finish(conn, &state, |c| c.graceful_shutdown()).await
}

/// The drain of one connection, once it has begun: HTTP/2 is told to go away at once, HTTP/1.1 once it has
/// been quiet for [`IDLE_GRACE`]. `shutdown` starts the connection's own graceful close.
pub async fn finish<C, E>(mut conn: Pin<&mut C>, state: &ConnState, shutdown: impl FnOnce(Pin<&mut C>)) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut seen = state.io_count();
    let mut quiet_since = Instant::now();
    loop {
        let count = state.io_count();
        if count != seen {
            (seen, quiet_since) = (count, Instant::now());
        }
        if state.h2.load(Ordering::Relaxed) || quiet_since.elapsed() >= IDLE_GRACE {
            shutdown(conn.as_mut());
            return conn.await;
        }
        tokio::select! {
            res = conn.as_mut() => return res,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// A stream that records when bytes last moved, for [`drive`].
pub struct ActivityIo<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T> ActivityIo<T> {
    pub fn new(inner: T, state: Arc<ConnState>) -> Self {
        ActivityIo { inner, state }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        self.state.wrote(&res);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.state.wrote(&res);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.state.wrote(&res);
        res
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_stalls_only_with_nothing_in_progress_and_no_new_request() {
        let limit = Duration::from_millis(10);
        let state = ConnState::new();
        // Never used: let go after one period.
        tokio::time::timeout(Duration::from_secs(10), state.stalled(limit)).await.expect("an unused connection stalls");

        // A request in progress (a slow upstream, a long download) holds the connection however long it takes.
        state.request_started(http::Version::HTTP_11);
        assert!(tokio::time::timeout(limit * 10, state.stalled(limit)).await.is_err());
        state.request_done();
        tokio::time::timeout(Duration::from_secs(10), state.stalled(limit)).await.expect("stalls once idle");

        // HTTP/2 connections keep themselves alive with pings.
        let h2 = ConnState::new();
        h2.request_started(http::Version::HTTP_2);
        h2.request_done();
        assert!(tokio::time::timeout(limit * 10, h2.stalled(limit)).await.is_err());
    }
}
