//! Ficus's own HTTP/1.1 server codec for client connections, in place of hyper's server for the common case.
//!
//! It sits between the connection's socket (`super::conn`, after the protocol was sniffed) and the proxy's
//! handler, which it calls directly from the connection's own task. hyper's server spends about 9k
//! instructions per request around the handler (its parse, the service future it boxes, the dispatch, the
//! encoder and its buffers; docs/PERFORMANCE.md). Here one read buffer and one write buffer per connection
//! are reused across requests: the request head is parsed with `httparse` into an `http::Request` whose
//! target and header values share the read buffer, the handler's future lives inside this codec's own
//! (boxed once per connection wake-up, not per request), and the response head is written from the
//! `http::Response` into the write buffer with the first body bytes, so a small response goes out in one
//! write.
//!
//! Scope, and the one switch: [`head::parse_request`] takes HTTP/1.1 requests without a body or with a
//! declared one of at most [`head::SMALL_BODY`] bytes (taken whole once it has all arrived, within the header
//! read timeout), no `Expect`, no `Upgrade`, no CONNECT, within the listener's head limits. Anything else ends [`serve`] with
//! [`Exit::Hyper`], every byte read so far put back in front of the socket, and hyper serves the connection
//! from that message on exactly as before (its 400, 414 and 431 answers, bodies, upgrades) until it parks,
//! when this codec takes it again. Responses follow hyper's server byte for byte (`head::write_response`),
//! so a client cannot tell which of the two answered, apart from the `Date`.

pub mod head;

use super::conn::{Rewind, PARK_AFTER};
use super::drain::{ConnState, IDLE_GRACE};
use crate::lifecycle::Shutdown;
use crate::proxy::ClientBody;
use bytes::{Bytes, BytesMut};
use head::{BodyLength, Encoder, HeadLimits, Parsed};
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// How much room is made in the read buffer before each read.
const READ_CHUNK: usize = 4096;

/// Response bytes gathered before they are written even though the body has more ready (a large body
/// goes out in pieces of about this size, as hyper's write buffer does).
const WRITE_HIGH: usize = 64 * 1024;

/// Why [`serve`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The connection is done (closed by either side, timed out, or drained).
    Close,
    /// Quiet for [`PARK_AFTER`] with nothing buffered: the caller parks the bare socket.
    Park,
    /// A head out of scope: the bytes read are back in front of the socket for hyper.
    Hyper,
}

/// What the codec calls for each request: the proxy for a listener, a plain function in the tests.
pub trait Handler {
    type Body: Body<Data = Bytes> + Unpin + Send;
    fn call(&self, req: Request<ClientBody>) -> impl Future<Output = Response<Self::Body>> + Send;

    /// Called with the response before its head is written. A separate step, so `call` can hand back the
    /// handler's own future rather than an `async` wrapper around it (one future fewer to build and copy
    /// per request).
    fn finish(&self, _resp: &mut Response<Self::Body>) {}
}

/// The connection's settings, as the listener has them.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: HeadLimits,
    /// The header read timeout: a head not complete within it is answered 408, an idle connection closed.
    pub head_timeout: Duration,
}

/// Serves requests on `io` while they are in scope. `quiet` counts whole [`PARK_AFTER`] periods without a
/// request, across parking and across the hand-over to hyper, so a head trickled in over several of them is
/// still cut at the header timeout.
pub async fn serve<I, H>(
    io: &mut Rewind<I>,
    handler: &H,
    state: &ConnState,
    drain: &Shutdown,
    settings: Settings,
    quiet: &mut u32,
) -> Exit
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut conn = Conn { read: BytesMut::new(), write: Vec::new(), spans: Vec::new() };
    // One timer and one drain subscription for the whole stay, not one per request.
    let mut tick = pin!(tokio::time::sleep(PARK_AFTER));
    let mut drained = pin!(drain.waiter());
    let mut draining = false;
    let mut served = false;
    let mut grace_io = 0;
    loop {
        // Wait for a whole head.
        let head = loop {
            if !conn.read.is_empty() {
                match head::parse_request(&mut conn.read, &settings.limits, &mut conn.spans) {
                    Parsed::Request(head) => break head,
                    Parsed::Fallback => {
                        io.put_back(conn.read.split().freeze());
                        return Exit::Hyper;
                    }
                    Parsed::Partial => {}
                }
            }
            tokio::select! {
                biased;
                res = poll_fn(|cx| conn.poll_fill(io, cx)) => match res {
                    Ok(0) if conn.read.is_empty() => return Exit::Close,
                    // The client closed in the middle of a head: hyper tells that apart as it always did.
                    Ok(0) => {
                        io.put_back(conn.read.split().freeze());
                        return Exit::Hyper;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "connection ended with an error");
                        return Exit::Close;
                    }
                },
                _ = &mut drained, if !draining => {
                    // Closed once quiet for the grace, as `drain::finish` does with hyper's connections.
                    draining = true;
                    grace_io = state.io_count();
                    tick.as_mut().reset(tokio::time::Instant::now() + IDLE_GRACE);
                }
                _ = &mut tick => {
                    if draining {
                        let io_now = state.io_count();
                        if io_now == grace_io {
                            return Exit::Close;
                        }
                        grace_io = io_now;
                        tick.as_mut().reset(tokio::time::Instant::now() + IDLE_GRACE);
                        continue;
                    }
                    tick.as_mut().reset(tokio::time::Instant::now() + PARK_AFTER);
                    if std::mem::take(&mut served) {
                        *quiet = 0;
                        continue;
                    }
                    *quiet += 1;
                    if PARK_AFTER * *quiet >= settings.head_timeout {
                        tracing::debug!("no request within the header read timeout; closing");
                        if !conn.read.is_empty() {
                            crate::telemetry::count_unrouted(408);
                            super::head::linger_close(io, super::head::REQUEST_TIMEOUT).await;
                        }
                        return Exit::Close;
                    }
                    if conn.read.is_empty() {
                        return Exit::Park;
                    }
                }
            }
        };
        served = true;
        let keep_alive = head.keep_alive && !draining;
        match conn.exchange(io, handler, state, head, keep_alive, settings.head_timeout).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = io.shutdown().await;
                return Exit::Close;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection ended with an error");
                return Exit::Close;
            }
        }
    }
}

/// The buffers one connection keeps while the codec serves it; dropped when it parks or goes to hyper.
struct Conn {
    read: BytesMut,
    write: Vec<u8>,
    /// Scratch for the header fields' positions while a head is parsed.
    spans: Vec<head::Span>,
}

/// Counts a request in flight on the connection until its response is done (written or given up), as the
/// response body hyper is handed does (`listen::InFlight`).
struct InFlight<'a>(&'a ConnState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

impl Conn {
    /// Reads what the socket has into the read buffer; `Ok(0)` at the connection's end.
    fn poll_fill<I: AsyncRead + Unpin>(&mut self, io: &mut I, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            // Reclaims the buffer in place once the heads split off it were dropped; grows it otherwise.
            self.read.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.read)
    }

    /// One request and its response. `Ok(false)`: the connection closes after it.
    async fn exchange<I, H>(
        &mut self,
        io: &mut Rewind<I>,
        handler: &H,
        state: &ConnState,
        head: head::Head,
        keep_alive: bool,
        head_timeout: Duration,
    ) -> std::io::Result<bool>
    where
        I: AsyncRead + AsyncWrite + Unpin,
        H: Handler,
    {
        state.request_started(http::Version::HTTP_11);
        let _inflight = InFlight(state);
        let (parts, ()) = head.request.into_parts();
        let method = parts.method.clone();
        let mut call = pin!(handler.call(Request::from_parts(parts, ClientBody::Whole(head.body))));
        // While the handler runs, a client that closes its connection cancels the request, as with hyper
        // (which watches for the end of input while it waits, unless it has bytes of a next request).
        let mut resp = loop {
            tokio::select! {
                biased;
                resp = &mut call => break resp,
                res = poll_fn(|cx| self.poll_fill(io, cx)), if self.read.is_empty() => match res {
                    Ok(0) => return Ok(false),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                },
            }
        };
        handler.finish(&mut resp);
        let (mut parts, mut body) = resp.into_parts();
        let length = if body.is_end_stream() {
            BodyLength::None
        } else {
            body.size_hint().exact().map_or(BodyLength::Unknown, BodyLength::Known)
        };
        self.write.clear();
        let written = head::write_response(&mut parts, length, &method, keep_alive, &date::now(), &mut self.write);
        drop(parts);
        let mut keep = !written.last;
        match written.encoder {
            // No body to send (or none allowed): hyper drops it unread, and so does this.
            Encoder::Length(0) => drop(body),
            Encoder::Length(mut left) => loop {
                match self.next_frame(io, &mut body, state, head_timeout).await? {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            left = left.saturating_sub(data.len() as u64);
                            self.write.extend_from_slice(&data);
                        }
                        if body.is_end_stream() {
                            keep &= left == 0;
                            break;
                        }
                    }
                    // Cut short, or failed: the client cannot tell where the body ended, so the connection
                    // closes (hyper aborts it the same way).
                    Some(Err(_)) | None => {
                        keep &= left == 0;
                        break;
                    }
                }
            },
            Encoder::Chunked(allowed) => loop {
                match self.next_frame(io, &mut body, state, head_timeout).await? {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            if !data.is_empty() {
                                head::chunk_size(data.len(), &mut self.write);
                                self.write.extend_from_slice(&data);
                                self.write.extend_from_slice(b"\r\n");
                            }
                            if body.is_end_stream() {
                                self.write.extend_from_slice(b"0\r\n\r\n");
                                break;
                            }
                        }
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                let sent = head.trailers
                                    && allowed
                                        .as_deref()
                                        .is_some_and(|a| head::write_trailers(&trailers, a, &mut self.write));
                                if !sent {
                                    self.write.extend_from_slice(b"0\r\n\r\n");
                                }
                                break;
                            }
                        }
                    },
                    Some(Err(_)) => {
                        keep = false;
                        break;
                    }
                    None => {
                        self.write.extend_from_slice(b"0\r\n\r\n");
                        break;
                    }
                }
            },
            Encoder::Close => {
                while let Some(Ok(frame)) = self.next_frame(io, &mut body, state, head_timeout).await? {
                    if let Ok(data) = frame.into_data() {
                        self.write.extend_from_slice(&data);
                    }
                }
            }
        }
        flush(io, &mut self.write, state, head_timeout).await?;
        Ok(keep)
    }

    /// The body's next frame: taken at once when it is ready, so what is already there goes out in the same
    /// write as the head; otherwise what was gathered is written first, then the frame awaited.
    async fn next_frame<I, B>(
        &mut self,
        io: &mut I,
        body: &mut B,
        state: &ConnState,
        head_timeout: Duration,
    ) -> std::io::Result<Option<Result<http_body::Frame<Bytes>, B::Error>>>
    where
        I: AsyncWrite + Unpin,
        B: Body<Data = Bytes> + Unpin,
    {
        if self.write.len() >= WRITE_HIGH {
            flush(io, &mut self.write, state, head_timeout).await?;
        }
        let now = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
        if let Poll::Ready(frame) = now {
            return Ok(frame);
        }
        flush(io, &mut self.write, state, head_timeout).await?;
        Ok(body.frame().await)
    }
}

/// Writes out what was gathered. A client that stops reading altogether is let go at the header timeout
/// (its socket moved nothing for that long), as a parked-out hyper connection would be; the timer is armed
/// only when the write does not go through at once.
async fn flush<I: AsyncWrite + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
    state: &ConnState,
    head_timeout: Duration,
) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let res = {
        let mut write = pin!(io.write_all(buf));
        match poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
            Poll::Ready(res) => res,
            Poll::Pending => {
                tokio::select! {
                    biased;
                    res = write => res,
                    _ = stalled(state, head_timeout) => Err(std::io::ErrorKind::TimedOut.into()),
                }
            }
        }
    };
    buf.clear();
    res
}

/// Resolves once the socket moved no byte for `limit` (counted in whole [`PARK_AFTER`] periods).
async fn stalled(state: &ConnState, limit: Duration) {
    let mut seen = state.io_count();
    let mut quiet = 0u32;
    loop {
        tokio::time::sleep(PARK_AFTER).await;
        let now = state.io_count();
        if now != seen {
            (seen, quiet) = (now, 0);
            continue;
        }
        quiet += 1;
        if PARK_AFTER * quiet >= limit {
            return;
        }
    }
}

/// The `Date` field's value, formatted once per second per thread (as hyper caches it).
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    pub const LEN: usize = 29;

    thread_local! {
        static CACHED: RefCell<(u64, [u8; LEN])> = const { RefCell::new((0, [0; LEN])) };
    }

    pub fn now() -> [u8; LEN] {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != secs || cached.1[0] == 0 {
                use std::io::Write;
                let mut out = [0u8; LEN];
                let _ = write!(&mut out[..], "{}", httpdate::HttpDate::from(now));
                *cached = (secs, out);
            }
            cached.1
        })
    }
}

#[cfg(test)]
mod tests;
