//! Live config changes through the routes directory: edits under load, and bad input that must not cost a
//! single good route.

use crate::common;

use common::backend::TestBackend;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_routes_under_load_fails_no_request() {
    let routes = Routes::new();
    let blue = TestBackend::start("blue").await;
    let green = TestBackend::start("green").await;
    routes.backend("blue", &[("s1", blue.addr)]);
    routes.backend("green", &[("s1", green.addr)]);
    routes.frontend("app", "blue", "PathPrefix(`/app`)");
    let ficus = Arc::new(Ficus::start(routes.path()).await);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, ok, failures, ficus) = (stop.clone(), ok.clone(), failures.clone(), ficus.clone());
        clients.push(tokio::spawn(async move {
            // Half the clients keep connections alive, half use h2c.
            let c = if i % 2 == 0 { http1_client() } else { h2c_client() };
            while !stop.load(Ordering::Relaxed) {
                let (code, body) = get(&c, &ficus.url("/app/x")).await;
                if code == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.lock().unwrap().push((code, String::from_utf8_lossy(&body).into_owned()));
                }
            }
        }));
    }

    let start_gen = ficus.generation().await;
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut edits = 0u32;
    while Instant::now() < deadline {
        edits += 1;
        let split = serde_json::json!({"Type":"http","Route":"PathPrefix(`/app`)",
            "Backends":[{"Id":"blue","Weight":100 - (edits % 100)},{"Id":"green","Weight":edits % 100}]});
        if edits % 3 == 0 {
            // A non-atomic write: readers may catch a half-written file, which must be refused, not served.
            routes.put_in_place("frontends/app/frontend", &split.to_string());
        } else {
            routes.put("frontends/app/frontend", &split.to_string());
        }
        // Unrelated churn: frontends and servers coming and going.
        routes.frontend(&format!("extra{}", edits % 5), "green", &format!("Path(`/extra/{edits}`)"));
        if edits % 4 == 0 {
            routes.delete(&format!("frontends/extra{}/frontend", (edits + 2) % 5));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Let the last edit apply while load continues.
    ficus.wait_generation_above(start_gen).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 200, "only {ok} requests ran");
    assert!(blue.hits() > 0 && green.hits() > 0);
    let status = ficus.status().await;
    assert!(status["generation"].as_u64().unwrap() > start_gen + 5, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_key_and_good_routes_keep_serving() {
    let routes = Routes::new();
    let b = TestBackend::start("good").await;
    routes.backend("good", &[("s1", b.addr)]);
    routes.frontend("gtin", "good", "Path(`/gtin`)");
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    assert_eq!(get(&c, &ficus.url("/gtin")).await.0, 200);

    let cases: &[(&str, &str, &str)] = &[
        (
            "frontends/gtin/frontend",
            r#"{"Type":"http","BackendId":"good","Route":"Paht(`/gtin`)"}"#,
            "frontends/gtin/frontend: Route: unknown matcher `Paht` at 0",
        ),
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
            r#"{"Type":"http","BackendId":"missing","Route":"Path(`/gtin`)"}"#,
            "frontends/gtin/frontend: BackendId: backend `missing` is not defined; the previous value keeps serving",
        ),
        (
            "backends/good/servers/s1",
            r#"{"URL":"http//nope"}"#,
            "backends/good/servers/s1: URL: `http//nope` is not a URL",
        ),
        (
            "backends/good/backend",
            r#"{"Type":"http","Settings":{"Timeouts":{"Read":"soon"}}}"#,
            "backends/good/backend: Settings.Timeouts.Read: bad duration `soon`",
        ),
        (
            "frontends/gtin/middlewares/rl",
            r#"{"Type":"ratelimit","Middleware":{"Requests":1}}"#,
            "frontends/gtin/middlewares/rl: Middleware: missing field `PeriodSeconds`",
        ),
        (
            "frontends/gtin/middlewares/cb",
            r#"{"Type":"cbreaker","Middleware":{"Condition":"ErrorRatio() > 0.5","Fallback":{"Type":"response","Action":{"StatusCode":503}}}}"#,
            "frontends/gtin/middlewares/cb: Middleware.Condition:",
        ),
        (
            "frontends/gtin/middlewares/x",
            r#"{"Type":"teleport"}"#,
            "frontends/gtin/middlewares/x: Type: unknown middleware type `teleport`",
        ),
        ("backends/good/servers", r#"{"URL":"http://127.0.0.1:1"}"#, "backends/good/servers: not a Ficus key"),
    ];
    for (key, value, want) in cases {
        let gen = ficus.generation().await;
        routes.put(key, value);
        let status = ficus.wait_generation_above(gen).await;
        let all = [&status["rejected"], &status["errors"], &status["unsupported"]]
            .iter()
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            .map(|e| {
                let field = e["field"].as_str().map(|f| format!("{f}: ")).unwrap_or_default();
                format!("{}: {field}{}", e["key"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""))
            })
            .collect::<Vec<_>>();
        assert!(all.iter().any(|e| e.contains(want)), "{key}: want {want:?} in {all:#?}");
        // The good route still serves, through the good server.
        let (code, body) = get(&c, &ficus.url("/gtin")).await;
        assert_eq!((code, served_by(&body)), (200, "good".to_string()), "after {key}");
        // Undo, so each case stands alone.
        let gen = ficus.generation().await;
        match *key {
            "frontends/gtin/frontend" => routes.frontend("gtin", "good", "Path(`/gtin`)"),
            "backends/good/servers/s1" | "backends/good/backend" => routes.backend("good", &[("s1", b.addr)]),
            other => routes.delete(other),
        }
        ficus.wait_generation_above(gen).await;
    }
    let metrics = String::from_utf8_lossy(&get(&c, &format!("http://{}/metrics", ficus.admin)).await.1).into_owned();
    assert!(metrics.contains("ficus_config_rejected_total{kind=\"frontend\"}"), "{metrics}");
    assert!(ficus.log_shows("frontends/gtin/frontend: Route: unknown matcher `Paht` at 0").await);
    // After the undo, nothing is reported any more.
    let status = ficus.status().await;
    assert_eq!(status["rejected"].as_array().map(Vec::len), Some(0), "{status}");
    assert_eq!(status["errors"].as_array().map(Vec::len), Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_server_gets_no_new_requests_and_in_flight_finish() {
    let routes = Routes::new();
    let one = TestBackend::start("one").await;
    let two = TestBackend::start("two").await;
    routes.backend("app", &[("one", one.addr), ("two", two.addr)]);
    routes.put("backends/app/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"30s"}}}"#);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let ficus = Arc::new(Ficus::start(routes.path()).await);
    let c = http1_client();
    // A slow request in flight on each server.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (c, f) = (c.clone(), ficus.clone());
            tokio::spawn(async move { get(&c, &f.url("/slow/4000")).await })
        })
        .collect();
    // Long enough that both are still running when the table without `two` is in place, on a busy machine too.
    wait_for("a slow request on each server", || one.hits() == 1 && two.hits() == 1).await;
    let gen = ficus.generation().await;
    routes.delete("backends/app/servers/two");
    let status = ficus.wait_generation_above(gen).await;
    let draining = status["draining"].as_array().cloned().unwrap_or_default();
    assert!(draining.iter().any(|d| d["server"] == "two" && d["inflight"] == 1), "{status}");
    let before = two.hits();
    for _ in 0..20 {
        assert_eq!(served_by(&get(&c, &ficus.url("/x")).await.1), "one");
    }
    assert_eq!(two.hits(), before);
    for s in slow {
        assert_eq!(s.await.unwrap().0, 200);
    }
    let status = ficus.status().await;
    assert_eq!(status["draining"].as_array().map(Vec::len), Some(0), "{status}");
}

#[test]
fn check_lists_every_error_and_exits_non_zero() {
    let routes = Routes::new();
    routes.backend("b", &[("s", "127.0.0.1:1".parse().unwrap())]);
    routes.frontend("good", "b", "Path(`/`)");
    routes.put("frontends/typo/frontend", r#"{"Type":"http","BackendId":"b","Route":"Paht(`/`)"}"#);
    routes.put("frontends/orphan/frontend", r#"{"Type":"http","BackendId":"nope","Route":"Path(`/o`)"}"#);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ficus")).arg("check").arg(routes.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("frontends/typo/frontend.json: frontends/typo/frontend: Route: unknown matcher `Paht` at 0"),
        "{text}"
    );
    assert!(text.contains("frontends/orphan/frontend: BackendId: backend `nope` is not defined"), "{text}");
    routes.delete("frontends/typo/frontend");
    routes.delete("frontends/orphan/frontend");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ficus")).arg("check").arg(routes.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ficus"))
        .arg("check")
        .arg("/nonexistent/routes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/routes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cuts_what_still_runs_on_a_removed_server() {
    let routes = Routes::new();
    let one = TestBackend::start("one").await;
    let two = TestBackend::start("two").await;
    routes.put("backends/app/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"30s"},"DrainTimeout":"1s"}}"#);
    routes.put("backends/app/servers/two", &format!(r#"{{"URL":"http://{}"}}"#, two.addr));
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let ficus = Arc::new(Ficus::start(routes.path()).await);
    let c = http1_client();
    let slow = {
        let (c, f) = (c.clone(), ficus.clone());
        tokio::spawn(async move { get(&c, &f.url("/slow/8000")).await })
    };
    wait_for("the slow request at server two", || two.hits() == 1).await;
    let gen = ficus.generation().await;
    routes.put("backends/app/servers/one", &format!(r#"{{"URL":"http://{}"}}"#, one.addr));
    routes.delete("backends/app/servers/two");
    ficus.wait_generation_above(gen).await;
    let status = ficus.status().await;
    assert!(status["draining"].as_array().is_some_and(|d| d.iter().any(|s| s["server"] == "two")), "{status}");
    assert_eq!(served_by(&get(&c, &ficus.url("/x")).await.1), "one");

    // The backend would answer 200 after 8 s: this error is the deadline's cut.
    let (code, body) = slow.await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((code, v["error"].as_str()), (502, Some("upstream_drain_deadline")), "{v}");
    // Cut, the server is gone from the draining list.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = ficus.status().await;
        if status["draining"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ficus.log_shows("drain deadline reached").await, "{}", ficus.log_text());
}

/// Waits until `url` is answered 200 by backend `want`; connection errors count as not yet.
async fn wait_served(url: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = http::Request::get(url).body(http_body_util::Full::default()).unwrap();
        if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), http1_client().request(req)).await {
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes());
            if status == 200 && body.is_ok_and(|b| served_by(&b) == want) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never served by {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_keys_are_bound_moved_and_unbound_live() {
    listener_keys_live(&[]).await;
}

/// A keyed listener's connections are handed to the workers like the command-line listener's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_keys_are_bound_moved_and_unbound_live_with_two_workers() {
    listener_keys_live(&["--threads", "2"]).await;
}

async fn listener_keys_live(extra: &[&str]) {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let opts = FicusOptions { extra: extra.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let ficus = Ficus::start_with(routes.path(), opts).await;
    let listener = |addr: &str| format!(r#"{{"Protocol":"http","Address":{{"Network":"tcp","Address":"{addr}"}}}}"#);
    let refused = |addr: std::net::SocketAddr| std::net::TcpStream::connect(addr).is_err();

    let first: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    assert!(refused(first));
    routes.put("listeners/extra", &listener(&first.to_string()));
    wait_served(&format!("http://{first}/x"), "app").await;
    // Every new connection is served, whichever worker it is handed to.
    for i in 0..6 {
        let mut c = RawConn::connect(first).await;
        c.send(format!("GET /fresh{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await;
        let answer = tokio::time::timeout(Duration::from_secs(5), c.response()).await;
        assert_eq!(answer.map(|(status, _)| status).ok(), Some(200), "connection {i} on the keyed listener");
    }

    // A changed address: the new one is bound, the old one let go.
    let second: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    routes.put("listeners/extra", &listener(&second.to_string()));
    wait_served(&format!("http://{second}/x"), "app").await;
    wait_for("the old address let go", || refused(first)).await;

    routes.delete("listeners/extra");
    wait_for("the deleted listener let go", || refused(second)).await;
    // The command-line listener never moved.
    assert_eq!(get(&http1_client(), &ficus.url("/x")).await.0, 200);
    assert!(ficus.log_shows("listener removed or changed").await, "{}", ficus.log_text());
}

/// A listener key whose address is taken is valid, so not refused, but not serving either: `/status` and the
/// metrics say so, and it binds on its own once the address is free, with no key written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_key_whose_address_is_taken_is_reported_and_bound_once_it_is_free() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let ficus = Ficus::start(routes.path()).await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap();
    routes
        .put("listeners/extra", &format!(r#"{{"Protocol":"http","Address":{{"Network":"tcp","Address":"{taken}"}}}}"#));
    let unbound = unbound_until(&ficus, |l| !l.is_empty()).await;
    assert_eq!(unbound[0]["key"], "listeners/extra", "{unbound}");
    assert_eq!(unbound[0]["address"], taken.to_string());
    assert!(unbound[0]["error"].as_str().is_some_and(|e| e.contains("in use")), "{unbound}");
    assert_eq!(ficus.metric("ficus_listeners_unbound").await, 1.0);
    assert!(ficus.log_shows("retried every 5s").await, "{}", ficus.log_text());

    drop(holder);
    // Retried every 5 s.
    wait_served(&format!("http://{taken}/x"), "app").await;
    unbound_until(&ficus, |l| l.is_empty()).await;
    assert_eq!(ficus.metric("ficus_listeners_unbound").await, 0.0);
}

/// `/status`'s `unbound_listeners` once `done` holds for it (10 s at most).
async fn unbound_until(ficus: &Ficus, done: impl Fn(&[serde_json::Value]) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let unbound = ficus.status().await["unbound_listeners"].clone();
        if unbound.as_array().is_some_and(|l| done(l)) {
            return unbound;
        }
        assert!(Instant::now() < deadline, "unbound_listeners stayed {unbound}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server's `DrainTimeout` cuts a streamed response and a tunnel too, not only a waiting request: the client
/// sees its body end in an error (never a clean, short end) and its WebSocket closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_aborts_streamed_bodies_and_tunnels() {
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::BodyExt;
    use tokio_tungstenite::tungstenite::Message;
    let routes = Routes::new();
    let one = TestBackend::start("one").await;
    let two = TestBackend::start("two").await;
    routes.put("backends/app/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"30s"},"DrainTimeout":"1s"}}"#);
    routes.put("backends/app/servers/two", &format!(r#"{{"URL":"http://{}"}}"#, two.addr));
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let ficus = Ficus::start(routes.path()).await;

    // A 1 GB response, read a little and then held by backpressure.
    const SIZE: u64 = 1 << 30;
    let resp = http1_client().get(ficus.url(&format!("/stream/{SIZE}")).parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.expect("first bytes");
    assert!(first.is_some_and(|f| f.is_ok()));
    // A WebSocket tunnel through the same server.
    let tcp = tokio::net::TcpStream::connect(ficus.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", ficus.addr), tcp).await.unwrap();
    ws.send(Message::Text("before".into())).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("echo");
    assert_eq!(echo.unwrap().unwrap().into_text().unwrap(), "before");
    assert_eq!(two.hits(), 2);

    let gen = ficus.generation().await;
    routes.put("backends/app/servers/one", &format!(r#"{{"URL":"http://{}"}}"#, one.addr));
    routes.delete("backends/app/servers/two");
    ficus.wait_generation_above(gen).await;
    assert!(ficus.log_shows("drain deadline reached").await, "{}", ficus.log_text());

    // The stream: whatever was in flight, then an error; never all of it and never a clean end.
    let mut got = 0u64;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("the cut stream ends");
    assert!(ended.is_err(), "a cut stream ended cleanly after {got} of {SIZE} bytes");
    assert!(got < SIZE);
    // The tunnel: closed, with or without a close frame; no more echoes.
    let next = tokio::time::timeout(Duration::from_secs(30), async {
        let _ = ws.send(Message::Text("after".into())).await;
        ws.next().await
    })
    .await
    .expect("the cut tunnel ends");
    assert!(!matches!(&next, Some(Ok(Message::Text(_)))), "the tunnel still echoes: {next:?}");
    // New requests go to the remaining server.
    assert_eq!(served_by(&get(&http1_client(), &ficus.url("/x")).await.1), "one");
}
