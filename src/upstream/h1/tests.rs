//! The codec against hyper's client on the same bytes, over real sockets: a generated response (well formed
//! or broken: bad lengths, codings, chunk framing, truncated, a byte changed) is served once to hyper's
//! client and once to the codec, and the two must agree on the status, the headers, the body and its
//! trailers, whether the exchange failed, and, for well-formed responses on a connection left open, whether
//! the connection can carry another exchange (proved by sending one). Also: the parser and the chunk decoder
//! never panic on arbitrary bytes.

use super::*;
use crate::upstream::sockets::Sockets;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Empty};
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext";

/// What a client made of one response.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The head failed.
    Failed,
    Answered {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        trailers: Option<Vec<(String, Vec<u8>)>>,
        body_failed: bool,
        /// `None` when not compared (the server closed after the response).
        reusable: Option<bool>,
    },
}

fn fields(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = h.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect();
    v.sort();
    v
}

async fn read_request_head(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// A server for one connection: answers the first request with `bytes`, then either closes, or answers a
/// second request with `NEXT` if one comes.
async fn serve(bytes: Vec<u8>, close_after: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else { return };
        if !read_request_head(&mut s).await || s.write_all(&bytes).await.is_err() {
            return;
        }
        if close_after {
            let _ = s.shutdown().await;
            // Drain until the client closes, so the close is a FIN, not a reset of unread bytes.
            let mut sink = [0u8; 1024];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        if read_request_head(&mut s).await {
            let _ = s.write_all(NEXT).await;
        }
    });
    addr
}

fn request(method: &Method) -> Request<Empty<Bytes>> {
    Request::builder().method(method.clone()).uri("/").header("host", "test").body(Empty::new()).expect("request")
}

async fn collect<B>(mut body: B) -> (Vec<u8>, Option<HeaderMap>, bool)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let (mut data, mut trailers) = (Vec::new(), None);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            },
            Err(_) => return (data, trailers, true),
        }
    }
    (data, trailers, false)
}

async fn via_hyper(bytes: Vec<u8>, method: &Method, close_after: bool) -> Outcome {
    let addr = serve(bytes, close_after).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let Ok(resp) = tx.send_request(request(method)).await else { return Outcome::Failed };
    let (parts, body) = resp.into_parts();
    let (body, trailers, body_failed) = collect(body).await;
    let reusable = if close_after || body_failed {
        None
    } else if tx.ready().await.is_ok() {
        let next = tx.send_request(request(&Method::GET)).await.expect("a second exchange on a reusable connection");
        let (next, _, _) = collect(next.into_body()).await;
        assert_eq!(next, b"next");
        Some(true)
    } else {
        Some(false)
    };
    let mut headers = parts.headers;
    let bodiless = *method == Method::HEAD || parts.status.as_u16() == 204 || parts.status.as_u16() == 304;
    if !bodiless && headers.contains_key(http::header::TRANSFER_ENCODING) {
        // The codec removes a Content-Length the coding overrides (RFC 9112 section 6.3); hyper keeps it.
        headers.remove(http::header::CONTENT_LENGTH);
    }
    // The codec leaves the hop-by-hop fields out of the map, which the proxy removes from hyper's: what it
    // read from them shows in the framing and in `reusable`.
    crate::upstream::hop_by_hop::strip_hop_by_hop(&mut headers);
    Outcome::Answered {
        status: parts.status.as_u16(),
        headers: fields(&headers),
        body,
        trailers: trailers.as_ref().map(fields),
        body_failed,
        reusable,
    }
}

/// Records the connection a body hands back.
#[derive(Default)]
struct Kept(Mutex<Option<Box<Connection>>>);

impl Shelf for Kept {
    fn put(&self, conn: Box<Connection>) {
        *self.0.lock().expect("lock") = Some(conn);
    }
}

async fn via_codec(bytes: Vec<u8>, method: &Method, close_after: bool) -> Outcome {
    let addr = serve(bytes, close_after).await;
    let sockets = Sockets::default();
    let mut conn = Connection::new(sockets.track(TcpStream::connect(addr).await.expect("connect")));
    let Ok(head) = conn.request(&request(method), None, b"", None).await else { return Outcome::Failed };
    let kept = Arc::new(Kept::default());
    let body = ResponseBody::new(conn, head.framing, head.keep_alive, kept.clone());
    let (body, trailers, body_failed) = collect(body).await;
    let back = kept.0.lock().expect("lock").take();
    let reusable = if close_after || body_failed {
        None
    } else if let Some(mut conn) = back {
        let next = conn
            .request(&request(&Method::GET), None, b"", None)
            .await
            .expect("a second exchange on a reusable connection");
        let next = ResponseBody::new(conn, next.framing, next.keep_alive, kept.clone());
        let (next, _, _) = collect(next).await;
        assert_eq!(next, b"next");
        Some(true)
    } else {
        Some(false)
    };
    Outcome::Answered {
        status: head.status.as_u16(),
        headers: fields(&head.headers),
        body,
        trailers: trailers.as_ref().map(fields),
        body_failed,
        reusable,
    }
}

#[derive(Debug, Clone)]
enum Length {
    None,
    Exact,
    Twice,
    Listed,
    Differing,
    Signed,
}

#[derive(Debug, Clone)]
enum Coding {
    None,
    Chunked,
    GzipChunked,
    ChunkedGzip,
}

#[derive(Debug, Clone)]
struct Case {
    http10: bool,
    interim: bool,
    status: u16,
    head_request: bool,
    length: Length,
    coding: Coding,
    connection: Option<&'static str>,
    body: Vec<u8>,
    chunk: usize,
    trailers: bool,
    /// A byte changed (position, value), or the bytes cut short (position).
    change: Option<(usize, u8)>,
    cut: Option<usize>,
}

impl Case {
    /// The bytes, and whether they are a well-formed response that ends without the connection's close.
    fn bytes(&self) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        if self.interim {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let version = if self.http10 { "1.0" } else { "1.1" };
        out.extend_from_slice(format!("HTTP/{version} {} Whatever\r\n", self.status).as_bytes());
        if let Some(c) = self.connection {
            out.extend_from_slice(format!("Connection: {c}\r\n").as_bytes());
        }
        out.extend_from_slice(b"X-Case: 1\r\n");
        let n = self.body.len();
        match self.length {
            Length::None => {}
            Length::Exact => out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes()),
            Length::Twice => {
                out.extend_from_slice(format!("Content-Length: {n}\r\ncontent-length: {n}\r\n").as_bytes())
            }
            Length::Listed => out.extend_from_slice(format!("Content-Length: {n}, {n}\r\n").as_bytes()),
            Length::Differing => {
                out.extend_from_slice(format!("Content-Length: {n}\r\nContent-Length: {}\r\n", n + 1).as_bytes())
            }
            Length::Signed => out.extend_from_slice(format!("Content-Length: +{n}\r\n").as_bytes()),
        }
        let coding = match self.coding {
            Coding::None => None,
            Coding::Chunked => Some("chunked"),
            Coding::GzipChunked => Some("gzip, chunked"),
            Coding::ChunkedGzip => Some("chunked, gzip"),
        };
        if let Some(c) = coding {
            out.extend_from_slice(format!("Transfer-Encoding: {c}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        let bodiless = self.head_request || self.status == 204 || self.status == 304;
        let chunked = matches!(self.coding, Coding::Chunked | Coding::GzipChunked);
        if !bodiless {
            if chunked {
                for piece in self.body.chunks(self.chunk.max(1)) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                if self.trailers {
                    out.extend_from_slice(b"X-Trailer: t\r\n");
                }
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&self.body);
            }
        }
        let self_delimited = bodiless
            || chunked
            || (matches!(self.coding, Coding::None)
                && matches!(self.length, Length::Exact | Length::Twice | Length::Listed));
        let mut well_formed = self_delimited
            && !(self.http10 && coding.is_some())
            && (coding.is_none() || matches!(self.length, Length::None))
            && !(bodiless && matches!(self.length, Length::Differing | Length::Signed));
        if let Some((at, b)) = self.change {
            let at = at % out.len();
            well_formed &= out[at] == b;
            out[at] = b;
        }
        if let Some(at) = self.cut {
            let at = at % out.len();
            well_formed &= at == out.len();
            out.truncate(at);
        }
        (out, well_formed)
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        (any::<bool>(), prop::bool::weighted(0.2), prop::sample::select(vec![200u16, 201, 204, 304, 404, 500])),
        (
            prop::bool::weighted(0.15),
            prop::sample::select(vec![
                Length::None,
                Length::Exact,
                Length::Twice,
                Length::Listed,
                Length::Differing,
                Length::Signed,
            ]),
        ),
        prop::sample::select(vec![Coding::None, Coding::Chunked, Coding::GzipChunked, Coding::ChunkedGzip]),
        prop::sample::select(vec![None, Some("close"), Some("keep-alive"), Some("Keep-Alive, foo")]),
        (prop::collection::vec(any::<u8>(), 0..300), 1usize..100, any::<bool>()),
        (prop::option::weighted(0.15, (any::<usize>(), any::<u8>())), prop::option::weighted(0.15, any::<usize>())),
    )
        .prop_map(
            |(
                (http10, interim, status),
                (head_request, length),
                coding,
                connection,
                (body, chunk, trailers),
                (change, cut),
            )| Case {
                http10,
                interim,
                status,
                head_request,
                length,
                coding,
                connection,
                body,
                chunk,
                trailers,
                change,
                cut,
            },
        )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_codec_and_hyper_agree_on_the_same_response(case in case()) {
        let (bytes, well_formed) = case.bytes();
        let method = if case.head_request { Method::HEAD } else { Method::GET };
        let close_after = !well_formed;
        let rt = runtime();
        let bound = Duration::from_secs(20);
        let (hyper, ours) = rt.block_on(async {
            let hyper = tokio::time::timeout(bound, via_hyper(bytes.clone(), &method, close_after)).await;
            let ours = tokio::time::timeout(bound, via_codec(bytes.clone(), &method, close_after)).await;
            (hyper.expect("hyper's client finished"), ours.expect("the codec finished"))
        });
        prop_assert_eq!(hyper, ours, "bytes: {:?}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn the_parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600), head in any::<bool>()) {
        let method = if head { Method::HEAD } else { Method::GET };
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        let _ = head::parse_response(&mut buf, &method, &mut Vec::new());
        let mut with_head = bytes::BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        with_head.extend_from_slice(&bytes);
        let _ = head::parse_response(&mut with_head, &method, &mut Vec::new());
    }

    #[test]
    fn the_chunk_decoder_never_panics_and_never_reads_past_its_input(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut dec = chunked::Chunked::default();
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        let mut taken = 0usize;
        let before = buf.len();
        while let Ok(d) = dec.decode(&mut buf) {
            match d {
                chunked::Decoded::Data(d) => taken += d.len(),
                chunked::Decoded::Trailers(_) | chunked::Decoded::End | chunked::Decoded::NeedMore => break,
            }
        }
        prop_assert!(taken <= before);
    }
}

/// A well-formed response, read by the codec over a socket: the pieces in one place (the generated cases
/// above hold the same against hyper).
#[tokio::test(flavor = "current_thread")]
async fn a_chunked_response_with_trailers_is_read_and_its_connection_reused() {
    let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n".to_vec();
    let outcome = via_codec(bytes, &Method::GET, false).await;
    let Outcome::Answered { status, body, trailers, body_failed, reusable, .. } = outcome else {
        panic!("the head failed: {outcome:?}")
    };
    assert_eq!((status, &body[..], body_failed, reusable), (200, &b"abc"[..], false, Some(true)));
    assert_eq!(trailers, Some(vec![("x-t".to_string(), b"1".to_vec())]));
}

/// The read timeout's timer lives with the connection and is moved to each exchange's deadline: one that
/// fired while the connection sat idle does not cut the next exchange, and a server that never answers is
/// cut at the exchange's own deadline with `Error::Timeout`.
#[tokio::test(flavor = "current_thread")]
async fn the_connections_timer_bounds_each_exchange_at_its_own_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Answers the first two requests, then reads the third and holds the connection open without a word.
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        for answered in 0..3 {
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "the client closed early");
                got.extend_from_slice(&buf[..n]);
            }
            got.clear();
            if answered < 2 {
                s.write_all(NEXT).await.expect("write");
            }
        }
        // Held until the client gives up and closes.
        let _ = s.read(&mut buf).await;
    });
    let sockets = Sockets::default();
    let mut conn = Connection::new(sockets.track(TcpStream::connect(addr).await.expect("connect")));
    let kept = Arc::new(Kept::default());
    let bound = Duration::from_secs(20);
    let exchange = |mut conn: Box<Connection>, deadline: Instant| {
        let kept = kept.clone();
        async move {
            let head = conn.request(&request(&Method::GET), None, b"", Some(deadline)).await?;
            let (body, _, failed) = collect(ResponseBody::new(conn, head.framing, head.keep_alive, kept.clone())).await;
            assert_eq!((&body[..], failed), (&b"next"[..], false));
            Ok::<_, Error>(kept.0.lock().expect("lock").take().expect("the connection back"))
        }
    };
    let first = Instant::now() + Duration::from_millis(200);
    conn = tokio::time::timeout(bound, exchange(conn, first)).await.expect("bounded").expect("the first answer");
    // The first exchange's deadline passes while the connection is idle.
    tokio::time::sleep_until(first + Duration::from_millis(50)).await;
    let second = Instant::now() + Duration::from_secs(10);
    conn = tokio::time::timeout(bound, exchange(conn, second)).await.expect("bounded").expect("the second answer");
    let third = Instant::now() + Duration::from_millis(200);
    let outcome = tokio::time::timeout(bound, conn.request(&request(&Method::GET), None, b"", Some(third))).await;
    assert!(matches!(outcome, Ok(Err(Error::Timeout))), "{outcome:?}");
    assert!(Instant::now() >= third, "cut before its deadline");
    drop(conn);
    tokio::time::timeout(bound, server).await.expect("the server ended").expect("the server's task");
}
