//! Ficus's own HTTP/1.1 client codec for upstream connections, driven from the request's own task.
//!
//! It sits in the send phase, between the pool (`super::pool`, which checks connections out and takes them
//! back) and the response body the client reads. hyper's client connection runs in a task of its own,
//! reached through a channel, and the pool kept a copy of every request to send it again should the pooled
//! connection turn out closed; that cost about 15k instructions per proxied request (docs/PERFORMANCE.md).
//! Here the request's task writes the request head straight from the prepared request (one buffer, one
//! write), reads and parses the response head with `httparse` into `http::Response` parts, and hands the
//! body over as a [`ResponseBody`] that reads the rest from the socket as the client takes it, and puts the
//! connection back on its pool's shelf when the body ended cleanly (dropping it otherwise).
//!
//! Scope: the pool sends plain-TCP HTTP/1.1 requests without a body, or with a declared body of at most
//! [`SMALL_BODY`] bytes, through this codec (`Pool::send` says which). A small body is read whole first and
//! goes out with the head in the same write, so no response can arrive while it is still being sent, and it
//! can be sent again. Larger or streamed (chunked) bodies, upgrades, TLS and HTTP/2 servers stay on hyper's
//! client, which streams them.

mod body;
pub mod chunked;
pub mod head;

pub use body::ResponseBody;
pub use head::{Framing, Head};

use super::forwarded::Forwarded;
use super::sockets::Tracked;
use bytes::BytesMut;
use http::{Method, Request};
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio::time::Instant;

/// The largest declared request body sent through the codec (read whole, then written with the head).
pub const SMALL_BODY: u64 = 16 * 1024;

/// Read buffer size, and how much room is made before each read (hyper's client reads 8 KiB at a time too).
const READ_CHUNK: usize = 8192;

/// How an exchange on an upstream HTTP/1.1 connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the request: {0}")]
    Write(std::io::Error),
    #[error("the connection closed before a response")]
    Closed,
    #[error("reading the response before its first byte: {0}")]
    ReadBeforeResponse(std::io::Error),
    #[error("reading the response: {0}")]
    Read(std::io::Error),
    #[error("the connection closed in the middle of the response head")]
    ClosedInHead,
    #[error("the response head is larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("the response head has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("malformed response head: {0}")]
    Parse(httparse::Error),
    #[error("response status {0} is not valid")]
    Status(u16),
    #[error("a response header name is not valid")]
    HeaderName,
    #[error("a response header value is not valid")]
    HeaderValue,
    #[error("the response's Content-Length is not one number")]
    ContentLength,
    #[error("an HTTP/1.0 response with Transfer-Encoding")]
    TransferEncodingInHttp10,
    #[error("101 Switching Protocols answering a request that did not ask to upgrade")]
    UnexpectedUpgrade,
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
    #[error("the connection closed before the response body ended")]
    IncompleteBody,
    #[error("no response head before the read timeout")]
    Timeout,
}

impl Error {
    /// No byte of a response arrived: the server closed the pooled connection as the request went out (or
    /// before), so an idempotent request may go out again on another connection.
    pub fn before_response(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            Error::Write(_) | Error::Closed => true,
            Error::ReadBeforeResponse(e) => {
                matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
            }
            _ => false,
        }
    }
}

/// A connection checked back in: what the response body hands to its pool when it ended cleanly.
pub trait Shelf: Send + Sync {
    fn put(&self, conn: Box<Connection>);
}

/// One upstream HTTP/1.1 connection: the socket, and the buffers it keeps between exchanges.
pub struct Connection {
    io: Tracked,
    read: BytesMut,
    write: Vec<u8>,
    /// Scratch for the header fields' positions while a head is parsed.
    spans: Vec<head::Span>,
    /// The read timeout's timer, made at the first exchange that has to wait and kept for the next ones.
    /// A timer made and dropped per exchange registers with tokio's timer wheel and leaves it again (about
    /// 900 instructions per request); one kept here is moved to a later deadline each exchange, which tokio
    /// does with one atomic write, and taken out of the wheel once, with the connection. Left armed between
    /// exchanges, it may wake the last task that waited on it once, a read timeout later, for nothing.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connection {
    /// Boxed once, when dialed: the connection then moves between the pool, the request and the response
    /// body as a pointer, not as the buffers' headers, and keeps the body's size small.
    pub fn new(io: Tracked) -> Box<Self> {
        Box::new(Connection {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::new(),
            spans: Vec::new(),
            timer: None,
        })
    }

    /// Whether an idle connection still looks usable: the server has not closed it and sent nothing
    /// unasked. Costs no system call unless the socket was reported readable since its last read.
    pub fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        match self.io.tcp().try_read(&mut probe) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            // Closed (0), or bytes nobody asked for.
            Ok(_) => false,
        }
    }

    /// Sends a request, its head and its whole `body` (empty for most) in one write, and reads the response
    /// head; the response body follows from `self` as [`ResponseBody`] reads it.
    /// `forwarded`: the fields the proxy sets, written in place of the client's (see `head::write_request`).
    /// `deadline`: when the response head must have arrived by (the backend's read timeout), failing with
    /// [`Error::Timeout`] after it; the write and the read both wait under it.
    pub async fn request<B>(
        &mut self,
        req: &Request<B>,
        forwarded: Option<&Forwarded>,
        body: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Head, Error> {
        head::write_request(req, forwarded, &mut self.write);
        self.write.extend_from_slice(body);
        let mut armed = false;
        let mut written = 0;
        while written < self.write.len() {
            let Connection { io, write, timer, .. } = &mut *self;
            let n = poll_fn(|cx| match Pin::new(&mut *io).poll_write(cx, &write[written..]) {
                Poll::Pending => poll_deadline(timer, &mut armed, deadline, cx).map(|()| Err(Error::Timeout)),
                Poll::Ready(r) => Poll::Ready(r.map_err(Error::Write)),
            })
            .await?;
            if n == 0 {
                return Err(Error::Write(std::io::ErrorKind::WriteZero.into()));
            }
            written += n;
        }
        self.read_head(req.method(), deadline, armed).await
    }

    async fn read_head(&mut self, method: &Method, deadline: Option<Instant>, mut armed: bool) -> Result<Head, Error> {
        let mut got_any = !self.read.is_empty();
        loop {
            if !self.read.is_empty() {
                got_any = true;
                if let Some(head) = head::parse_response(&mut self.read, method, &mut self.spans)? {
                    return Ok(head);
                }
            }
            let filled = poll_fn(|cx| match self.poll_fill(cx) {
                Poll::Pending => poll_deadline(&mut self.timer, &mut armed, deadline, cx).map(Err),
                Poll::Ready(r) => Poll::Ready(Ok(r)),
            })
            .await;
            let Ok(filled) = filled else { return Err(Error::Timeout) };
            match filled {
                Ok(0) if got_any => return Err(Error::ClosedInHead),
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(e) if got_any => return Err(Error::Read(e)),
                Err(e) => return Err(Error::ReadBeforeResponse(e)),
            }
        }
    }

    /// Reads what the socket has into the read buffer; `Ok(0)` at the connection's end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            // Reclaims the buffer in place once the frames split off it were dropped; grows it otherwise.
            self.read.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }
}

/// Polls the connection's read-timeout timer while the socket has nothing for this exchange: `Ready` once
/// `deadline` passed. The timer is moved to `deadline` the first time an exchange waits (`armed`), made then
/// if the connection has none yet; with no deadline it never fires.
fn poll_deadline(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    armed: &mut bool,
    deadline: Option<Instant>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    use std::future::Future;
    let Some(deadline) = deadline else { return Poll::Pending };
    let timer = match timer {
        Some(timer) => {
            if !*armed {
                timer.as_mut().reset(deadline);
            }
            timer
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    *armed = true;
    timer.as_mut().poll(cx)
}

#[cfg(test)]
mod tests;
