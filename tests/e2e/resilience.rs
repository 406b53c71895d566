//! Resilience through a real gateway: active health checks, passive ejection, failing open, failover with
//! its retry budget, and the settings that drive them refused by key and field. The upstreams are real
//! loopback servers that can be killed (every connection closed) and restarted on the same port, and that
//! count what reaches them.

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// What a [`Upstream`] counts and how it answers; shared by its incarnations across a kill and restart.
#[derive(Default)]
struct Counters {
    /// Requests other than health checks.
    requests: AtomicUsize,
    /// `POST /upload` requests, whether or not their body was read.
    uploads: AtomicUsize,
    checks: AtomicUsize,
    /// Body bytes received by `/upload`.
    upload_bytes: AtomicUsize,
    /// The status answered to requests (0: 200).
    answer: AtomicU16,
    /// The status answered to health checks (0: 200).
    check_answer: AtomicU16,
    /// Requests are counted and never answered (until the server is killed).
    hold: AtomicBool,
}

/// A loopback HTTP server that can be killed (listener and every open connection closed at once, as when its
/// process dies) and started again on the same port.
struct Upstream {
    name: String,
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut u = Upstream { name: name.to_string(), addr, counters: Arc::default(), task: None };
        u.serve(listener);
        u
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, counters) = (self.name.clone(), self.counters.clone());
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set, so aborting the accept task closes every one of them.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (name, counters) = (name.clone(), counters.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req| answer(name.clone(), counters.clone(), req));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
                while conns.try_join_next().is_some() {}
            }
        }));
    }

    fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Starts again on the same port, once the killed incarnation has let go of it.
    async fn restart(&mut self) {
        self.kill();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 200, "cannot bind {} again: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        };
        self.serve(listener);
    }

    fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    fn checks(&self) -> usize {
        self.counters.checks.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn answer(name: String, c: Arc<Counters>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = if req.uri().path() == "/health" {
        c.checks.fetch_add(1, Ordering::SeqCst);
        c.check_answer.load(Ordering::SeqCst)
    } else {
        c.requests.fetch_add(1, Ordering::SeqCst);
        if c.hold.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if req.uri().path() == "/upload" {
            c.uploads.fetch_add(1, Ordering::SeqCst);
            // Read the whole body, as a real upload handler would.
            if let Ok(body) = req.into_body().collect().await {
                c.upload_bytes.fetch_add(body.to_bytes().len(), Ordering::SeqCst);
            }
        }
        c.answer.load(Ordering::SeqCst)
    };
    let mut resp = Response::new(Full::new(Bytes::from(name)));
    if status != 0 {
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    }
    Ok(resp)
}

/// Routes `/` to backend `b` with the three servers and the given backend `Settings`.
fn backend(routes: &Routes, settings: &str, servers: &[&Upstream]) {
    routes.put("backends/b/backend", &format!(r#"{{"Type":"http","Settings":{settings}}}"#));
    for s in servers {
        routes.put(&format!("backends/b/servers/{}", s.name), &format!(r#"{{"URL":"http://{}"}}"#, s.addr));
    }
    routes.frontend("f", "b", "PathPrefix(`/`)");
}

/// Frontend `f` (all paths to backend `b`) with the given frontend `Settings`.
fn frontend_with(routes: &Routes, settings: &str) {
    let v = format!(r#"{{"Type":"http","BackendId":"b","Route":"PathPrefix(`/`)","Settings":{settings}}}"#);
    routes.put("frontends/f/frontend", &v);
}

async fn three() -> [Upstream; 3] {
    [Upstream::start("s1").await, Upstream::start("s2").await, Upstream::start("s3").await]
}

/// A server's health as `/status` shows it.
async fn health_state(ficus: &Ficus, server: &str) -> String {
    let status = ficus.status().await;
    let servers = status["servers"].as_array().cloned().unwrap_or_default();
    servers
        .iter()
        .find(|s| s["server"] == server)
        .and_then(|s| s["state"].as_str().map(str::to_string))
        .unwrap_or_else(|| "absent".to_string())
}

async fn wait_state(ficus: &Ficus, server: &str, state: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = health_state(ficus, server).await;
        if now == state {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{server} is {now}, never {state}; status {}\nlog:\n{}",
            ficus.status().await,
            ficus.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `n` GETs one after another; returns the count per status.
async fn gets(ficus: &Ficus, n: usize) -> BTreeMap<u16, usize> {
    let client = http1_client();
    let mut out = BTreeMap::new();
    for _ in 0..n {
        *out.entry(get(&client, &ficus.url("/x")).await.0).or_default() += 1;
    }
    out
}

const CHECKS: &str =
    r#"{"HealthCheck":{"Path":"/health","Interval":"100ms","Timeout":"100ms","Healthy":2,"Unhealthy":2}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_failing_its_checks_gets_no_requests_and_returns_after_passing_again() {
    let mut servers = three().await;
    let routes = Routes::new();
    backend(&routes, CHECKS, &servers.iter().collect::<Vec<_>>());
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    wait_for("every server to be checked", || servers.iter().all(|s| s.checks() >= 2)).await;

    servers[1].kill();
    wait_state(&ficus, "s2", "failing").await;
    assert!(ficus.log_shows("server failed its health checks").await);
    assert_eq!(ficus.metric("ficus_upstream_health{backend=\"b\",server=\"s2\"}").await, 0.0);
    // Taken out: every request goes to the two live servers, none fails.
    let before = [servers[0].requests(), servers[2].requests()];
    assert_eq!(gets(&ficus, 40).await, BTreeMap::from([(200, 40)]));
    assert_eq!(servers[0].requests() + servers[2].requests() - before[0] - before[1], 40);

    servers[1].restart().await;
    wait_state(&ficus, "s2", "healthy").await;
    assert!(ficus.log_shows("server passed its health checks").await);
    let before = servers[1].requests();
    assert_eq!(gets(&ficus, 30).await, BTreeMap::from([(200, 30)]));
    assert!(servers[1].requests() > before, "s2 takes requests again");
    assert_eq!(ficus.metric("ficus_upstream_health{backend=\"b\",server=\"s2\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_stop_when_a_server_leaves_and_survive_a_reload_that_keeps_it() {
    let servers = three().await;
    let routes = Routes::new();
    backend(&routes, CHECKS, &servers.iter().collect::<Vec<_>>());
    let ficus = Ficus::start(routes.path()).await;
    wait_for("every server to be checked", || servers.iter().all(|s| s.checks() >= 2)).await;
    servers[0].counters.check_answer.store(503, Ordering::SeqCst);
    wait_state(&ficus, "s1", "failing").await;

    // A reload that changes something else keeps s1's state (and one checker per server: s1 stays failing).
    let generation = ficus.generation().await;
    routes.frontend("g", "b", "PathPrefix(`/other`)");
    ficus.wait_generation_above(generation).await;
    assert_eq!(health_state(&ficus, "s1").await, "failing");

    let s3_health = "ficus_upstream_health{backend=\"b\",server=\"s3\"} 1\n";
    assert!(ficus.metrics_text().await.contains(s3_health));
    // s3 leaves: its checks stop.
    let generation = ficus.generation().await;
    routes.delete("backends/b/servers/s3");
    ficus.wait_generation_above(generation).await;
    let stopped_at = servers[2].checks();
    let s2_at = servers[1].checks();
    wait_for("s2 to be checked 5 more times", || servers[1].checks() >= s2_at + 5).await;
    assert!(servers[2].checks() <= stopped_at + 1, "s3 is still checked after it left");
    // Its health series left `/metrics` with it; the failing s1 is still reported as such.
    let metrics = ficus.metrics_text().await;
    assert!(!metrics.contains("ficus_upstream_health{backend=\"b\",server=\"s3\"}"), "{metrics}");
    assert!(metrics.contains("ficus_upstream_health{backend=\"b\",server=\"s1\"} 0\n"), "{metrics}");
    assert!(metrics.contains("ficus_upstream_health{backend=\"b\",server=\"s2\"} 1\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_server_fails_its_checks_the_backend_fails_open() {
    let servers = three().await;
    let routes = Routes::new();
    backend(&routes, CHECKS, &servers.iter().collect::<Vec<_>>());
    let ficus = Ficus::start(routes.path()).await;
    for s in &servers {
        s.counters.check_answer.store(500, Ordering::SeqCst);
    }
    for s in ["s1", "s2", "s3"] {
        wait_state(&ficus, s, "failing").await;
    }
    // The servers still answer requests: better that than a 503 for everyone.
    assert_eq!(gets(&ficus, 9).await, BTreeMap::from([(200, 9)]));
    assert!(ficus.log_shows("fail open").await);
    assert_eq!(ficus.log_text().matches("fail open").count(), 1, "logged once per transition");
    servers[0].counters.check_answer.store(0, Ordering::SeqCst);
    wait_state(&ficus, "s1", "healthy").await;
    let before = servers[0].requests();
    assert_eq!(gets(&ficus, 10).await, BTreeMap::from([(200, 10)]));
    assert_eq!(servers[0].requests(), before + 10, "only the healthy server takes requests");
    assert!(ficus.log_shows("no longer failing open").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_a_server_but_never_more_than_the_allowed_share() {
    let servers = three().await;
    let routes = Routes::new();
    let settings = r#"{"Outlier":{"Consecutive":3,"Ejection":"1m","MaxEjectedPercent":34}}"#;
    backend(&routes, settings, &servers.iter().collect::<Vec<_>>());
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    servers[0].counters.answer.store(503, Ordering::SeqCst);
    servers[1].counters.answer.store(502, Ordering::SeqCst);
    let before = [servers[0].requests(), servers[1].requests()];
    // Round robin over three: 3 failures each within the first 9 requests; only one of the two may go.
    gets(&ficus, 30).await;
    let states = [health_state(&ficus, "s1").await, health_state(&ficus, "s2").await];
    assert_eq!(states.iter().filter(|s| *s == "ejected").count(), 1, "{states:?}\n{}", ficus.log_text());
    let (ejected, kept) = if states[0] == "ejected" { (0, 1) } else { (1, 0) };
    let ejected_hits = servers[ejected].requests();
    assert_eq!(ejected_hits - before[ejected], 3, "ejected after exactly 3 failures in a row");
    assert!(servers[kept].requests() - before[kept] > 3, "the other failing server still takes requests");
    gets(&ficus, 20).await;
    assert_eq!(servers[ejected].requests(), ejected_hits, "no requests while ejected");
    assert!(ficus.metric("ficus_upstream_ejections_total").await >= 1.0);
    assert!(ficus.log_shows("server ejected").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_health_settings_are_refused_by_field_and_the_last_good_value_keeps_checking() {
    let servers = three().await;
    let routes = Routes::new();
    backend(&routes, CHECKS, &servers.iter().collect::<Vec<_>>());
    let ficus = Ficus::start(routes.path()).await;
    wait_for("every server to be checked", || servers.iter().all(|s| s.checks() >= 1)).await;
    routes.put(
        "backends/b/backend",
        r#"{"Type":"http","Settings":{"HealthCheck":{"Path":"/health","Interval":"1s","Timeout":"5s"}}}"#,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = ficus.status().await;
        let rejected = status["rejected"].as_array().cloned().unwrap_or_default();
        if let Some(r) = rejected.iter().find(|r| r["key"] == "backends/b/backend") {
            assert_eq!(r["field"], "Settings.HealthCheck.Timeout", "{r}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refused: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at = servers[0].checks();
    wait_for("the last good checks to go on", || servers[0].checks() >= at + 3).await;
}

/// Clients sending GETs in a loop until told to stop; counts answers by status (0: no answer at all).
struct SteadyLoad {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<u16, usize>>>,
}

impl SteadyLoad {
    fn start(ficus: &Ficus, clients: usize) -> SteadyLoad {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let tasks = (0..clients)
            .map(|_| {
                let (url, rx) = (ficus.url("/x"), rx.clone());
                tokio::spawn(async move {
                    let client = http1_client();
                    let mut out = BTreeMap::new();
                    while !*rx.borrow() {
                        let req = http::Request::get(&url).body(Full::default()).expect("request");
                        let status = match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                            Ok(Ok(resp)) => {
                                let status = resp.status().as_u16();
                                match resp.into_body().collect().await {
                                    Ok(_) => status,
                                    Err(_) => 0,
                                }
                            }
                            _ => 0,
                        };
                        *out.entry(status).or_default() += 1;
                    }
                    out
                })
            })
            .collect();
        SteadyLoad { stop, tasks }
    }

    async fn stop(self) -> BTreeMap<u16, usize> {
        let _ = self.stop.send(true);
        let mut total = BTreeMap::new();
        for t in self.tasks {
            for (status, n) in t.await.expect("load task") {
                *total.entry(status).or_default() += n;
            }
        }
        total
    }
}

const FAILOVER: &str = r#"{"FailoverPredicate":"IsNetworkError() && Attempts() <= 2"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failover_no_request_fails_when_a_server_dies_under_load() {
    let mut servers = three().await;
    let routes = Routes::new();
    // Passive ejection takes the dead server out after two failures, so retries stay few and within budget.
    backend(&routes, r#"{"Outlier":{"Consecutive":2}}"#, &servers.iter().collect::<Vec<_>>());
    frontend_with(&routes, FAILOVER);
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    let load = SteadyLoad::start(&ficus, 4);
    wait_for("load on every server", || servers.iter().all(|s| s.requests() >= 20)).await;
    servers[1].kill();
    let at = servers[0].requests() + servers[2].requests();
    wait_for("200 more requests after the kill", || servers[0].requests() + servers[2].requests() >= at + 200).await;
    let counts = load.stop().await;
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), [200], "{counts:?}\n{}", ficus.log_text());
    assert!(ficus.metric("ficus_retries_total{frontend=\"f\",outcome=\"retried\"}").await >= 1.0);
    assert_eq!(ficus.metric("ficus_retries_total{frontend=\"f\",outcome=\"budget_exhausted\"}").await, 0.0);
    assert_eq!(health_state(&ficus, "s2").await, "ejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_in_flight_on_a_server_that_dies_is_retried_elsewhere() {
    // A busy server dies with many requests on it: they all fail at once, and each needs its retry from the
    // budget in the same instant. With a saved burst of 10 (plus the floor of 3 a second) some of these 40
    // were refused and answered 502, as one request was in the kill bench.
    let mut servers = [Upstream::start("s1").await, Upstream::start("s2").await];
    let routes = Routes::new();
    backend(&routes, "{}", &servers.iter().collect::<Vec<_>>());
    frontend_with(&routes, FAILOVER);
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    let before = servers[0].requests();
    servers[0].counters.hold.store(true, Ordering::SeqCst);
    let held = 40;
    let client = http1_client();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..2 * held {
        let (client, url) = (client.clone(), ficus.url("/x"));
        calls.spawn(async move { get(&client, &url).await.0 });
    }
    wait_for("requests held by the server that will die", || servers[0].requests() >= before + held).await;
    servers[0].kill();
    let mut counts = BTreeMap::new();
    while let Some(status) = calls.join_next().await {
        *counts.entry(status.expect("request task")).or_insert(0usize) += 1;
    }
    assert_eq!(counts, BTreeMap::from([(200, 2 * held)]), "{}", ficus.log_text());
    let retried = ficus.metric("ficus_retries_total{frontend=\"f\",outcome=\"retried\"}").await;
    assert!(retried >= held as f64, "{retried} retries for {held} requests cut");
    assert_eq!(ficus.metric("ficus_retries_total{frontend=\"f\",outcome=\"budget_exhausted\"}").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_failover_requests_fail_when_a_server_dies() {
    // The control for the test above: the same kill without a predicate fails requests.
    let mut servers = three().await;
    let routes = Routes::new();
    backend(&routes, "{}", &servers.iter().collect::<Vec<_>>());
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    servers[1].kill();
    let counts = gets(&ficus, 9).await;
    assert_eq!(counts.get(&502), Some(&3), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_503_gets_retries_only_within_the_budget() {
    let servers = three().await;
    for s in &servers {
        s.counters.answer.store(503, Ordering::SeqCst);
    }
    let routes = Routes::new();
    backend(&routes, "{}", &servers.iter().collect::<Vec<_>>());
    frontend_with(
        &routes,
        r#"{"FailoverPredicate":"ResponseCode() == 503 && Attempts() <= 3","RetryBudget":{"Percent":20,"MinPerSecond":3}}"#,
    );
    let ficus = Ficus::start(routes.path()).await;
    let client = http1_client();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&client, &ficus.url("/x")).await.0 != 503 {
        assert!(std::time::Instant::now() < deadline, "never routed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before: usize = servers.iter().map(Upstream::requests).sum();
    let started = std::time::Instant::now();
    let n = 300;
    let counts = gets(&ficus, n).await;
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert_eq!(counts, BTreeMap::from([(503, n)]));
    let sent = servers.iter().map(Upstream::requests).sum::<usize>() - before;
    let retries = sent - n;
    // 20% of the requests, the saved burst of 100, the floor of 3 a second (and the first request's share);
    // without a budget the predicate would allow 3 retries of each, 900.
    let bound = n / 5 + 100 + 3 * seconds + 1;
    assert!(retries <= bound, "{retries} retries for {n} requests, bound {bound}");
    assert!(retries >= n / 5, "the budget allows {} retries and they are used: {retries}", n / 5);
    let metric = ficus.metric("ficus_retries_total{frontend=\"f\",outcome=\"retried\"}").await as usize;
    assert!(metric >= retries, "every retry the servers saw is counted: {metric} < {retries}");
    let status = ficus.status().await;
    assert_eq!(status["failover"][0]["frontend"], "f", "{status}");
    assert_eq!(status["failover"][0]["retried"].as_u64(), Some(metric as u64), "{status}");
    assert!(status["failover"][0]["budget_exhausted"].as_u64().unwrap_or(0) >= 1, "{status}");
    assert!(ficus.metric("ficus_retries_total{frontend=\"f\",outcome=\"budget_exhausted\"}").await >= 1.0);
    // A refused retry is told apart in the log, beside the failed request's own line.
    let log = ficus.log_text();
    assert!(log.contains("no failover: retry budget exhausted"), "{log}");

    // The frontend's value changes mid-outage: the spent budget is kept (a fresh one would allow the saved
    // burst of 100 at once, two retries for each of these 30), and so are the counts.
    let generation = ficus.generation().await;
    frontend_with(
        &routes,
        r#"{"FailoverPredicate":"ResponseCode() == 503 && Attempts() <= 2","RetryBudget":{"Percent":20,"MinPerSecond":3}}"#,
    );
    ficus.wait_generation_above(generation).await;
    let before: usize = servers.iter().map(Upstream::requests).sum();
    let started = std::time::Instant::now();
    assert_eq!(gets(&ficus, 30).await, BTreeMap::from([(503, 30)]));
    let seconds = started.elapsed().as_secs() as usize + 1;
    let retries = servers.iter().map(Upstream::requests).sum::<usize>() - before - 30;
    let bound = 30 / 5 + 3 * seconds + 1;
    assert!(retries <= bound, "{retries} retries for 30 requests after the change, bound {bound}");
    let status = ficus.status().await;
    assert!(status["failover"][0]["retried"].as_u64().unwrap_or(0) >= metric as u64, "counts kept: {status}");
}

/// A POST to `/upload` with a chunked body of `size` bytes, over its own connection; returns the status.
async fn streamed_post(ficus: &Ficus, size: usize) -> u16 {
    let mut conn = RawConn::connect(ficus.addr).await;
    conn.send(b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").await;
    let chunk = vec![b'p'; 16 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        conn.send(format!("{n:x}\r\n").as_bytes()).await;
        conn.send(&chunk[..n]).await;
        conn.send(b"\r\n").await;
        left -= n;
    }
    conn.send(b"0\r\n\r\n").await;
    tokio::time::timeout(Duration::from_secs(10), conn.response()).await.expect("answer within 10 s").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_streamed_post_is_never_sent_twice_and_a_small_one_is_replayed_whole() {
    let servers = three().await;
    for s in &servers {
        s.counters.answer.store(503, Ordering::SeqCst);
    }
    let routes = Routes::new();
    backend(&routes, "{}", &servers.iter().collect::<Vec<_>>());
    frontend_with(
        &routes,
        r#"{"FailoverPredicate":"ResponseCode() == 503 && Attempts() < 2","RetryBudget":{"Percent":100}}"#,
    );
    let ficus = Ficus::start(routes.path()).await;
    let client = http1_client();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&client, &ficus.url("/x")).await.0 != 503 {
        assert!(std::time::Instant::now() < deadline, "never routed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let uploads = || servers.iter().map(|s| s.counters.uploads.load(Ordering::SeqCst)).sum::<usize>();
    let bytes = || servers.iter().map(|s| s.counters.upload_bytes.load(Ordering::SeqCst)).sum::<usize>();

    // Streamed (chunked) and large: each goes out once, whatever the predicate says.
    for _ in 0..3 {
        assert_eq!(streamed_post(&ficus, 1 << 20).await, 503);
    }
    assert_eq!(uploads(), 3, "a streamed POST was sent twice");
    assert_eq!(bytes(), 3 << 20);
    // Large with a declared length: also once.
    let big = http::Request::post(ficus.url("/upload")).body(Full::new(Bytes::from(vec![b'q'; 100_000]))).expect("req");
    assert_eq!(request(&client, big).await.0, 503);
    assert_eq!(uploads(), 4, "a POST above the replay limit was sent twice");
    assert!(ficus.metric("ficus_retries_total{frontend=\"f\",outcome=\"not_replayable\"}").await >= 4.0);

    // Small with a declared length: kept, and sent whole to a second server.
    let small =
        http::Request::post(ficus.url("/upload")).body(Full::new(Bytes::from_static(b"0123456789"))).expect("req");
    assert_eq!(request(&client, small).await.0, 503);
    assert_eq!(uploads(), 6, "the small POST went to two servers");
    assert_eq!(bytes(), (3 << 20) + 100_000 + 20, "each attempt carried the whole body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_failover_predicate_is_refused_by_field_and_the_last_good_frontend_serves() {
    let servers = three().await;
    let routes = Routes::new();
    backend(&routes, "{}", &servers.iter().collect::<Vec<_>>());
    frontend_with(&routes, FAILOVER);
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    frontend_with(&routes, r#"{"FailoverPredicate":"IsNetworkError() && Attempts() <= \"2\""}"#);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = ficus.status().await;
        let rejected = status["rejected"].as_array().cloned().unwrap_or_default();
        if let Some(r) = rejected.iter().find(|r| r["key"] == "frontends/f/frontend") {
            assert_eq!(r["field"], "Settings.FailoverPredicate", "{r}");
            assert!(r["message"].as_str().unwrap_or("").contains("position"), "{r}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refused: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gets(&ficus, 6).await, BTreeMap::from([(200, 6)]));
}
