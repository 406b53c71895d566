//! The middlewares that act on the answer, through a real gateway: a circuit breaker over a real backend that
//! starts failing and heals (config from a real etcd), with its webhooks arriving at a real HTTP receiver;
//! trace records arriving at a real UDP syslog listener; rates taken from a request header (`RateVar`); a
//! response body rendered as a template of the request (`RewriteBody`); and bad breaker values refused by key
//! and field while the last good chain keeps enforcing. Also two gaps of the request side: an open WebSocket
//! holds its connection-limit slot, and `client.ip` is the forwarded client behind a trusted proxy.

use crate::common;

use bytes::Bytes;
use common::backend::TestBackend;
use common::etcd::Etcd;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A backend that answers 200 `ok`, or, while `failing`, drops every request's connection without an answer
/// (the gateway sees a reset: a network error, 502).
struct FlakyBackend {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FlakyBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn flaky_backend() -> FlakyBackend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let f = f.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let fail = f.load(Ordering::SeqCst);
                    async move {
                        if fail {
                            Err("failing on purpose")
                        } else {
                            Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    FlakyBackend { addr, failing, task }
}

/// An HTTP server that records every request it gets (method, path, body) and answers 200.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<(String, String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let g = g.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let g = g.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            g.lock().unwrap().push((
                                parts.method.to_string(),
                                parts.uri.path().to_string(),
                                String::from_utf8_lossy(&body).into_owned(),
                            ));
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Receiver { addr, got, task }
    }

    fn find(&self, path: &str) -> Option<(String, String, String)> {
        self.got.lock().unwrap().iter().find(|(_, p, _)| p == path).cloned()
    }
}

fn breaker_state(status: &serde_json::Value) -> String {
    status["chains"]["f"][0]["state"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cbreaker_trips_when_the_backend_fails_answers_the_fallback_and_recovers_after_it_heals() {
    let backend = flaky_backend().await;
    let hooks = Receiver::start().await;
    let etcd = Etcd::start();
    etcd.put("/vulcand/backends/b/backend", r#"{"Type": "http"}"#);
    etcd.put("/vulcand/backends/b/servers/s1", &format!(r#"{{"URL": "http://{}"}}"#, backend.addr));
    etcd.put("/vulcand/frontends/f/frontend", r#"{"Type": "http", "BackendId": "b", "Route": "PathPrefix(`/`)"}"#);
    let ficus = Ficus::start_etcd(&etcd.endpoint(), "/vulcand").await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;

    // Vulcand's documented value, with its nanosecond durations, plus both webhooks.
    let breaker = serde_json::json!({"Id":"cb1","Priority":1,"Type":"cbreaker","Middleware":{
        "Condition":"NetworkErrorRatio() > 0.5",
        "Fallback":{"Type":"response","Action":{"StatusCode":400,"Body":"Come back later"}},
        "FallbackDuration": 3_000_000_000u64, "RecoveryDuration": "1s", "CheckPeriod": 100_000_000u64,
        "OnTripped":{"URL":format!("http://{}/tripped", hooks.addr),"Method":"POST","Form":{"state":["tripped"]}},
        "OnStandby":{"URL":format!("http://{}/standby", hooks.addr),"Method":"PUT","Body":{"state":"standby"},
                     "Headers":{"Content-Type":["application/json"]}}}});
    let gen = ficus.generation().await;
    etcd.put("/vulcand/frontends/f/middlewares/cb1", &breaker.to_string());
    let status = ficus.wait_generation_above(gen).await;
    assert_eq!(breaker_state(&status), "standby", "{status}");
    let c = http1_client();
    assert_eq!(get(&c, &ficus.url("/x")).await, (200, Bytes::from_static(b"ok")));

    // The backend starts failing: 502s, then the breaker trips and the fallback answers.
    backend.failing.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw_502 = false;
    loop {
        let (code, body) = get(&c, &ficus.url("/x")).await;
        if code == 400 {
            assert_eq!(body, Bytes::from_static(b"Come back later"));
            break;
        }
        assert_eq!(code, 502, "{}", String::from_utf8_lossy(&body));
        saw_502 = true;
        assert!(Instant::now() < deadline, "the breaker never tripped; log:\n{}", ficus.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_502, "the failure reached the client before the breaker tripped");
    // Tripped for 3 s: the state, the gauge and the webhook say so.
    assert_eq!(breaker_state(&ficus.status().await), "tripped");
    assert_eq!(ficus.metric("ficus_circuit_state").await, 1.0);
    wait_for("the OnTripped webhook", || hooks.find("/tripped").is_some()).await;
    let (method, _, body) = hooks.find("/tripped").unwrap();
    assert_eq!((method.as_str(), body.as_str()), ("POST", "state=tripped"));
    assert!(hooks.find("/standby").is_none());

    // The backend heals: after the fallback duration and the ramp, every request passes again.
    backend.failing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut passed, mut saw_recovering) = (0, false);
    loop {
        let (code, body) = get(&c, &ficus.url("/x")).await;
        match code {
            200 => passed += 1,
            400 => assert_eq!(body, Bytes::from_static(b"Come back later")),
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
        }
        match breaker_state(&ficus.status().await).as_str() {
            "standby" => break,
            "recovering" => saw_recovering = true,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the breaker never recovered; status {}", ficus.status().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_recovering && passed > 0, "traffic came back through the ramp ({passed} passed)");
    for _ in 0..10 {
        assert_eq!(get(&c, &ficus.url("/x")).await, (200, Bytes::from_static(b"ok")), "standby lets all through");
    }
    assert_eq!(ficus.metric("ficus_circuit_state").await, 0.0);
    wait_for("the OnStandby webhook", || hooks.find("/standby").is_some()).await;
    let (method, _, body) = hooks.find("/standby").unwrap();
    assert_eq!((method.as_str(), body.as_str()), ("PUT", r#"{"state":"standby"}"#));
    assert!(ficus.metric("ficus_middleware_rejected_total").await >= 1.0, "fallback answers are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_breaker_value_is_refused_by_key_and_field_and_the_tripped_breaker_keeps_answering() {
    let backend = flaky_backend().await;
    let routes = Routes::new();
    routes.backend("b", &[("s1", backend.addr)]);
    routes.frontend("f", "b", "PathPrefix(`/`)");
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    let good = r#"{"Type":"cbreaker","Middleware":{"Condition":"ResponseCodeRatio(500, 600, 0, 600) > 0.5 || NetworkErrorRatio() > 0.5",
        "Fallback":{"Type":"redirect","Action":{"URL":"http://fallback.example/down"}},"FallbackDuration":"1h","CheckPeriod":"10ms"}}"#;
    let gen = ficus.generation().await;
    routes.put("frontends/f/middlewares/cb", good);
    ficus.wait_generation_above(gen).await;
    backend.failing.store(true, Ordering::SeqCst);
    let c = http1_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (parts, _) = request_full(&c, http::Request::get(ficus.url("/x")).body(Full::default()).unwrap()).await;
        if parts.status == 302 {
            assert_eq!(parts.headers["location"], "http://fallback.example/down");
            break;
        }
        assert!(Instant::now() < deadline, "never tripped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (value, field) in [
        (r#"{"Type":"cbreaker","Middleware":{"Condition":"NetworkErrorRatio() >> 0.5"}}"#, "Middleware.Condition"),
        (r#"{"Type":"cbreaker","Middleware":{"Condition":"Latency() > 1"}}"#, "Middleware.Condition"),
        (
            r#"{"Type":"cbreaker","Middleware":{"Condition":"NetworkErrorRatio() > 0.5","CheckPeriod":"soon"}}"#,
            "Middleware.CheckPeriod",
        ),
        (
            r#"{"Type":"cbreaker","Middleware":{"Condition":"NetworkErrorRatio() > 0.5","Fallback":{"Type":"page"}}}"#,
            "Middleware.Fallback.Type",
        ),
        (r#"{"Type":"trace","Middleware":{"Addr":"syslog://nowhere"}}"#, "Middleware.Addr"),
    ] {
        let gen = ficus.generation().await;
        routes.put("frontends/f/middlewares/cb", value);
        let status = ficus.wait_generation_above(gen).await;
        let rejected = status["rejected"].as_array().cloned().unwrap_or_default();
        let found = rejected.iter().find(|r| r["key"] == "frontends/f/middlewares/cb");
        let found = found.unwrap_or_else(|| panic!("{value} not refused: {status}"));
        assert_eq!(found["field"], field, "{found}");
        assert_eq!(breaker_state(&status), "tripped", "the breaker and its state were kept: {status}");
        let (parts, _) = request_full(&c, http::Request::get(ficus.url("/x")).body(Full::default()).unwrap()).await;
        assert_eq!(parts.status, 302, "the gate opened after {value}");
    }
    // A tripped breaker that leaves the config takes its gauge with it, instead of reporting "tripped" forever.
    let tripped = "ficus_circuit_state{frontend=\"f\",middleware=\"cb\"} 1\n";
    assert!(ficus.metrics_text().await.contains(tripped));
    let gen = ficus.generation().await;
    routes.delete("frontends/f/middlewares/cb");
    ficus.wait_generation_above(gen).await;
    let metrics = ficus.metrics_text().await;
    assert!(!metrics.contains("ficus_circuit_state{"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_records_arrive_at_a_udp_syslog_listener_with_the_named_headers() {
    let b = TestBackend::start("b").await;
    let syslog = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind syslog");
    let routes = Routes::new();
    routes.backend("b", &[("s1", b.addr)]);
    routes.frontend("f", "b", "PathPrefix(`/`)");
    routes.put(
        "frontends/f/middlewares/t1",
        &serde_json::json!({"Id":"t1","Priority":1,"Type":"trace","Middleware":{
            "ReqHeaders":["X-A","X-B"],"RespHeaders":["Content-Type"],
            "Addr":format!("syslog://{}?f=MAIL&sev=INFO", syslog.local_addr().unwrap())}})
        .to_string(),
    );
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    let req = http::Request::get(ficus.url("/traced?q=1")).header("x-a", "hello").body(Full::default()).unwrap();
    assert_eq!(request(&c, req).await.0, 200);
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(20), syslog.recv(&mut buf))
        .await
        .expect("a record within the bound")
        .expect("recv");
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    // MAIL (2) x 8 + INFO (6).
    assert!(line.starts_with("<22>"), "{line}");
    let (_, json) = line.split_once("@cee: ").unwrap_or_else(|| panic!("no @cee: in {line}"));
    let record: serde_json::Value = serde_json::from_str(json).expect("JSON record");
    assert_eq!(record["request"]["method"], "GET");
    assert!(record["request"]["url"].as_str().unwrap().ends_with("/traced?q=1"), "{record}");
    assert_eq!(record["request"]["headers"]["X-A"], serde_json::json!(["hello"]));
    assert!(record["request"]["headers"].get("X-B").is_none(), "absent headers are left out: {record}");
    assert_eq!(record["response"]["code"], 200);
    assert!(record["response"]["roundtrip"].as_f64().unwrap() > 0.0);
    assert!(record["response"]["headers"]["Content-Type"].is_array(), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_takes_its_rates_from_the_rate_var_header_and_the_configured_ones_without_it() {
    let b = TestBackend::start("b").await;
    let routes = Routes::new();
    routes.backend("b", &[("s1", b.addr)]);
    routes.frontend("f", "b", "PathPrefix(`/`)");
    routes.put(
        "frontends/f/middlewares/rl1",
        r#"{"Id":"rl1","Priority":0,"Type":"ratelimit","Middleware":{"PeriodSeconds":3600,"Requests":1,"Burst":1,
            "Variable":"client.ip","RateVar":"request.header.X-Custom-Rates"}}"#,
    );
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    let with = |rates: Option<&str>| {
        let mut req = http::Request::get(ficus.url("/x"));
        if let Some(r) = rates {
            req = req.header("x-custom-rates", r);
        }
        req.body(Full::default()).unwrap()
    };
    // Without the header: the configured one request per hour.
    assert_eq!(request(&c, with(None)).await.0, 200);
    assert_eq!(request(&c, with(None)).await.0, 429);
    // With it: three per hour for this client, counted apart from the configured bucket.
    let rates = r#"[{"PeriodSec":3600,"Average":3,"Burst":3}]"#;
    for i in 0..3 {
        assert_eq!(request(&c, with(Some(rates))).await.0, 200, "request {i} under the header's rates");
    }
    assert_eq!(request(&c, with(Some(rates))).await.0, 429);
    // A header that does not parse falls back to the configured rates (already used up).
    assert_eq!(request(&c, with(Some("three please"))).await.0, 429);
}

/// A backend whose body is Vulcand's documented template.
async fn template_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                    let body = r#"{"foo": "{{.Request.Header.Get "variable"}}", "path": "{{.Request.URL.Path}}"}"#;
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(body.as_bytes()))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_body_renders_the_response_as_a_template_of_the_request() {
    let (addr, task) = template_backend().await;
    let routes = Routes::new();
    routes.backend("b", &[("s1", addr)]);
    routes.frontend("f", "b", "PathPrefix(`/`)");
    routes.put(
        "frontends/f/middlewares/r1",
        r#"{"Id":"r1","Priority":1,"Type":"rewrite","Middleware":{"RewriteBody":true}}"#,
    );
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    let req = http::Request::get(ficus.url("/a/b")).header("variable", "variable-value").body(Full::default()).unwrap();
    let (parts, body) = request_full(&c, req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(String::from_utf8_lossy(&body), r#"{"foo": "variable-value", "path": "/a/b"}"#);
    assert_eq!(parts.headers["content-length"], body.len().to_string().as_str());
    task.abort();
}

/// A catch-all frontend with a connlimit of one request per client address.
async fn one_request_per_client() -> (TestBackend, Routes, Ficus) {
    let b = TestBackend::start("b").await;
    let routes = Routes::new();
    routes.backend("b", &[("s1", b.addr)]);
    routes.frontend("f", "b", "PathPrefix(`/`)");
    routes.put(
        "frontends/f/middlewares/cl",
        r#"{"Type":"connlimit","Middleware":{"Connections":1,"Variable":"client.ip"}}"#,
    );
    let ficus = Ficus::start(routes.path()).await;
    (b, routes, ficus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_holds_its_connlimit_slot_until_the_tunnel_ends() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (_b, _routes, ficus) = one_request_per_client().await;
    let c = http1_client();
    assert_eq!(get(&c, &ficus.url("/x")).await.0, 200, "the slot is free");
    // That request gives its slot back as its body ends on Ficus's side, which may be a moment after the client
    // has read it all: an upgrade sent at once may still find the slot taken, and is tried again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut ws, resp) = loop {
        let tcp = tokio::net::TcpStream::connect(ficus.addr).await.expect("connect");
        match tokio_tungstenite::client_async(format!("ws://{}/ws", ficus.addr), tcp).await {
            Ok(upgraded) => break upgraded,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 429 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("upgrade through ficus: {e}"),
        }
    };
    assert_eq!(resp.status(), 101);
    ws.send(Message::Text("ping".into())).await.expect("send");
    let echo = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("echo in time");
    assert_eq!(echo.expect("a message").expect("a frame").into_text().expect("text"), "ping");
    assert_eq!(get(&c, &ficus.url("/x")).await.0, 429, "the open tunnel holds the one slot");
    ws.close(None).await.expect("close");
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&c, &ficus.url("/x")).await.0 != 200 {
        assert!(Instant::now() < deadline, "the slot was never given back after the tunnel ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request's connlimit slot is back by the time its client has read the whole answer: the next request,
/// sent at once on another connection, is not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connlimit_slot_is_back_once_the_answer_is_read() {
    let (_b, _routes, ficus) = one_request_per_client().await;
    for i in 0..300 {
        // A new connection each time, closed after the answer, as a script's curl loop would.
        let mut c = RawConn::connect(ficus.addr).await;
        c.send(format!("GET /x{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await;
        let (status, _) = tokio::time::timeout(Duration::from_secs(5), c.response()).await.expect("answer in time");
        assert_eq!(status, 200, "request {i}: the previous request's slot was still taken");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_is_the_forwarded_client_only_when_the_frontend_trusts_the_forward_header() {
    let b = TestBackend::start("b").await;
    let routes = Routes::new();
    routes.backend("b", &[("s1", b.addr)]);
    routes.put(
        "frontends/trusting/frontend",
        r#"{"Type":"http","BackendId":"b","Route":"PathPrefix(`/t`)","Settings":{"TrustForwardHeader":true}}"#,
    );
    routes.frontend("plain", "b", "PathPrefix(`/p`)");
    let limit =
        r#"{"Type":"ratelimit","Middleware":{"Requests":1,"PeriodSeconds":3600,"Burst":1,"Variable":"client.ip"}}"#;
    routes.put("frontends/trusting/middlewares/rl", limit);
    routes.put("frontends/plain/middlewares/rl", limit);
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    let from = |path: &str, xff: &str| {
        let req = http::Request::get(ficus.url(path)).header("x-forwarded-for", xff);
        request(&c, req.body(Full::default()).expect("request"))
    };
    assert_eq!(from("/t", "6.6.6.6, 10.0.0.1").await.0, 200);
    assert_eq!(from("/t", "10.0.0.1").await.0, 429, "the same forwarded client");
    assert_eq!(from("/t", "10.0.0.1, 10.0.0.2").await.0, 200, "another forwarded client has its own bucket");
    // Untrusted, the header is the client's claim: every request counts under the connection's address.
    assert_eq!(from("/p", "10.0.0.3").await.0, 200);
    assert_eq!(from("/p", "10.0.0.4").await.0, 429, "a claimed address does not buy a new bucket");
}

fn ficus_cmd(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ficus")).args(args).output().expect("run ficus");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_apply_accept_every_middleware_type_and_refuse_a_bad_one_by_key_and_field() {
    let routes = Routes::new();
    routes.backend("b", &[("s1", "127.0.0.1:9".parse().unwrap())]);
    routes.frontend("f", "b", "PathPrefix(`/`)");
    let good = [
        (
            "rl",
            r#"{"Type":"ratelimit","Priority":1,"Middleware":{"Requests":1,"PeriodSeconds":1,"Burst":3,"Variable":"client.ip","RateVar":"request.header.X-Rates"}}"#,
        ),
        ("cl", r#"{"Type":"connlimit","Priority":2,"Middleware":{"Connections":16,"Variable":"client.ip"}}"#),
        ("rw", r#"{"Type":"rewrite","Priority":3,"Middleware":{"RewriteBody":true}}"#),
        (
            "cb",
            r#"{"Type":"cbreaker","Priority":4,"Middleware":{"Condition":"LatencyAtQuantileMS(50.0) > 50","FallbackDuration":10000000000}}"#,
        ),
        ("tr", r#"{"Type":"trace","Priority":5,"Middleware":{"Addr":"syslog://127.0.0.1:5514","ReqHeaders":["X-A"]}}"#),
    ];
    for (id, value) in good {
        routes.put(&format!("frontends/f/middlewares/{id}"), value);
    }
    let dir = routes.path().to_str().expect("utf-8 path");
    let (code, out, err) = ficus_cmd(&["check", dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 errors"), "{out}");

    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    routes.put(
        "frontends/f/middlewares/bad",
        r#"{"Type":"cbreaker","Middleware":{"Condition":"ResponseCodeRatio(500, 600) > 0.5"}}"#,
    );
    let (code, out, err) = ficus_cmd(&["check", dir]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("frontends/f/middlewares/bad: Middleware.Condition: at position 0"), "{out}{err}");
    let (code, _, err) = ficus_cmd(&["apply", dir, "--etcd", &ep]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("frontends/f/middlewares/bad: Middleware.Condition"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(etcd.ctl(&["get", "--prefix", "/vulcand/", "--keys-only"]).trim(), "", "a refused plan wrote");

    routes.delete("frontends/f/middlewares/bad");
    let (code, out, err) = ficus_cmd(&["apply", dir, "--etcd", &ep]);
    assert_eq!(code, 0, "{out}{err}");
    let keys = etcd.ctl(&["get", "--prefix", "/vulcand/frontends/f/middlewares/", "--keys-only"]);
    for (id, _) in good {
        assert!(keys.contains(&format!("/vulcand/frontends/f/middlewares/{id}")), "{keys}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_replacement_is_a_template_of_the_request() {
    let b = TestBackend::start("b").await;
    let routes = Routes::new();
    routes.backend("b", &[("s1", b.addr)]);
    routes.frontend("f", "b", "PathPrefix(`/`)");
    routes.put(
        "frontends/f/middlewares/me",
        r#"{"Type":"rewrite","Middleware":{"Regexp":"^http://([^/]+)/me(.*)$","Replacement":"http://$1/users/{{.Request.Header.Get \"X-User\"}}$2"}}"#,
    );
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    let req = http::Request::get(ficus.url("/me/profile")).header("x-user", "ann").body(Full::default()).unwrap();
    let (code, body) = request(&c, req).await;
    assert_eq!(code, 200);
    let body: serde_json::Value = serde_json::from_slice(&body).expect("the backend's JSON echo");
    assert_eq!(body["path"], "/users/ann/profile", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_records_arrive_at_a_unix_datagram_socket_and_a_missing_one_never_holds_a_request() {
    let b = TestBackend::start("b").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("log.sock");
    let syslog = tokio::net::UnixDatagram::bind(&path).expect("bind the unix socket");
    let routes = Routes::new();
    routes.backend("b", &[("s1", b.addr)]);
    routes.frontend("f", "b", "PathPrefix(`/f`)");
    routes.frontend("g", "b", "PathPrefix(`/g`)");
    let trace = |addr: String| {
        serde_json::json!({"Type":"trace","Middleware":{"RespHeaders":["Content-Type"],"Addr":addr}}).to_string()
    };
    routes.put("frontends/f/middlewares/t", &trace(format!("syslog://{}", path.display())));
    routes.put("frontends/g/middlewares/t", &trace(format!("syslog://{}", dir.path().join("absent.sock").display())));
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    // Nothing listens for g's records: its requests are answered all the same.
    for _ in 0..5 {
        assert_eq!(get(&c, &ficus.url("/g/x")).await.0, 200);
    }
    assert_eq!(get(&c, &ficus.url("/f/unix")).await.0, 200);
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(20), syslog.recv(&mut buf))
        .await
        .expect("a record within the bound")
        .expect("recv");
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(line.starts_with("<134>"), "LOCAL0 (16) x 8 + INFO (6) by default: {line}");
    let (_, json) = line.split_once("@cee: ").unwrap_or_else(|| panic!("no @cee: in {line}"));
    let record: serde_json::Value = serde_json::from_str(json).expect("JSON record");
    assert!(record["request"]["url"].as_str().unwrap().ends_with("/f/unix"), "{record}");
    assert_eq!(record["response"]["code"], 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ficus.metric("ficus_trace_dropped_total").await < 1.0 {
        assert!(Instant::now() < deadline, "g's undeliverable records were never counted as dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An https server with a certificate from a fresh test CA, recording the paths of the requests it gets;
/// returns it with the CA's PEM.
async fn https_receiver() -> (SocketAddr, Arc<Mutex<Vec<String>>>, String, tokio::task::JoinHandle<()>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca_key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "ficus webhook test CA");
    let ca = params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    leaf.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = leaf.signed_by(&key, &ca, &ca_key).expect("sign");
    let chain = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).expect("cert")];
    let private = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, g) = (acceptor.clone(), g.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    g.lock().unwrap().push(req.uri().path().to_string());
                    async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new()))) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    (addr, got, ca.pem(), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_is_sent_verified_against_the_system_roots() {
    let backend = flaky_backend().await;
    backend.failing.store(true, Ordering::SeqCst);
    let (hook, got, ca_pem, task) = https_receiver().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("roots.pem");
    std::fs::write(&ca_file, ca_pem).expect("write the roots");
    let routes = Routes::new();
    routes.backend("b", &[("s1", backend.addr)]);
    routes.frontend("f", "b", "PathPrefix(`/`)");
    let breaker = serde_json::json!({"Type":"cbreaker","Middleware":{"Condition":"NetworkErrorRatio() > 0.5",
        "FallbackDuration":"1h","CheckPeriod":"10ms","OnTripped":{"URL":format!("https://{hook}/tripped")}}});
    routes.put("frontends/f/middlewares/cb", &breaker.to_string());
    // The system's roots, as rustls-native-certs reads them, are the test CA alone.
    let env = vec![("SSL_CERT_FILE".to_string(), ca_file.display().to_string())];
    let ficus = Ficus::start_with(routes.path(), FicusOptions { env, ..Default::default() }).await;
    assert!(
        ficus.status().await["unsupported"].as_array().is_none_or(|u| u.is_empty()),
        "https webhooks are sent, not reported unsupported"
    );
    let c = http1_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&c, &ficus.url("/x")).await.0 != 503 {
        assert!(Instant::now() < deadline, "never tripped; log:\n{}", ficus.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !got.lock().unwrap().iter().any(|p| p == "/tripped") {
        assert!(Instant::now() < deadline, "the https webhook never arrived; log:\n{}", ficus.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}
