//! The sync job end to end, as real processes over real sockets: an in-test export server streams legacy
//! export text (chunked), `gtin-service sync` translates it, reports dirty rows by reason, refuses incomplete
//! exports, publishes, and notifies a running `gtin-service serve`, which swaps snapshots under load without a
//! single failed request.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{get, run, run_cli, ExportServer, Service};
use gtin::synth::{write_export, SynthProduct, EXPORT_COLUMNS};

fn report(data: &Path) -> serde_json::Value {
    let mut reports: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("sync-report-"))
        .collect();
    // Two syncs in one second get `-1`-suffixed names, which do not sort by age; the file times do.
    reports.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let last = reports.last().expect("a sync report was written");
    serde_json::from_slice(&std::fs::read(last).unwrap()).unwrap()
}

fn snapshots(data: &Path) -> Vec<String> {
    std::fs::read_dir(data)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("snapshot-") && n.ends_with(".gtin"))
                .collect()
        })
        .unwrap_or_default()
}

/// An export of `n` clean products whose prices and dates depend on `version`.
fn versioned_export(n: u64, version: u64) -> String {
    let mut text = format!("#LEGACY-CATALOG-EXPORT v1 seed=1 products={n}\n{EXPORT_COLUMNS}\n");
    let mut p = SynthProduct::default();
    for i in 0..n {
        p.fill(1, i);
        p.price_cents = 1000 * version + i;
        p.updated = 20240100 + version as u32;
        p.legacy_row(&mut text);
        text.push('\n');
    }
    text.push_str(&format!("#END rows={n}\n"));
    text
}

#[test]
fn sync_over_http_counts_dirty_rows_publishes_and_notifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut text = Vec::new();
    let counts = write_export(&mut text, 3, 3000, 7).unwrap();
    let service = Service::start(&data, dir.path()).unwrap();
    run(Duration::from_secs(90), async {
        let exports = ExportServer::start(String::from_utf8(text)?).await?;
        let c = common::client();
        assert_eq!(get(&c, &service.url("/health/ready")).await?.0, 503);

        let args = ["sync", "--from", &exports.url(), "--data", data.to_str().unwrap(), "--notify", &service.url("")];
        let (status, stderr) = tokio::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            move || run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(60))
        })
        .await??;
        assert!(status.success(), "sync failed: {stderr}");
        assert!(stderr.contains("bad_check_digit"), "{stderr}");

        let r = report(&data);
        let reason = |name: &str| r["rejected_by_reason"][name]["count"].as_u64().unwrap_or(0);
        assert_eq!(r["rows_read"], counts.rows, "{r}");
        assert_eq!(reason("bad_check_digit"), counts.bad_check_digit, "{r}");
        assert_eq!(reason("bad_length"), counts.bad_length, "{r}");
        assert_eq!(reason("empty_code"), counts.empty_code, "{r}");
        assert_eq!(reason("bad_price"), counts.bad_price, "{r}");
        assert_eq!(reason("empty_description"), counts.empty_description, "{r}");
        let rejected = counts.bad_check_digit
            + counts.bad_length
            + counts.empty_code
            + counts.bad_price
            + counts.empty_description;
        assert_eq!(r["rejected"], rejected, "{r}");
        assert_eq!(r["accepted_rows"], counts.rows - rejected, "{r}");
        assert_eq!(r["duplicates"], counts.duplicates, "{r}");
        assert_eq!(r["products"], 3000, "{r}");
        assert!(r["published"].is_string(), "{r}");
        assert!(r["notified"].as_str().unwrap_or("").starts_with("200"), "{r}");
        let examples = &r["rejected_by_reason"]["bad_check_digit"]["examples"];
        assert!(examples[0]["message"].as_str().unwrap_or("").contains("check digit should be"), "{r}");

        // The service swapped on notify. A product with an older duplicate, one with a padded duplicate, one
        // with a dirty extra row: each answers with its clean row.
        assert_eq!(get(&c, &service.url("/health/ready")).await?.0, 200);
        let mut p = SynthProduct::default();
        for i in [0u64, 35, 42, 2999] {
            p.fill(3, i);
            let code = p.product().gtin.canonical().short_form().to_string();
            let (status, body) = get(&c, &service.url(&format!("/v1/gtins/{code}"))).await?;
            assert_eq!(status, 200, "product {i}: {body}");
            assert_eq!(body["sku"], p.sku.as_str(), "product {i}: {body}");
            assert_eq!(body["price"]["amount_cents"], p.price_cents, "product {i}: {body}");
        }
        Ok(())
    });
}

#[test]
fn a_cut_short_or_miscounted_export_is_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let full = versioned_export(200, 1);
    let cut_short = full[..full.rfind("#END").unwrap()].to_string();
    let miscounted = full.replace("#END rows=200", "#END rows=201");
    run(Duration::from_secs(60), async {
        let exports = ExportServer::start(cut_short).await?;
        for (text, why) in [(None, "cut short"), (Some(miscounted), "the trailer says 201 rows but 200 were read")] {
            if let Some(text) = text {
                exports.set(text);
            }
            let url = exports.url();
            let data_arg = data.to_str().unwrap().to_string();
            let (status, stderr) = tokio::task::spawn_blocking(move || {
                run_cli(&["sync", "--from", &url, "--data", &data_arg], Duration::from_secs(30))
            })
            .await??;
            assert!(!status.success(), "sync published an incomplete export: {stderr}");
            assert!(stderr.contains("NOT published"), "{stderr}");
            assert!(snapshots(&data).is_empty(), "{:?}", snapshots(&data));
            let r = report(&data);
            assert!(r["refused"].as_str().unwrap_or("").contains(why), "{r}");
            assert_eq!(r["published"], serde_json::Value::Null);
        }
        // A 404 from the export server is refused too.
        let url = exports.url().replace("/export", "/nope");
        let data_arg = data.to_str().unwrap().to_string();
        let (status, stderr) = tokio::task::spawn_blocking(move || {
            run_cli(&["sync", "--from", &url, "--data", &data_arg], Duration::from_secs(30))
        })
        .await??;
        assert!(!status.success() && stderr.contains("HTTP 404"), "{stderr}");
        Ok(())
    });
}

#[test]
fn sync_reads_an_export_saved_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("export.txt");
    let file_arg = file.to_str().unwrap();
    let data_arg = data.to_str().unwrap();
    let within = Duration::from_secs(60);
    let (status, stderr) =
        run_cli(&["gen-export", "--products", "500", "--dirty-every", "5", "--out", file_arg], within).unwrap();
    assert!(status.success(), "{stderr}");
    let (status, stderr) =
        run_cli(&["sync", "--from", &format!("file://{file_arg}"), "--data", data_arg], within).unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(report(&data)["products"], 500);
    let (status, stderr) = run_cli(&["sync", "--from", file_arg, "--data", data_arg], within).unwrap();
    assert!(status.success(), "{stderr}");
    let mut names = snapshots(&data);
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    let newest = data.join(names.last().unwrap());
    let (status, stderr) = run_cli(&["verify", newest.to_str().unwrap()], within).unwrap();
    assert!(status.success(), "{stderr}");
}

#[test]
fn snapshots_swap_under_load_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let service = Service::start(&data, dir.path()).unwrap();
    let base = service.url("");
    run(Duration::from_secs(120), async move {
        let exports = ExportServer::start(versioned_export(300, 1)).await?;
        let sync = |exports_url: String| {
            let data_arg = data.to_str().unwrap().to_string();
            let base = base.clone();
            tokio::task::spawn_blocking(move || {
                run_cli(
                    &["sync", "--from", &exports_url, "--data", &data_arg, "--notify", &base],
                    Duration::from_secs(60),
                )
            })
        };
        let (status, stderr) = sync(exports.url()).await??;
        assert!(status.success(), "{stderr}");

        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut clients = Vec::new();
        for worker in 0..4u64 {
            let (stop, served, errors) = (Arc::clone(&stop), Arc::clone(&served), Arc::clone(&errors));
            let url = service.url("");
            clients.push(tokio::spawn(async move {
                let c = if worker % 2 == 0 { common::client() } else { common::h2c_client() };
                let mut p = SynthProduct::default();
                let mut i = worker;
                while !stop.load(Ordering::Relaxed) {
                    p.fill(1, i % 300);
                    let code = p.product().gtin.canonical().short_form().to_string();
                    let path = if i % 3 == 0 { format!("/stores/1/gtins/{code}") } else { format!("/v1/gtins/{code}") };
                    match get(&c, &format!("{url}{path}")).await {
                        Ok((200, _)) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((status, body)) => errors.lock().unwrap().push(format!("{path}: {status} {body}")),
                        Err(e) => errors.lock().unwrap().push(format!("{path}: {e}")),
                    }
                    i += 4;
                }
            }));
        }

        let c = common::client();
        let mut p = SynthProduct::default();
        p.fill(1, 17);
        let code = p.product().gtin.canonical().short_form().to_string();
        for version in 2..=4u64 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            exports.set(versioned_export(300, version));
            let (status, stderr) = sync(exports.url()).await??;
            assert!(status.success(), "sync {version}: {stderr}");
            let (status, body) = get(&c, &service.url(&format!("/v1/gtins/{code}"))).await?;
            assert_eq!((status, body["price"]["amount_cents"].as_u64()), (200, Some(1000 * version + 17)), "{body}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await?;
        }
        let errors = errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "{} failed requests, first: {:?}", errors.len(), errors.first());
        let served = served.load(Ordering::Relaxed);
        assert!(served > 200, "only {served} requests served");
        let (_, ready) = get(&c, &service.url("/health/ready")).await?;
        assert_eq!(ready["generation"], 4, "{ready}");
        // Pruning keeps the served snapshot and one to roll back to.
        assert_eq!(snapshots(&data).len(), 2, "{:?}", snapshots(&data));
        eprintln!("served {served} lookups across 3 swaps with no errors");
        Ok(())
    });
}

#[test]
fn sync_every_keeps_publishing_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("export.txt");
    std::fs::write(&file, versioned_export(50, 1)).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["sync", "--every", "1s", "--from", file.to_str().unwrap(), "--data", data.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while snapshots(&data).len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let published = snapshots(&data).len();
    let term = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(published >= 2, "only {published} snapshots published in 30s");
    assert!(status.is_some_and(|s| s.success()), "sync --every did not exit cleanly on SIGTERM: {status:?}");
}
