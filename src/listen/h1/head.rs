//! The two heads of a client's HTTP/1.1 exchange, as bytes: the request head parsed with `httparse` into the
//! `http::Request` the proxy takes (header values and the target share the read buffer), and the response
//! head written from the proxy's `http::Response` into the connection's write buffer, with how its body is
//! framed and whether the connection carries another request after it.
//!
//! Pure: no I/O. Both follow hyper's HTTP/1.1 server rule for rule, because hyper still serves every
//! request this codec does not take and both must look the same to a client (the differential test in
//! `tests.rs` holds the two side by side). The parser takes only what it is sure of and says
//! [`Parsed::Fallback`] for anything else, leaving the bytes for hyper, which answers or serves them exactly
//! as before: any parse error or limit, HTTP/1.0, a body (`Content-Length`, `Transfer-Encoding`), `Expect`,
//! `Upgrade` and CONNECT.

use crate::http1::content_length;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use std::mem::MaybeUninit;

/// The largest declared request body the codec takes (read whole before the handler is called, as the
/// upstream codec reads a body it sends with the head); larger ones stream through hyper.
pub const SMALL_BODY: usize = 16 * 1024;

/// hyper's cap on a request target (it answers 414 past it).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// The listener's limits on a head, as hyper is configured with them.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The most bytes of an unfinished head buffered (hyper's `max_buf_size`).
    pub max_head_bytes: usize,
    /// Header fields in one head (hyper's `max_headers`).
    pub max_headers: usize,
    /// The request line (`head::LineGuard`'s limit).
    pub max_request_line: usize,
}

/// What the parser made of the front of the read buffer.
// Returned by value once per request: boxing the head would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet, and within the limits: read more.
    Partial,
    /// A head in the codec's scope, split off the buffer.
    Request(Head),
    /// Not for this codec: hyper takes the connection with every byte read so far.
    Fallback,
}

/// A request head in scope, and what the response to it needs.
#[derive(Debug)]
pub struct Head {
    pub request: Request<()>,
    /// The connection may carry another request after this one (no `Connection: close`).
    pub keep_alive: bool,
    /// The client accepts trailer fields (`TE: trailers`), as hyper's server checks before sending any.
    pub trailers: bool,
    /// The declared body, whole (empty without one); it shares the read buffer.
    pub body: Bytes,
}

/// Where a header field sits in the head's bytes, kept between parsing (which borrows the buffer) and
/// building the map from the frozen head (which shares it).
#[derive(Clone, Copy, Default)]
pub struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// The most header fields the codec parses; a listener allowing more leaves every head to hyper's server.
pub const MAX_HEADERS: usize = crate::proxy::limits::DEFAULT_MAX_HEADERS;

/// Parses one request head from the front of `buf`. `spans` is scratch space kept by the connection.
pub fn parse_request(buf: &mut BytesMut, limits: &HeadLimits, spans: &mut Vec<Span>) -> Parsed {
    // hyper's default of 100 slots on the stack; a listener configured for more does not use the codec
    // (`listen::serve`), and a head with more fields than slots is refused by httparse, so goes to hyper.
    const SLOTS: usize = MAX_HEADERS;
    let mut slots: [MaybeUninit<httparse::Header<'_>>; SLOTS] = [const { MaybeUninit::uninit() }; SLOTS];
    let mut req = httparse::Request::new(&mut []);
    let base = buf.as_ptr() as usize;
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut slots[..limits.max_headers.min(SLOTS)],
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            // A request line already past its limit, or a head past the buffer's: hyper answers 414 or 431.
            let line_open = !buf.contains(&b'\n');
            if buf.len() >= limits.max_head_bytes || (line_open && buf.len() > limits.max_request_line) {
                return Parsed::Fallback;
            }
            return Parsed::Partial;
        }
        Err(_) => return Parsed::Fallback,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else { return Parsed::Fallback };
    if len > limits.max_head_bytes || path.len() > MAX_URI_LEN {
        return Parsed::Fallback;
    }
    let line_end = buf.iter().position(|b| *b == b'\n').unwrap_or(len);
    if line_end > limits.max_request_line {
        return Parsed::Fallback;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Parsed::Fallback };
    if method == Method::CONNECT {
        return Parsed::Fallback;
    }
    let offset = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(base);
    let path = (offset(path.as_bytes()), offset(path.as_bytes()) + path.len());
    spans.clear();
    let mut declared: Option<u64> = None;
    for h in req.headers.iter() {
        // Told before anything is split off the buffer, so a fallback finds it as it was.
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // Digits only, and every length the same (else hyper answers 400).
            match (content_length(h.value), declared) {
                (Some(n), None) => declared = Some(n),
                (Some(n), Some(seen)) if n == seen => {}
                _ => return Parsed::Fallback,
            }
        } else if [&b"transfer-encoding"[..], b"expect", b"upgrade"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            // A streamed body, an interim answer or a protocol switch: hyper's tested path.
            return Parsed::Fallback;
        }
        // Offsets into the head: httparse's slices all point into `buf`. An empty value may point anywhere,
        // and is kept as an empty span.
        let at = |s: &[u8]| match (s.as_ptr() as usize).checked_sub(base) {
            Some(off) if !s.is_empty() && off + s.len() <= len => (off as u32, (off + s.len()) as u32),
            _ => (0, 0),
        };
        spans.push(Span { name: at(name), value: at(h.value) });
    }
    if path.1 > len {
        return Parsed::Fallback;
    }
    let body_len = match declared {
        None => 0,
        // A small declared body is taken whole, once it is all in the buffer; a larger one streams on hyper.
        Some(n) if n <= SMALL_BODY as u64 => n as usize,
        Some(_) => return Parsed::Fallback,
    };
    if buf.len() - len < body_len {
        return Parsed::Partial;
    }
    let head = buf.split_to(len).freeze();
    // Most requests have no body: nothing to split off, nothing to count references of.
    let body = if body_len == 0 { Bytes::new() } else { buf.split_to(body_len).freeze() };
    match build(&head, method, path, spans, body.clone()) {
        Some(parsed) => Parsed::Request(parsed),
        None => {
            // A target or a field name `http` refuses (hyper answers 400): the message goes back in front of
            // what followed it, a copy on this rare path only.
            let mut restored = BytesMut::with_capacity(head.len() + body.len() + buf.len());
            restored.extend_from_slice(&head);
            restored.extend_from_slice(&body);
            restored.extend_from_slice(buf);
            *buf = restored;
            Parsed::Fallback
        }
    }
}

fn build(head: &Bytes, method: Method, path: (usize, usize), spans: &[Span], body: Bytes) -> Option<Head> {
    let uri = Uri::from_maybe_shared(head.slice(path.0..path.1)).ok()?;
    // Room for what the proxy adds on its way upstream (X-Forwarded-For, -Proto, -Host, Host, X-Request-Id),
    // so the map is not grown again for them.
    let mut headers = HeaderMap::with_capacity(spans.len() + 5);
    let (mut keep_alive, mut trailers, mut length) = (true, false, false);
    for span in spans {
        let name = HeaderName::from_bytes(&head[span.name.0 as usize..span.name.1 as usize]).ok()?;
        let bytes = head.slice(span.value.0 as usize..span.value.1 as usize);
        // SAFETY: not a memory-safety matter, only `HeaderValue`'s invariant that its bytes are HTAB, SP to
        // `~` or 0x80 to 0xFF; httparse accepted this value under exactly that rule, so checking every byte
        // again, as `from_maybe_shared` would, is redundant. hyper's server does the same.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) };
        match name {
            // Lengths that agree are kept once, as hyper keeps them.
            header::CONTENT_LENGTH if std::mem::replace(&mut length, true) => continue,
            header::CONNECTION if has_token(&value, "close") => keep_alive = false,
            header::TE if has_token(&value, "trailers") => trailers = true,
            _ => {}
        }
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(Head { request, keep_alive, trailers, body })
}

/// A comma-separated token list holds `token` (hyper's reading: text only, trimmed, any case).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// What the response body is, as hyper's server tells it from the body before writing the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// The body is at its end already.
    None,
    /// The body knows its exact size.
    Known(u64),
    Unknown,
}

/// How the response body goes out, decided by the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoder {
    /// Exactly this many bytes; 0 also for responses that carry no body (HEAD, 204, 304), whose body is
    /// not read at all, as hyper does.
    Length(u64),
    /// Chunked, with the trailer fields the `Trailer` header allowed (`None`: no `Trailer` header).
    Chunked(Option<Vec<HeaderName>>),
    /// The body runs to the connection's end (an HTTP/1.0 response of unknown length).
    Close,
}

/// The response head as written: the body's encoding, and whether the connection closes after it.
#[derive(Debug)]
pub struct Written {
    pub encoder: Encoder,
    pub last: bool,
}

/// Writes the response head into `dst` as hyper's server writes it for an HTTP/1.1 request: the status line
/// (`HTTP/1.1 200 OK` for the common case), the fields in the map's order with lower-case names (framing
/// fields special as below), the framing field hyper adds when the response has none, and `date` when the
/// response has none. `keep_alive`: the request allows another after this one.
pub fn write_response(
    resp: &mut http::response::Parts,
    body: BodyLength,
    method: &Method,
    keep_alive: bool,
    date: &[u8],
    dst: &mut Vec<u8>,
) -> Written {
    if !keep_alive {
        // hyper tells an HTTP/1.1 client that asked to close that the connection closes.
        match resp.headers.entry(header::CONNECTION) {
            header::Entry::Occupied(mut e) => {
                if !e.iter().any(|v| has_token(v, "close")) {
                    e.append(HeaderValue::from_static("close"));
                }
            }
            header::Entry::Vacant(e) => {
                e.insert(HeaderValue::from_static("close"));
            }
        }
    }
    let mut status = resp.status;
    let mut last = !keep_alive;
    let mut body = body;
    if status.is_informational() {
        // hyper cannot send a 1xx as the final answer: it answers 500 instead and closes (the proxy turns a
        // 101 into a tunnel only on hyper's path, for requests that asked to upgrade).
        resp.headers.clear();
        status = StatusCode::INTERNAL_SERVER_ERROR;
        body = BodyLength::None;
        last = true;
    }
    let is_head = *method == Method::HEAD;
    let can_chunk = !is_head && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let can_have_length = !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let reason = resp.extensions.get::<hyper::ext::ReasonPhrase>();
    if resp.version != Version::HTTP_10 && status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(if resp.version == Version::HTTP_10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(r) => dst.extend_from_slice(r.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }
    let mut encoder = Encoder::Length(0);
    let mut wrote_len = false;
    let mut wrote_date = false;
    let mut trailer_fields: Option<Vec<HeaderName>> = None;
    // One pass over the fields in the map's order (a name's values follow each other, and share the one
    // name the map holds, so a new name is told by its address). The framing fields' values are joined on
    // one line, as hyper writes them; `open` is such a line still taking values.
    let mut open = false;
    let mut must_chunk = false;
    let mut prev: *const HeaderName = std::ptr::null();
    for (name, value) in resp.headers.iter() {
        let first = !std::ptr::eq(prev, name);
        if first {
            prev = name;
            end_line(dst, &mut open, &mut must_chunk);
        }
        match *name {
            header::CONTENT_LENGTH => match body {
                // hyper trusts the body's length for the encoding and writes the field's first value.
                BodyLength::Known(n) => {
                    if first {
                        encoder = Encoder::Length(n);
                        start_line(dst, b"content-length", value, &mut open);
                        wrote_len = true;
                    }
                }
                BodyLength::Unknown => {
                    if let (false, Some(n)) = (open, content_length(value.as_bytes())) {
                        encoder = Encoder::Length(n);
                        start_line(dst, b"content-length", value, &mut open);
                        wrote_len = true;
                    }
                }
                BodyLength::None if is_head => {
                    line(dst, b"content-length", value.as_bytes());
                    wrote_len = true;
                }
                BodyLength::None => {}
            },
            header::TRANSFER_ENCODING => {
                if !can_chunk || resp.version == Version::HTTP_10 {
                    continue;
                }
                wrote_len = true;
                encoder = Encoder::Chunked(None);
                // `chunked` must be the last coding, or it is added.
                must_chunk = !is_chunked(value);
                continue_line(dst, b"transfer-encoding", value, &mut open, first);
            }
            header::CONNECTION => {
                last |= has_token(value, "close");
                continue_line(dst, b"connection", value, &mut open, first);
            }
            header::TRAILER => {
                if !can_chunk || resp.version == Version::HTTP_10 {
                    continue;
                }
                continue_line(dst, b"trailer", value, &mut open, first);
                if let Ok(text) = value.to_str() {
                    let fields = trailer_fields.get_or_insert_with(Vec::new);
                    fields.extend(text.split(',').filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok()));
                }
            }
            _ => {
                wrote_date |= *name == header::DATE;
                line(dst, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    end_line(dst, &mut open, &mut must_chunk);
    if !wrote_len {
        encoder = match body {
            BodyLength::Unknown if can_chunk && resp.version != Version::HTTP_10 => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Encoder::Chunked(None)
            }
            BodyLength::Unknown => Encoder::Close,
            BodyLength::None | BodyLength::Known(0) => {
                if can_have_length && !is_head {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Encoder::Length(0)
            }
            BodyLength::Known(n) => {
                if can_have_length {
                    use std::io::Write;
                    let _ = write!(dst, "content-length: {n}\r\n");
                    Encoder::Length(n)
                } else {
                    Encoder::Length(0)
                }
            }
        };
    }
    if !can_chunk {
        encoder = Encoder::Length(0);
    }
    // Close-delimited: the body runs to the connection's end.
    last |= encoder == Encoder::Close;
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        dst.extend_from_slice(date);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    if let (Encoder::Chunked(allowed), Some(fields)) = (&mut encoder, trailer_fields) {
        *allowed = Some(fields);
    }
    Written { encoder, last }
}

fn line(dst: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// Starts a framing field's line; [`end_line`] ends it when the next name comes.
fn start_line(dst: &mut Vec<u8>, name: &[u8], value: &HeaderValue, open: &mut bool) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value.as_bytes());
    *open = true;
}

/// A framing field's value: its line started for the first, joined by ", " after that.
fn continue_line(dst: &mut Vec<u8>, name: &[u8], value: &HeaderValue, open: &mut bool, first: bool) {
    if first || !*open {
        start_line(dst, name, value, open);
    } else {
        dst.extend_from_slice(b", ");
        dst.extend_from_slice(value.as_bytes());
    }
}

/// Ends an open framing line, with `, chunked` when a `Transfer-Encoding` did not end in it. (hyper keeps
/// that flag for every later joined line too, a slip with no effect here: the proxy never sends
/// `Transfer-Encoding` to a client, it is hop-by-hop.)
fn end_line(dst: &mut Vec<u8>, open: &mut bool, must_chunk: &mut bool) {
    if std::mem::take(open) {
        dst.extend_from_slice(if std::mem::take(must_chunk) { b", chunked\r\n" } else { b"\r\n" });
    }
}

fn is_chunked(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|s| s.rsplit(',').next().is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked")))
}

/// The trailer fields hyper's server sends: the ones the `Trailer` header named, except those that must not
/// be trailers. `None` when none is left (the body then ends with an empty last chunk).
pub fn write_trailers(trailers: &HeaderMap, allowed: &[HeaderName], dst: &mut Vec<u8>) -> bool {
    let start = dst.len();
    dst.extend_from_slice(b"0\r\n");
    let mut any = false;
    for (name, value) in trailers {
        if allowed.contains(name) && valid_trailer(name) {
            line(dst, name.as_str().as_bytes(), value.as_bytes());
            any = true;
        }
    }
    if !any {
        dst.truncate(start);
        return false;
    }
    dst.extend_from_slice(b"\r\n");
    true
}

fn valid_trailer(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::TE
    )
}

/// A chunk's size line (upper-case hex, as hyper writes it).
pub fn chunk_size(len: usize, dst: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(dst, "{len:X}\r\n");
}
