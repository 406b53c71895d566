//! The response body of the proxy: the upstream's body streamed frame by frame to the client, never buffered
//! whole (the request body going the other way is [`crate::upstream::RequestBody`]).
//!
//! Backpressure comes for free: a frame is only pulled from one side when the other side asked for one.
//!
//! A proxied request is counted (`ficus_requests_total`, latency) and logged when its response body ends,
//! not when the head goes out: an upstream body that fails after its head (a Content-Length it does not
//! deliver, a reset, a bad chunk) has already sent the client a 200 it cannot keep, and is counted and
//! logged as the 502 it is, with `ficus_upstream_errors_total{kind="body"}`. A client that goes away is not
//! an upstream failure and keeps the status it was sent.

use crate::upstream::pool::UpstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// What the proxy answers with: the upstream's body as it arrives, or a small body of its own (errors).
pub enum ProxyBody {
    /// The upstream body, with what must live exactly as long as it: the server's in-flight count and the
    /// access-log record, written when the body is done (or dropped by a client that went away).
    Upstream {
        body: UpstreamBody,
        done: Option<Box<Completion>>,
    },
    Full(Option<Bytes>),
}

/// Runs once when the upstream body finishes or is dropped.
pub struct Completion {
    pub bytes: u64,
    pub guard: Option<crate::upstream::InflightGuard>,
    pub log: Option<super::AccessRecord>,
    /// The upstream connection, back to its server's pool if the body was read to its end (`complete`).
    pub conn: Option<crate::upstream::pool::Conn<crate::upstream::RequestBody>>,
    pub complete: bool,
    /// What the request is counted under when it ends.
    pub outcome: Outcome,
    /// Set when the upstream body failed: the kind of failure, for the error counter.
    pub failed: Option<&'static str>,
    /// The connection slots the middleware chain gave the request, given back when the body ends.
    pub admitted: crate::middleware::Admitted,
    /// A shadowed request: the body's frames go to the comparison too, and it runs when the body ended whole.
    pub shadow: Option<Box<crate::shadow::Capture>>,
}

/// The frontend's counters and where in its split the request went, kept until the body ends.
pub struct Outcome {
    pub frontend: std::sync::Arc<crate::table::Frontend>,
    pub backend: usize,
    /// The backend's server list the server was picked from: its `version` and length.
    pub servers: (u64, usize),
    pub server: usize,
    pub status: u16,
    pub start: std::time::Instant,
}

impl Completion {
    /// The server's drain deadline passed: its sockets were shut (`upstream::pool::Pool::cut`), which is what
    /// woke a body waiting on one, and what ended it.
    fn cut(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.server().is_aborted())
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(capture) = self.shadow.take() {
            if self.complete && self.failed.is_none() {
                capture.finish();
            }
        }
        if let (true, Some(conn), Some(guard)) = (self.complete, self.conn.take(), self.guard.as_ref()) {
            guard.server().pool.put(conn);
        }
        let o = &self.outcome;
        let (backend, server) = match self.guard.as_ref() {
            Some(g) => (&g.server().backend, &g.server().id),
            None => return,
        };
        let status = match self.failed {
            Some(kind) => {
                crate::telemetry::upstream_error(backend, server, kind);
                tracing::warn!(target: "access", frontend = %o.frontend.id, backend = %backend, server = %server,
                    status = o.status, bytes = self.bytes, kind, "upstream body failed; counted as 502");
                502
            }
            None => o.status,
        };
        let at = crate::telemetry::ServerAt { list: o.servers.0, len: o.servers.1, index: o.server, id: server };
        o.frontend.metrics.record(Some((o.backend, backend)), Some(at), status, o.start.elapsed());
        if let Some(mut log) = self.log.take() {
            log.status = status;
            log.emit(self.bytes);
        }
    }
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

/// The body failed or was cut: the server then aborts the response (HTTP/1.1 closes the connection without
/// a final chunk, HTTP/2 resets the stream), so a cut body is never mistaken for a complete one.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("the upstream server's drain deadline passed")]
pub struct DrainDeadline;

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper stops polling a body that says it is at its end, so the end is often only seen here.
        if let ProxyBody::Upstream { body, done: Some(done) } = self {
            done.complete = body.is_end_stream();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, done } => {
                if done.as_ref().is_some_and(|d| d.cut()) {
                    fail(done, "drain_deadline");
                    return Poll::Ready(Some(Err(Box::new(DrainDeadline))));
                }
                let polled = Pin::new(&mut *body).poll_frame(cx).map_err(BodyError::from);
                // A cut ends the body with an error, or, for a body that runs to the connection's close, as if
                // complete: either way it was cut, and is failed as such.
                if matches!(polled, Poll::Ready(None | Some(Err(_)))) && done.as_ref().is_some_and(|d| d.cut()) {
                    fail(done, "drain_deadline");
                    return Poll::Ready(Some(Err(Box::new(DrainDeadline))));
                }
                if let (Poll::Ready(Some(Ok(frame))), Some(done)) = (&polled, done.as_mut()) {
                    if let Some(d) = frame.data_ref() {
                        done.bytes += d.len() as u64;
                        if let Some(capture) = done.shadow.as_mut() {
                            capture.data(d);
                        }
                    }
                    // The last frame is on its way to the client: its connection slots go back now, as oxy's
                    // connlimit gives them back once the handler has written, rather than after the writer
                    // is done, so a client that read the whole answer finds them free for its next request.
                    if body.is_end_stream() {
                        done.admitted.release_slots();
                    }
                }
                match &polled {
                    // Finish now rather than when hyper drops the body, so the log line and the in-flight
                    // count are current the moment the last byte went out.
                    Poll::Ready(None) => {
                        if let Some(mut d) = done.take() {
                            d.complete = true;
                        }
                    }
                    Poll::Ready(Some(Err(_))) => fail(done, "body"),
                    _ => {}
                }
                polled
            }
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

fn fail(done: &mut Option<Box<Completion>>, kind: &'static str) {
    if let Some(mut d) = done.take() {
        d.failed = Some(kind);
    }
}
