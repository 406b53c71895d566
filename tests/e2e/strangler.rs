//! The story, end to end, with the real binaries: the legacy catalog 404s a 13-digit GTIN; the GTIN service
//! is first shadowed (its answers compared with the legacy app's: the diff names exactly the 13-digit lookup);
//! then the GTIN route moves to it as a sticky canary (5% -> 50% of the clients, each kept on its side, the
//! first 5% still there at 50%; then 100%) by editing one key; then the same request is a 200 in the legacy
//! JSON shape, and everything else still goes to the legacy catalog.

use crate::common;

use common::services::StoryServices;
use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gtin_route_moves_from_legacy_to_the_gtin_service() {
    let services = StoryServices::start().await;
    let (legacy_port, gtin_port) = (services.legacy_port, services.gtin_port);

    // The plan from routes/, with the servers pointed at this test's ports.
    let routes = Routes::new();
    let plan = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("routes");
    for key in
        ["backends/legacy/backend", "backends/gtin/backend", "frontends/legacy/frontend", "frontends/gtin/frontend"]
    {
        routes.put(key, &std::fs::read_to_string(plan.join(format!("{key}.json"))).unwrap());
    }
    routes.put("backends/legacy/servers/legacy-1", &format!(r#"{{"URL":"http://127.0.0.1:{legacy_port}"}}"#));
    routes.put("backends/gtin/servers/gtin-1", &format!(r#"{{"URL":"http://127.0.0.1:{gtin_port}"}}"#));
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();

    // Before: the legacy app only knows 12 digits.
    let (code, body) = get(&c, &ficus.url("/stores/1/gtins/123456789012")).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let legacy_answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(get(&c, &ficus.url("/stores/1/gtins/0123456789012")).await.0, 404);

    // Shadow first: the clients still get the legacy answers, and the GTIN service's are compared with them.
    let route = "Method(`GET`) && Path(`/stores/<store>/gtins/<gtin>`)";
    let shadowed = serde_json::json!({"Type":"http","Route":route,"BackendId":"legacy","Shadow":{"BackendId":"gtin"}});
    let gen = ficus.generation().await;
    routes.put("frontends/gtin/frontend", &shadowed.to_string());
    ficus.wait_generation_above(gen).await;
    assert_eq!(get(&c, &ficus.url("/stores/1/gtins/123456789012")).await.0, 200);
    assert_eq!(get(&c, &ficus.url("/stores/1/gtins/0123456789012")).await.0, 404);
    let report_url = format!("http://{}/shadow/gtin", ficus.admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let r: serde_json::Value = serde_json::from_slice(&get(&c, &report_url).await.1).unwrap_or_default();
        if r["compared"].as_u64().unwrap_or(0) >= 2 {
            break r;
        }
        assert!(Instant::now() < deadline, "the two copies were not compared: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((report["equal"].as_u64(), report["different"].as_u64()), (Some(1), Some(1)), "{report:#}");
    let pair = &report["last_different"][0];
    assert_eq!(pair["target"], "/stores/1/gtins/0123456789012", "{report:#}");
    assert_eq!((pair["primary"]["status"].as_u64(), pair["shadow"]["status"].as_u64()), (Some(404), Some(200)));

    // Then a sticky canary: each of 100 clients keeps its side by its cookie (the GTIN service answers the
    // 13-digit form, the legacy app 404s it), the share of clients follows the weight, and raising it from 5%
    // to 50% keeps every client that was on the GTIN service there.
    let split = |legacy: u32, gtin: u32| {
        serde_json::json!({"Type":"http","Route":route,"Sticky":{"Cookie":"ficus_canary"},
            "Backends":[{"Id":"legacy","Weight":legacy},{"Id":"gtin","Weight":gtin}]})
        .to_string()
    };
    let lookup = |cookie: Option<String>| {
        let c = c.clone();
        let url = ficus.url("/stores/1/gtins/0123456789012");
        async move {
            let mut req = http::Request::get(url);
            if let Some(cookie) = &cookie {
                req = req.header("cookie", cookie.as_str());
            }
            let (parts, _) = request_full(&c, req.body(Default::default()).unwrap()).await;
            let set = parts.headers.get("set-cookie").and_then(|v| v.to_str().ok());
            let cookie = cookie.or_else(|| set.and_then(|s| s.split(';').next()).map(str::to_string));
            (parts.status.as_u16(), cookie.expect("a cookie, sent or set"))
        }
    };
    let mut cookies: Vec<Option<String>> = vec![None; 100];
    let mut on_gtin_before: Vec<bool> = Vec::new();
    for pct in [5u32, 50] {
        let gen = ficus.generation().await;
        routes.put("frontends/gtin/frontend", &split(100 - pct, pct));
        ficus.wait_generation_above(gen).await;
        let mut on_gtin = Vec::new();
        for cookie in cookies.iter_mut() {
            let (code, kept) = lookup(cookie.clone()).await;
            assert!(code == 200 || code == 404, "{code}");
            for _ in 0..3 {
                assert_eq!(lookup(Some(kept.clone())).await.0, code, "a client changed sides at {pct}%");
            }
            *cookie = Some(kept);
            on_gtin.push(code == 200);
        }
        let n = on_gtin.iter().filter(|g| **g).count();
        assert!(n.abs_diff(pct as usize) <= 3, "{n} of 100 clients on the GTIN service at {pct}%");
        for (i, (before, now)) in on_gtin_before.iter().zip(&on_gtin).enumerate() {
            assert!(!before || *now, "client {i} left the GTIN service when it grew to {pct}%");
        }
        on_gtin_before = on_gtin;
    }

    // 100%: every form of the code is the same product, in the legacy JSON shape.
    let gen = ficus.generation().await;
    routes.put("frontends/gtin/frontend", &split(0, 100));
    ficus.wait_generation_above(gen).await;
    for form in ["123456789012", "0123456789012", "00123456789012"] {
        let (code, body) = get(&c, &ficus.url(&format!("/stores/1/gtins/{form}"))).await;
        assert_eq!(code, 200, "{form}: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, legacy_answer, "{form}: the GTIN service answers exactly as the legacy app did");
    }
    // Everything else still goes to the legacy catalog.
    let (code, body) = get(&c, &ficus.url("/catalog")).await;
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("<html") || String::from_utf8_lossy(&body).contains("<!DOCTYPE"));
}
