//! The operator commands against a real etcd: `ficus apply` (dry run, write, conflict detection, `--force`,
//! `--prune` sparing leased keys), `ficus export` round trip, `ficus canary` and `ficus drain` through a
//! watching gateway.

use crate::common;

use common::backend::TestBackend;
use common::etcd::Etcd;
use common::*;
use ficus::ops::{self, ApplyOptions};
use ficus::source::etcd::EtcdSettings;
use std::process::Command;
use std::time::{Duration, Instant};

const P: &str = "/vulcand";

fn ficus_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ficus")).args(args).output().expect("run ficus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn plan_dir(blue: std::net::SocketAddr) -> Routes {
    let routes = Routes::new();
    routes.backend("blue", &[("s1", blue)]);
    routes.frontend("app", "blue", "PathPrefix(`/app`)");
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_dry_run_then_write_then_nothing_to_do() {
    let etcd = Etcd::start();
    let blue = TestBackend::start("blue").await;
    let routes = plan_dir(blue.addr);
    let dir = routes.path().to_str().expect("utf-8 path");
    let ep = etcd.endpoint();

    let (code, out, err) = ficus_cmd(&["apply", dir, "--etcd", &ep, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ /vulcand/frontends/app/frontend"), "{out}");
    assert!(out.contains("dry run: would write 3 added, 0 changed, 0 removed"), "{out}");
    assert_eq!(etcd.ctl(&["get", "--prefix", "/vulcand/", "--keys-only"]).trim(), "", "dry run wrote");

    let ficus = Ficus::start_etcd(&ep, P).await;
    let (code, out, err) = ficus_cmd(&["apply", dir, "--etcd", &ep]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("written at revision"), "{out}");
    let c = http1_client();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&c, &ficus.url("/app/x")).await.0 != 200 {
        assert!(Instant::now() < deadline, "applied plan not routed: {}", ficus.status().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Reformatting a file is not a change.
    routes.put(
        "backends/blue/backend",
        "{ \"Type\" : \"http\",\n \"Settings\": {\"Timeouts\":{\"Read\":\"2s\",\"Dial\":\"500ms\"}} }\n",
    );
    let (code, out, _) = ficus_cmd(&["apply", dir, "--etcd", &ep]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to write: 0 added, 0 changed, 0 removed"), "{out}");

    // An invalid plan is refused whole.
    routes.put("frontends/bad/frontend", r#"{"Type":"http","BackendId":"blue","Route":"Paht(`/`)"}"#);
    let (code, _, err) = ficus_cmd(&["apply", dir, "--etcd", &ep]);
    assert_eq!(code, 1);
    assert!(err.contains("frontends/bad/frontend: Route: unknown matcher `Paht`"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_detects_a_concurrent_change_and_force_overrides_it() {
    let etcd = Etcd::start();
    let blue = TestBackend::start("blue").await;
    let routes = plan_dir(blue.addr);
    let settings = EtcdSettings::new(vec![etcd.endpoint()]);
    ops::apply(routes.path(), &settings, &ApplyOptions::default()).await.expect("first apply");

    routes.frontend("app", "blue", "PathPrefix(`/v2`)");
    let plan = ops::plan(routes.path(), &settings).await.expect("plan");
    assert_eq!(plan.diff.changed, vec!["frontends/app/frontend".to_string()]);
    // Someone else writes the same key between our read and our write.
    etcd.put("/vulcand/frontends/app/frontend", r#"{"Type":"http","BackendId":"blue","Route":"Path(`/theirs`)"}"#);
    let err = ops::write(&settings, &plan, &ApplyOptions::default()).await.expect_err("conflict");
    let msg = err.to_string();
    assert!(msg.contains("frontends/app/frontend: changed by someone else"), "{msg}");
    assert!(etcd.ctl(&["get", "/vulcand/frontends/app/frontend"]).contains("/theirs"), "nothing written on conflict");
    // A new key someone else created meanwhile is a conflict too.
    routes.frontend("fresh", "blue", "Path(`/fresh`)");
    let plan = ops::plan(routes.path(), &settings).await.expect("plan");
    etcd.put("/vulcand/frontends/fresh/frontend", r#"{"Type":"http","BackendId":"blue","Route":"Path(`/x`)"}"#);
    assert!(ops::write(&settings, &plan, &ApplyOptions::default()).await.is_err());

    let force = ApplyOptions { force: true, ..Default::default() };
    ops::write(&settings, &plan, &force).await.expect("forced write");
    assert!(etcd.ctl(&["get", "/vulcand/frontends/app/frontend"]).contains("/v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_undefined_keys_but_spares_leased_servers_and_export_round_trips() {
    let etcd = Etcd::start();
    let blue = TestBackend::start("blue").await;
    let routes = plan_dir(blue.addr);
    let ep = etcd.endpoint();
    etcd.put("/vulcand/frontends/stale/frontend", r#"{"Type":"http","BackendId":"blue","Route":"Path(`/stale`)"}"#);
    let lease = etcd.ctl(&["lease", "grant", "60"]);
    let lease_id = lease.split_whitespace().nth(1).expect("lease id").to_string();
    etcd.ctl(&[
        "put",
        "--lease",
        &lease_id,
        "/vulcand/backends/blue/servers/self",
        &format!(r#"{{"URL":"http://{}"}}"#, blue.addr),
    ]);
    let dir = routes.path().to_str().expect("utf-8");

    let (code, out, err) = ficus_cmd(&["apply", dir, "--etcd", &ep]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("- /vulcand/frontends/stale/frontend (kept; --prune deletes it)"), "{out}");
    assert!(out.contains("= /vulcand/backends/blue/servers/self (leased"), "{out}");
    assert!(etcd.ctl(&["get", "/vulcand/frontends/stale/frontend"]).contains("stale"));

    let (code, out, err) = ficus_cmd(&["apply", dir, "--etcd", &ep, "--prune"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 added, 0 changed, 1 removed"), "{out}");
    assert!(!etcd.ctl(&["get", "/vulcand/frontends/stale/frontend"]).contains("stale"));
    assert!(etcd.ctl(&["get", "/vulcand/backends/blue/servers/self"]).contains("URL"), "leased key kept");

    // export writes the tree as files; applying them back changes nothing.
    let out_dir = tempfile::tempdir().expect("temp");
    let (code, out, err) = ficus_cmd(&["export", out_dir.path().to_str().expect("utf-8"), "--etcd", &ep]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote 4 keys"), "{out}");
    assert!(out_dir.path().join("frontends/app/frontend.json").exists());
    let (code, out, _) = ficus_cmd(&["apply", out_dir.path().to_str().expect("utf-8"), "--etcd", &ep, "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("would write 0 added, 0 changed, 0 removed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_and_drain_write_plain_keys_that_the_gateway_follows() {
    let etcd = Etcd::start();
    let legacy = TestBackend::start("legacy").await;
    let gtin = TestBackend::start("gtin").await;
    let gtin2 = TestBackend::start("gtin2").await;
    let ep = etcd.endpoint();
    etcd.put("/vulcand/backends/legacy/backend", r#"{"Type":"http"}"#);
    etcd.put("/vulcand/backends/legacy/servers/l1", &format!(r#"{{"URL":"http://{}"}}"#, legacy.addr));
    etcd.put("/vulcand/backends/gtin/backend", r#"{"Type":"http"}"#);
    etcd.put("/vulcand/backends/gtin/servers/g1", &format!(r#"{{"URL":"http://{}"}}"#, gtin.addr));
    etcd.put("/vulcand/backends/gtin/servers/g2", &format!(r#"{{"URL":"http://{}"}}"#, gtin2.addr));
    etcd.put(
        "/vulcand/frontends/gtin/frontend",
        r#"{"Type":"http","BackendId":"legacy","Route":"PathPrefix(\"/stores/\")"}"#,
    );
    let ficus = Ficus::start_etcd(&ep, P).await;

    let (code, _, err) = ficus_cmd(&["canary", "gtin", "legacy=95", "gtin=6", "--etcd", &ep]);
    assert_eq!(code, 1);
    assert!(err.contains("sum to 100, got 101"), "{err}");
    let (code, _, err) = ficus_cmd(&["canary", "gtin", "legacy=95", "nope=5", "--etcd", &ep]);
    assert_eq!(code, 1);
    assert!(err.contains("backends/nope/backend: not found"), "{err}");

    let gen = ficus.generation().await;
    let (code, out, err) = ficus_cmd(&["canary", "gtin", "legacy=95", "gtin=5", "--etcd", &ep]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#""Backends":[{"Id":"legacy","Weight":95},{"Id":"gtin","Weight":5}]"#), "{out}");
    ficus.wait_generation_above(gen).await;
    let c = http1_client();
    let mut to_gtin = 0;
    for _ in 0..100 {
        let b = served_by(&get(&c, &ficus.url("/stores/1/gtins/1")).await.1);
        if b.starts_with("gtin") {
            to_gtin += 1;
        }
    }
    assert_eq!(to_gtin, 5, "exactly 5 of 100 go to the canary");

    let gen = ficus.generation().await;
    let (code, out, err) = ficus_cmd(&["drain", "gtin/g2", "--etcd", &ep]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#""Draining":true"#), "{out}");
    ficus.wait_generation_above(gen).await;
    let gen = ficus.generation().await;
    let (code, out, err) = ficus_cmd(&["canary", "gtin", "gtin=100", "--etcd", &ep]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#""Backends":[{"Id":"gtin","Weight":100}]"#), "{out}");
    ficus.wait_generation_above(gen).await;
    let before = gtin2.hits();
    for _ in 0..20 {
        assert_eq!(served_by(&get(&c, &ficus.url("/stores/1/gtins/1")).await.1), "gtin");
    }
    assert_eq!(gtin2.hits(), before, "a draining server gets no new requests");
    let (code, out, _) = ficus_cmd(&["drain", "gtin/g2", "--undo", "--etcd", &ep]);
    assert_eq!(code, 0);
    assert!(!out.contains("Draining"), "{out}");
}

/// etcd takes at most 128 operations per transaction by default. A bigger plan lands in several transactions,
/// backends before the frontends that name them, and deletions of frontends before their backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_over_the_transaction_limit_lands_in_dependency_order() {
    let etcd = Etcd::start();
    let blue = TestBackend::start("blue").await;
    let routes = Routes::new();
    for i in 0..150 {
        routes.frontend(&format!("f{i:03}"), &format!("b{i:03}"), &format!("Path(`/f/{i}`)"));
        routes.backend(&format!("b{i:03}"), &[("s1", blue.addr)]);
    }
    let dir = routes.path().to_str().expect("utf-8 path").to_string();
    let (code, out, err) = ficus_cmd(&["apply", &dir, "--etcd", &etcd.endpoint()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("written in 5 transactions"), "{out}");
    assert!(out.contains("450 added"), "{out}");

    // Every frontend was written after every backend and server: no revision had a frontend without its backend.
    let settings = EtcdSettings::new(vec![etcd.endpoint()]);
    let plan = ops::plan(routes.path(), &settings).await.expect("plan");
    assert!(plan.diff.is_empty(true), "{:?}", plan.diff);
    let revisions = |prefix: &str| -> Vec<i64> {
        let out = etcd.ctl(&["get", "--prefix", prefix, "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        v["kvs"].as_array().expect("kvs").iter().map(|kv| kv["mod_revision"].as_i64().expect("rev")).collect()
    };
    let backends = revisions(&format!("{P}/backends/"));
    let frontends = revisions(&format!("{P}/frontends/"));
    assert_eq!((backends.len(), frontends.len()), (300, 150));
    assert!(backends.iter().max() < frontends.iter().min(), "backends {backends:?} frontends {frontends:?}");

    // A small plan still takes one transaction; the limit is the operator's to set.
    routes.frontend("f000", "b000", "Path(`/moved`)");
    let (code, out, err) = ficus_cmd(&["apply", &dir, "--etcd", &etcd.endpoint(), "--max-txn-ops", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("written at revision"), "{out}");
}
