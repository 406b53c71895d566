//! An upstream response body read by the codec, as the `http_body::Body` the client side streams: frames
//! are split off the connection's read buffer (no copy) as the client takes them, and when the body ended
//! cleanly on a connection that may carry another exchange, the connection goes back on its pool's shelf at
//! once (not when hyper's server drops the body, which can be later). A body dropped before its end drops
//! the connection, which closes it: what the server still sends is never read as the next response.

use super::chunked::{Chunked, Decoded};
use super::{Connection, Error, Framing, Shelf};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

enum State {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
    /// Failed: never an end, so a cut body is not mistaken for a whole one.
    Failed,
}

pub struct ResponseBody {
    /// `None` once handed back (or dropped at the end of a body that ran to the close).
    conn: Option<Box<Connection>>,
    state: State,
    keep_alive: bool,
    shelf: Arc<dyn Shelf>,
    /// Data went to the client since the body last waited for the socket.
    gave_data: bool,
    /// A failure held back for one turn (see `fail`).
    failed: Option<Error>,
}

impl ResponseBody {
    /// The body of a response whose head `conn` just read. A body without bytes ends here, and its
    /// connection goes back at once.
    pub fn new(conn: Box<Connection>, framing: Framing, keep_alive: bool, shelf: Arc<dyn Shelf>) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::default()),
            Framing::Close => State::Close,
        };
        let mut body = ResponseBody { conn: Some(conn), state, keep_alive, shelf, gave_data: false, failed: None };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// The body ended cleanly: the connection goes back when nothing else is pending on it (the server sent
    /// nothing past the response) and both sides meant to keep it.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.read.is_empty() {
                self.shelf.put(conn);
            }
        }
    }
}

impl ResponseBody {
    /// Ends the body with `e`, dropping the connection. When data was handed over in this same turn (the
    /// failure was already in the buffer behind it), the failure waits one turn: hyper's server aborts the
    /// response on a body error without flushing what it buffered, and the client should get the head and
    /// the bytes that did arrive, as it did when hyper's client delivered them from its own task.
    fn fail(&mut self, e: Error, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.conn = None;
        self.state = State::Failed;
        if std::mem::take(&mut self.gave_data) {
            self.failed = Some(e);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(e)))
    }

    fn data(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.gave_data = true;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match &mut this.state {
                State::Done | State::Failed => return Poll::Ready(None),
                State::Length(remaining) => {
                    if !conn.read.is_empty() {
                        let n = (conn.read.len() as u64).min(*remaining) as usize;
                        let data = conn.read.split_to(n).freeze();
                        *remaining -= n as u64;
                        if *remaining == 0 {
                            this.finish();
                        }
                        return this.data(data);
                    }
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.read) {
                    Ok(Decoded::Data(data)) => return this.data(data),
                    Ok(Decoded::Trailers(trailers)) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(e, cx),
                },
                State::Close => {
                    if !conn.read.is_empty() {
                        let data = conn.read.split().freeze();
                        return this.data(data);
                    }
                }
            }
            // The buffer holds nothing more of the body: read.
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            let filled = conn.poll_fill(cx);
            if filled.is_pending() {
                this.gave_data = false;
            }
            match ready!(filled) {
                Ok(0) if matches!(this.state, State::Close) => {
                    // The close delimits the body: complete, and the connection is done with.
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::IncompleteBody, cx),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Read(e), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
