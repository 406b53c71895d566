//! The sockets of one server's connections, so its drain deadline can cut everything still running on it at
//! once: the request waiting for its answer, the body being streamed, the tunnel, the health check.
//!
//! A connection's socket is listed when it is dialed and unlisted when it closes; nothing happens per request.
//! [`Sockets::cut`] shuts every listed socket down, and each connection's own task sees that at once and fails
//! what runs on it; the request path then tells a cut from any other failure by the server's `aborted` flag.
//! Before this, every request registered with a per-server `Notify` (a lock, twice) to be woken by the
//! deadline, which almost never comes.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The open sockets of one pool's connections, idle or in use.
#[derive(Default)]
pub struct Sockets {
    inner: Arc<Listed>,
}

#[derive(Default)]
struct Listed {
    /// Set by `cut`: read without the lock by every request (a dialed connection is cut as it opens).
    cut: AtomicBool,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next: u64,
    fds: HashMap<u64, RawFd>,
}

impl Listed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Sockets {
    /// Lists a freshly dialed socket for as long as the returned stream lives.
    pub fn track(&self, stream: TcpStream) -> Tracked {
        let mut open = self.inner.lock();
        let key = open.next;
        open.next += 1;
        open.fds.insert(key, stream.as_raw_fd());
        if self.inner.cut.load(Ordering::Relaxed) {
            // Dialed as the deadline passed: it carries nothing that may still run.
            let _ = socket2::SockRef::from(&stream).shutdown(std::net::Shutdown::Both);
        }
        drop(open);
        Tracked { stream, listed: self.inner.clone(), key }
    }

    /// Whether the server's sockets were cut.
    pub fn is_cut(&self) -> bool {
        self.inner.cut.load(Ordering::Relaxed)
    }

    /// Shuts down every listed socket, and every socket dialed from now on.
    pub fn cut(&self) {
        let open = self.inner.lock();
        self.inner.cut.store(true, Ordering::Relaxed);
        for fd in open.fds.values() {
            // SAFETY: `shutdown` only reads the descriptor number. A number is listed only while the `Tracked`
            // that owns the socket lives, and `Tracked` unlists it under this lock before its socket is closed
            // (see its `Drop`), so every number listed here is still that open socket, never a reused number.
            unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
        }
    }

    /// Sockets open now.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.inner.lock().fds.len()
    }
}

/// A connection's TCP stream, listed in its pool's [`Sockets`] while it is open.
pub struct Tracked {
    stream: TcpStream,
    listed: Arc<Listed>,
    key: u64,
}

impl Tracked {
    /// The socket itself, for a non-blocking probe of an idle connection.
    pub fn tcp(&self) -> &TcpStream {
        &self.stream
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Runs before the `stream` field is dropped (and its descriptor closed): see `Sockets::cut`.
        self.listed.lock().fds.remove(&self.key);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_cut_ends_the_open_sockets_and_those_dialed_after_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sockets = Sockets::default();
        let mut open = sockets.track(TcpStream::connect(addr).await.expect("connect"));
        let (mut server_side, _) = listener.accept().await.expect("accept");
        assert_eq!(sockets.count(), 1);

        // A read waiting on the socket ends at the cut, and the peer sees the connection end too.
        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let n = open.read(&mut buf).await;
            (open, n)
        });
        tokio::task::yield_now().await;
        sockets.cut();
        let (open, n) = tokio::time::timeout(std::time::Duration::from_secs(10), reading)
            .await
            .expect("the waiting read ended")
            .expect("task");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        let mut buf = [0u8; 16];
        assert!(matches!(server_side.read(&mut buf).await, Ok(0) | Err(_)));
        drop(open);
        assert_eq!(sockets.count(), 0, "a closed socket is unlisted");

        // Dialed after the cut: shut as it opens.
        let mut late = sockets.track(TcpStream::connect(addr).await.expect("connect"));
        assert!(sockets.is_cut());
        assert!(late.write_all(b"x").await.is_err(), "a socket dialed after the cut is shut");
    }
}
