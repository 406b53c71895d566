//! Header rules of the request: the checks a head passes before it is routed (sizes, one Host, strict
//! Transfer-Encoding), and the forward phase (X-Forwarded-*, X-Request-Id; the hop-by-hop rule, which the
//! upstream codec follows too, is `upstream::hop_by_hop`, re-exported here).
//!
//! A request has exactly one host, worked out here and used alike for routing, `X-Forwarded-Host` and the
//! upstream `Host`: two `Host` lines, or an HTTP/1.1 request without one, are refused (RFC 9112 section 3.2);
//! an absolute-form target's authority wins over `Host` (section 3.2.2); in HTTP/2 `:authority` wins and a
//! `host` header naming something else makes the request malformed (RFC 9113 section 8.3.1), so 400.
//! `Transfer-Encoding` is accepted only as one line saying `chunked`: another coding is 501 (RFC 9112 section
//! 6.1: hyper would decode the chunks and drop the coding, so the body forwarded would not be the one sent),
//! and a repeated line or `chunked` twice is 400.
//!
//! Hop-by-hop headers describe one connection, not the message, so they never cross the proxy (RFC 9110
//! section 7.6.1). Forwarding headers from the client are only believed when the frontend or the listener
//! says to trust them; otherwise a client could claim any address.

use super::limits::Limits;
use super::ProxyError;
use crate::upstream::forwarded::{Field, Forwarded};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Version};
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::upstream::forwarded::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID};
pub use crate::upstream::hop_by_hop::strip_hop_by_hop;
/// Checks a request head against the limits and the framing rules, and gives its one host.
pub fn check_head<B>(req: &Request<B>, limits: &Limits) -> Result<Option<HeaderValue>, ProxyError> {
    let uri = req.uri();
    // Method, space, target, space, `HTTP/1.1`: hyper has parsed it, so the parts' lengths add up to the line.
    let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + uri.scheme_str().map_or(0, |s| s.len() + 3));
    if req.method().as_str().len() + target + 10 > limits.max_request_line_bytes {
        return Err(ProxyError::UriTooLong { limit: limits.max_request_line_bytes });
    }
    let headers = req.headers();
    // hyper counts HTTP/1.1 header lines itself; HTTP/2 header lists are only bounded in bytes there.
    if headers.len() > limits.max_headers {
        return Err(ProxyError::HeadTooLarge("too many header lines"));
    }
    // The pass over the lines that checks their sizes also finds Host and Transfer-Encoding: comparing two
    // standard names is one byte compare, where looking each up afterwards hashes and probes the map.
    let (mut host, mut hosts, mut te, mut te_lines) = (None, 0u32, None, 0u32);
    for (name, value) in headers {
        if name.as_str().len() + 2 + value.len() > limits.max_header_bytes {
            return Err(ProxyError::HeadTooLarge("a header line is longer than the limit"));
        }
        if name == header::HOST {
            hosts += 1;
            host.get_or_insert(value);
        } else if name == header::TRANSFER_ENCODING {
            te_lines += 1;
            te.get_or_insert(value);
        }
    }
    if let Some(first) = te {
        if te_lines > 1 {
            return Err(ProxyError::BadRequest("more than one Transfer-Encoding line"));
        }
        let mut chunked = 0;
        for coding in first.to_str().unwrap_or("?").split(',').map(str::trim) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(ProxyError::UnsupportedCoding);
            }
            chunked += 1;
        }
        if chunked > 1 {
            return Err(ProxyError::BadRequest("chunked applied more than once"));
        }
    }
    request_host(req, host, hosts)
}

/// The bytes a Host value may hold (RFC 3986's reg-name: unreserved, sub-delims and `%` of percent-encoding;
/// `:` before a port; the brackets and colons of an IPv6 literal). A table, as the check runs per request.
static HOST_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let allowed = b"-._~!$&'()*+,;=%:[]";
    let mut i = 0;
    while i < allowed.len() {
        t[allowed[i] as usize] = true;
        i += 1;
    }
    let mut b = 0;
    while b < 256 {
        if (b as u8).is_ascii_alphanumeric() {
            t[b] = true;
        }
        b += 1;
    }
    t
};

/// The request's one host (see the module comment), `None` for an HTTP/1.0 request that names none. `host` is
/// the first of the request's `hosts` Host lines.
fn request_host<B>(
    req: &Request<B>,
    host: Option<&HeaderValue>,
    hosts: u32,
) -> Result<Option<HeaderValue>, ProxyError> {
    if hosts > 1 {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if host.is_none() && req.version() == Version::HTTP_11 {
        return Err(ProxyError::BadRequest("HTTP/1.1 request without a Host header"));
    }
    if host.is_some_and(|h| !h.as_bytes().iter().all(|b| HOST_BYTE[*b as usize])) {
        // RFC 9112 section 3.2 answers an invalid Host with 400. What is checked is the bytes, as nginx
        // does, not the whole grammar: enough that no space, `@`, `/`, quote or control reaches routing,
        // X-Forwarded-Host or the upstream's Host.
        return Err(ProxyError::BadRequest("the Host header is not a valid host"));
    }
    let Some(authority) = req.uri().authority() else { return Ok(host.cloned()) };
    // Userinfo (`user@`) names no host; what follows it does.
    let authority = authority.as_str().rsplit('@').next().unwrap_or("");
    match host {
        // The common HTTP/2 case: both say the same, and the header is kept without a copy.
        Some(h) if h.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) => Ok(Some(h.clone())),
        Some(_) if req.version() == Version::HTTP_2 => {
            Err(ProxyError::BadRequest("the host header differs from :authority"))
        }
        _ => HeaderValue::from_str(authority)
            .map(Some)
            .map_err(|_| ProxyError::BadRequest("the request target's authority is not a valid host")),
    }
}

/// True when the request asks to switch protocols (WebSocket and friends).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))).unwrap_or(false)
        })
}

/// The client's address as a trusted proxy in front reported it: the last address of `X-Forwarded-For`
/// (the one that proxy appended; earlier ones are whatever the client claimed). `None` when there is no
/// such header or its last entry is not an address.
pub fn forwarded_client(headers: &HeaderMap) -> Option<std::net::IpAddr> {
    let last = headers.get_all(&X_FORWARDED_FOR).iter().next_back()?;
    let last = last.to_str().ok()?.rsplit(',').next()?.trim();
    last.parse().ok().or_else(|| last.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// The fields set on the request as it goes upstream (X-Forwarded-For/Proto/Host, Host, X-Request-Id), from
/// the client's `headers`: written into the head by the upstream codec, or into the map for hyper's client
/// (`upstream::Forwarded`). `client_ip` and `proto` were formatted once per connection; `host` is the
/// request's one host.
pub fn forwarded(
    headers: &HeaderMap,
    trust: bool,
    client_ip: &HeaderValue,
    proto: &HeaderValue,
    host: Option<&HeaderValue>,
    upstream_host: HeaderValue,
    request_id: HeaderValue,
) -> Forwarded {
    // The client's own X-Forwarded-For is only looked up when it is believed.
    let prior = if trust { headers.get(&X_FORWARDED_FOR) } else { None };
    let forwarded_for = match prior {
        Some(prior) if !prior.is_empty() => {
            let mut v = Vec::with_capacity(prior.len() + 2 + client_ip.len());
            v.extend_from_slice(prior.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| client_ip.clone())
        }
        _ => client_ip.clone(),
    };
    let forwarded_proto =
        if trust && headers.contains_key(&X_FORWARDED_PROTO) { Field::Keep } else { Field::Set(proto.clone()) };
    let forwarded_host = match host {
        _ if trust && headers.contains_key(&X_FORWARDED_HOST) => Field::Keep,
        Some(h) => Field::Set(h.clone()),
        None => Field::Remove,
    };
    Forwarded { forwarded_for, forwarded_proto, forwarded_host, host: upstream_host, request_id }
}

/// Request ids: unique per process start and request, cheap (a counter mixed with a random start).
///
/// Each runtime thread takes numbers from the process-wide counter a block at a time, and writes its ids into
/// one buffer of its own, handing each id out as a shared slice of it: no atomic shared between threads per
/// request, and no allocation per id (an id made with `Bytes::copy_from_slice` cost one to make and another
/// the first time it was cloned, which every request does). Numbers are never handed out twice, so ids stay
/// unique across threads and across every `RequestIds` of the process (they share the counter and the seed).
pub struct RequestIds {
    seed: u64,
    /// The seed as hex: the first half of every id, written once.
    prefix: [u8; 16],
}

/// Counter numbers a thread takes at once.
const ID_BLOCK: u64 = 64;
/// An id's length: the prefix and the mixed number, 16 hex digits each.
const ID_LEN: usize = 32;

/// The next number to hand out, for the whole process (a block's first).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// The process's seed, drawn once.
static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

thread_local! {
    /// This thread's block of counter numbers: the next one, and the end (exclusive).
    static BLOCK: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    /// Where this thread writes its ids; each id is split off as a slice sharing the buffer.
    static ARENA: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::new(bytes::BytesMut::new());
}

impl RequestIds {
    pub fn new() -> Self {
        let seed = *SEED.get_or_init(|| {
            // RandomState is seeded from the OS; good enough to keep ids of two processes apart.
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id() as u64);
            h.finish()
        });
        let mut prefix = [0u8; 16];
        hex(seed, &mut prefix);
        RequestIds { seed, prefix }
    }

    pub fn next(&self) -> HeaderValue {
        let n = BLOCK.with(|block| {
            let (mut n, mut end) = block.get();
            if n == end {
                n = NEXT_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
                end = n + ID_BLOCK;
            }
            block.set((n + 1, end));
            n
        });
        let mixed = splitmix(self.seed ^ n);
        let mut buf = [0u8; ID_LEN];
        buf[..16].copy_from_slice(&self.prefix);
        hex(mixed, &mut buf[16..]);
        let bytes = ARENA.with(|arena| {
            let mut arena = arena.borrow_mut();
            if arena.capacity() < ID_LEN {
                // Room for a block's ids at a time: taken back in place once every id written there was
                // dropped, a new buffer otherwise.
                arena.reserve(ID_LEN * ID_BLOCK as usize);
            }
            arena.extend_from_slice(&buf);
            arena.split().freeze()
        });
        // SAFETY: not a memory-safety matter, only `HeaderValue`'s invariant that its bytes are visible ASCII
        // (or HTAB, SP, 0x80 and up): hex digits are, so checking all 32 again (`from_bytes`) is redundant.
        unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `v` as 16 lower-case hex digits, most significant first. Eight digits at a time in one word (each nibble
/// spread into a byte of its own, then turned into its digit with no branch and no table): a digit at a time
/// cost about 70 instructions per request id.
fn hex(v: u64, out: &mut [u8]) {
    fn eight(x: u32) -> [u8; 8] {
        let mut s = x as u64;
        s = (s | (s << 16)) & 0x0000_FFFF_0000_FFFF;
        s = (s | (s << 8)) & 0x00FF_00FF_00FF_00FF;
        // Nibble k (from the least significant) is now byte k.
        s = (s | (s << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
        // 1 in each byte whose nibble is 10 or more, which then takes `a`-`f` instead of `:` onwards.
        let letters = ((s + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        (s + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64).to_be_bytes()
    }
    out[..8].copy_from_slice(&eight((v >> 32) as u32));
    out[8..16].copy_from_slice(&eight(v as u32));
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_forwarded_client_is_the_address_the_trusted_proxy_appended() {
        let mut h = HeaderMap::new();
        assert_eq!(super::forwarded_client(&h), None);
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6, 10.0.0.7"));
        assert_eq!(super::forwarded_client(&h), Some([10, 0, 0, 7].into()));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("[::1]:80"));
        assert_eq!(super::forwarded_client(&h), Some(std::net::Ipv6Addr::LOCALHOST.into()));
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("unknown"));
        assert_eq!(super::forwarded_client(&h), None);
    }

    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none() && h.get("connection").is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert!(h.get("x-kept").is_some());

        // Several Connection values, each listing names; TE without trailers goes; nothing else is touched.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-a , Upgrade"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("close", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));

        // Nothing hop-by-hop: the map is left as it was.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert("x-b", HeaderValue::from_static("1"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    /// What the upstream codec leaves in a response's map is what the removal pass leaves of the whole head, so
    /// the respond phase can skip the pass for codec responses.
    #[test]
    fn the_map_is_what_the_removal_pass_would_leave() {
        let heads: [&[u8]; 5] = [
            b"HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nclose: 1\r\nX-A: 1\r\nX-C: 3\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTE: trailers, gzip\r\nTE: x\r\nUpgrade: h2c\r\nContent-Length: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: upgrade, keep-alive\r\nKeep-Alive: 1\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\nProxy-Authenticate: B\r\nX-D: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: x-a\r\nConnection: x-b, te\r\nX-B: 1\r\nTE: trailers\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
        ];
        for bytes in heads {
            let mut buf = bytes::BytesMut::from(bytes);
            let h = crate::upstream::h1::head::parse_response(&mut buf, &http::Method::GET, &mut Vec::new())
                .expect("parses")
                .expect("complete");
            let mut whole = HeaderMap::new();
            let mut slots = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut slots);
            resp.parse(bytes).expect("parses");
            for f in resp.headers.iter() {
                let name = http::header::HeaderName::from_bytes(f.name.as_bytes()).expect("name");
                whole.append(name, HeaderValue::from_bytes(f.value).expect("value"));
            }
            strip_hop_by_hop(&mut whole);
            let sorted = |m: &HeaderMap| {
                let mut v: Vec<String> = m.iter().map(|(n, v)| format!("{n}: {v:?}")).collect();
                v.sort();
                v
            };
            assert_eq!(sorted(&h.headers), sorted(&whole), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn forwarded_headers_trust() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let proto = HeaderValue::from_static("http");
        let (up, id) = (HeaderValue::from_static("up:80"), HeaderValue::from_static("id"));
        let set = |h: &mut HeaderMap, trust: bool, host: Option<&HeaderValue>| {
            forwarded(h, trust, &ip, &proto, host, up.clone(), id.clone()).apply(h)
        };
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("claimed.com"));
        set(&mut h, false, Some(&HeaderValue::from_static("a.com")));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "http", "an untrusted client's claim is replaced");
        assert_eq!(h[&X_FORWARDED_HOST], "a.com");
        assert_eq!((&h[header::HOST], &h[&X_REQUEST_ID]), (&up, &id));
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        set(&mut h, true, None);
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9", "the first line appended to, every line replaced");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_PROTO], "https", "a trusted proxy's claim is kept");
        assert_eq!(h[&X_FORWARDED_HOST], "a.com", "and so is its host");
        // No host to name and none claimed: the field goes.
        h.remove(&X_FORWARDED_HOST);
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("claimed.com"));
        set(&mut h, false, None);
        assert!(h.get(&X_FORWARDED_HOST).is_none());
    }

    fn req(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn one_host_per_request() {
        let l = Limits::default();
        let h1 = Version::HTTP_11;
        assert_eq!(check_head(&req(h1, "/", &[("host", "a.com")]), &l).unwrap().unwrap(), "a.com");
        let two = req(h1, "/", &[("host", "a.com"), ("host", "b.com")]);
        assert!(matches!(check_head(&two, &l), Err(ProxyError::BadRequest(_))));
        assert!(matches!(check_head(&req(h1, "/", &[]), &l), Err(ProxyError::BadRequest(_))));
        assert_eq!(check_head(&req(Version::HTTP_10, "/", &[]), &l).unwrap(), None);
        // Absolute form: the target's authority wins, userinfo dropped.
        let abs = req(h1, "http://u@secret.local:81/x", &[("host", "127.0.0.1")]);
        assert_eq!(check_head(&abs, &l).unwrap().unwrap(), "secret.local:81");
        // HTTP/2: :authority wins; a differing host header is refused, an equal one kept.
        let h2 = Version::HTTP_2;
        assert_eq!(check_head(&req(h2, "http://a.com/", &[]), &l).unwrap().unwrap(), "a.com");
        assert_eq!(check_head(&req(h2, "http://a.com/", &[("host", "A.com")]), &l).unwrap().unwrap(), "A.com");
        assert!(check_head(&req(h2, "http://a.com/", &[("host", "b.com")]), &l).is_err());
        // A Host that is no host is refused; hosts of every form pass.
        for bad in ["a b@c", "a\"<>{}", "a/b", "a\\b", "a@b", "a\tb"] {
            let r = req(h1, "/", &[("host", bad)]);
            assert!(matches!(check_head(&r, &l), Err(ProxyError::BadRequest(_))), "{bad}");
        }
        for good in ["", "a.com:8080", "[::1]:8080", "xn--bcher-kva.example", "my_host.internal", "10.0.0.1"] {
            assert!(check_head(&req(h1, "/", &[("host", good)]), &l).is_ok(), "{good}");
        }
    }

    #[test]
    fn transfer_encoding_is_chunked_alone_and_sizes_are_bounded() {
        let l = Limits::default();
        let h1 = Version::HTTP_11;
        let te = |v: &str| check_head(&req(h1, "/", &[("host", "a"), ("transfer-encoding", v)]), &l);
        assert!(te("chunked").is_ok());
        assert!(te("Chunked").is_ok());
        assert!(matches!(te("gzip, chunked"), Err(ProxyError::UnsupportedCoding)));
        assert!(matches!(te("identity, chunked"), Err(ProxyError::UnsupportedCoding)));
        assert!(matches!(te("chunked, chunked"), Err(ProxyError::BadRequest(_))));
        let twice = req(h1, "/", &[("host", "a"), ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")]);
        assert!(matches!(check_head(&twice, &l), Err(ProxyError::BadRequest(_))));

        let long = "x".repeat(l.max_header_bytes);
        let r = req(h1, "/", &[("host", "a"), ("x-long", &long)]);
        assert!(matches!(check_head(&r, &l), Err(ProxyError::HeadTooLarge(_))));
        let target = format!("/{}", "p".repeat(l.max_request_line_bytes));
        assert!(matches!(check_head(&req(h1, &target, &[("host", "a")]), &l), Err(ProxyError::UriTooLong { .. })));
        let few = Limits { max_headers: 2, ..l };
        let r = req(h1, "/", &[("host", "a"), ("x-1", "1"), ("x-2", "2")]);
        assert!(matches!(check_head(&r, &few), Err(ProxyError::HeadTooLarge(_))));
    }

    #[test]
    fn request_ids_differ() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit), "{a:?}");
        assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16], "one process, one prefix");
    }

    #[test]
    fn hex_digits_are_those_format_writes() {
        for v in [0, 1, 9, 10, 15, 16, 0xdead_beef, 0x0123_4567_89ab_cdef, u64::MAX, u64::MAX - 5, 1 << 63] {
            let mut out = [0u8; 16];
            super::hex(v, &mut out);
            assert_eq!(std::str::from_utf8(&out).expect("ascii"), format!("{v:016x}"));
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..1000 {
            x = super::splitmix(x);
            let mut out = [0u8; 16];
            super::hex(x, &mut out);
            assert_eq!(std::str::from_utf8(&out).expect("ascii"), format!("{x:016x}"));
        }
    }

    #[test]
    fn request_ids_stay_unique_across_blocks_threads_and_instances() {
        let made = |n: usize| {
            let ids = RequestIds::new();
            (0..n).map(|_| ids.next()).collect::<Vec<_>>()
        };
        let threads: Vec<_> = (0..3).map(|_| std::thread::spawn(move || made(5 * ID_BLOCK as usize + 3))).collect();
        let mut all = made(3 * ID_BLOCK as usize);
        // A second instance on this thread draws from the same counter.
        all.extend(made(ID_BLOCK as usize + 1));
        for t in threads {
            all.extend(t.join().expect("thread"));
        }
        let count = all.len();
        assert!(all.iter().all(|id| id.len() == ID_LEN && id.as_bytes().iter().all(u8::is_ascii_hexdigit)));
        let unique: std::collections::HashSet<_> = all.into_iter().collect();
        assert_eq!(unique.len(), count);
    }
}
