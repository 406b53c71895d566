//! The proxy path against real processes: protocols, upgrades, errors, headers, weighted splits, streaming.

use crate::common;

use bytes::Bytes;
use common::backend::{closing_server, dead_addr, unanswered, TestBackend};
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::convert::Infallible;
use std::time::Duration;

async fn simple() -> (Routes, TestBackend, Ficus) {
    let routes = Routes::new();
    let b = TestBackend::start("echo").await;
    routes.backend("echo", &[("s1", b.addr)]);
    routes.frontend("echo", "echo", "PathPrefix(`/`)");
    let ficus = Ficus::start(routes.path()).await;
    (routes, b, ficus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c() {
    let (_r, _b, ficus) = simple().await;
    let (parts, body) =
        request_full(&http1_client(), http::Request::get(ficus.url("/hello?x=1")).body(Full::default()).unwrap()).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.version, http::Version::HTTP_11);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["query"], "x=1");
    // Upstreams always get HTTP/1.1.
    assert_eq!(v["version"], "HTTP/1.1");

    let (parts, body) =
        request_full(&h2c_client(), http::Request::get(ficus.url("/h2")).body(Full::default()).unwrap()).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.version, http::Version::HTTP_2);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["path"], "/h2");
    // The h2 authority becomes X-Forwarded-Host.
    assert_eq!(v["headers"]["x-forwarded-host"], ficus.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_h2_and_sni() {
    let routes = Routes::new();
    let b = TestBackend::start("secure").await;
    routes.backend("secure", &[("s1", b.addr)]);
    routes.frontend("secure", "secure", "Host(`secure.test`)");
    let cert = rcgen::generate_simple_self_signed(vec!["secure.test".to_string()]).unwrap();
    let host = serde_json::json!({"Name":"secure.test","Settings":{"KeyPair":{"Cert":cert.cert.pem(),"Key":cert.key_pair.serialize_pem()}}});
    routes.put("hosts/secure.test/host", &host.to_string());
    let ficus = Ficus::start_with(routes.path(), FicusOptions { tls: true, ..Default::default() }).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    for (alpn, want) in [(b"h2".to_vec(), http::Version::HTTP_2), (b"http/1.1".to_vec(), http::Version::HTTP_11)] {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(ficus.tls_addr.unwrap()).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("secure.test").unwrap();
        let tls = connector.connect(name, tcp).await.expect("TLS handshake with the SNI certificate");
        let io = hyper_util::rt::TokioIo::new(tls);
        let mut send = None;
        let resp = if want == http::Version::HTTP_2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(conn);
            let req = http::Request::get("https://secure.test/tls").body(Full::<Bytes>::default()).unwrap();
            send.send_request(req).await.unwrap()
        } else {
            let (h1, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            let req = http::Request::get("/tls").header("host", "secure.test").body(Full::<Bytes>::default()).unwrap();
            send.insert(h1).send_request(req).await.unwrap()
        };
        assert_eq!(resp.version(), want);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
        if want == http::Version::HTTP_11 {
            // The same TLS connection parks once quiet, and serves on when the client speaks again.
            let parked = async {
                while ficus.metric("ficus_parked_connections").await < 1.0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), parked).await.expect("the TLS connection parks");
            let req = http::Request::get("/again").header("host", "secure.test").body(Full::<Bytes>::default());
            let resp = send.as_mut().unwrap().send_request(req.unwrap()).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(ficus.metric("ficus_parked_connections").await, 0.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo() {
    let (_r, _b, ficus) = simple().await;
    let tcp = tokio::net::TcpStream::connect(ficus.addr).await.unwrap();
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("ws://{}/ws", ficus.addr), tcp).await.expect("upgrade through ficus");
    assert_eq!(resp.status(), 101);
    // The 101 is a response like any other: it carries the request's id, and is logged once the tunnel ends.
    let id = resp.headers().get("x-request-id").expect("x-request-id on the 101").to_str().unwrap().to_string();
    for i in 0..20 {
        let msg = format!("message {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::Text(msg.clone())).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(got.into_text().unwrap(), msg);
    }
    ws.close(None).await.unwrap();
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {}
    drop(ws);
    assert!(ficus.log_shows(&id).await, "no access line for the WebSocket {id}: {}", ficus.log_text());
    let line = ficus.log_text().lines().find(|l| l.contains(&id)).unwrap_or_default().to_string();
    assert!(line.contains("status=101") && line.contains("/ws"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_name_the_frontend() {
    let routes = Routes::new();
    let slow = TestBackend::start("slow").await;
    let (closing, _task) = closing_server().await;
    let silent = unanswered();
    routes.backend("dead", &[("s1", dead_addr())]);
    // The harness's backends have a 500 ms Dial timeout.
    routes.backend("silent", &[("s1", silent.addr)]);
    routes.backend("reset", &[("s1", closing)]);
    routes.put("backends/empty/backend", r#"{"Type":"http"}"#);
    routes.put("backends/slow/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"300ms"}}}"#);
    routes.put("backends/slow/servers/s1", &format!(r#"{{"URL":"http://{}"}}"#, slow.addr));
    routes.frontend("dead", "dead", "Path(`/dead`)");
    routes.frontend("reset", "reset", "Path(`/reset`)");
    routes.frontend("silent", "silent", "Path(`/silent`)");
    routes.frontend("empty", "empty", "Path(`/empty`)");
    routes.frontend("slow", "slow", "PathPrefix(`/slow`)");
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    for (path, status, error, frontend) in [
        ("/nowhere", 404, "no_route", None),
        ("/empty", 503, "no_server", Some("empty")),
        ("/dead", 502, "upstream_unreachable", Some("dead")),
        ("/reset", 502, "upstream_reset", Some("reset")),
        ("/silent", 504, "upstream_connect_timeout", Some("silent")),
        ("/slow/2000", 504, "upstream_timeout", Some("slow")),
    ] {
        let (parts, body) = request_full(&c, http::Request::get(ficus.url(path)).body(Full::default()).unwrap()).await;
        assert_eq!(parts.status.as_u16(), status, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(parts.headers["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], error, "{path}");
        assert_eq!(v["frontend"].as_str(), frontend, "{path}");
        assert_eq!(v["request_id"].as_str().unwrap().len(), 32);
    }
    // The fast path through the same backend still works after a timeout.
    assert_eq!(get(&c, &ficus.url("/slow/10")).await.0, 200);
    let metrics = get(&c, &format!("http://{}/metrics", ficus.admin)).await.1;
    let text = String::from_utf8_lossy(&metrics);
    assert!(text.contains(r#"ficus_upstream_errors_total{backend="dead",server="s1",kind="connect"}"#), "{text}");
    assert!(
        text.contains(r#"ficus_upstream_errors_total{backend="silent",server="s1",kind="dial_timeout"}"#),
        "{text}"
    );
    assert!(text.contains(r#"ficus_upstream_errors_total{backend="slow",server="s1",kind="timeout"}"#), "{text}");
    assert!(text.contains("ficus_request_duration_seconds_bucket"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_and_hop_by_hop_headers() {
    let routes = Routes::new();
    let b = TestBackend::start("echo").await;
    routes.backend("echo", &[("s1", b.addr)]);
    routes.frontend("plain", "echo", "Path(`/plain`)");
    let trusted = serde_json::json!({"Type":"http","BackendId":"echo","Route":"Path(`/trusted`)",
        "Settings":{"TrustForwardHeader":true,"PassHostHeader":true}});
    routes.put("frontends/trusted/frontend", &trusted.to_string());
    // Hostname sets the upstream Host outright, over PassHostHeader too.
    let named = serde_json::json!({"Type":"http","BackendId":"echo","Route":"Path(`/named`)",
        "Settings":{"Hostname":"internal.example","PassHostHeader":true}});
    routes.put("frontends/named/frontend", &named.to_string());
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    let send = |path: &'static str| {
        http::Request::get(ficus.url(path))
            .header("host", "shop.example")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("connection", "x-private")
            .header("x-private", "do not forward")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .header("x-request-id", "client-id-1")
            .body(Full::default())
            .unwrap()
    };
    let (parts, body) = request_full(&c, send("/plain")).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "untrusted client XFF is replaced");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["host"], b.addr.to_string(), "without PassHostHeader the server's host is sent");
    assert!(h.get("x-private").is_none() && h.get("proxy-authorization").is_none() && h.get("connection").is_none());
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(parts.headers["x-request-id"], "client-id-1");
    // The upstream's hop-by-hop response headers stay behind too.
    assert!(parts.headers.get("keep-alive").is_none() && parts.headers.get("x-hop").is_none());

    let (_, body) = request_full(&c, send("/trusted")).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["host"], "shop.example");

    let (_, body) = request_full(&c, send("/named")).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["headers"]["host"], "internal.example", "Settings.Hostname is the upstream Host");
    assert_eq!(v["headers"]["x-forwarded-host"], "shop.example", "the client's host stays in X-Forwarded-Host");

    // Without a client id, one is made and returned.
    let (parts, body) = request_full(&c, http::Request::get(ficus.url("/plain")).body(Full::default()).unwrap()).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["headers"]["x-request-id"], parts.headers["x-request-id"].to_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_exact_in_every_window() {
    let routes = Routes::new();
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    routes.backend("blue", &[("s1", blue.addr)]);
    routes.backend("green", &[("s1", green.addr)]);
    let f = serde_json::json!({"Type":"http","Route":"PathPrefix(`/`)","Backends":[{"Id":"blue","Weight":95},{"Id":"green","Weight":5}]});
    routes.put("frontends/split/frontend", &f.to_string());
    // Servers inside a backend are weighted the same way.
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    routes.put("backends/ab/backend", r#"{"Type":"http"}"#);
    routes.put("backends/ab/servers/a", &format!(r#"{{"URL":"http://{}","Weight":3}}"#, a.addr));
    routes.put("backends/ab/servers/b", &format!(r#"{{"URL":"http://{}","Weight":1}}"#, b.addr));
    routes.frontend("ab", "ab", "Path(`/ab`)");
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    let mut seq = Vec::new();
    for _ in 0..300 {
        seq.push(served_by(&get(&c, &ficus.url("/x")).await.1));
    }
    for (i, w) in seq.windows(100).enumerate() {
        assert_eq!(w.iter().filter(|s| *s == "green").count(), 5, "window at {i}");
    }
    let mut ab = Vec::new();
    for _ in 0..40 {
        ab.push(served_by(&get(&c, &ficus.url("/ab")).await.1));
    }
    assert_eq!(ab.iter().filter(|s| *s == "a").count(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_200_mb_both_ways_without_buffering() {
    let (_r, _b, ficus) = simple().await;
    let c = http1_client();
    let before = ficus.rss_kib();
    const SIZE: u64 = 200 * 1024 * 1024;

    // Download: count bytes as they arrive.
    let resp = c.get(ficus.url(&format!("/stream/{SIZE}")).parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    let mut peak = before;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(60), body.frame()).await.expect("stream stalls") {
        got += frame.unwrap().data_ref().map(|d| d.len() as u64).unwrap_or(0);
        if got % (16 * 1024 * 1024) < 65536 {
            peak = peak.max(ficus.rss_kib());
        }
    }
    assert_eq!(got, SIZE);

    // Upload: a generated body, never held in memory on either side.
    let chunk = Bytes::from(vec![b'y'; 64 * 1024]);
    let chunks = SIZE / chunk.len() as u64;
    let stream = futures_util::stream::iter((0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))));
    let client: hyper_util::client::legacy::Client<_, StreamBody<_>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = http::Request::post(ficus.url("/upload")).body(StreamBody::new(stream)).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), client.request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["received"].as_u64(), Some(SIZE));
    peak = peak.max(ficus.rss_kib());
    let hwm = proc_status_kib(ficus.pid(), "VmHWM:");
    // 200 MB moved each way; the gateway's memory may grow by buffers, not by the body.
    assert!(hwm < before + 48 * 1024, "RSS grew from {before} KiB to a peak of {hwm} KiB (sampled {peak})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_is_413() {
    let routes = Routes::new();
    let b = TestBackend::start("echo").await;
    routes.backend("echo", &[("s1", b.addr)]);
    let f = serde_json::json!({"Type":"http","BackendId":"echo","Route":"PathPrefix(`/`)","Settings":{"Limits":{"MaxBodyBytes":1000}}});
    routes.put("frontends/limited/frontend", &f.to_string());
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    let small = http::Request::post(ficus.url("/upload")).body(Full::new(Bytes::from(vec![0u8; 1000]))).unwrap();
    assert_eq!(request(&c, small).await.0, 200);
    let big = http::Request::post(ficus.url("/upload")).body(Full::new(Bytes::from(vec![0u8; 1001]))).unwrap();
    let (code, body) = request(&c, big).await;
    assert_eq!(code, 413, "{}", String::from_utf8_lossy(&body));
    // Without a Content-Length the limit is enforced while the body streams.
    let chunks = (0..3).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![0u8; 600]))));
    let client: hyper_util::client::legacy::Client<_, StreamBody<_>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req =
        http::Request::post(ficus.url("/upload")).body(StreamBody::new(futures_util::stream::iter(chunks))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.unwrap().unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_is_refused_and_the_gateway_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_r, _b, ficus) = simple().await;
    let garbage: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        &[0xff; 70_000],
    ];
    for g in garbage {
        let mut s = tokio::net::TcpStream::connect(ficus.addr).await.unwrap();
        let _ = s.write_all(g).await;
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("answered or closed");
        let text = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || text.starts_with("HTTP/1.1 4"),
            "{:?}: {text}",
            String::from_utf8_lossy(&g[..g.len().min(80)])
        );
    }
    // Two framings at once (the request-smuggling shape): the chunked framing wins and the stale
    // Content-Length never reaches the upstream, or the request is refused.
    let mut s = tokio::net::TcpStream::connect(ficus.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut out = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(
        text.starts_with("HTTP/1.1 400")
            || (text.starts_with("HTTP/1.1 200") && !text.contains(r#""content-length":"1""#)),
        "{text}"
    );
    assert_eq!(get(&http1_client(), &ficus.url("/still-ok")).await.0, 200);
}

/// An idle keep-alive connection gives hyper's buffers back (it is "parked") and serves its next request as if
/// nothing happened: whole requests, a request head that was half sent when it went quiet, and a response the
/// client had not read yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_park_and_serve_on() {
    let (_r, _b, ficus) = simple().await;
    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f).await.unwrap_or_else(|_| panic!("{what}: timed out"))
    }

    // A: one request, then quiet.
    let mut a = RawConn::connect(ficus.addr).await;
    a.send(b"GET /a1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let (status, body) = within("a1", a.response()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // B: half a request head, then quiet.
    let mut b = RawConn::connect(ficus.addr).await;
    b.send(b"GET /b1 HTTP/1.1\r\nHo").await;

    // A parks within two quiet periods. B does not (its bytes are served on): once A has parked, a further
    // 3 s (more than the 2 s quiet period, so B would have parked by then too) leaves exactly one parked.
    within("A parked", async {
        while ficus.metric("ficus_parked_connections").await < 1.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ficus.metric("ficus_parked_connections").await, 1.0, "A alone is parked, B is not");

    // C: a response the client does not read for a while, with a small receive window, so that the end of
    // it still waits in the gateway when the connection goes quiet. Several sizes, to land in that window.
    let sizes: Vec<usize> = (1..=16).map(|i| i * 384 * 1024).collect();
    let mut cs = Vec::new();
    for &size in &sizes {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&ficus.addr.into()).unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut c = RawConn(tokio::io::BufReader::new(tokio::net::TcpStream::from_std(sock.into()).unwrap()));
        c.send(format!("GET /stream/{size} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
        cs.push((size, c));
    }

    // A C connection parks only once all its response has left the gateway's buffers for the kernel's: how
    // many do depends on the kernel's buffers, so only the bounds are known.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let parked = ficus.metric("ficus_parked_connections").await;
    assert!((1.0..=1.0 + sizes.len() as f64).contains(&parked), "{parked}");

    a.send(b"GET /a2 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let (status, body) = within("a2", a.response()).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["path"], "/a2");

    b.send(b"st: t\r\n\r\n").await;
    let (status, body) = within("b1", b.response()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["path"], "/b1");

    for (size, mut c) in cs {
        let (status, body) = within("stream", c.response()).await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), size);
        assert!(body.iter().all(|&b| b == b'x'), "a {size}-byte body came back damaged");
        c.send(b"GET /c2 HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(within("c2", c.response()).await.0, 200);
    }
    // Each connection came back from parking when its client spoke.
    assert_eq!(ficus.metric("ficus_parked_connections").await, 0.0);
}

/// The head timeout, shortened with its setting (30 s by default): a connection that sends nothing is closed
/// quietly, one that trickles a head a byte a second is answered 408 and closed; neither before the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_completes_no_head_in_time_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let routes = Routes::new();
    let b = TestBackend::start("echo").await;
    routes.backend("echo", &[("s1", b.addr)]);
    routes.frontend("echo", "echo", "PathPrefix(`/`)");
    let opts = FicusOptions { extra: vec!["--header-timeout".into(), "3s".into()], ..Default::default() };
    let ficus = Ficus::start_with(routes.path(), opts).await;
    let started = std::time::Instant::now();
    let quiet = tokio::net::TcpStream::connect(ficus.addr).await.unwrap();
    let trickle = tokio::net::TcpStream::connect(ficus.addr).await.unwrap();
    let (mut trickle_read, mut trickle_write) = trickle.into_split();
    let writer = tokio::spawn(async move {
        trickle_write.write_all(b"GET /never HTTP/1.1\r\nHost: t\r\nX-Slow: ").await.unwrap();
        while trickle_write.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    /// What the gateway sent before its clean close, and when the close came.
    async fn closed_after(mut r: impl tokio::io::AsyncRead + Unpin, started: std::time::Instant) -> (String, Duration) {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut rest)).await.expect("closed within 60 s");
        assert!(read.is_ok(), "closed with an error: {read:?}");
        (String::from_utf8_lossy(&rest).into_owned(), started.elapsed())
    }
    let ((quiet_said, quiet_after), (trickle_said, trickle_after)) =
        tokio::join!(closed_after(quiet, started), closed_after(&mut trickle_read, started));
    writer.abort();
    assert_eq!(quiet_said, "", "a quiet connection is closed without a word");
    assert!(trickle_said.starts_with("HTTP/1.1 408"), "{trickle_said}");
    // Lower bounds only: how soon after the timeout is not this test's business.
    for (what, after) in [("quiet", quiet_after), ("trickling", trickle_after)] {
        assert!(after >= Duration::from_millis(2900), "the {what} connection was closed after {after:?}, before 3 s");
    }
    // The gateway serves on.
    assert_eq!(get(&http1_client(), &ficus.url("/after")).await.0, 200);
}

/// The 95/5 split with clients at once (each request takes the next step of one shared sequence, so 1,000
/// requests give exactly 50 to the canary whatever their order), then across reloads (the frontend's counter
/// survives a change of its own value and an unrelated one: a reset would break a window spanning it), and
/// the canary side never twice in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_holds_under_concurrent_clients_and_across_reloads() {
    let routes = Routes::new();
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    routes.backend("blue", &[("s1", blue.addr)]);
    routes.backend("green", &[("s1", green.addr)]);
    let split = |priority: i32| {
        serde_json::json!({"Type":"http","Route":"PathPrefix(`/`)","Priority":priority,
            "Backends":[{"Id":"blue","Weight":95},{"Id":"green","Weight":5}]})
        .to_string()
    };
    routes.put("frontends/split/frontend", &split(0));
    let ficus = std::sync::Arc::new(Ficus::start(routes.path()).await);

    let clients: Vec<_> = (0..8)
        .map(|i| {
            let ficus = ficus.clone();
            tokio::spawn(async move {
                let c = if i % 2 == 0 { http1_client() } else { h2c_client() };
                for _ in 0..125 {
                    assert_eq!(get(&c, &ficus.url("/x")).await.0, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("client");
    }
    assert_eq!((blue.hits(), green.hits()), (950, 50), "1,000 concurrent requests split 95/5 exactly");

    let c = http1_client();
    let mut seq = Vec::new();
    let take = |n: usize| {
        let (c, ficus) = (c.clone(), ficus.clone());
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(served_by(&get(&c, &ficus.url("/x")).await.1));
            }
            out
        }
    };
    seq.extend(take(137).await);
    // A change to the frontend's own value.
    let gen = ficus.generation().await;
    routes.put("frontends/split/frontend", &split(1));
    ficus.wait_generation_above(gen).await;
    seq.extend(take(114).await);
    // An unrelated change.
    let gen = ficus.generation().await;
    routes.frontend("other", "blue", "Path(`/other`)");
    ficus.wait_generation_above(gen).await;
    seq.extend(take(149).await);
    for (i, w) in seq.windows(100).enumerate() {
        assert_eq!(w.iter().filter(|s| *s == "green").count(), 5, "window at {i} of {seq:?}");
    }
    for (i, w) in seq.windows(2).enumerate() {
        assert!(!(w[0] == "green" && w[1] == "green"), "the canary twice in a row at {i}");
    }
}
