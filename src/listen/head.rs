//! The HTTP/1.1 request-line limit, and the polite close after a refused or timed-out head.
//!
//! hyper caps a connection's read buffer (`max_buf_size`, set to the head limit), and answers 431 when it
//! fills without a complete head; it cannot tell an endless request line from endless headers. [`LineGuard`]
//! sits between hyper and the socket and watches the first line of each head that begins on a fresh hyper
//! connection (the connection's first request, and every one after it was parked: both start exactly at a
//! message boundary). A first line past `max_request_line_bytes` with no line end fails the read, and the
//! connection answers 414 (RFC 9112 section 3: a server that receives a request target longer than it wishes
//! to parse answers 414).
//!
//! Closing a socket with unread input makes the kernel send a reset, and a client that is still sending then
//! never reads the answer. So after a refusal (414, hyper's 431) or the header timeout (408), the answer is
//! written, the write side shut, and the input read and thrown away for a short while ([`linger_close`]),
//! as nginx does.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

pub const URI_TOO_LONG: &[u8] = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
pub const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
/// How long and how much a closing connection keeps reading (and discarding) so its answer is not lost.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Watches the first line of a head; see the module comment.
pub struct LineGuard<I> {
    inner: I,
    /// Bytes of the first line seen so far, while it has not ended.
    seen: Option<usize>,
    limit: usize,
    tripped: bool,
}

impl<I> LineGuard<I> {
    pub fn new(inner: I, limit: usize) -> Self {
        LineGuard { inner, seen: Some(0), limit, tripped: false }
    }

    /// The stream, and whether the request line went over the limit.
    pub fn into_inner(self) -> (I, bool) {
        (self.inner, self.tripped)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for LineGuard<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(seen)) = (&polled, self.seen) {
            let new = &buf.filled()[before..];
            match new.iter().position(|b| *b == b'\n') {
                Some(_) => self.seen = None,
                None if seen + new.len() > self.limit => {
                    self.tripped = true;
                    self.seen = None;
                    // An error read delivers no bytes.
                    buf.set_filled(before);
                    return Poll::Ready(Err(std::io::Error::other("request line longer than the limit")));
                }
                None => self.seen = Some(seen + new.len()),
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for LineGuard<I> {
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

/// Writes `answer` (if any), shuts the write side, and reads until the client closes, for at most
/// [`LINGER_TIME`] and [`LINGER_BYTES`].
pub async fn linger_close<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I, answer: &[u8]) {
    let work = async {
        if !answer.is_empty() {
            io.write_all(answer).await?;
        }
        io.shutdown().await?;
        // On the heap and only here, so the connection task does not carry it for its whole life.
        let mut sink = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut sink).await? {
                0 => break,
                n => total += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER_TIME, work).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_first_line_past_the_limit_fails_the_read_and_a_short_one_passes() {
        let mut guard = LineGuard::new(&b"GET /aaaaaaaaaaaaaaaaaaaaaaaa"[..], 16);
        let mut out = Vec::new();
        assert!(guard.read_to_end(&mut out).await.is_err());
        assert!(guard.into_inner().1);

        // The line ends within the limit: later long lines (headers, bodies) are not its business.
        let mut guard = LineGuard::new(&b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"[..], 16);
        let mut out = Vec::new();
        guard.read_to_end(&mut out).await.unwrap();
        assert!(!guard.into_inner().1);
    }
}
