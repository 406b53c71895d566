//! The client's request body on its way upstream, in the upstream layer because the connection pools hold
//! requests of this body type (a request that met a closed pooled connection is sent again, see
//! [`super::pool::Replay`]). The proxy wraps each request's body in it; it streams frame by frame and is cut
//! off with an error past the frontend's `Limits.MaxBodyBytes`.
//!
//! What the client sent comes as a [`ClientBody`]: hyper's `Incoming` for requests its server read, or the
//! whole (empty) body of a request the listener's own HTTP/1.1 codec read (`listen::h1`).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A client request's body as the listener hands it to the proxy.
pub enum ClientBody {
    /// Read by hyper's server, frame by frame.
    Hyper(Incoming),
    /// Read whole by the listener's own codec (empty without a body, else a small declared one).
    Whole(Bytes),
}

impl From<Incoming> for ClientBody {
    fn from(body: Incoming) -> Self {
        ClientBody::Hyper(body)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::Hyper(inner) => Pin::new(inner).poll_frame(cx),
            ClientBody::Whole(bytes) if bytes.is_empty() => Poll::Ready(None),
            ClientBody::Whole(bytes) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(bytes))))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(inner) => inner.is_end_stream(),
            ClientBody::Whole(bytes) => bytes.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(inner) => inner.size_hint(),
            ClientBody::Whole(bytes) => SizeHint::with_exact(bytes.len() as u64),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("client body: {0}")]
    Client(#[from] hyper::Error),
    #[error("request body is larger than the frontend's limit of {limit} bytes")]
    TooLarge { limit: u64 },
}

/// The client's request body on its way upstream, cut off with an error past `Limits.MaxBodyBytes`.
pub struct RequestBody {
    /// `None` for the empty body of a request sent again (see [`super::pool::Replay`]), and for a body kept
    /// whole so failover can send it again (`kept`).
    inner: Option<ClientBody>,
    /// A body read whole before the first attempt, sent as one frame.
    kept: Option<Bytes>,
    /// Bytes still allowed; `None` means no limit.
    remaining: Option<u64>,
    limit: u64,
}

impl RequestBody {
    pub fn new(inner: ClientBody, limit: Option<u64>) -> Self {
        RequestBody { inner: Some(inner), kept: None, remaining: limit, limit: limit.unwrap_or(0) }
    }

    /// A body already read whole (so it can be sent more than once).
    pub fn kept(body: Bytes) -> Self {
        RequestBody { inner: None, kept: (!body.is_empty()).then_some(body), remaining: None, limit: 0 }
    }
}

impl RequestBody {
    /// The whole body when it was read before (or is empty after a replay), so a second reader need not read
    /// it again.
    pub fn whole(&self) -> Option<Bytes> {
        self.inner.is_none().then(|| self.kept.clone().unwrap_or_default())
    }
}

impl super::pool::Replay for RequestBody {
    fn empty() -> Self {
        RequestBody { inner: None, kept: None, remaining: None, limit: 0 }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(this.kept.take().map(|b| Ok(Frame::data(b)))) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(remaining), Some(data)) = (this.remaining.as_mut(), frame.data_ref()) {
                    let len = data.len() as u64;
                    if len > *remaining {
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit: this.limit })));
                    }
                    *remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(inner) => inner.is_end_stream(),
            None => self.kept.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let kept = || SizeHint::with_exact(self.kept.as_ref().map_or(0, |b| b.len() as u64));
        self.inner.as_ref().map_or_else(kept, Body::size_hint)
    }
}
