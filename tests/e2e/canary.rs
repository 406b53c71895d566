//! Progressive delivery through a real gateway: a routes directory, a `ficus serve` child process and real
//! backends on loopback. Sticky canaries (1,000 cookie clients keep their side across 100 requests each and
//! across a step from 5% to 10%; the split over clients follows the weights), the plain split for requests
//! without a key, and bad `Sticky`/`Shadow` values refused by key and field with the last good value serving.

use crate::common;

use bytes::Bytes;
use common::backend::TestBackend;
use common::*;
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;

/// Writes `key` and waits for the reload that follows it.
async fn put(routes: &Routes, ficus: &Ficus, key: &str, value: &str) -> serde_json::Value {
    let gen = ficus.generation().await;
    routes.put(key, value);
    ficus.wait_generation_above(gen).await
}

fn split(legacy: u32, canary: u32, sticky: serde_json::Value) -> String {
    serde_json::json!({"Type":"http","Route":"PathPrefix(`/`)","Sticky":sticky,
        "Backends":[{"Id":"legacy","Weight":legacy},{"Id":"canary","Weight":canary}]})
    .to_string()
}

/// One request; the backend that answered and the `Set-Cookie` it came with.
async fn hit(c: &HttpClient, url: &str, headers: &[(&str, &str)]) -> (String, Option<String>) {
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (parts, _) = request_full(c, req.body(Full::<Bytes>::default()).expect("request")).await;
    assert_eq!(parts.status, 200);
    let served = parts.headers.get("x-served-by").and_then(|v| v.to_str().ok()).unwrap_or("?").to_string();
    let cookie = parts.headers.get("set-cookie").and_then(|v| v.to_str().ok()).map(str::to_string);
    (served, cookie)
}

async fn setup() -> (TestBackend, TestBackend, Routes, Ficus) {
    let legacy = TestBackend::start("legacy").await;
    let canary = TestBackend::start("canary").await;
    let routes = Routes::new();
    routes.backend("legacy", &[("s1", legacy.addr)]);
    routes.backend("canary", &[("s1", canary.addr)]);
    routes.put("frontends/f/frontend", &split(95, 5, serde_json::json!({"Cookie":"ficus_canary"})));
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    (legacy, canary, routes, ficus)
}

const CLIENTS: usize = 1000;

/// Each client's cookie (`name=value`) and the backend it is on, after `requests` requests each; every
/// request of a client must reach the same backend. Clients without a cookie get one on their first request.
async fn run_clients(ficus: &Ficus, cookies: Vec<Option<String>>, requests: usize) -> Vec<(String, String)> {
    let url = Arc::new(ficus.url("/x"));
    let tasks = 16;
    let mut handles = Vec::new();
    let cookies = Arc::new(cookies);
    for t in 0..tasks {
        let (url, cookies) = (url.clone(), cookies.clone());
        handles.push(tokio::spawn(async move {
            let c = http1_client();
            let mut out = Vec::new();
            for i in (t..CLIENTS).step_by(tasks) {
                let (mut side, mut cookie) = (None::<String>, cookies[i].clone());
                for n in 0..requests {
                    let sent: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
                    let (served, set) = hit(&c, &url, &sent).await;
                    match (&cookie, set) {
                        (None, Some(set)) => {
                            let pair = set.split(';').next().expect("a name=value").to_string();
                            assert!(pair.starts_with("ficus_canary="), "{set}");
                            assert!(set.contains("Path=/") && set.contains("HttpOnly"), "{set}");
                            cookie = Some(pair);
                        }
                        (None, None) => panic!("client {i}: no cookie assigned on request {n}"),
                        (Some(_), Some(set)) => panic!("client {i}: a cookie was sent and another set: {set}"),
                        (Some(_), None) => {}
                    }
                    match &side {
                        None => side = Some(served),
                        Some(s) => assert_eq!(*s, served, "client {i} changed sides on request {n}"),
                    }
                }
                out.push((i, cookie.expect("assigned"), side.expect("requests > 0")));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("client task"));
    }
    all.sort_by_key(|(i, _, _)| *i);
    all.into_iter().map(|(_, c, s)| (c, s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cookie_clients_keep_their_side_and_a_step_from_5_to_10_percent_only_adds_clients() {
    let (_legacy, canary, routes, ficus) = setup().await;
    let probes = canary.hits();
    let first = run_clients(&ficus, vec![None; CLIENTS], 100).await;
    let on_canary = |v: &[(String, String)]| v.iter().filter(|(_, s)| s == "canary").count();
    let before = on_canary(&first);
    // Within ±1% of the clients (10 of 1,000) of the weights.
    assert!(before.abs_diff(50) <= 10, "{before} of {CLIENTS} clients on the 5% canary");
    assert_eq!(canary.hits() - probes, before * 100, "every request of a canary client, and no other, reached it");

    put(&routes, &ficus, "frontends/f/frontend", &split(90, 10, serde_json::json!({"Cookie":"ficus_canary"}))).await;
    let cookies = first.iter().map(|(c, _)| Some(c.clone())).collect();
    let second = run_clients(&ficus, cookies, 20).await;
    for (i, ((_, a), (_, b))) in first.iter().zip(&second).enumerate() {
        assert!(!(a == "canary" && b != "canary"), "client {i} left the canary when it grew");
    }
    let after = on_canary(&second);
    assert!(after.abs_diff(100) <= 10, "{after} of {CLIENTS} clients on the 10% canary");
    assert!(after > before, "about 5% more clients joined ({before} -> {after})");

    // Back to 5%: only the clients that joined leave; the first 5% stay.
    put(&routes, &ficus, "frontends/f/frontend", &split(95, 5, serde_json::json!({"Cookie":"ficus_canary"}))).await;
    let cookies = first.iter().map(|(c, _)| Some(c.clone())).collect();
    let third = run_clients(&ficus, cookies, 2).await;
    assert_eq!(
        third.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        first.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        "lowering the canary again puts every client back where it was at 5%"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_client_ip_keys_stick_and_requests_without_a_key_keep_the_exact_split() {
    let (_legacy, _canary, routes, ficus) = setup().await;
    put(&routes, &ficus, "frontends/f/frontend", &split(95, 5, serde_json::json!({"Header":"X-User"}))).await;
    let c = http1_client();
    let url = ficus.url("/x");
    // Without the header: the plain split, exact over 100 requests, and no cookie.
    let mut canary = 0;
    for _ in 0..100 {
        let (served, cookie) = hit(&c, &url, &[]).await;
        assert!(cookie.is_none());
        canary += usize::from(served == "canary");
    }
    assert_eq!(canary, 5);
    // With it: one side per user, whatever the plain split's position.
    let mut users_on_canary = 0;
    for u in 0..200 {
        let user = format!("user-{u}");
        let (side, _) = hit(&c, &url, &[("x-user", &user)]).await;
        for _ in 0..5 {
            assert_eq!(hit(&c, &url, &[("x-user", &user)]).await.0, side, "{user}");
        }
        users_on_canary += usize::from(side == "canary");
    }
    assert!(users_on_canary < 40, "{users_on_canary} of 200 users on a 5% canary");

    // By client address: every request from 127.0.0.1 lands on one side.
    put(&routes, &ficus, "frontends/f/frontend", &split(50, 50, serde_json::json!({"ClientIp":true}))).await;
    let (side, _) = hit(&c, &url, &[]).await;
    for _ in 0..50 {
        assert_eq!(hit(&c, &url, &[]).await.0, side);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sticky_and_shadow_values_are_refused_by_key_and_field_and_the_last_good_value_serves() {
    let (_legacy, _canary, routes, ficus) = setup().await;
    let c = http1_client();
    let url = ficus.url("/x");
    let (side, cookie) = hit(&c, &url, &[]).await;
    let cookie = cookie.expect("assigned").split(';').next().expect("pair").to_string();
    let with_ext = |ext: serde_json::Value| {
        let mut v: serde_json::Value =
            serde_json::from_str(&split(95, 5, serde_json::json!({"Cookie":"ficus_canary"}))).expect("json");
        for (k, x) in ext.as_object().expect("object") {
            v[k] = x.clone();
        }
        v.to_string()
    };
    let bad = [
        (serde_json::json!({"Sticky":{"Cookie":"a b"}}), "Sticky.Cookie"),
        (serde_json::json!({"Sticky":{"Cookie":"a","Header":"b"}}), "Sticky"),
        (serde_json::json!({"Shadow":{"BackendId":"canary","Percent":150}}), "Shadow.Percent"),
        (serde_json::json!({"Shadow":{"BackendId":"canary","Methods":["GET","NOT A METHOD"]}}), "Shadow.Methods[1]"),
        (serde_json::json!({"Shadow":{"BackendId":"nowhere"}}), "Shadow.BackendId"),
    ];
    for (ext, field) in bad {
        let status = put(&routes, &ficus, "frontends/f/frontend", &with_ext(ext.clone())).await;
        let problems: Vec<serde_json::Value> =
            ["rejected", "errors"].iter().flat_map(|k| status[*k].as_array().cloned().unwrap_or_default()).collect();
        let found = problems.iter().find(|r| r["key"] == "frontends/f/frontend");
        let found = found.unwrap_or_else(|| panic!("{ext} not refused: {status}"));
        assert_eq!(found["field"], field, "{found}");
        // The last good value serves: the sticky split still keeps this client on its side.
        assert_eq!(hit(&c, &url, &[("cookie", &cookie)]).await.0, side, "after {ext}");
    }
}
