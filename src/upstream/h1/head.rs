//! The two heads of an upstream HTTP/1.1 exchange, as bytes: the request head written straight from the
//! request the proxy prepared (one buffer, no intermediate map), and the response head parsed with
//! `httparse` into the `http::Response` parts the server side needs, with the body's framing (RFC 9112
//! section 6.3) and whether the connection may carry another exchange after it.
//!
//! Pure: no I/O. The framing rules follow hyper's client, which this codec replaces on the common path, so
//! a response is framed the same way whichever of the two read it (the differential tests in `tests.rs`
//! hold the two side by side); where this codec is stricter it says so (a response with both
//! `Transfer-Encoding` and `Content-Length` is read as chunked but its connection is not reused).

use super::Error;
use crate::http1::content_length;
use crate::upstream::forwarded::{line, Forwarded};
use crate::upstream::hop_by_hop;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use std::mem::MaybeUninit;

/// The most header fields a response head may carry (hyper's client default).
pub const MAX_HEADERS: usize = 100;

/// The largest response head read (hyper's client buffer limit: 8 KiB plus 4 KiB per header field).
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * MAX_HEADERS;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 1xx, 204, 304 (RFC 9112 section 6.3, rule 1), or `Content-Length: 0`.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Neither: the body runs to the connection's close, which is then not reused.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another exchange once this body ended (HTTP/1.1 without `Connection:
    /// close`, or HTTP/1.0 with `keep-alive`, and framing that does not run to the close).
    pub keep_alive: bool,
}

/// Writes the request head for `req` into `dst` (cleared first). The request is the one the proxy prepared:
/// origin-form target, hop-by-hop headers already removed, Host set. Only requests without a body or with a
/// declared one come here: the client's `Content-Length` is forwarded as it is, and no length is added to a
/// bodyless request (hyper's client adds none either). `forwarded`: the fields the proxy sets, written in
/// place of the client's of the same names (the map does not hold them).
pub fn write_request<B>(req: &Request<B>, forwarded: Option<&Forwarded>, dst: &mut Vec<u8>) {
    dst.clear();
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let target = if target.is_empty() { "/" } else { target };
    dst.extend_from_slice(req.method().as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    match forwarded {
        Some(forwarded) => forwarded.write_fields(req.headers(), dst),
        None => {
            for (name, value) in req.headers() {
                line(dst, name.as_str(), value);
            }
        }
    }
    dst.extend_from_slice(b"\r\n");
}

/// Where a header field sits in the head's bytes, kept between parsing (which borrows the buffer) and
/// building the map from the frozen head (which shares it).
#[derive(Clone, Copy, Default)]
pub struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// What the response head says about framing, gathered field by field as the map is built.
#[derive(Default)]
struct FramingFields {
    /// Some `Transfer-Encoding` field was present.
    transfer_encoding: bool,
    /// The last coding of the last `Transfer-Encoding` field is `chunked`.
    chunked: bool,
    /// Every `Content-Length` value agreed on this; `Err` when one was not digits or two differed.
    content_length: Option<Result<u64, ()>>,
    close: bool,
    keep_alive_token: bool,
}

/// Parses one response head from the front of `buf`. `Ok(None)`: incomplete, read more. Interim 1xx responses
/// (other than 101) are skipped, as hyper's client does. On success the head's bytes are split off `buf`,
/// which keeps what follows (the body's first bytes). `spans` is scratch space kept by the connection.
pub fn parse_response(buf: &mut BytesMut, method: &Method, spans: &mut Vec<Span>) -> Result<Option<Head>, Error> {
    loop {
        let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
            [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let base = buf.as_ptr() as usize;
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buf.len() >= MAX_HEAD_BYTES {
                    return Err(Error::HeadTooLarge { limit: MAX_HEAD_BYTES });
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders { limit: MAX_HEADERS }),
            Err(e) => return Err(Error::Parse(e)),
        };
        if len > MAX_HEAD_BYTES {
            return Err(Error::HeadTooLarge { limit: MAX_HEAD_BYTES });
        }
        let code = resp.code.unwrap_or(0);
        let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        spans.clear();
        for h in resp.headers.iter() {
            // Offsets into the head: httparse's slices all point into `buf`. An empty value may point
            // anywhere, and is kept as an empty span.
            let at = |s: &[u8]| match (s.as_ptr() as usize).checked_sub(base) {
                Some(off) if !s.is_empty() && off + s.len() <= len => (off as u32, (off + s.len()) as u32),
                _ => (0, 0),
            };
            let (name, value) = (at(h.name.as_bytes()), at(h.value));
            spans.push(Span { name, value });
        }
        let status = StatusCode::from_u16(code).map_err(|_| Error::Status(code))?;
        if status.is_informational() && code != 101 {
            // An interim answer (100 Continue, 103 Early Hints): the final one follows.
            let _ = buf.split_to(len);
            continue;
        }
        let head = buf.split_to(len).freeze();
        return build(head, status, version, method, spans).map(Some);
    }
}

/// What a response field is to the codec, told from its name's bytes before any `HeaderName` is made (most
/// names are ruled out by their length alone).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connection,
    TransferEncoding,
    ContentLength,
    Te,
    /// The other hop-by-hop fields (RFC 9110 section 7.6.1): they describe this connection, so they never go
    /// into the map the client's answer is built from (the proxy removes the same from hyper's responses,
    /// `upstream::hop_by_hop`). `Upgrade` can only come with a 101, which this codec refuses.
    HopByHop,
    Other,
}

fn kind(name: &[u8]) -> Kind {
    let is = |lowercase: &[u8]| same_name(name, lowercase);
    match name.len() {
        2 if is(b"te") => Kind::Te,
        7 if is(b"trailer") || is(b"upgrade") => Kind::HopByHop,
        10 if is(b"connection") => Kind::Connection,
        10 if is(b"keep-alive") => Kind::HopByHop,
        14 if is(b"content-length") => Kind::ContentLength,
        16 if is(b"proxy-connection") => Kind::HopByHop,
        17 if is(b"transfer-encoding") => Kind::TransferEncoding,
        18 if is(b"proxy-authenticate") => Kind::HopByHop,
        19 if is(b"proxy-authorization") => Kind::HopByHop,
        _ => Kind::Other,
    }
}

/// The `HeaderName` of a field most responses carry, without `HeaderName::from_bytes` (which lowercases the
/// name into a buffer and matches it against every standard name: about 150 instructions a field, four or
/// five fields a response). `None` for the others, which take that way.
fn common_name(name: &[u8]) -> Option<HeaderName> {
    let is = |lowercase: &[u8]| same_name(name, lowercase);
    let known = match name.len() {
        3 if is(b"age") => header::AGE,
        4 if is(b"date") => header::DATE,
        4 if is(b"etag") => header::ETAG,
        4 if is(b"vary") => header::VARY,
        4 if is(b"link") => header::LINK,
        6 if is(b"server") => header::SERVER,
        7 if is(b"expires") => header::EXPIRES,
        8 if is(b"location") => header::LOCATION,
        10 if is(b"set-cookie") => header::SET_COOKIE,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        13 if is(b"cache-control") => header::CACHE_CONTROL,
        13 if is(b"last-modified") => header::LAST_MODIFIED,
        13 if is(b"accept-ranges") => header::ACCEPT_RANGES,
        16 if is(b"content-encoding") => header::CONTENT_ENCODING,
        _ => return None,
    };
    Some(known)
}

/// `name` (a token, as httparse checked) is `lowercase`, a name of letters and `-` of the same length, in any
/// case. Eight bytes at a time: setting bit 0x20 lowercases a letter, leaves `-` as it is, and turns no other
/// token character into a letter or `-`, so the comparison is exact for such names.
fn same_name(name: &[u8], lowercase: &[u8]) -> bool {
    let mut a = name.chunks(8);
    let mut b = lowercase.chunks(8);
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) if x.len() == y.len() => {
                let mut wx = [0u8; 8];
                let mut wy = [0u8; 8];
                wx[..x.len()].copy_from_slice(x);
                wy[..y.len()].copy_from_slice(y);
                if u64::from_ne_bytes(wx) | 0x2020_2020_2020_2020 != u64::from_ne_bytes(wy) | 0x2020_2020_2020_2020 {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Builds the response map from the head's fields, leaving out the hop-by-hop ones as it goes: the respond
/// phase then has no removal pass to make for a codec response (one pass over the names and a hash and
/// probe per field removed, about 0.3k instructions with every response).
fn build(head: Bytes, status: StatusCode, version: Version, method: &Method, spans: &[Span]) -> Result<Head, Error> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut fields = FramingFields::default();
    // `Connection` values that name other fields, removed once the map is whole (they may come before the
    // fields they name). Rare: no allocation unless there is one.
    let mut named: Vec<HeaderValue> = Vec::new();
    let mut te = false;
    for span in spans {
        let name = &head[span.name.0 as usize..span.name.1 as usize];
        let kind = kind(name);
        if kind == Kind::HopByHop {
            continue;
        }
        let bytes = head.slice(span.value.0 as usize..span.value.1 as usize);
        // SAFETY: not a memory-safety matter, only `HeaderValue`'s invariant that its bytes are HTAB, SP to
        // `~` or 0x80 to 0xFF; httparse accepted this value under exactly that rule (its header-value map), so
        // checking every byte again, as `from_maybe_shared` would, is redundant. hyper's client does the same.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) };
        // A value with bytes outside visible ASCII names no token and no coding (as hyper reads it): the
        // two readers of a response must never frame it differently. Checked only for the fields that frame.
        let text = || value.to_str().is_ok();
        match kind {
            Kind::Connection => {
                if text() {
                    let mut names_fields = false;
                    for token in value.as_bytes().split(|b| *b == b',') {
                        let token = token.trim_ascii();
                        let close = token.eq_ignore_ascii_case(b"close");
                        let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                        fields.close |= close;
                        fields.keep_alive_token |= keep_alive;
                        names_fields |= !(close || keep_alive || token.is_empty());
                    }
                    if names_fields {
                        named.push(value);
                    }
                }
                // Hop-by-hop: read, never passed on.
                continue;
            }
            Kind::TransferEncoding => {
                fields.transfer_encoding = true;
                let last = value.as_bytes().rsplit(|b| *b == b',').next().unwrap_or(b"");
                fields.chunked = text() && last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                // The body is framed again for the client.
                continue;
            }
            Kind::Te => te = true,
            Kind::ContentLength => {
                for part in value.as_bytes().split(|b| *b == b',') {
                    let n = content_length(part.trim_ascii()).ok_or(());
                    fields.content_length = match fields.content_length {
                        None => Some(n),
                        Some(Ok(seen)) if n == Ok(seen) => Some(Ok(seen)),
                        Some(_) => Some(Err(())),
                    };
                }
            }
            Kind::HopByHop | Kind::Other => {}
        }
        let name = match kind {
            Kind::ContentLength => header::CONTENT_LENGTH,
            Kind::Te => header::TE,
            _ => match common_name(name) {
                Some(known) => known,
                None => HeaderName::from_bytes(name).map_err(|_| Error::HeaderName)?,
            },
        };
        headers.append(name, value);
    }
    // The rest of the hop-by-hop rule, for the rare head that needs it.
    if !named.is_empty() {
        hop_by_hop::remove_named(&mut headers, named.iter(), &mut te);
    }
    if te {
        hop_by_hop::keep_te_trailers(&mut headers);
    }
    let mut keep_alive = !fields.close && (version == Version::HTTP_11 || fields.keep_alive_token);
    let code = status.as_u16();
    let framing = if code == 101 {
        // Only requests that ask to upgrade go to hyper's client; a 101 here answers one that did not.
        return Err(Error::UnexpectedUpgrade);
    } else if code == 204 || code == 304 || *method == Method::HEAD {
        Framing::Empty
    } else if fields.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(Error::TransferEncodingInHttp10);
        }
        if fields.content_length.is_some() {
            // Both (RFC 9112 section 6.3, rule 3): the coding wins, the length goes before the message is
            // forwarded, and the connection is not trusted with another exchange.
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        if fields.chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match fields.content_length {
            Some(Ok(0)) => Framing::Empty,
            Some(Ok(n)) => Framing::Length(n),
            Some(Err(())) => return Err(Error::ContentLength),
            None => Framing::Close,
        }
    };
    if framing == Framing::Close {
        keep_alive = false;
    }
    Ok(Head { status, version, headers, framing, keep_alive })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], method: Method) -> Result<Option<(Head, BytesMut)>, Error> {
        let mut buf = BytesMut::from(bytes);
        let mut spans = Vec::new();
        Ok(parse_response(&mut buf, &method, &mut spans)?.map(|h| (h, buf)))
    }

    fn head(bytes: &[u8]) -> Head {
        parse(bytes, Method::GET).expect("parses").expect("complete").0
    }

    #[test]
    fn a_plain_response_is_framed_by_its_length_and_keeps_the_bytes_after_its_head() {
        let (h, rest) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nokNEXT", Method::GET)
            .expect("parses")
            .expect("complete");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(&rest[..], b"okNEXT");
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_a_head_over_the_limit_is_refused() {
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le", Method::GET).expect("partial is fine").is_none());
        let mut big = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 10, b'a');
        assert!(matches!(parse(&big, Method::GET), Err(Error::HeadTooLarge { .. })));
    }

    #[test]
    fn too_many_header_fields_are_refused() {
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&many, Method::GET), Err(Error::TooManyHeaders { .. })));
    }

    #[test]
    fn responses_without_a_body_whatever_they_declare() {
        for (bytes, method) in [
            (&b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"[..], Method::GET),
            (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", Method::HEAD),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Method::GET),
        ] {
            let (h, _) = parse(bytes, method).expect("parses").expect("complete");
            assert_eq!(h.framing, Framing::Empty, "{}", String::from_utf8_lossy(bytes));
            assert!(h.keep_alive);
        }
        // The HEAD answer keeps its Content-Length for the client.
        let (h, _) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", Method::HEAD).expect("ok").expect("c");
        assert_eq!(h.headers[header::CONTENT_LENGTH], "10");
    }

    #[test]
    fn interim_responses_are_skipped_and_an_unasked_switch_is_refused() {
        let h = head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.status, StatusCode::CREATED);
        assert!(h.headers.get("link").is_none());
        assert!(parse(b"HTTP/1.1 100 Continue\r\n\r\n", Method::GET).expect("partial").is_none());
        assert!(matches!(
            parse(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", Method::GET),
            Err(Error::UnexpectedUpgrade)
        ));
    }

    #[test]
    fn content_length_duplicates_must_agree_and_be_digits() {
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        assert_eq!(head(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n").framing, Framing::Length(5));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ] {
            assert!(matches!(parse(bad, Method::GET), Err(Error::ContentLength)), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn transfer_encoding_wins_over_content_length_which_is_removed_and_the_connection_not_reused() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.headers.get(header::CONTENT_LENGTH).is_none());
        assert!(!h.keep_alive);
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.keep_alive);
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);
        assert!(matches!(
            parse(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET),
            Err(Error::TransferEncodingInHttp10)
        ));
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_field() {
        assert!(!head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            !head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        assert!(!head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(!head(b"HTTP/1.1 200 OK\r\n\r\n").keep_alive, "read to close");
        assert_eq!(head(b"HTTP/1.1 200 OK\r\n\r\n").framing, Framing::Close);
    }

    #[test]
    fn a_connection_field_naming_no_other_field_is_not_passed_on() {
        let h = head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(h.headers.get(header::CONNECTION).is_none());
        assert!(h.keep_alive);
        let h = head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(h.headers.get(header::CONNECTION).is_none());
        assert!(!h.keep_alive, "read, even though not passed on");
    }

    #[test]
    fn field_names_are_told_apart_in_any_case_and_only_when_they_match() {
        assert!(kind(b"Connection") == Kind::Connection && kind(b"CONTENT-LENGTH") == Kind::ContentLength);
        assert!(kind(b"Proxy-Authorization") == Kind::HopByHop && kind(b"tE") == Kind::Te);
        // One character off, in the last partial word, or a token character next to a letter's case bit.
        for other in [&b"connectioN_"[..], b"connectiom", b"content-lengtH1", b"content_length", b"keep-alivf", b"ta"] {
            assert!(kind(other) == Kind::Other, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn common_names_are_the_names_from_bytes_makes() {
        for name in [
            "age",
            "Date",
            "ETAG",
            "vary",
            "Link",
            "server",
            "Expires",
            "location",
            "Set-Cookie",
            "Content-Type",
            "cache-control",
            "Last-Modified",
            "accept-ranges",
            "Content-Encoding",
        ] {
            let made = HeaderName::from_bytes(name.as_bytes()).expect("valid");
            assert_eq!(common_name(name.as_bytes()), Some(made), "{name}");
        }
        for other in ["dates", "x-date", "servers", "content-typf", "ag", "set_cookie"] {
            assert_eq!(common_name(other.as_bytes()), None, "{other}");
        }
        let h = head(
            b"HTTP/1.1 200 OK\r\nDATE: a\r\nContent-TYPE: t\r\nX-Own: 1\r\nte: trailers\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(h.headers.len(), 5);
        assert!(h.headers["date"] == "a" && h.headers["content-type"] == "t" && h.headers["x-own"] == "1");
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_stay_out_of_the_map() {
        let h = head(
            b"HTTP/1.1 200 OK\r\nX-Hop: 1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 2\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(h.headers.get(header::CONNECTION).is_none() && h.headers.get("x-hop").is_none(), "{:?}", h.headers);
        assert!(h.keep_alive);
        let h = head(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nProxy-Authenticate: Basic\r\n\
              Trailer: X-T\r\nTransfer-Encoding: chunked\r\nTE: gzip, trailers\r\nX-Kept: 1\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Chunked, "read before it is dropped");
        assert_eq!(h.headers.len(), 2, "{:?}", h.headers);
        assert!(h.headers[header::TE] == "trailers" && h.headers["x-kept"] == "1");
        let h =
            head(b"HTTP/1.1 200 OK\r\nTE: gzip\r\nConnection: x-a\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.headers.len(), 2, "TE without trailers goes: {:?}", h.headers);
        let h = head(b"HTTP/1.1 200 OK\r\nTE: trailers\r\nConnection: TE\r\nContent-Length: 0\r\n\r\n");
        assert!(h.headers.get(header::TE).is_none(), "named by Connection");
        let h = head(b"HTTP/1.1 200 OK\r\nConnection: \xff\r\nContent-Length: 0\r\n\r\n");
        assert!(h.headers.get(header::CONNECTION).is_none(), "not text, still dropped");
    }

    #[test]
    fn malformed_heads_are_errors_not_panics() {
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 Odd\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(parse(bad, Method::GET).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_request_head_is_written_as_prepared() {
        let req = Request::builder()
            .method(Method::GET)
            .uri("/a/b?c=d")
            .header("host", "example")
            .header("x-forwarded-for", "1.2.3.4")
            .body(())
            .expect("request");
        let mut out = Vec::new();
        write_request(&req, None, &mut out);
        assert_eq!(out, b"GET /a/b?c=d HTTP/1.1\r\nhost: example\r\nx-forwarded-for: 1.2.3.4\r\n\r\n");
    }
}
