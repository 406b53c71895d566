//! Control-plane latency against real parts: a real etcd child process, a real `ficus serve --etcd` child
//! process (the release binary), an in-process upstream and an in-process etcd client. It measures what an
//! operator sees, from the `put` call to the first request routed by the new table, with 10,000 frontends
//! present (for a route, a server, and a middleware: the first request its new value is enforced on); how long after the last put a burst of 1,000 puts is fully applied; and the gateway's RSS before
//! and after 100,000 updates.
//!
//! Run with `cargo bench --bench etcd_apply` (set `ETCD_BENCH_UPDATES` to change the 100,000). etcd keeps its
//! data in /dev/shm so the numbers are Ficus's, not the disk's fsync.

use bytes::Bytes;
use etcd_client::{Client, Txn, TxnOp};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const P: &str = "/vulcand";
const FRONTENDS: usize = 10_000;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// An upstream answering `body` to everything, so a request shows which server it reached.
async fn upstream(body: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        body.as_bytes(),
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let updates: usize = std::env::var("ETCD_BENCH_UPDATES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::Builder::new().prefix("ficus-bench-etcd").tempdir_in("/dev/shm").expect("tmpfs dir");
    let (cport, pport) = (port(), port());
    let client_url = format!("http://127.0.0.1:{cport}");
    let peer_url = format!("http://127.0.0.1:{pport}");
    let _etcd = Proc(
        Command::new("/usr/bin/etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--heartbeat-interval", "10", "--election-timeout", "50", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd"),
    );
    let mut etcd = None;
    for _ in 0..200 {
        if let Ok(mut c) = Client::connect([client_url.as_str()], None).await {
            if c.get("probe", None).await.is_ok() {
                etcd = Some(c);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut etcd = etcd.expect("etcd up within 10 s");

    let up = upstream("ok").await;
    let up2 = upstream("two").await;
    etcd.put(format!("{P}/backends/b/backend"), r#"{"Type":"http"}"#, None).await.expect("put");
    etcd.put(format!("{P}/backends/b/servers/s1"), format!(r#"{{"URL":"http://{up}"}}"#), None).await.expect("put");
    let t = Instant::now();
    for chunk in (0..FRONTENDS).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|i| {
                let host = format!("h{}.example.com", i / 10);
                let v =
                    format!(r#"{{"Type":"http","BackendId":"b","Route":"Host(`{host}`) && PathPrefix(`/api/{i}`)"}}"#);
                TxnOp::put(format!("{P}/frontends/f{i}/frontend"), v, None)
            })
            .collect();
        etcd.txn(Txn::new().and_then(ops)).await.expect("seed txn");
    }
    eprintln!("seeded {FRONTENDS} frontends in {:?}", t.elapsed());

    let (listen, admin) = (port(), port());
    let ficus = Proc(
        Command::new(env!("CARGO_BIN_EXE_ficus"))
            .args(["serve", "--listen", &format!("127.0.0.1:{listen}"), "--admin", &format!("127.0.0.1:{admin}")])
            .args(["--etcd", &client_url, "--no-access-log", "--threads", "2"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ficus"),
    );
    let pid = ficus.0.id();
    let http: HttpClient<_, Full<Bytes>> = HttpClient::builder(TokioExecutor::new()).build_http();
    let get_host = |host: &'static str, path: String| {
        let http = http.clone();
        async move {
            let uri: http::Uri = format!("http://127.0.0.1:{listen}{path}").parse().expect("uri");
            let mut req = http::Request::get(uri).body(Full::new(Bytes::new())).expect("request");
            if !host.is_empty() {
                req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static(host));
            }
            match http.request(req).await {
                Ok(r) => {
                    let code = r.status().as_u16();
                    let body = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    (code, body)
                }
                Err(_) => (0, Bytes::new()),
            }
        }
    };
    let get = |path: String| get_host("", path);
    let t = Instant::now();
    while get("/__ready".into()).await.0 != 404 {
        assert!(t.elapsed() < Duration::from_secs(30), "ficus not up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = |path: &'static str| {
        let http = http.clone();
        async move {
            let uri: http::Uri = format!("http://127.0.0.1:{admin}{path}").parse().expect("uri");
            let r = http.get(uri).await.expect("admin");
            let b = r.into_body().collect().await.expect("body").to_bytes();
            serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default()
        }
    };
    while status("/status").await["counts"]["frontends"].as_u64() != Some(FRONTENDS as u64) {
        assert!(t.elapsed() < Duration::from_secs(60), "initial table not loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("ficus loaded {FRONTENDS} frontends in {:?}; RSS {} KiB", t.elapsed(), rss_kib(pid));

    // 1. put → first request routed by the new table, 10,000 frontends present.
    let mut lat = Vec::new();
    for n in 0..300 {
        let path = format!("/probe/{n}");
        let v = format!(r#"{{"Type":"http","BackendId":"b","Route":"Path(`{path}`)"}}"#);
        let start = Instant::now();
        etcd.put(format!("{P}/frontends/probe/frontend"), v, None).await.expect("put");
        loop {
            if get(path.clone()).await.0 == 200 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "probe {n} never routed");
        }
        lat.push(start.elapsed());
    }
    let warm = lat.split_off(20);
    let mut sorted = warm;
    sorted.sort();
    println!(
        "put -> first routed request, {FRONTENDS} frontends, {} samples: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        sorted.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1]
    );

    // 1b. server put → first request that reaches the new server: in a backend one frontend uses, and in the
    // backend all 10,000 frontends use (each of them is recompiled against the new backend).
    etcd.put(format!("{P}/backends/pb/backend"), r#"{"Type":"http"}"#, None).await.expect("put");
    etcd.put(format!("{P}/backends/pb/servers/s1"), format!(r#"{{"URL":"http://{up}"}}"#), None).await.expect("put");
    let pf = r#"{"Type":"http","BackendId":"pb","Route":"Path(`/pb`)"}"#;
    etcd.put(format!("{P}/frontends/pf/frontend"), pf, None).await.expect("put");
    for (what, backend, host, path) in
        [("one frontend uses", "pb", "", "/pb"), ("all 10,000 frontends use", "b", "h0.example.com", "/api/5")]
    {
        let mut lat = Vec::new();
        for n in 0..120 {
            let (addr, body) = if n % 2 == 0 { (up2, "two") } else { (up, "ok") };
            let start = Instant::now();
            let v = format!(r#"{{"URL":"http://{addr}"}}"#);
            etcd.put(format!("{P}/backends/{backend}/servers/s1"), v, None).await.expect("put");
            loop {
                let (code, got) = get_host(host, path.to_string()).await;
                if code == 200 && got == body.as_bytes() {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(10), "server put {n} never routed");
            }
            lat.push(start.elapsed());
        }
        let mut sorted = lat.split_off(20);
        sorted.sort();
        println!(
            "server put -> first request on the new server, backend {what}, {} samples: p50 {:?}  p90 {:?}  p99 {:?}",
            sorted.len(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.9),
            percentile(&sorted, 0.99),
        );
    }

    // 1c. middleware put -> enforced on the next request: a rewrite with Redirect on the probe frontend, its
    // Location changed by every put, the chain recompiled for that one frontend with 10,000 present.
    let get_location = |path: &'static str| {
        let http = http.clone();
        async move {
            let uri: http::Uri = format!("http://127.0.0.1:{listen}{path}").parse().expect("uri");
            match http.get(uri).await {
                Ok(r) => r.headers().get(http::header::LOCATION).map(|l| l.as_bytes().to_vec()),
                Err(_) => None,
            }
        }
    };
    let mut lat = Vec::new();
    for n in 0..220 {
        let to = format!("http://moved.example/{n}");
        let v =
            format!(r#"{{"Type":"rewrite","Middleware":{{"Regexp":"^.*$","Replacement":"{to}","Redirect":true}}}}"#);
        let start = Instant::now();
        etcd.put(format!("{P}/frontends/pf/middlewares/mw"), v, None).await.expect("put");
        while get_location("/pb").await.as_deref() != Some(to.as_bytes()) {
            assert!(start.elapsed() < Duration::from_secs(10), "middleware put {n} never enforced");
        }
        lat.push(start.elapsed());
    }
    let mut sorted = lat.split_off(20);
    sorted.sort();
    println!(
        "middleware put -> enforced on the next request, {} samples: p50 {:?}  p90 {:?}  p99 {:?}",
        sorted.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted, 0.99),
    );
    etcd.delete(format!("{P}/frontends/pf/middlewares/mw"), None).await.expect("delete");

    // 2. A burst of 1,000 puts, each awaited (as a deploy script would), then time to fully applied.
    let mut last = 0;
    let t = Instant::now();
    for i in 0..1000 {
        let v = format!(r#"{{"Type":"http","BackendId":"b","Route":"Path(`/burst/{i}`)"}}"#);
        let r = etcd.put(format!("{P}/frontends/burst{i}/frontend"), v, None).await.expect("put");
        last = r.header().map(|h| h.revision()).unwrap_or(0);
    }
    let puts = t.elapsed();
    let after_last = Instant::now();
    loop {
        let s = status("/status").await;
        if s["source"]["revision"].as_i64() >= Some(last) && get("/burst/999".into()).await.0 == 200 {
            break;
        }
        assert!(after_last.elapsed() < Duration::from_secs(30), "burst never applied");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("burst of 1,000 puts (took {puts:?}): fully applied {:?} after the last put", after_last.elapsed());

    // 3. RSS over many updates: changes to existing frontends, 16 puts in flight.
    let before = rss_kib(pid);
    let t = Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    for n in 0..updates {
        if inflight.len() >= 16 {
            inflight.join_next().await;
        }
        let mut c = etcd.clone();
        let i = n % 100;
        inflight.spawn(async move {
            let v = format!(r#"{{"Type":"http","BackendId":"b","Route":"Path(`/churn/{i}/{n}`)"}}"#);
            let _ = c.put(format!("{P}/frontends/churn{i}/frontend"), v, None).await;
        });
        if n % 20_000 == 19_999 {
            // Keep etcd's own history bounded so its compaction is part of the run, as in production.
            if let Ok(r) = etcd.get("probe", None).await {
                let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                let _ = etcd.compact(rev, None).await;
            }
        }
    }
    while inflight.join_next().await.is_some() {}
    let last = etcd.get("probe", None).await.expect("get").header().map(|h| h.revision()).unwrap_or(0);
    while status("/status").await["source"]["revision"].as_i64() < Some(last) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = rss_kib(pid);
    let gen = status("/status").await["generation"].as_u64().unwrap_or(0);
    println!(
        "{updates} updates in {:?} ({gen} table generations): RSS before {before} KiB, after {after} KiB ({:+.1}%)",
        t.elapsed(),
        (after as f64 - before as f64) * 100.0 / before as f64
    );
}
