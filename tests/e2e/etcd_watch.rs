//! The etcd source end to end: a real etcd child process, a real `ficus serve --etcd` child process, writes
//! with etcdctl (exactly as Vulcand's documentation shows them) and with the in-process client.

use crate::common;

use common::backend::TestBackend;
use common::etcd::Etcd;
use common::*;
use std::time::{Duration, Instant};

const P: &str = "/vulcand";

fn backend_keys(etcd: &Etcd, id: &str, servers: &[(&str, std::net::SocketAddr)]) {
    etcd.put(&format!("{P}/backends/{id}/backend"), r#"{"Type": "http"}"#);
    for (sid, addr) in servers {
        etcd.put(&format!("{P}/backends/{id}/servers/{sid}"), &format!(r#"{{"URL": "http://{addr}"}}"#));
    }
}

/// Waits until `path` is answered by `want` (a backend name) or, for `None`, by a 404.
async fn wait_routed(ficus: &Ficus, path: &str, want: Option<&str>) {
    let c = http1_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = get(&c, &ficus.url(path)).await;
        let ok = match want {
            Some(b) => code == 200 && served_by(&body) == b,
            None => code == 404,
        };
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: want {want:?}, got {code} {}; log:\n{}",
            String::from_utf8_lossy(&body),
            ficus.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vulcand_documented_keys_route_and_status_shows_the_watch() {
    let etcd = Etcd::start();
    let b1 = TestBackend::start("b1").await;
    // Written before Ficus starts: the initial listing must carry them.
    etcd.put("/vulcand/backends/b1/backend", r#"{"Type": "http"}"#);
    etcd.put("/vulcand/backends/b1/servers/srv1", &format!(r#"{{"URL": "http://{}"}}"#, b1.addr));
    let ficus = Ficus::start_etcd(&etcd.endpoint(), P).await;
    // Vulcand's docs write routes in double quotes, escaped inside the JSON.
    etcd.put("/vulcand/frontends/f1/frontend", r#"{"Type": "http", "BackendId": "b1", "Route": "Path(\"/\")"}"#);
    wait_routed(&ficus, "/", Some("b1")).await;

    let status = ficus.status().await;
    assert_eq!(status["source"]["kind"], "etcd", "{status}");
    assert_eq!(status["source"]["state"], "watching", "{status}");
    assert_eq!(status["source"]["revision"].as_i64(), Some(etcd.revision()), "{status}");

    etcd.ctl(&["del", "/vulcand/frontends/f1/frontend"]);
    wait_routed(&ficus, "/", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_key_transaction_lands_as_one_generation() {
    let etcd = Etcd::start();
    let blue = TestBackend::start("blue").await;
    let ficus = Ficus::start_etcd(&etcd.endpoint(), P).await;
    let gen = ficus.generation().await;
    // backend, server and frontend in one transaction: any earlier swap would route to a missing backend.
    // etcdctl's txn reader takes a value unquoted (no spaces) or double-quoted; single quotes would be kept.
    let txn = [
        String::new(),
        format!(r#"put {P}/backends/blue/backend {{"Type":"http"}}"#),
        format!(r#"put {P}/backends/blue/servers/s1 {{"URL":"http://{}"}}"#, blue.addr),
        format!(r#"put {P}/frontends/app/frontend {{"Type":"http","BackendId":"blue","Route":"PathPrefix(`/app`)"}}"#),
        String::new(),
        String::new(),
        String::new(),
    ]
    .join("\n");
    etcd.ctl_stdin(&["txn"], &txn);
    let status = ficus.wait_generation_above(gen).await;
    assert_eq!(status["generation"].as_u64(), Some(gen + 1), "{status}");
    assert_eq!(status["counts"]["frontends"], 1, "{status}");
    assert_eq!(status["errors"].as_array().map(Vec::len), Some(0), "{status}");
    // The table of that one generation already routes.
    let (code, body) = get(&http1_client(), &ficus.url("/app/x")).await;
    assert_eq!((code, served_by(&body)), (200, "blue".to_string()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ficus.generation().await, gen + 1, "a transaction is one table swap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_puts_is_applied_whole_while_serving() {
    let etcd = Etcd::start();
    let b = TestBackend::start("b").await;
    backend_keys(&etcd, "b", &[("s1", b.addr)]);
    etcd.put(&format!("{P}/frontends/steady/frontend"), r#"{"Type":"http","BackendId":"b","Route":"Path(`/steady`)"}"#);
    let ficus = Ficus::start_etcd(&etcd.endpoint(), P).await;
    let load = load::Load::start(ficus.url("/steady"), 2);
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.expect("connect");
    let mut last = 0;
    for i in 0..1000 {
        let v = format!(r#"{{"Type":"http","BackendId":"b","Route":"Path(`/burst/{i}`)"}}"#);
        let r = client.put(format!("{P}/frontends/f{i}/frontend"), v, None).await.expect("put");
        last = r.header().map(|h| h.revision()).unwrap_or(0);
    }
    let put_done = Instant::now();
    loop {
        let s = ficus.status().await;
        if s["source"]["revision"].as_i64() == Some(last) && s["counts"]["frontends"] == 1001 {
            break;
        }
        assert!(put_done.elapsed() < Duration::from_secs(60), "burst not applied: {s}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let applied = put_done.elapsed();
    let (code, body) = get(&http1_client(), &ficus.url("/burst/999")).await;
    assert_eq!((code, served_by(&body)), (200, "b".to_string()));
    load.finish(10).await;
    // How soon is for the benchmarks to say; printed here for the curious.
    eprintln!("1000-put burst applied {applied:?} after the last put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_by_key_and_good_routes_keep_serving() {
    let etcd = Etcd::start();
    let good = TestBackend::start("good").await;
    backend_keys(&etcd, "good", &[("s1", good.addr)]);
    etcd.put(
        &format!("{P}/frontends/gtin/frontend"),
        r#"{"Type":"http","BackendId":"good","Route":"Path(\"/gtin\")"}"#,
    );
    let ficus = Ficus::start_etcd(&etcd.endpoint(), P).await;
    let load = load::Load::start(ficus.url("/gtin"), 2);
    let fkey = format!("{P}/frontends/gtin/frontend");
    let cases: &[(&str, &str, &str)] = &[
        (
            "frontends/gtin/frontend",
            r#"{"Type":"http","BackendId":"good","Route":"Path(`/gtin`)""#,
            "frontends/gtin/frontend: ?: EOF while parsing an object",
        ),
        (
            "frontends/gtin/frontend",
            r#"{"Type":"http","BackendId":"good","Route":"Path(`/gtin`)","Prio":1}"#,
            "frontends/gtin/frontend: Prio: unknown field `Prio`",
        ),
        (
            "frontends/gtin/frontend",
            r#"{"Type":"http","BackendId":"good","Route":"Paht(`/gtin`)"}"#,
            "frontends/gtin/frontend: Route: unknown matcher `Paht` at 0",
        ),
        (
            "frontends/gtin/frontend",
            r#"{"Type":"http","BackendId":"missing","Route":"Path(`/gtin`)"}"#,
            "backend `missing` is not defined; the previous value keeps serving",
        ),
        (
            "frontends/new/frontend",
            r#"{"Type":"http","BackendId":"missing","Route":"Path(`/new`)"}"#,
            "backend `missing` is not defined; the frontend is left out",
        ),
        (
            "backends/good/servers/s1",
            r#"{"URL":"http//nope"}"#,
            "backends/good/servers/s1: URL: `http//nope` is not a URL",
        ),
    ];
    for (key, value, want) in cases {
        let gen = ficus.generation().await;
        etcd.put(&format!("{P}/{key}"), value);
        let status = ficus.wait_generation_above(gen).await;
        let all: Vec<String> = [&status["rejected"], &status["errors"]]
            .iter()
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            .map(|e| {
                let field = e["field"].as_str().map(|f| format!("{f}: ")).unwrap_or_default();
                format!("{}: {field}{}", e["key"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""))
            })
            .collect();
        assert!(all.iter().any(|e| e.contains(want)), "{key}: want {want:?} in {all:#?}");
        assert!(ficus.log_shows(key).await, "the log names {key}");
        let (code, body) = get(&http1_client(), &ficus.url("/gtin")).await;
        assert_eq!((code, served_by(&body)), (200, "good".to_string()), "after {key}");
    }
    assert_eq!(
        get(&http1_client(), &ficus.url("/new")).await.0,
        404,
        "a new frontend naming a missing backend stays out"
    );
    let metrics =
        String::from_utf8_lossy(&get(&http1_client(), &format!("http://{}/metrics", ficus.admin)).await.1).into_owned();
    assert!(metrics.contains("ficus_config_rejected_total{kind=\"frontend\"}"), "{metrics}");
    // Repair: a good value clears the rejection.
    let gen = ficus.generation().await;
    etcd.put(&fkey, r#"{"Type":"http","BackendId":"good","Route":"Path(`/gtin`)"}"#);
    etcd.put(&format!("{P}/backends/good/servers/s1"), &format!(r#"{{"URL":"http://{}"}}"#, good.addr));
    etcd.ctl(&["del", &format!("{P}/frontends/new/frontend")]);
    ficus.wait_generation_above(gen).await;
    load.finish(20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_server_vanishes_at_expiry_and_drains() {
    let etcd = Etcd::start();
    let fixed = TestBackend::start("fixed").await;
    let leased = TestBackend::start("leased").await;
    backend_keys(&etcd, "app", &[("fixed", fixed.addr)]);
    etcd.put(&format!("{P}/frontends/app/frontend"), r#"{"Type":"http","BackendId":"app","Route":"PathPrefix(`/`)"}"#);
    let ficus = std::sync::Arc::new(Ficus::start_etcd(&etcd.endpoint(), P).await);
    // A short lease, kept alive until the test lets it go: its expiry then comes only after a slow request is
    // in flight on the leased server, however long the steps before take.
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.expect("connect");
    let lease = client.lease_grant(2, None).await.expect("lease").id();
    let (mut keeper, mut acks) = client.lease_keep_alive(lease).await.expect("keep-alive");
    let keep = tokio::spawn(async move {
        loop {
            if keeper.keep_alive().await.is_err() || acks.message().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let opts = etcd_client::PutOptions::new().with_lease(lease);
    let v = format!(r#"{{"URL":"http://{}"}}"#, leased.addr);
    client.put(format!("{P}/backends/app/servers/leased"), v, Some(opts)).await.expect("put");
    let c = http1_client();
    // Both servers take traffic while the lease lives.
    let deadline = Instant::now() + Duration::from_secs(30);
    while leased.hits() == 0 {
        get(&c, &ficus.url("/warm")).await;
        assert!(Instant::now() < deadline, "leased server never used");
    }
    // Slow requests until one is in flight on the leased server; it must finish after the lease expires.
    let mut slow = Vec::new();
    let before = leased.hits();
    while leased.hits() == before {
        let started = fixed.hits() + leased.hits();
        let (c, f) = (c.clone(), ficus.clone());
        slow.push(tokio::spawn(async move { get(&c, &f.url("/slow/7000")).await }));
        wait_for("the slow request at a backend", || fixed.hits() + leased.hits() > started).await;
        assert!(slow.len() < 10, "the balancer never sent a slow request to the leased server");
    }
    keep.abort();
    let status = loop {
        let s = ficus.status().await;
        if s["draining"].as_array().is_some_and(|d| d.iter().any(|d| d["server"] == "leased")) {
            break s;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(30), "lease never expired: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status["draining"].as_array().is_some_and(|d| d.iter().any(|d| d["inflight"] == 1)), "{status}");
    let before = leased.hits();
    for _ in 0..20 {
        assert_eq!(served_by(&get(&c, &ficus.url("/x")).await.1), "fixed");
    }
    assert_eq!(leased.hits(), before, "no new requests for an expired server");
    for s in slow {
        assert_eq!(s.await.expect("slow request").0, 200);
    }
}

/// A server put into a backend that many frontends share reaches every one of them with the same table: the
/// frontends name the backend by its slot, so the backend is rebuilt once and no frontend is recompiled. A
/// sticky canary keeps its clients on their side, now on the side's new server, and the requests are counted
/// under the new server for each frontend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_put_into_a_shared_backend_reaches_every_frontend_using_it() {
    const FRONTENDS: usize = 40;
    let etcd = Etcd::start();
    let (one, two, three, other) = (
        TestBackend::start("one").await,
        TestBackend::start("two").await,
        TestBackend::start("three").await,
        TestBackend::start("other").await,
    );
    backend_keys(&etcd, "shared", &[("s1", one.addr)]);
    backend_keys(&etcd, "other", &[("o1", other.addr)]);
    for i in 0..FRONTENDS {
        let v = format!(r#"{{"Type":"http","BackendId":"shared","Route":"Path(\"/f{i}\")"}}"#);
        etcd.put(&format!("{P}/frontends/f{i}/frontend"), &v);
    }
    let canary = r#"{"Type":"http","Route":"Path(\"/canary\")","Sticky":{"Header":"x-user"},
        "Backends":[{"Id":"shared","Weight":50},{"Id":"other","Weight":50}]}"#;
    etcd.put(&format!("{P}/frontends/canary/frontend"), canary);
    let ficus = Ficus::start_etcd(&etcd.endpoint(), P).await;
    wait_routed(&ficus, &format!("/f{}", FRONTENDS - 1), Some("one")).await;

    let c = http1_client();
    let canary_get = |user: String| {
        let c = c.clone();
        let url = ficus.url("/canary");
        async move {
            let req = http::Request::get(url).header("x-user", user).body(Default::default()).unwrap();
            let (code, body) = request(&c, req).await;
            assert_eq!(code, 200);
            served_by(&body)
        }
    };
    // Users on each side of the sticky split.
    let mut sides = std::collections::BTreeMap::new();
    for u in 0..64 {
        sides.entry(canary_get(format!("u{u}")).await).or_insert_with(Vec::new).push(format!("u{u}"));
    }
    assert_eq!(sides.keys().collect::<Vec<_>>(), ["one", "other"], "{sides:?}");

    // The server moves: one put.
    etcd.put(&format!("{P}/backends/shared/servers/s1"), &format!(r#"{{"URL": "http://{}"}}"#, two.addr));
    wait_routed(&ficus, "/f0", Some("two")).await;
    // The table that sent /f0 to the new server sends every frontend there: on the first request, no waiting.
    for i in 0..FRONTENDS {
        let (code, body) = get(&c, &ficus.url(&format!("/f{i}"))).await;
        assert_eq!((code, served_by(&body)), (200, "two".to_string()), "/f{i}");
    }
    for u in &sides["one"] {
        assert_eq!(canary_get(u.clone()).await, "two", "{u} stays on the shared side, on its new server");
    }
    for u in &sides["other"] {
        assert_eq!(canary_get(u.clone()).await, "other", "{u} stays on the other side");
    }

    // A new server id, the old one gone: requests are counted under the new one, per frontend.
    let gen = ficus.generation().await;
    etcd.put(&format!("{P}/backends/shared/servers/s2"), &format!(r#"{{"URL": "http://{}"}}"#, three.addr));
    etcd.ctl(&["del", &format!("{P}/backends/shared/servers/s1")]);
    let mut status = ficus.wait_generation_above(gen).await;
    // The table with `s2` in and `s1` out is published: `o1` and `s2` are the servers counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status["counts"]["servers"].as_u64() != Some(2) {
        assert!(Instant::now() < deadline, "the delete never applied: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = ficus.status().await;
    }
    for i in 0..FRONTENDS {
        let (code, body) = get(&c, &ficus.url(&format!("/f{i}"))).await;
        assert_eq!((code, served_by(&body)), (200, "three".to_string()), "/f{i}");
    }
    for i in [1, 2, FRONTENDS / 2] {
        let series = format!(r#"ficus_requests_total{{frontend="f{i}",backend="shared",server="s2",code="200"}}"#);
        assert_eq!(ficus.metric(&series).await, 1.0, "{series}");
        let series = format!(r#"ficus_requests_total{{frontend="f{i}",backend="shared",server="s1",code="200"}}"#);
        assert_eq!(ficus.metric(&series).await, 1.0, "{series}: the request /f{i} sent to `two` as s1");
    }
    let status = ficus.status().await;
    assert_eq!(status["counts"]["frontends"].as_u64(), Some(FRONTENDS as u64 + 1), "{status}");
}
