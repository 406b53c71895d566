//! The dashboard in a real browser (headless chromium over the DevTools protocol) against a real gateway on
//! the file store: the frontends and their splits are shown, a weight change written to the routes directory
//! reaches the open page without a reload, the page fits a phone's width, and a screenshot is kept under
//! `target/tmp/`. Also: the page as served (no script) already carries the data, the admin token guards the
//! dashboard, and what 10,000 frontends cost the data endpoint and the page.

use crate::common;

use common::backend::TestBackend;
use common::browser::Browser;
use common::*;
use http_body_util::Full;
use std::time::{Duration, Instant};

fn role_backend(routes: &Routes, id: &str, role: &str, server: std::net::SocketAddr) {
    routes.put(
        &format!("backends/{id}/backend"),
        &format!(r#"{{"Type":"http","Role":"{role}","Settings":{{"Timeouts":{{"Read":"2s","Dial":"500ms"}}}}}}"#),
    );
    routes.put(&format!("backends/{id}/servers/{id}-1"), &format!(r#"{{"URL":"http://{server}"}}"#));
}

fn split(routes: &Routes, legacy: u32, gtin: u32) {
    let v = serde_json::json!({"Type":"http","Route":"PathPrefix(`/stores/`)",
        "Backends":[{"Id":"legacy","Weight":legacy},{"Id":"gtin","Weight":gtin}]});
    routes.put("frontends/gtin/frontend", &v.to_string());
}

/// The gtin frontend's bars as the page shows them: `backend:weight` pairs.
const BARS: &str = "Array.from(document.querySelectorAll('tr[data-frontend=\"gtin\"] .part'))\
    .map(p => p.dataset.backend + ':' + p.dataset.weight).join(',')";

fn artifact(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_splits_and_follows_a_weight_change_without_a_reload() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let routes = Routes::new();
        let legacy = TestBackend::start("legacy").await;
        let gtin = TestBackend::start("gtin").await;
        role_backend(&routes, "legacy", "legacy", legacy.addr);
        role_backend(&routes, "gtin", "new", gtin.addr);
        split(&routes, 100, 0);
        routes.frontend("catalog", "legacy", "PathPrefix(`/`)");
        let ficus = Ficus::start(routes.path()).await;
        let client = http1_client();
        for _ in 0..20 {
            assert_eq!(get(&client, &ficus.url("/stores/1/gtins/1")).await.0, 200);
        }

        let mut browser = Browser::start(1100, 900).await;
        browser.navigate(&format!("http://{}/", ficus.admin)).await;
        assert_eq!(browser.eval("location.pathname").await, "/dashboard/");
        let frontends = "Array.from(document.querySelectorAll('#frontends tr[data-frontend]'))\
            .map(r => r.dataset.frontend).join(',')";
        assert_eq!(browser.eval(frontends).await, "catalog,gtin");
        assert_eq!(browser.eval(BARS).await, "legacy:100");
        // The script took over (the live marker says so) and the counters of the requests above arrive.
        browser
            .wait_until(
                "the legacy backend's requests on the page",
                "document.getElementById('rps-legacy') && Number(document.getElementById('rps-legacy').textContent) > 0",
                Duration::from_secs(30),
            )
            .await;

        // A mark only this page load has: still there after the change means the page was not reloaded.
        browser.eval("window.loadMark = 'before'; true").await;
        let updates_before = browser.eval("Number(document.body.dataset.updates || 0)").await.as_u64().unwrap_or(0);
        let changed = Instant::now();
        split(&routes, 50, 50);
        let took = browser
            .wait_until(
                "the 50/50 split on the page",
                &format!("{BARS} === 'legacy:50,gtin:50'"),
                Duration::from_secs(30),
            )
            .await;
        let since_write = changed.elapsed();
        eprintln!("weight change written to the page shown after {took:?} ({since_write:?} since the file was written)");
        assert!(since_write <= Duration::from_secs(2), "the page took {since_write:?} to show the new weights");
        assert_eq!(browser.eval("window.loadMark").await, "before", "the page was reloaded");
        let updates_after = browser.eval("Number(document.body.dataset.updates || 0)").await.as_u64().unwrap_or(0);
        assert!(updates_after > updates_before);
        let summary = browser.eval("document.getElementById('h-strangling').parentElement.textContent").await;
        let summary = summary.as_str().unwrap_or_default();
        assert!(summary.contains("1 moving"), "{summary}");
        assert!(summary.contains("1 still legacy"), "{summary}");

        // Traffic to the new side shows up in the legacy/new summary.
        for _ in 0..40 {
            assert_eq!(get(&client, &ficus.url("/stores/1/gtins/1")).await.0, 200);
        }
        browser
            .wait_until(
                "requests to the new backend on the page",
                "Number(document.getElementById('rps-new').textContent) > 0",
                Duration::from_secs(30),
            )
            .await;
        std::fs::write(artifact("dashboard.png"), browser.screenshot().await).expect("save screenshot");

        // Phone width: nothing wider than the screen but the tables' own scroll boxes.
        browser.viewport(390, 800, true).await;
        browser
            .wait_until(
                "the page to fit 390 px",
                "document.documentElement.scrollWidth <= window.innerWidth",
                Duration::from_secs(10),
            )
            .await;
        std::fs::write(artifact("dashboard-phone.png"), browser.screenshot().await).expect("save screenshot");
        drop(browser);
        eprintln!("screenshots in {}", artifact("").display());
    })
    .await
    .expect("the browser test finished within 180 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_as_served_carries_the_data_and_the_json_matches_it() {
    let routes = Routes::new();
    let legacy = TestBackend::start("legacy").await;
    let gtin = TestBackend::start("gtin").await;
    role_backend(&routes, "legacy", "legacy", legacy.addr);
    role_backend(&routes, "gtin", "new", gtin.addr);
    split(&routes, 95, 5);
    routes.put("frontends/bad/frontend", r#"{"Type":"http","BackendId":"legacy","Route":"Path(`/x`)","Wieght":1}"#);
    routes.put(
        "frontends/gtin/middlewares/rl",
        r#"{"Type":"ratelimit","Priority":1,"Middleware":{"Requests":100,"PeriodSeconds":1,"Burst":100,"Variable":"client.ip"}}"#,
    );
    let ficus = Ficus::start(routes.path()).await;
    let client = http1_client();
    let (code, page) = get(&client, &format!("http://{}/dashboard/", ficus.admin)).await;
    assert_eq!(code, 200);
    let page = String::from_utf8_lossy(&page);
    // Without any script: the split, the roles and the refused key with its reason are in the HTML.
    assert!(page.contains(r#"data-backend="legacy" data-weight="95""#), "{page}");
    assert!(page.contains(r#"data-backend="gtin" data-weight="5""#), "{page}");
    assert!(page.contains("frontends/bad/frontend"), "{page}");
    assert!(page.contains("Wieght"), "{page}");
    assert!(page.contains("legacy-1 <span class=\"url\">"), "{page}");
    assert!(page.contains("healthy</span>, 0 in flight"), "the servers' health and in-flight counts: {page}");
    let (code, data) = get(&client, &format!("http://{}/dashboard/data.json", ficus.admin)).await;
    assert_eq!(code, 200);
    let data: serde_json::Value = serde_json::from_slice(&data).expect("JSON");
    let gtin_row = &data["frontends"]["items"].as_array().expect("items")[0];
    assert_eq!(gtin_row["id"], "gtin");
    assert_eq!(gtin_row["split"][0]["role"], "legacy");
    assert_eq!(gtin_row["split"][1]["percent"], 5.0);
    assert_eq!(data["strangling"]["frontends"]["moving"], 1);
    assert_eq!(data["config"]["source"], "file");
    assert_eq!(data["config"]["rejected"][0]["key"], "frontends/bad/frontend");
    assert_eq!(gtin_row["middlewares"][0]["type"], "ratelimit");
    assert!(page.contains("middlewares: ratelimit <code>rl</code>"), "{page}");
    let (code, _) = get(&client, &format!("http://{}/dashboard/app.js", ficus.admin)).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_dashboard_and_json_want_it_and_health_does_not() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("ficus.toml");
    std::fs::write(&config, "[admin]\ntoken = \"s3cret\"\n").expect("config");
    let opts = FicusOptions { extra: vec!["--config".into(), config.display().to_string()], ..Default::default() };
    let ficus = Ficus::start_with(routes.path(), opts).await;
    let client = http1_client();
    for path in ["/dashboard/", "/dashboard/data.json", "/status", "/metrics"] {
        assert_eq!(get(&client, &format!("http://{}{path}", ficus.admin)).await.0, 401, "{path}");
    }
    let authed = |path: &str, auth: &str| {
        http::Request::get(format!("http://{}{path}", ficus.admin))
            .header("authorization", auth)
            .body(Full::default())
            .expect("request")
    };
    assert_eq!(request(&client, authed("/dashboard/data.json", "Bearer s3cret")).await.0, 200);
    // `ops:s3cret`, as a browser sends it after the basic-auth prompt.
    assert_eq!(request(&client, authed("/dashboard/", "Basic b3BzOnMzY3JldA==")).await.0, 200);
    assert_eq!(request(&client, authed("/dashboard/", "Bearer wrong")).await.0, 401);
    assert_eq!(get(&client, &format!("http://{}/health/ready", ficus.admin)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_frontends_are_paged_and_the_payload_stays_small() {
    tokio::time::timeout(Duration::from_secs(300), async {
        const N: usize = 10_000;
        let routes = Routes::new();
        let b = TestBackend::start("app").await;
        role_backend(&routes, "legacy", "legacy", b.addr);
        role_backend(&routes, "gtin", "new", b.addr);
        for i in 0..N {
            let (l, g) = match i % 3 {
                0 => (100, 0),
                1 => (50, 50),
                _ => (0, 100),
            };
            let v = serde_json::json!({"Type":"http","Route":format!("Path(`/f{i}`)"),
                "Backends":[{"Id":"legacy","Weight":l},{"Id":"gtin","Weight":g}]});
            routes.put(&format!("frontends/f{i:05}/frontend"), &v.to_string());
        }
        let ficus = Ficus::start(routes.path()).await;
        let client = http1_client();
        let data_url = format!("http://{}/dashboard/data.json", ficus.admin);
        let deadline = Instant::now() + Duration::from_secs(120);
        let data = loop {
            let (code, body) = get(&client, &data_url).await;
            assert_eq!(code, 200);
            let data: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            if data["frontends"]["total"] == N {
                eprintln!("data.json with {N} frontends: {} bytes", body.len());
                assert!(body.len() < 256 * 1024, "data.json is {} bytes", body.len());
                break data;
            }
            assert!(Instant::now() < deadline, "the {N} frontends did not load");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(data["frontends"]["pages"], N.div_ceil(50));
        assert_eq!(data["frontends"]["items"].as_array().map(Vec::len), Some(50));
        let p = &data["strangling"]["frontends"];
        assert_eq!(
            (p["legacy"].as_u64(), p["moving"].as_u64(), p["new"].as_u64()),
            (Some(3334), Some(3333), Some(3333))
        );

        let started = Instant::now();
        let (code, page) = get(&client, &format!("http://{}/dashboard/?page=200", ficus.admin)).await;
        let served = started.elapsed();
        assert_eq!(code, 200);
        let page = String::from_utf8_lossy(&page);
        assert!(page.contains("f09999"), "the last page lists the last frontend");
        eprintln!("page 200 of {N} frontends: {} bytes, served in {served:?}", page.len());
        let (_, filtered) = get(&client, &format!("{data_url}?q=f0999")).await;
        let filtered: serde_json::Value = serde_json::from_slice(&filtered).expect("JSON");
        assert_eq!(filtered["frontends"]["total"], 10);

        // What the gateway holds and spends with 10,000 frontends and nobody looking: the sampler runs anyway.
        let cpu = |pid: u32| -> u64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        };
        let before = cpu(ficus.pid());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let ticks = cpu(ficus.pid()) - before;
        eprintln!("{N} frontends, idle for 10 s: {ticks} CPU ticks (1/100 s each), RSS {} KiB", ficus.rss_kib());

        let mut browser = Browser::start(1100, 900).await;
        browser.navigate(&format!("http://{}/dashboard/", ficus.admin)).await;
        browser
            .wait_until("a live update", "Number(document.body.dataset.updates || 0) >= 2", Duration::from_secs(30))
            .await;
        let timing = browser
            .eval(
                "(() => { const n = performance.getEntriesByType('navigation')[0]; \
                  return {response: n.responseEnd - n.requestStart, dom: n.domComplete - n.responseEnd}; })()",
            )
            .await;
        eprintln!("browser, {N} frontends: first page {timing}");
        let rows = browser.eval("document.querySelectorAll('#frontends tr[data-frontend]').length").await;
        assert_eq!(rows, 50);
    })
    .await
    .expect("the 10,000-frontend test finished within 300 s");
}
