//! Hostile input against a real gateway process, byte for byte over raw sockets: oversized and unfinished
//! request heads, ambiguous hosts, lenient framing, encoded paths that would skip a frontend, upstream bodies
//! that fail after their head, slow heads (on the proxy and the admin listener), a listener at its connection
//! cap, and a fuzzed request head.
//! Each repro of the hardening issue has a test here.

use crate::common;

use bytes::Bytes;
use common::backend::TestBackend;
use common::*;
use http_body_util::Full;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response read off a raw connection.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Sends `bytes` on a fresh connection (the write side stays open) and reads one response; `None` when the
/// connection closed without one.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Answer> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = stream.into_split();
    let data = bytes.to_vec();
    // Written beside the read: the gateway may answer (and stop reading) before it has it all.
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&data).await;
        w
    });
    let answer = tokio::time::timeout(Duration::from_secs(15), read_answer(&mut r)).await.expect("an answer in 15 s");
    writer.abort();
    answer
}

async fn read_answer<R: AsyncReadExt + Unpin>(r: &mut R) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0usize);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    Some(Answer { status, head, body })
}

async fn status_of(addr: SocketAddr, bytes: &[u8]) -> u16 {
    exchange(addr, bytes).await.map_or(0, |a| a.status)
}

/// A catch-all frontend, one for `/admin`, and one for the virtual host `secret.local`, each with its own
/// backend (the echo backend names itself in `x-served-by`).
struct Setup {
    _routes: Routes,
    _backends: Vec<TestBackend>,
    ficus: Ficus,
}

async fn setup(extra: &[&str]) -> Setup {
    let routes = Routes::new();
    let mut backends = Vec::new();
    for (name, route) in
        [("app", "PathPrefix(`/`)"), ("admin", "PathPrefix(`/admin`)"), ("secret", "Host(`secret.local`)")]
    {
        let b = TestBackend::start(name).await;
        routes.backend(name, &[("s1", b.addr)]);
        routes.frontend(name, name, route);
        backends.push(b);
    }
    let opts = FicusOptions { extra: extra.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let ficus = Ficus::start_with(routes.path(), opts).await;
    Setup { _routes: routes, _backends: backends, ficus }
}

fn echoed(a: &Answer) -> serde_json::Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|_| panic!("JSON body: {}", String::from_utf8_lossy(&a.body)))
}

fn served_by_header(a: &Answer) -> String {
    a.head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-served-by:").map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_refused_with_431_and_a_long_request_line_with_414() {
    let s = setup(&[]).await;
    let addr = s.ficus.addr;

    // An unfinished 390,000-byte header: refused once the head limit is reached, not held to the timeout.
    let mut unfinished = b"GET /m HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    unfinished.extend(std::iter::repeat(b'a').take(390_000));
    assert_eq!(status_of(addr, &unfinished).await, 431);

    // A complete 100 KB header, and 90 headers of 1 KB: both past the 32 KiB head.
    let mut big = b"GET /m HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat(b'a').take(100_000));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(status_of(addr, &big).await, 431);
    let mut many = b"GET /m HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..90 {
        many.extend_from_slice(format!("X-H{i}: {}\r\n", "b".repeat(1000)).as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(status_of(addr, &many).await, 431);

    // One 9 KB header inside a head under the limit: the header line limit.
    let one = format!("GET /m HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: {}\r\n\r\n", "c".repeat(9000));
    assert_eq!(status_of(addr, one.as_bytes()).await, 431);

    // More header lines than allowed.
    let mut count = b"GET /m HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..101 {
        count.extend_from_slice(format!("X-N{i}: 1\r\n").as_bytes());
    }
    count.extend_from_slice(b"\r\n");
    assert_eq!(status_of(addr, &count).await, 431);

    // A 1 MB request line, and a 9 KB one that fits the head but not the line limit: 414.
    let mut line = b"GET /".to_vec();
    line.extend(std::iter::repeat(b'l').take(1_000_000));
    line.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(status_of(addr, &line).await, 414);
    let medium = format!("GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "l".repeat(9000));
    assert_eq!(status_of(addr, medium.as_bytes()).await, 414);

    // A head just under the limits is served.
    let fine = format!("GET /m HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Ok: {}\r\nConnection: close\r\n\r\n", "d".repeat(7000));
    assert_eq!(status_of(addr, fine.as_bytes()).await, 200);

    // Every refusal is counted, those hyper answers before the proxy sees a request included (it writes its
    // answer before the count, so the count is waited for).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = String::from_utf8_lossy(&get(&http1_client(), &format!("http://{}/metrics", s.ficus.admin)).await.1)
            .into_owned();
        let count = |code: &str| {
            text.lines()
                .filter(|l| l.starts_with("ficus_requests_total{") && l.contains(&format!("code=\"{code}\"")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        if count("431") == 5.0 && count("414") == 2.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "refused heads not counted as 5 x 431 and 2 x 414:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_limits_follow_their_settings() {
    let s =
        setup(&["--max-head-bytes", "65536", "--max-header-bytes", "20000", "--max-request-line-bytes", "12000"]).await;
    let addr = s.ficus.addr;
    let one =
        format!("GET /m HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: {}\r\nConnection: close\r\n\r\n", "c".repeat(15000));
    assert_eq!(status_of(addr, one.as_bytes()).await, 200);
    let line = format!("GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", "l".repeat(10000));
    assert_eq!(status_of(addr, line.as_bytes()).await, 200);
    let line = format!("GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "l".repeat(13000));
    assert_eq!(status_of(addr, line.as_bytes()).await, 414);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_has_one_host_used_for_routing_forwarding_and_upstream_alike() {
    let s = setup(&[]).await;
    let addr = s.ficus.addr;
    let two = b"GET /x HTTP/1.1\r\nHost: secret.local\r\nHost: 127.0.0.1\r\n\r\n";
    assert_eq!(status_of(addr, two).await, 400);
    assert_eq!(status_of(addr, b"GET /x HTTP/1.1\r\nX-A: 1\r\n\r\n").await, 400);
    // HTTP/1.0 may leave it out.
    assert_eq!(status_of(addr, b"GET /x HTTP/1.0\r\n\r\n").await, 200);

    // Absolute form: the target's authority wins over Host, for routing, X-Forwarded-Host and the upstream.
    let abs = exchange(addr, b"GET http://secret.local/abs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("an answer");
    assert_eq!(abs.status, 200, "{}", abs.head);
    assert_eq!(served_by_header(&abs), "secret");
    let v = echoed(&abs);
    assert_eq!(v["path"], "/abs");
    assert_eq!(v["headers"]["x-forwarded-host"], "secret.local");

    // HTTP/2: `:authority` routes; a `host` header naming another host is malformed.
    let h2 = h2c_client();
    let uri = format!("http://secret.local:{}/h2", addr.port());
    let req = |host: Option<&str>| {
        let mut b = http::Request::get(&uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(Full::<Bytes>::default()).expect("request")
    };
    // The client connects to the URI's host, so the connection is made to the gateway by hand.
    let conn = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, driver) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(conn))
            .await
            .expect("h2 handshake");
    tokio::spawn(driver);
    let resp = sender.send_request(req(None)).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-served-by"], "secret");
    let resp = sender.send_request(req(Some("127.0.0.1"))).await.expect("h2 response");
    assert_eq!(resp.status(), 400);
    drop(h2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_is_chunked_alone_or_refused() {
    let s = setup(&[]).await;
    let addr = s.ficus.addr;
    let body = "5\r\nhello\r\n0\r\n\r\n";
    for (te, want) in [("gzip, chunked", 501), ("identity, chunked", 501), ("chunked, chunked", 400)] {
        let req = format!("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: {te}\r\n\r\n{body}");
        assert_eq!(status_of(addr, req.as_bytes()).await, want, "{te}");
    }
    let twice = format!(
        "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
    );
    assert_eq!(status_of(addr, twice.as_bytes()).await, 400);
    let plain = format!(
        "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
    );
    assert_eq!(status_of(addr, plain.as_bytes()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_paths_reach_the_frontend_they_spell_or_are_refused() {
    let s = setup(&[]).await;
    let addr = s.ficus.addr;
    for path in ["/%61dmin", "//admin", "/public/%2e%2e/admin", "/x/..//%61dmin/"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let a = exchange(addr, req.as_bytes()).await.expect("an answer");
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(served_by_header(&a), "admin", "{path}");
        let forwarded = echoed(&a)["path"].as_str().unwrap_or("").to_string();
        assert!(forwarded == "/admin" || forwarded == "/admin/", "{path} forwarded as {forwarded}");
    }
    for path in ["/%2Fadmin", "/public/..%2fadmin"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        assert_eq!(status_of(addr, req.as_bytes()).await, 400, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_slash_can_be_kept_and_is_then_forwarded_encoded() {
    let s = setup(&["--encoded-slash", "keep"]).await;
    let req = b"GET /public/..%2fadmin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let a = exchange(s.ficus.addr, req).await.expect("an answer");
    assert_eq!(a.status, 200);
    assert_eq!(served_by_header(&a), "app");
    assert_eq!(echoed(&a)["path"], "/public/..%2Fadmin");
}

/// An upstream whose bodies fail after a 200 head: `/chunk` sends a bad chunk size, anything else promises
/// 50 bytes and closes after 5.
async fn truncating_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let answer: &[u8] = if buf[..n].starts_with(b"GET /chunk ") {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"
                };
                let _ = s.write_all(answer).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_body_cut_short_is_counted_and_logged_as_an_upstream_failure() {
    let routes = Routes::new();
    let up = truncating_upstream().await;
    routes.backend("cut", &[("s1", up)]);
    routes.frontend("cut", "cut", "PathPrefix(`/`)");
    let ficus = Ficus::start(routes.path()).await;
    let a = exchange(ficus.addr, b"GET /t HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.expect("a head");
    assert_eq!(a.status, 200, "the head went out before the body failed");
    assert!(a.body.len() < 50, "the client must not get a complete body");
    let a = exchange(ficus.addr, b"GET /chunk HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.expect("a head");
    assert_eq!(a.status, 200);
    // Both are counted when their bodies end, a moment after the heads were read.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ficus.metric("ficus_upstream_errors_total").await < 2.0 {
        assert!(std::time::Instant::now() < deadline, "body failures not counted; log:\n{}", ficus.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ficus.log_shows("upstream body failed").await, "{}", ficus.log_text());
    assert!(ficus.log_shows("status=502").await, "{}", ficus.log_text());
    let text =
        String::from_utf8_lossy(&get(&http1_client(), &format!("http://{}/metrics", ficus.admin)).await.1).into_owned();
    let count = |code: &str| {
        text.lines()
            .filter(|l| l.starts_with("ficus_requests_total") && l.contains(&format!("code=\"{code}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(count("502"), 2.0, "{text}");
    assert_eq!(count("200"), 0.0, "{text}");
    assert_eq!(ficus.metric("ficus_upstream_errors_total").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_is_answered_408_at_the_header_timeout() {
    let s = setup(&["--header-timeout", "1s"]).await;
    let a = exchange(s.ficus.addr, b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1").await;
    assert_eq!(a.map(|a| a.status), Some(408));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_loopback_and_configured_hosts_only() {
    let s = setup(&["--admin-allowed-host", "ops.example"]).await;
    let admin = s.ficus.admin;
    for (host, want) in [
        ("evil.example", 403),
        (&format!("localhost:{}", admin.port()) as &str, 200),
        ("127.0.0.1", 200),
        ("ops.example:1", 200),
    ] {
        let req = format!("GET /config HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(status_of(admin, req.as_bytes()).await, want, "{host}");
    }
    // Read-only: another method is told which ones it may use (RFC 9110 section 15.5.6).
    let mut c = RawConn::connect(admin).await;
    c.send(b"POST /config HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    let (status, head, _) = c.response_with_head().await;
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get, head"), "{head}");
    // Its heads are bounded like the proxy listeners' (not hyper's ~400 KB default).
    let big = format!("GET /status HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "b".repeat(100 * 1024));
    assert_eq!(status_of(admin, big.as_bytes()).await, 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_closes_a_connection_that_sends_no_head_within_its_timeout() {
    let s = setup(&["--header-timeout", "1s"]).await;
    let admin = s.ficus.admin;
    let mut silent = TcpStream::connect(admin).await.expect("connect");
    let mut unfinished = TcpStream::connect(admin).await.expect("connect");
    unfinished.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.expect("write");
    for (name, conn) in [("silent", &mut silent), ("unfinished", &mut unfinished)] {
        let mut rest = Vec::new();
        // The bound is far past the timeout: ending at all (EOF or reset) is what the admin listener must do.
        let ended = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "{name}: the admin listener held the connection open");
        assert!(!String::from_utf8_lossy(&rest).contains(" 200 "), "{name}: answered without a head");
    }
    // The closed connections gave their slots back: the admin listener still answers.
    let req = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(admin, req).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_connections_are_refused_and_admin_still_answers() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    // 256 descriptors: the derived cap is (256 - 128) / 2 = 64 connections.
    let opts = FicusOptions { nofile: Some(256), ..Default::default() };
    let ficus = Ficus::start_with(routes.path(), opts).await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect(ficus.addr).await {
            idle.push(s);
        }
    }
    // The refused ones are closed by the gateway; wait until it has counted them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ficus.metric("ficus_connections_refused_total").await < 200.0 {
        assert!(std::time::Instant::now() < deadline, "refusals not counted; log:\n{}", ficus.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = ficus.status().await;
    assert!(st["generation"].as_u64().unwrap_or(0) > 0);
    assert!(ficus.log_shows("connection limit reached").await);
    // Once the idle connections go, the listener serves again. Until the gateway has seen them close, a new
    // connection may still be refused (closed at once), which is a retry here, not a failure.
    drop(idle);
    let client = http1_client();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let req = http::Request::get(ficus.url("/after")).body(Full::default()).expect("request");
        let answer = tokio::time::timeout(Duration::from_secs(2), client.request(req)).await;
        if matches!(&answer, Ok(Ok(resp)) if resp.status() == 200) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the listener did not recover; log:\n{}", ficus.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Pieces a request head is made of, good and bad, so random sequences reach deep into the parser.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"GET ".to_vec()),
            Just(b"POST ".to_vec()),
            Just(b"/".to_vec()),
            Just(b"/admin".to_vec()),
            Just(b"%2f".to_vec()),
            Just(b"%61".to_vec()),
            Just(b"/..".to_vec()),
            Just(b"http://secret.local".to_vec()),
            Just(b" HTTP/1.1".to_vec()),
            Just(b" HTTP/1.0".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"Host: 127.0.0.1\r\n".to_vec()),
            Just(b"Host: secret.local\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Transfer-Encoding: gzip, chunked\r\n".to_vec()),
            Just(b"Content-Length: 3\r\n".to_vec()),
            Just(b"Content-Length: -1\r\n".to_vec()),
            Just(b"X: \x00\x7f\xff\r\n".to_vec()),
            Just(b"\r\n\r\n".to_vec()),
            Just(b"0\r\n\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..64),
            (1usize..40_000).prop_map(|n| vec![b'a'; n]),
        ]
    }

    fn head() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(piece(), 1..24).prop_map(|p| p.concat())
    }

    /// Every answer to arbitrary bytes is a well-formed status line with a known code, or a close; the
    /// gateway never dies, and it still serves a plain request afterwards. `FICUS_FUZZ_CASES` sets the run
    /// length (256 by default, a few seconds; CI can raise it).
    #[test]
    fn arbitrary_request_heads_never_break_the_gateway() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let s = rt.block_on(setup(&["--header-timeout", "2s"]));
        let addr = s.ficus.addr;
        let cases = std::env::var("FICUS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
        let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
        proptest!(config, |(bytes in head())| {
            let answer = rt.block_on(async {
                let stream = TcpStream::connect(addr).await.expect("connect");
                let (mut r, mut w) = stream.into_split();
                let _ = w.write_all(&bytes).await;
                // Half-close: the gateway sees the end of what the client will send.
                let _ = w.shutdown().await;
                tokio::time::timeout(Duration::from_secs(10), read_answer(&mut r)).await
            });
            let answer = answer.expect("an answer or a close within 10 s");
            if let Some(a) = answer {
                prop_assert!(a.head.starts_with("HTTP/1."), "{:?}", a.head);
                prop_assert!([200, 400, 404, 408, 413, 414, 431, 501, 502].contains(&a.status), "{:?}", a.head);
                // A catch-all answer never carries a path that could mean /admin upstream.
                if a.status == 200 && served_by_header(&a) == "app" {
                    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                    let p = v["path"].as_str().unwrap_or("").to_ascii_lowercase();
                    prop_assert!(!p.starts_with("/admin") && !p.contains("%2f") && !p.contains("//"), "{p}");
                }
            }
        });
        let mut ficus = s.ficus;
        assert!(ficus.child.try_wait().expect("wait").is_none(), "the gateway died; log:\n{}", ficus.log_text());
        let (code, _) = rt.block_on(get(&http1_client(), &ficus.url("/after")));
        assert_eq!(code, 200);
        drop(s._backends);
    }
}
