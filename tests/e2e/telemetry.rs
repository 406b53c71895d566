//! What operators scrape and grep, checked on a real gateway: the metric labels (exact status codes, a real
//! label for unrouted requests and for requests no server answered), the build and process metrics, and the
//! access log: its fields, its own file, and that file reopened on SIGHUP the way logrotate needs.

use crate::common;

use common::backend::TestBackend;
use common::*;
use http_body_util::Full;
use std::path::Path;
use std::time::{Duration, Instant};

async fn metrics_text(ficus: &Ficus) -> String {
    String::from_utf8_lossy(&get(&http1_client(), &format!("http://{}/metrics", ficus.admin)).await.1).into_owned()
}

/// The value of the one series written exactly `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counters_carry_the_exact_status_and_real_labels_for_unrouted_and_serverless_requests() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/status/`)");
    // A backend with no server: its requests are answered 503 before any server is picked.
    routes.put("backends/empty/backend", r#"{"Type":"http"}"#);
    routes.frontend("empty", "empty", "PathPrefix(`/empty`)");
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    // More distinct statuses than a series keeps lock-free handles for (8): the rest are counted exactly too.
    let codes = [200u16, 201, 202, 203, 204, 206, 400, 401, 403, 418, 429, 500];
    for (i, code) in codes.iter().enumerate() {
        for _ in 0..=i {
            assert_eq!(get(&c, &ficus.url(&format!("/status/{code}"))).await.0, *code);
        }
    }
    for _ in 0..3 {
        assert_eq!(get(&c, &ficus.url("/nothing-here")).await.0, 404);
    }
    assert_eq!(get(&c, &ficus.url("/../above-the-root")).await.0, 400);
    for _ in 0..2 {
        assert_eq!(get(&c, &ficus.url("/empty")).await.0, 503);
    }

    let text = metrics_text(&ficus).await;
    for (i, code) in codes.iter().enumerate() {
        let s = format!(r#"ficus_requests_total{{frontend="app",backend="app",server="s1",code="{code}"}}"#);
        assert_eq!(value(&text, &s), Some(i as f64 + 1.0), "{s} in:\n{text}");
    }
    let unrouted = r#"ficus_requests_total{frontend="(unrouted)",backend="(none)",server="(none)",code="404"}"#;
    assert_eq!(value(&text, unrouted), Some(3.0), "{text}");
    let bad = r#"ficus_requests_total{frontend="(unrouted)",backend="(none)",server="(none)",code="400"}"#;
    assert_eq!(value(&text, bad), Some(1.0), "{text}");
    let serverless = r#"ficus_requests_total{frontend="empty",backend="empty",server="(none)",code="503"}"#;
    assert_eq!(value(&text, serverless), Some(2.0), "{text}");
    // No empty label values and no status classes anywhere.
    for line in text.lines().filter(|l| l.starts_with("ficus_requests_total")) {
        assert!(!line.contains(r#""""#) && !line.contains("xx\""), "{line}");
    }

    let version = format!(r#"ficus_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"));
    assert_eq!(value(&text, &version), Some(1.0), "{text}");
    // Process metrics in the names Prometheus' client libraries use, with values from this very process.
    let rss = value(&text, "process_resident_memory_bytes").expect("rss");
    assert!((rss / 1024.0 - ficus.rss_kib() as f64).abs() < 16.0 * 1024.0, "rss {rss} vs {} KiB", ficus.rss_kib());
    let fds = std::fs::read_dir(format!("/proc/{}/fd", ficus.pid())).expect("fd dir").count() as f64;
    let open = value(&text, "process_open_fds").expect("open fds");
    assert!(open > 3.0 && (open - fds).abs() < 8.0, "process_open_fds {open}, /proc shows {fds}");
    assert!(value(&text, "process_max_fds").is_some_and(|m| m >= open), "{text}");
    assert!(value(&text, "process_cpu_seconds_total").is_some_and(|c| c > 0.0), "{text}");
    let started = value(&text, "process_start_time_seconds").expect("start time");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!(started <= now + 1.0 && started > now - 600.0, "started {started}, now {now}");
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"), "{text}");
}

/// Waits until `file` has a line containing `needle`, and returns that line.
async fn line_with(file: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no line with {needle} in {}:\n{text}", file.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_goes_to_its_file_with_every_field_and_is_reopened_on_sighup() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let logs = tempfile::tempdir().expect("temp dir");
    let access = logs.path().join("access.log");
    let opts = FicusOptions {
        extra: vec!["--access-log-file".into(), access.display().to_string(), "--log-format".into(), "json".into()],
        ..Default::default()
    };
    let ficus = Ficus::start_with(routes.path(), opts).await;

    // An upload with a query, a user agent and a referer, over HTTP/1.1.
    let req = http::Request::post(ficus.url("/upload/first?q=1&r=two"))
        .header("host", "shop.example.com")
        .header("user-agent", "curl/8.0 (test; \"quoted\")")
        .header("referer", "http://shop.example.com/start")
        .body(Full::new(bytes::Bytes::from_static(b"hello")))
        .expect("request");
    let (status, body) = request(&http1_client(), req).await;
    assert_eq!(status, 200, "{body:?}");
    let line = line_with(&access, "/upload/first").await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["target"], "access");
    assert_eq!(v["host"], "shop.example.com");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/upload/first");
    assert_eq!(v["query"], "q=1&r=two");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_in"], 5);
    assert_eq!(v["bytes_out"], body.len());
    assert_eq!(v["user_agent"], "curl/8.0 (test; \"quoted\")");
    assert_eq!(v["referer"], "http://shop.example.com/start");
    assert_eq!(v["frontend"], "app");
    assert_eq!(v["server"], "s1");
    // HTTP/2 (h2c) is logged as such; no query is null, not "".
    assert_eq!(get(&h2c_client(), &ficus.url("/over-h2")).await.0, 200);
    let v: serde_json::Value = serde_json::from_str(&line_with(&access, "/over-h2").await).expect("JSON");
    assert_eq!(v["protocol"], "HTTP/2.0");
    assert_eq!(v["query"], serde_json::Value::Null);
    assert_eq!(v["referer"], serde_json::Value::Null);
    // The access lines are in the file, not in the process's own log.
    assert!(!ficus.log_text().contains("/upload/first"), "{}", ficus.log_text());

    // logrotate: move the file away, SIGHUP, and the next lines land in a new file at the old path.
    let rotated = logs.path().join("access.log.1");
    std::fs::rename(&access, &rotated).expect("rename");
    ficus.signal("HUP");
    assert!(ficus.log_shows("reopening the access log").await, "{}", ficus.log_text());
    assert_eq!(get(&http1_client(), &ficus.url("/after-rotation")).await.0, 200);
    line_with(&access, "/after-rotation").await;
    assert!(!std::fs::read_to_string(&rotated).expect("rotated").contains("/after-rotation"));
    assert!(std::fs::read_to_string(&rotated).expect("rotated").contains("/over-h2"));
    // SIGHUP did not stop the gateway.
    assert_eq!(get(&http1_client(), &ficus.url("/still-serving")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_an_access_log_file_keeps_serving() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let ficus = Ficus::start(routes.path()).await;
    ficus.signal("HUP");
    assert!(ficus.log_shows("no access-log file to reopen").await, "{}", ficus.log_text());
    assert_eq!(get(&http1_client(), &ficus.url("/x")).await.0, 200);
    // The access line (stdout, text) carries the new fields.
    assert!(ficus.log_shows("path=/x query=- protocol=HTTP/1.1 status=200 bytes_in=0 bytes_out=").await);
}
