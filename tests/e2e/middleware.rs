//! Vulcand's middlewares through a real gateway: a routes directory, a `ficus serve` child process and real
//! backends on loopback. Rate limits (burst, 429 with Retry-After, refill; per client IP and per header), state
//! kept across unrelated reloads, connection limits held by in-flight requests, bad values refused by key and
//! field with the last good chain still enforcing, and chain order by Priority.

use crate::common;

use bytes::Bytes;
use common::backend::TestBackend;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ratelimit(priority: i32, requests: u64, period: u64, burst: u64, variable: &str) -> String {
    serde_json::json!({"Type":"ratelimit","Priority":priority,
        "Middleware":{"Requests":requests,"PeriodSeconds":period,"Burst":burst,"Variable":variable}})
    .to_string()
}

async fn setup(b: &TestBackend) -> (Routes, Ficus) {
    let routes = Routes::new();
    routes.backend("b", &[("s1", b.addr)]);
    routes.frontend("f", "b", "PathPrefix(`/`)");
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    (routes, ficus)
}

/// Writes `key` and waits for the reload that follows it.
async fn put(routes: &Routes, ficus: &Ficus, key: &str, value: &str) -> serde_json::Value {
    let gen = ficus.generation().await;
    routes.put(key, value);
    ficus.wait_generation_above(gen).await
}

async fn get_with(c: &HttpClient, url: &str, header: Option<(&str, &str)>) -> (http::response::Parts, Bytes) {
    let mut req = http::Request::get(url);
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    request_full(c, req.body(Full::default()).expect("request")).await
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_passes_exactly_burst_then_429_with_retry_after_then_refills() {
    let b = TestBackend::start("b").await;
    let (routes, ficus) = setup(&b).await;
    // One request per 2 s, 3 at once: three requests sent back to back take far less than a refill interval.
    put(&routes, &ficus, "frontends/f/middlewares/rl", &ratelimit(1, 1, 2, 3, "client.ip")).await;
    let c = http1_client();
    let hits = b.hits();
    for i in 0..3 {
        let (parts, _) = get_with(&c, &ficus.url("/x"), None).await;
        assert_eq!(parts.status, 200, "request {i} of the burst");
    }
    let (parts, body) = get_with(&c, &ficus.url("/x"), None).await;
    assert_eq!(parts.status, 429, "{}", String::from_utf8_lossy(&body));
    let retry: u64 = parts.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body = json(&body);
    assert_eq!((body["error"].as_str(), body["middleware"].as_str()), (Some("rate_limited"), Some("rl")));
    assert_eq!(b.hits() - hits, 3, "the refused request never reached the backend");
    assert!(ficus.metric("ficus_middleware_rejected_total").await >= 1.0);
    let metrics = String::from_utf8_lossy(&get(&c, &format!("http://{}/metrics", ficus.admin)).await.1).into_owned();
    assert!(
        metrics.contains(r#"ficus_middleware_rejected_total{frontend="f",middleware="rl",reason="rate"}"#),
        "{metrics}"
    );
    // The bucket refills at one request per 2 s: a request passes again, within a bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (parts, _) = get_with(&c, &ficus.url("/x"), None).await;
        if parts.status == 200 {
            break;
        }
        assert_eq!(parts.status, 429);
        assert!(Instant::now() < deadline, "the bucket never refilled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A GET to the gateway from a given loopback source address (127.0.0.0/8 is all local on Linux).
async fn get_from(source: IpAddr, addr: SocketAddr) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(source, 0)).expect("bind the source address");
    let stream = socket.connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get("/x").header("host", "example.com").body(Full::<Bytes>::default()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req)).await.expect("in time");
    let resp = resp.expect("response");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_counts_per_client_ip_and_per_header_value() {
    let b = TestBackend::start("b").await;
    let (routes, ficus) = setup(&b).await;
    put(&routes, &ficus, "frontends/f/middlewares/rl", &ratelimit(0, 1, 3600, 1, "client.ip")).await;
    let (one, two) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    assert_eq!(get_from(one, ficus.addr).await, 200);
    assert_eq!(get_from(one, ficus.addr).await, 429, "127.0.0.1 used its one request");
    assert_eq!(get_from(two, ficus.addr).await, 200, "127.0.0.2 has a bucket of its own");
    assert_eq!(get_from(two, ficus.addr).await, 429);

    put(&routes, &ficus, "frontends/f/middlewares/rl", &ratelimit(0, 1, 3600, 1, "request.header.X-User")).await;
    let c = http1_client();
    let url = ficus.url("/x");
    assert_eq!(get_with(&c, &url, Some(("x-user", "alice"))).await.0.status, 200);
    assert_eq!(get_with(&c, &url, Some(("x-user", "alice"))).await.0.status, 429);
    assert_eq!(get_with(&c, &url, Some(("x-user", "bob"))).await.0.status, 200, "bob has a bucket of his own");
    // Without the header, requests share the bucket of the empty value, as in Vulcand.
    assert_eq!(get_with(&c, &url, None).await.0.status, 200);
    assert_eq!(get_with(&c, &url, None).await.0.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_write_keeps_the_bucket_and_a_changed_value_applies_on_the_next_request() {
    let b = TestBackend::start("b").await;
    let (routes, ficus) = setup(&b).await;
    put(&routes, &ficus, "frontends/f/middlewares/rl", &ratelimit(0, 1, 3600, 2, "client.ip")).await;
    let c = http1_client();
    let url = ficus.url("/x");
    assert_eq!(get(&c, &url).await.0, 200);
    assert_eq!(get(&c, &url).await.0, 200);
    assert_eq!(get(&c, &url).await.0, 429);
    // Unrelated writes: the frontend itself (its settings), another middleware of it, a server.
    let fv = r#"{"Type":"http","BackendId":"b","Route":"PathPrefix(`/`)","Settings":{"PassHostHeader":true}}"#;
    put(&routes, &ficus, "frontends/f/frontend", fv).await;
    put(
        &routes,
        &ficus,
        "frontends/f/middlewares/cl",
        r#"{"Type":"connlimit","Priority":5,"Middleware":{"Connections":100,"Variable":"client.ip"}}"#,
    )
    .await;
    put(&routes, &ficus, "backends/b/servers/s2", &format!(r#"{{"URL":"http://{}"}}"#, b.addr)).await;
    let (parts, body) = get_with(&c, &url, None).await;
    assert_eq!(parts.status, 429, "the bucket was reset by an unrelated write: {}", String::from_utf8_lossy(&body));
    // A changed value applies on the next request, with a fresh bucket of the new size.
    put(&routes, &ficus, "frontends/f/middlewares/rl", &ratelimit(0, 1, 3600, 3, "client.ip")).await;
    for i in 0..3 {
        assert_eq!(get(&c, &url).await.0, 200, "request {i} under the new Burst");
    }
    assert_eq!(get(&c, &url).await.0, 429);
    // Deleting the middleware opens the gate, as the operator asked.
    let gen = ficus.generation().await;
    routes.delete("frontends/f/middlewares/rl");
    ficus.wait_generation_above(gen).await;
    assert_eq!(get(&c, &url).await.0, 200);
}

/// A backend that holds every request until released, counting those that arrived.
struct HoldingBackend {
    addr: SocketAddr,
    arrived: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HoldingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn holding_backend() -> HoldingBackend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let arrived = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (a, r) = (arrived.clone(), release.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (a, r) = (a.clone(), r.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let (a, r) = (a.clone(), r.clone());
                    async move {
                        a.fetch_add(1, Ordering::SeqCst);
                        if let Ok(permit) = r.acquire().await {
                            permit.forget();
                        }
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"{\"backend\":\"held\"}",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    HoldingBackend { addr, arrived, release, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connlimit_refuses_the_n_plus_first_while_n_are_in_flight() {
    let held = holding_backend().await;
    let routes = Routes::new();
    routes.backend("b", &[("s1", held.addr)]);
    routes.frontend("f", "b", "PathPrefix(`/`)");
    routes.put(
        "frontends/f/middlewares/cl",
        r#"{"Type":"connlimit","Priority":1,"Middleware":{"Connections":2,"Variable":"client.ip"}}"#,
    );
    let ficus = Ficus::start(routes.path()).await;
    let status = ficus.status().await;
    assert_eq!(status["chains"]["f"][0]["id"], "cl", "{status}");
    let url = ficus.url("/slow");
    let c = http1_client();
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { get(&c, &url).await.0 })
        })
        .collect();
    let arrived = held.arrived.clone();
    wait_for("two requests held by the backend", || arrived.load(Ordering::SeqCst) == 2).await;
    let (parts, body) = get_with(&c, &url, None).await;
    assert_eq!(parts.status, 429, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["error"], "too_many_connections");
    assert!(parts.headers.get("retry-after").is_none());
    assert_eq!(held.arrived.load(Ordering::SeqCst), 2, "the refused request never reached the backend");
    held.release.add_permits(2);
    for r in in_flight {
        assert_eq!(r.await.expect("task"), 200);
    }
    // Both slots came back when the bodies ended: two more may be in flight again.
    let again: Vec<_> = (0..2)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { get(&c, &url).await.0 })
        })
        .collect();
    wait_for("two more requests held by the backend", || arrived.load(Ordering::SeqCst) == 4).await;
    assert_eq!(get_with(&c, &url, None).await.0.status, 429);
    held.release.add_permits(2);
    for r in again {
        assert_eq!(r.await.expect("task"), 200);
    }
    let metrics = String::from_utf8_lossy(&get(&c, &format!("http://{}/metrics", ficus.admin)).await.1).into_owned();
    assert!(
        metrics.contains(r#"ficus_middleware_rejected_total{frontend="f",middleware="cl",reason="connections"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_middleware_value_is_refused_by_key_and_field_and_the_last_good_chain_keeps_enforcing() {
    let b = TestBackend::start("b").await;
    let (routes, ficus) = setup(&b).await;
    put(&routes, &ficus, "frontends/f/middlewares/rl", &ratelimit(0, 1, 3600, 1, "client.ip")).await;
    let c = http1_client();
    let url = ficus.url("/x");
    assert_eq!(get(&c, &url).await.0, 200);
    assert_eq!(get(&c, &url).await.0, 429);
    let bad = [
        (
            r#"{"Type":"ratelimit","Middleware":{"Requests":1,"PeriodSeconds":1,"Burst":0,"Variable":"client.ip"}}"#,
            "Middleware.Burst",
        ),
        (
            r#"{"Type":"ratelimit","Middleware":{"Requests":1,"PeriodSeconds":1,"Burst":1,"Variable":"client.port"}}"#,
            "Middleware.Variable",
        ),
        (r#"{"Type":"ratelimit","Middleware":{"Requests":1,"PeriodSeconds":1,"Variable":"client.ip"}}"#, "Middleware"),
        (r#"{"Type":"ratelimt","Middleware":{}}"#, "Type"),
    ];
    for (value, field) in bad {
        let status = put(&routes, &ficus, "frontends/f/middlewares/rl", value).await;
        let rejected = status["rejected"].as_array().cloned().unwrap_or_default();
        let found = rejected.iter().find(|r| r["key"] == "frontends/f/middlewares/rl");
        let found = found.unwrap_or_else(|| panic!("{value} not refused: {status}"));
        assert_eq!(found["field"], field, "{found}");
        assert_eq!(found["kept_previous"], true);
        assert_eq!(status["chains"]["f"][0]["type"], "ratelimit", "{status}");
        assert_eq!(get(&c, &url).await.0, 429, "the gate opened after {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_runs_in_priority_order_then_by_id() {
    let b = TestBackend::start("b").await;
    let (routes, ficus) = setup(&b).await;
    // Two limits of one request each: the first request passes both; the next is refused by whichever runs first.
    routes.put("frontends/f/middlewares/a", &ratelimit(2, 1, 3600, 1, "client.ip"));
    let status = put(&routes, &ficus, "frontends/f/middlewares/z", &ratelimit(1, 1, 3600, 1, "client.ip")).await;
    let order: Vec<&str> = status["chains"]["f"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(order, ["z", "a"], "{status}");
    let c = http1_client();
    let url = ficus.url("/x");
    assert_eq!(get(&c, &url).await.0, 200);
    let (code, body) = get(&c, &url).await;
    assert_eq!((code, json(&body)["middleware"].as_str()), (429, Some("z")), "priority 1 runs before priority 2");
    // Equal priorities: ids in order. Priority is not part of a limiter's state, so both buckets stay empty.
    let status = put(&routes, &ficus, "frontends/f/middlewares/z", &ratelimit(2, 1, 3600, 1, "client.ip")).await;
    let order: Vec<&str> = status["chains"]["f"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(order, ["a", "z"], "{status}");
    let (code, body) = get(&c, &url).await;
    assert_eq!((code, json(&body)["middleware"].as_str()), (429, Some("a")), "a runs before z at equal priority");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_sends_the_rewritten_path_upstream_and_redirect_answers_302() {
    let b = TestBackend::start("b").await;
    let (routes, ficus) = setup(&b).await;
    // Vulcand's documented example: strip a prefix.
    put(
        &routes,
        &ficus,
        "frontends/f/middlewares/rw",
        r#"{"Type":"rewrite","Priority":1,"Middleware":{"Regexp":"/foo(.*)","Replacement":"$1","RewriteBody":false,"Redirect":false}}"#,
    )
    .await;
    let c = http1_client();
    let (code, body) = get(&c, &ficus.url("/foo/bar?x=1")).await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["path"], "/bar", "{}", String::from_utf8_lossy(&body));
    let (code, body) = get(&c, &ficus.url("/other")).await;
    assert_eq!((code, json(&body)["path"].as_str()), (200, Some("/other")), "no match: unchanged");
    // Redirect: the client is sent to the rewritten URL and the backend never sees the request.
    put(
        &routes,
        &ficus,
        "frontends/f/middlewares/rw",
        r#"{"Type":"rewrite","Middleware":{"Regexp":"^http://([^/]+)/old/(.*)$","Replacement":"https://$1/new/$2","Redirect":true}}"#,
    )
    .await;
    let hits = b.hits();
    let (parts, body) = get_with(&c, &ficus.url("/old/page?q=1"), None).await;
    assert_eq!(parts.status, 302, "{}", String::from_utf8_lossy(&body));
    assert_eq!(parts.headers["location"], format!("https://{}/new/page?q=1", ficus.addr));
    assert_eq!(b.hits(), hits);
    assert_eq!(get(&c, &ficus.url("/else")).await.0, 200);
    // A bad regexp is refused by key and field; the last good rewrite keeps working.
    let status = put(
        &routes,
        &ficus,
        "frontends/f/middlewares/rw",
        r#"{"Type":"rewrite","Middleware":{"Regexp":"(","Replacement":"x"}}"#,
    )
    .await;
    let rejected = status["rejected"].as_array().cloned().unwrap_or_default();
    assert!(
        rejected.iter().any(|r| r["key"] == "frontends/f/middlewares/rw" && r["field"] == "Middleware.Regexp"),
        "{status}"
    );
    assert_eq!(get_with(&c, &ficus.url("/old/page"), None).await.0.status, 302);
}
