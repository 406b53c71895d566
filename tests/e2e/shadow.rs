//! Shadow traffic through a real gateway: the legacy catalog answers the GTIN route and the GTIN service gets
//! a copy of every lookup; the report at `/shadow/<frontend>` counts exactly the 13-digit codes (which the
//! legacy app gets wrong) as different and the 12-digit ones as equal. A shadow backend that never answers
//! leaves every client request answered by the primary, and its copies past the queue are dropped and
//! counted. Noise learning ignores a field where the primary disagrees with itself. A copied POST carries its
//! body; one too long to hold or streamed without a length is not copied.

use crate::common;

use common::backend::TestBackend;
use common::services::StoryServices;
use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn report(ficus: &Ficus, frontend: &str) -> serde_json::Value {
    let (code, body) = get(&http1_client(), &format!("http://{}/shadow/{frontend}", ficus.admin)).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("the report is JSON")
}

/// Waits until the report has settled `n` copies (compared, dropped, failed or skipped), up to 30 s.
async fn wait_settled(ficus: &Ficus, frontend: &str, n: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = report(ficus, frontend).await;
        let settled: u64 =
            ["compared", "dropped", "errors", "skipped"].iter().map(|k| r[*k].as_u64().unwrap_or(0)).sum();
        if settled >= n {
            return r;
        }
        assert!(Instant::now() < deadline, "{settled} of {n} copies settled: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowing_the_legacy_catalog_with_the_gtin_service_reports_exactly_the_13_digit_codes_as_different() {
    let services = StoryServices::start().await;
    let (legacy_port, gtin_port) = (services.legacy_port, services.gtin_port);

    // Twelve-digit codes of real products, from the legacy app's own API.
    let c = http1_client();
    let mut upcs = Vec::new();
    for item in 100_000_001..100_000_080u64 {
        let (code, body) = get(&c, &format!("http://127.0.0.1:{legacy_port}/api/products/{item}")).await;
        if code != 200 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let upc = v["upc_ean"].as_str().unwrap_or("").to_string();
        if upc.len() == 12 && upcs.len() < 20 {
            upcs.push(upc);
        }
    }
    assert!(upcs.len() >= 10, "too few 12-digit products: {upcs:?}");

    let routes = Routes::new();
    routes.backend("legacy", &[("legacy-1", format!("127.0.0.1:{legacy_port}").parse().unwrap())]);
    routes.backend("gtin", &[("gtin-1", format!("127.0.0.1:{gtin_port}").parse().unwrap())]);
    let frontend = serde_json::json!({"Type":"http","BackendId":"legacy",
        "Route":"Method(`GET`) && Path(`/stores/<store>/gtins/<gtin>`)",
        "Shadow":{"BackendId":"gtin","Percent":100,"Methods":["GET","HEAD"]}});
    routes.put("frontends/gtin/frontend", &frontend.to_string());
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &[&format!("/stores/1/gtins/{}", upcs[0])], &[], Duration::from_secs(10)).await;
    // The probes above were 12-digit lookups: equal answers, settling on their own time.
    let warmup = report(&ficus, "gtin").await;
    let equal_before = warmup["equal"].as_u64().unwrap();

    // Every client gets the legacy app's answer: 200 for 12 digits, 404 for the 13-digit form.
    for upc in &upcs {
        assert_eq!(get(&c, &ficus.url(&format!("/stores/1/gtins/{upc}"))).await.0, 200);
        assert_eq!(get(&c, &ficus.url(&format!("/stores/1/gtins/0{upc}"))).await.0, 404);
    }
    let n = upcs.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = report(&ficus, "gtin").await;
        if r["different"].as_u64().unwrap() >= n && r["equal"].as_u64().unwrap() >= equal_before + n {
            break r;
        }
        assert!(Instant::now() < deadline, "copies not compared: {r:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r["different"], n, "{r:#}");
    assert_eq!(r["compared"], r["equal"].as_u64().unwrap() + n, "{r:#}");
    assert_eq!(r["dropped"], 0);
    assert_eq!(r["errors"], 0);
    assert_eq!(r["different_by_field"]["status"], n, "{r:#}");
    for pair in r["last_different"].as_array().unwrap() {
        let target = pair["target"].as_str().unwrap();
        let code = target.rsplit('/').next().unwrap();
        assert_eq!(code.len(), 13, "{pair:#}");
        assert_eq!(pair["primary"]["status"], 404);
        assert_eq!(pair["shadow"]["status"], 200);
        assert!(pair["shadow"]["body"].as_str().unwrap().contains(&code[1..]), "{pair:#}");
    }
    assert_eq!(ficus.metric("ficus_shadow_total{frontend=\"gtin\",result=\"different\"}").await, n as f64);
    // The dashboard names the shadow and links its report.
    let (_, data) = get(&c, &format!("http://{}/dashboard/data.json", ficus.admin)).await;
    let data: serde_json::Value = serde_json::from_slice(&data).expect("dashboard JSON");
    let row = data["frontends"]["items"].as_array().and_then(|a| a.iter().find(|f| f["id"] == "gtin")).cloned();
    let row = row.unwrap_or_else(|| panic!("no gtin row: {data:#}"));
    assert_eq!(row["shadow"], serde_json::json!({"backend":"gtin","percent":100,"report":"/shadow/gtin"}));
    let (_, page) = get(&c, &format!("http://{}/dashboard/", ficus.admin)).await;
    assert!(String::from_utf8_lossy(&page).contains(r#"<a href="/shadow/gtin">comparison report</a>"#));
}

/// A listener that accepts connections and never answers on them.
async fn hanging_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_shadow_backend_never_holds_up_a_client_and_its_copies_past_the_queue_are_dropped() {
    let primary = TestBackend::start("primary").await;
    let (hang, _task) = hanging_server().await;
    let routes = Routes::new();
    routes.backend("primary", &[("s1", primary.addr)]);
    // A Read timeout far longer than the test: the shadow's copies stay in flight until it ends.
    routes.put("backends/hang/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"10m"}}}"#);
    routes.put("backends/hang/servers/s1", &format!(r#"{{"URL":"http://{hang}"}}"#));
    routes.frontend("plain", "primary", "PathPrefix(`/plain`)");
    let shadowed = serde_json::json!({"Type":"http","BackendId":"primary","Route":"PathPrefix(`/shadowed`)",
        "Shadow":{"BackendId":"hang","Queue":4}});
    routes.put("frontends/shadowed/frontend", &shadowed.to_string());
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/plain/x"], &[], Duration::from_secs(10)).await;
    let warm = report(&ficus, "shadowed").await;
    assert_eq!(warm["compared"], 0);

    // The same run, interleaved: one request without a shadow, one with, 200 times.
    let c = http1_client();
    let (mut plain, mut shadowed) = (Vec::new(), Vec::new());
    for i in 0..200 {
        for (path, times) in [("/plain/x", &mut plain), ("/shadowed/x", &mut shadowed)] {
            let t = Instant::now();
            let (code, _) = tokio::time::timeout(Duration::from_secs(30), get(&c, &ficus.url(path)))
                .await
                .unwrap_or_else(|_| panic!("request {i} to {path} held up"));
            assert_eq!(code, 200, "{path}");
            times.push(t.elapsed());
        }
    }
    // At most 32 copies in flight (if the idle-priority worker got to take them) and 4 queued: at least 164
    // were dropped, at most 196, and none was compared.
    let r = wait_settled(&ficus, "shadowed", 164).await;
    let dropped = r["dropped"].as_u64().unwrap();
    assert!((164..=196).contains(&dropped), "{r:#}");
    assert_eq!(r["compared"], 0, "{r:#}");
    let metric = ficus.metric("ficus_shadow_total{frontend=\"shadowed\",result=\"dropped\"}").await;
    assert_eq!(metric, dropped as f64);
    plain.sort();
    shadowed.sort();
    println!(
        "client latency without shadow p50 {:?} p99 {:?}; with a hanging shadow p50 {:?} p99 {:?}",
        percentile(&plain, 0.5),
        percentile(&plain, 0.99),
        percentile(&shadowed, 0.5),
        percentile(&shadowed, 0.99)
    );
}

/// A JSON backend whose answers carry a counter (different on every request, noise) and its name. The
/// counter starts at `first`: two servers given far-apart starts never answer the same number.
async fn counting_server(name: &'static str, first: u64) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(first));
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let n = n.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let k = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let body = serde_json::json!({"n": k, "who": name, "path": req.uri().path()}).to_string();
                    let resp = hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        .unwrap();
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_learned_from_the_primary_and_configured_paths_are_not_differences() {
    let (primary, _p) = counting_server("primary", 0).await;
    let (shadow, _s) = counting_server("shadow", 1_000_000).await;
    let routes = Routes::new();
    routes.backend("primary", &[("s1", primary)]);
    routes.backend("shadow", &[("s1", shadow)]);
    // `learned`: the counter is learned as noise (the primary disagrees with itself there), the name is an
    // ignored path. `raw`: neither, so both fields differ on every copy.
    let learned = serde_json::json!({"Type":"http","BackendId":"primary","Route":"PathPrefix(`/learned`)",
        "Shadow":{"BackendId":"shadow","LearnNoise":true,"IgnorePaths":["/who"]}});
    let raw = serde_json::json!({"Type":"http","BackendId":"primary","Route":"PathPrefix(`/raw`)",
        "Shadow":{"BackendId":"shadow"}});
    routes.put("frontends/learned/frontend", &learned.to_string());
    routes.put("frontends/raw/frontend", &raw.to_string());
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/learned/x", "/raw/x"], &[], Duration::from_secs(10)).await;
    let settled = |r: &serde_json::Value| -> u64 {
        ["compared", "dropped", "errors", "skipped"].iter().map(|k| r[*k].as_u64().unwrap_or(0)).sum()
    };
    let c = http1_client();
    for f in ["learned", "raw"] {
        let before = report(&ficus, f).await;
        let different_before = before["different"].as_u64().unwrap();
        for _ in 0..20 {
            assert_eq!(get(&c, &ficus.url(&format!("/{f}/x"))).await.0, 200);
        }
        let r = wait_settled(&ficus, f, settled(&before) + 20).await;
        assert_eq!(r["errors"], 0, "{r:#}");
        if f == "learned" {
            assert_eq!(r["different"].as_u64().unwrap(), different_before, "{r:#}");
            assert_eq!(r["noise"], serde_json::json!(["body:/n"]), "{r:#}");
        } else {
            assert_eq!(r["different"].as_u64().unwrap() - different_before, 20, "{r:#}");
            assert!(r["different_by_field"]["body:/n"].as_u64().unwrap() >= 20, "{r:#}");
            assert!(r["different_by_field"]["body:/who"].as_u64().unwrap() >= 20, "{r:#}");
            assert_eq!(r["noise"], serde_json::json!([]));
        }
    }
}

/// A JSON backend answering with the request body it read, keeping every body it got.
async fn echo_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<bytes::Bytes>>>, tokio::task::JoinHandle<()>) {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let got: Arc<Mutex<Vec<bytes::Bytes>>> = Arc::default();
    let seen = got.clone();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        seen.lock().unwrap().push(body.clone());
                        let answer = serde_json::json!({"len": body.len(), "body": String::from_utf8_lossy(&body)});
                        let resp = hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from(answer.to_string())))
                            .unwrap();
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, got, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_post_carries_its_body_and_bodies_too_long_or_streamed_are_skipped() {
    let (primary, primary_got, _p) = echo_server().await;
    let (shadow, shadow_got, _s) = echo_server().await;
    let routes = Routes::new();
    routes.backend("primary", &[("s1", primary)]);
    routes.backend("shadow", &[("s1", shadow)]);
    let frontend = serde_json::json!({"Type":"http","BackendId":"primary","Route":"PathPrefix(`/`)",
        "Shadow":{"BackendId":"shadow","Methods":["POST"]}});
    routes.put("frontends/f/frontend", &frontend.to_string());
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;

    // Declared lengths within the limit: both sides get the very bytes, and answer alike.
    let probes = primary_got.lock().unwrap().len();
    let c = http1_client();
    for i in 0..5 {
        let body = format!(r#"{{"sku":{i},"note":"copied"}}"#);
        let req = http::Request::post(ficus.url("/orders"))
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let (parts, answer) = request_full(&c, req).await;
        assert_eq!(parts.status, 200);
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["body"], body.as_str());
    }
    let r = wait_settled(&ficus, "f", 5).await;
    assert_eq!((r["equal"].as_u64(), r["skipped"].as_u64()), (Some(5), Some(0)), "{r:#}");
    // The same bodies on both sides. Not necessarily in the same order: the worker runs copies concurrently (up
    // to its in-flight bound), on as many connections, so the shadow server may record them in another order.
    let mut shadow_bodies = shadow_got.lock().unwrap().clone();
    let mut primary_bodies = primary_got.lock().unwrap()[probes..].to_vec();
    shadow_bodies.sort();
    primary_bodies.sort();
    assert_eq!(shadow_bodies, primary_bodies);

    // Past the limit (64 KiB), or streamed without a length: the primary gets it whole, no copy is made.
    let big = bytes::Bytes::from(vec![b'b'; 100 * 1024]);
    let (parts, answer) =
        request_full(&c, http::Request::post(ficus.url("/big")).body(http_body_util::Full::new(big)).unwrap()).await;
    assert_eq!(parts.status, 200);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&answer).unwrap()["len"], 100 * 1024);
    let mut conn = RawConn::connect(ficus.addr).await;
    conn.send(b"POST /streamed HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await;
    conn.send(b"5\r\nhello\r\n0\r\n\r\n").await;
    let (code, answer) = tokio::time::timeout(Duration::from_secs(10), conn.response()).await.expect("an answer");
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&answer).unwrap()["body"], "hello");
    let r = report(&ficus, "f").await;
    assert_eq!((r["compared"].as_u64(), r["skipped"].as_u64()), (Some(5), Some(2)), "{r:#}");
    assert_eq!(shadow_got.lock().unwrap().len(), 5);
    assert_eq!(primary_got.lock().unwrap().len(), probes + 7);
}
