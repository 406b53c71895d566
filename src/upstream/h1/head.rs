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
use crate::upstream::forwarded::{line, Forwarded};
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

fn build(head: Bytes, status: StatusCode, version: Version, method: &Method, spans: &[Span]) -> Result<Head, Error> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut fields = FramingFields::default();
    for span in spans {
        let name =
            HeaderName::from_bytes(&head[span.name.0 as usize..span.name.1 as usize]).map_err(|_| Error::HeaderName)?;
        let bytes = head.slice(span.value.0 as usize..span.value.1 as usize);
        // SAFETY: not a memory-safety matter, only `HeaderValue`'s invariant that its bytes are HTAB, SP to
        // `~` or 0x80 to 0xFF; httparse accepted this value under exactly that rule (its header-value map), so
        // checking every byte again, as `from_maybe_shared` would, is redundant. hyper's client does the same.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) };
        // A value with bytes outside visible ASCII names no token and no coding (as hyper reads it): the
        // two readers of a response must never frame it differently. Checked only for the fields that frame.
        let text = || value.to_str().is_ok();
        if name == header::CONNECTION && text() {
            let mut names_fields = false;
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                fields.close |= close;
                fields.keep_alive_token |= keep_alive;
                names_fields |= !(close || keep_alive || token.is_empty());
            }
            if !names_fields {
                // Hop-by-hop, and naming no other field: the proxy would only remove it again (a hash and a
                // probe per response, with every upstream that says `Connection: keep-alive`). One that names
                // fields stays, so the proxy removes them with it.
                continue;
            }
        } else if name == header::TRANSFER_ENCODING {
            fields.transfer_encoding = true;
            let last = value.as_bytes().rsplit(|b| *b == b',').next().unwrap_or(b"");
            fields.chunked = text() && last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name == header::CONTENT_LENGTH {
            for part in value.as_bytes().split(|b| *b == b',') {
                let n = digits(part.trim_ascii()).ok_or(());
                fields.content_length = match fields.content_length {
                    None => Some(n),
                    Some(Ok(seen)) if n == Ok(seen) => Some(Ok(seen)),
                    Some(_) => Some(Err(())),
                };
            }
        }
        headers.append(name, value);
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

/// A Content-Length value: digits only (no sign, no blanks inside), no overflow.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
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
        let h = head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.headers[header::CONNECTION], "keep-alive, X-Hop", "kept, so the proxy removes X-Hop with it");
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
