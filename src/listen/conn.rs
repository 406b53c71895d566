//! One client connection after accept (and after the TLS handshake): which HTTP it speaks, and how it is
//! served.
//!
//! The protocol is told from the first bytes, as h2c prior knowledge requires: the HTTP/2 connection preface,
//! or anything else for HTTP/1.x. HTTP/2 connections are served by hyper to their end.
//!
//! HTTP/1.x requests in the scope of Ficus's own codec (`super::h1`: no body, no upgrade) are served by it;
//! the first head out of its scope hands the connection to hyper's server with every byte read put back in
//! front, and hyper serves it until it parks, when the codec takes it again.
//!
//! An HTTP/1.1 keep-alive connection spends most of its life waiting for the client's next request, and
//! hyper's connection keeps its read and write buffers (8 KiB each) all that time (the codec drops its own
//! the same way when it parks). So once a connection has
//! been quiet for [`PARK_AFTER`] (no request, nothing in flight, nothing left to write), it is *parked*: hyper's
//! connection is taken apart and dropped, and the task waits on the bare socket. When the client sends again,
//! a new hyper connection picks up where the old one stopped, with any bytes hyper had read but not parsed
//! put back in front. An idle connection then costs the socket and one small task, as in nginx, where a
//! keep-alive connection gives its buffers back between requests. Busy connections are never rebuilt: they
//! are not quiet for a whole period.

use super::drain::{self, ConnState};
use super::h1;
use super::head;
use super::ConnService;
use crate::lifecycle::Shutdown;
use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long an HTTP/1.1 connection is quiet before it gives hyper's buffers back. Long enough that a client
/// sending request after request never pays for a rebuild; short next to the header read timeout.
pub const PARK_AFTER: Duration = Duration::from_secs(2);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The hyper settings for both protocols, shared by a listener's connections.
pub struct Protocols {
    pub h1: http1::Builder,
    pub h2: http2::Builder<TokioExecutor>,
    /// Connections parked now.
    pub parked: metrics::Gauge,
    /// The request-line limit (`head::LineGuard`).
    pub max_request_line: usize,
    /// Ficus's own HTTP/1.1 codec serves the requests in its scope (`h1`); `None`: hyper serves them all.
    pub codec: Option<h1::Settings>,
}

/// A client stream the connection can wait on without reading from it.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for drain::ActivityIo<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref()
    }
}

impl Socket for tokio_rustls::server::TlsStream<drain::ActivityIo<TcpStream>> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0.get_ref()
    }
}

/// Serves one connection to its end: the first request head within `head_timeout`, a polite close once
/// `drain` fires.
pub async fn serve<I>(
    mut io: I,
    service: ConnService,
    state: Arc<ConnState>,
    drain: Shutdown,
    protocols: Arc<Protocols>,
    head_timeout: Duration,
) where
    I: Socket,
{
    let (h2, prefix) = {
        let mut sniffing = std::pin::pin!(sniff(&mut io));
        let deadline = tokio::time::sleep(head_timeout);
        let mut deadline = std::pin::pin!(deadline);
        let mut draining = false;
        loop {
            tokio::select! {
                res = &mut sniffing => match res {
                    Ok(found) => break found,
                    Err(e) => {
                        tracing::debug!(error = %e, "connection closed before a request");
                        return;
                    }
                },
                _ = &mut deadline => {
                    tracing::debug!("no request within the header read timeout; closing");
                    return;
                }
                // A connection that has sent nothing yet when a drain begins gets the grace of a quiet one.
                _ = drain.wait(), if !draining => {
                    draining = true;
                    let grace = tokio::time::Instant::now() + drain::IDLE_GRACE;
                    if grace < deadline.deadline() {
                        deadline.as_mut().reset(grace);
                    }
                }
            }
        }
    };
    let io = Rewind { prefix, inner: io };
    if h2 {
        state.set_h2();
        let conn = protocols.h2.serve_connection(TokioIo::new(io), service);
        // Boxed: hyper's HTTP/2 connection is kilobytes, and unboxed every HTTP/1.1 connection's task would
        // have room for it too.
        if let Err(e) = Box::pin(drain::drive(conn, state, drain, head_timeout)).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    } else {
        serve_h1(io, service, state, drain, &protocols, head_timeout).await;
    }
}

async fn serve_h1<I>(
    mut io: Rewind<I>,
    mut service: ConnService,
    state: Arc<ConnState>,
    drain: Shutdown,
    protocols: &Protocols,
    head_timeout: Duration,
) where
    I: Socket,
{
    // Whole quiet periods in a row: no new request head, nothing in flight. The header read timeout counts
    // them, across parking, so a client trickling a head byte by byte is let go as before.
    let mut quiet = 0u32;
    let mut seen = state.requests();
    let mut seen_io = state.io_count();
    loop {
        if let Some(settings) = protocols.codec {
            // Boxed: the codec keeps the handler's future (kilobytes) inside its own, and the connection's
            // task, which stays while it is parked, should not have room for it.
            let exit = Box::pin(h1::serve(&mut io, &*service.0, &state, &drain, settings, &mut quiet)).await;
            match exit {
                h1::Exit::Close => return,
                h1::Exit::Park => {
                    if !park(&io, &protocols.parked, head_timeout, quiet, &drain).await {
                        return;
                    }
                    continue;
                }
                // hyper serves from this head on, with the bytes read put back in front.
                h1::Exit::Hyper => {}
            }
            seen = state.requests();
        }
        // Boxed so the buffers and state go back to the allocator when the connection parks; the task itself
        // stays small. Every hyper connection starts at a message boundary, so the guard watches its first line.
        let guarded = head::LineGuard::new(io, protocols.max_request_line);
        let mut conn = Box::new(protocols.h1.serve_connection(TokioIo::new(guarded), service).with_upgrades());
        loop {
            let ended = tokio::select! {
                res = &mut *conn => Some(res),
                _ = drain.wait() => {
                    if let Err(e) = drain::finish(Pin::new(&mut *conn), &state, |c| c.graceful_shutdown()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep(PARK_AFTER) => None,
            };
            if let Some(res) = ended {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                    refused(conn, &e).await;
                }
                return;
            }
            let (requests, io) = (state.requests(), state.io_count());
            // A client still reading a response (slowly: the rest waits in hyper's buffer) is not quiet; one
            // that stopped reading altogether is, and goes at the timeout like an idle one.
            let reading = state.write_blocked() && io != seen_io;
            seen_io = io;
            if requests != seen || state.in_flight() || reading {
                (seen, quiet) = (requests, 0);
                continue;
            }
            quiet += 1;
            if PARK_AFTER * quiet >= head_timeout {
                tracing::debug!("no request within the header read timeout; closing");
                // A response stuck in hyper's write buffer (the client stopped reading) gets no 408 after it.
                timed_out(conn, !state.write_blocked()).await;
                return;
            }
            // A response the client has not read yet still sits in hyper's write buffer: keep it.
            if !state.write_blocked() {
                break;
            }
        }
        // Not upgraded (an upgrade ends the connection future above), so the parts are there.
        let Some(parts) = conn.into_parts() else { return };
        service = parts.service;
        io = parts.io.into_inner().into_inner().0;
        io.put_back(parts.read_buf);
        if !io.prefix.is_empty() {
            // Part of a request head had arrived: serve it on without waiting.
            continue;
        }
        if !park(&io, &protocols.parked, head_timeout, quiet, &drain).await {
            return;
        }
    }
}

/// Waits on the bare socket of a parked connection: true once the client sends (or a drain begins), false
/// at the header read timeout, counted from the last request across the `quiet` periods already gone.
async fn park<I: Socket>(
    io: &Rewind<I>,
    parked: &metrics::Gauge,
    head_timeout: Duration,
    quiet: u32,
    drain: &Shutdown,
) -> bool {
    let left = head_timeout.saturating_sub(PARK_AFTER * quiet);
    parked.increment(1.0);
    let woken = tokio::select! {
        res = io.inner.tcp().readable() => res.is_ok(),
        _ = tokio::time::sleep(left) => {
            tracing::debug!("no request within the header read timeout; closing");
            false
        }
        // The connection takes the drain path at once: served if the client is sending, closed politely
        // once quiet.
        _ = drain.wait() => true,
    };
    parked.decrement(1.0);
    woken
}

type H1Conn<I> = http1::UpgradeableConnection<TokioIo<head::LineGuard<Rewind<I>>>, ConnService>;

/// After hyper refused a head (it wrote 400 or 431 itself) or the request line was too long (414 is written
/// here): the polite close, so a client still sending reads the answer.
async fn refused<I: Socket>(conn: Box<H1Conn<I>>, e: &hyper::Error) {
    let Some(parts) = conn.into_parts() else { return };
    let (mut io, tripped) = parts.io.into_inner().into_inner();
    if tripped {
        crate::telemetry::count_unrouted(414);
        head::linger_close(&mut io, head::URI_TOO_LONG).await;
    } else if e.is_parse() {
        // hyper answered this head itself before any request reached the proxy, so nothing else counts it.
        crate::telemetry::count_unrouted(if e.is_parse_too_large() { 431 } else { 400 });
        head::linger_close(&mut io, b"").await;
    }
}

/// The header read timeout: a client that sent part of a head is told 408 (RFC 9110 section 15.5.9); one
/// that sent nothing since its last response is closed quietly, as an idle keep-alive connection.
async fn timed_out<I: Socket>(conn: Box<H1Conn<I>>, may_answer: bool) {
    let Some(parts) = conn.into_parts() else { return };
    let (mut io, _) = parts.io.into_inner().into_inner();
    if may_answer && (!parts.read_buf.is_empty() || !io.prefix.is_empty()) {
        crate::telemetry::count_unrouted(408);
        head::linger_close(&mut io, head::REQUEST_TIMEOUT).await;
    }
}

/// Reads until the first bytes tell the protocol: true and the bytes read for the HTTP/2 preface, false for
/// anything else.
async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<(bool, Bytes)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    while filled < buf.len() {
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        if buf[..filled] != H2_PREFACE[..filled] {
            return Ok((false, Bytes::copy_from_slice(&buf[..filled])));
        }
    }
    Ok((true, Bytes::copy_from_slice(&buf)))
}

/// A stream with bytes already read from it put back in front.
pub struct Rewind<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    #[cfg(test)]
    pub(super) fn new(prefix: Bytes, inner: I) -> Self {
        Rewind { prefix, inner }
    }

    /// Puts `read` (bytes hyper or the codec read but did not use) in front of whatever is still to be
    /// replayed.
    pub(super) fn put_back(&mut self, read: Bytes) {
        if read.is_empty() {
            return;
        }
        if self.prefix.is_empty() {
            self.prefix = read;
        } else {
            let mut joined = BytesMut::with_capacity(read.len() + self.prefix.len());
            joined.extend_from_slice(&read);
            joined.extend_from_slice(&self.prefix);
            self.prefix = joined.freeze();
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_is_told_from_http1_whatever_the_read_sizes() {
        // One byte per read: the decision waits for enough bytes, never more.
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for b in H2_PREFACE {
                client.write_all(&[*b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let (h2, prefix) = sniff(&mut server).await.unwrap();
        assert!(h2);
        assert_eq!(&prefix[..], H2_PREFACE);
        drop(writer.await.unwrap());

        // HTTP/1.1 differs at the first byte, and only what was read comes back.
        let mut server: &[u8] = b"GET / HTTP/1.1\r\n";
        let (h2, prefix) = sniff(&mut server).await.unwrap();
        assert!(!h2);
        assert!(b"GET / HTTP/1.1\r\n".starts_with(&prefix), "{prefix:?}");

        // "PRI" alone is not HTTP/2 until the rest matches.
        let mut server: &[u8] = b"PRI * HTTP/1.1\r\n\r\n.........";
        let (h2, prefix) = sniff(&mut server).await.unwrap();
        assert!(!h2);
        assert_eq!(&prefix[..], b"PRI * HTTP/1.1\r\n\r\n.........".get(..prefix.len()).unwrap());

        // A client that closes before a byte is an error, not a request.
        let mut server: &[u8] = b"";
        assert!(sniff(&mut server).await.is_err());
    }

    #[tokio::test]
    async fn put_back_bytes_are_read_first_then_the_stream() {
        let mut io = Rewind { prefix: Bytes::from_static(b"cd"), inner: &b"ef"[..] };
        io.put_back(Bytes::from_static(b"ab"));
        let mut out = Vec::new();
        io.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"abcdef");
    }
}
