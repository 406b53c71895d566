//! etcd faults while the gateway serves: killed and restarted, cut off by a relay the test controls (with and
//! without a compaction during the cut), stopped with SIGSTOP. Requests run the whole time and none may fail;
//! every write made during a fault must arrive once etcd is reachable again.

use crate::common;

use common::backend::TestBackend;
use common::etcd::{Etcd, Relay};
use common::load::Load;
use common::*;
use std::time::{Duration, Instant};

const P: &str = "/vulcand";

/// A backend `b` and a steady frontend for the load.
async fn seed(etcd: &Etcd) -> TestBackend {
    let b = TestBackend::start("b").await;
    etcd.put(&format!("{P}/backends/b/backend"), r#"{"Type":"http"}"#);
    etcd.put(&format!("{P}/backends/b/servers/s1"), &format!(r#"{{"URL":"http://{}"}}"#, b.addr));
    etcd.put(&format!("{P}/frontends/steady/frontend"), r#"{"Type":"http","BackendId":"b","Route":"Path(`/steady`)"}"#);
    b
}

fn frontend(etcd: &Etcd, id: &str) {
    etcd.put(
        &format!("{P}/frontends/{id}/frontend"),
        &format!(r#"{{"Type":"http","BackendId":"b","Route":"Path(`/{id}`)"}}"#),
    );
}

/// Waits until `/status` shows the source in `state`.
async fn wait_state(ficus: &Ficus, state: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = ficus.status().await;
        if s["source"]["state"] == state {
            return s;
        }
        assert!(Instant::now() < deadline, "source never `{state}`: {s}\nlog:\n{}", ficus.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_while_serving_then_restarted_and_written_to() {
    let mut etcd = Etcd::start();
    let _b = seed(&etcd).await;
    let ficus = Ficus::start_etcd(&etcd.endpoint(), P).await;
    let load = Load::start(ficus.url("/steady"), 4);
    frontend(&etcd, "before");
    wait_paths(&ficus, &["/before"], &[], Duration::from_secs(5)).await;

    etcd.kill();
    let s = wait_state(&ficus, "error", Duration::from_secs(10)).await;
    assert!(s["source"]["last_error"].as_str().is_some_and(|e| e.contains("etcd")), "{s}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&http1_client(), &ficus.url("/before")).await.0, 200, "the last table keeps serving");

    etcd.restart();
    frontend(&etcd, "after");
    wait_paths(&ficus, &["/before", "/after"], &[], Duration::from_secs(10)).await;
    let s = wait_state(&ficus, "watching", Duration::from_secs(5)).await;
    assert!(s["source"]["errors_total"].as_u64() >= Some(1), "{s}");
    load.finish(50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_by_a_relay_while_keys_are_written_then_every_write_arrives() {
    let etcd = Etcd::start();
    let _b = seed(&etcd).await;
    let relay = Relay::start(etcd.addr());
    let ficus = Ficus::start_etcd(&relay.endpoint(), P).await;
    let load = Load::start(ficus.url("/steady"), 4);
    frontend(&etcd, "gone");
    wait_paths(&ficus, &["/gone"], &[], Duration::from_secs(5)).await;
    let gen = ficus.generation().await;

    relay.cut();
    // Writes Ficus cannot see: puts, a delete, and a change of an existing key.
    for i in 0..20 {
        frontend(&etcd, &format!("cut{i}"));
    }
    etcd.ctl(&["del", &format!("{P}/frontends/gone/frontend")]);
    wait_state(&ficus, "error", Duration::from_secs(10)).await;
    assert_eq!(ficus.generation().await, gen, "nothing applied while cut off");

    relay.heal();
    let paths: Vec<String> = (0..20).map(|i| format!("/cut{i}")).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    wait_paths(&ficus, &paths, &["/gone"], Duration::from_secs(10)).await;
    let s = wait_state(&ficus, "watching", Duration::from_secs(5)).await;
    assert_eq!(s["source"]["revision"].as_i64(), Some(etcd.revision()), "{s}");
    load.finish(50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_during_a_cut_is_recovered_by_a_full_relist() {
    let etcd = Etcd::start();
    let _b = seed(&etcd).await;
    frontend(&etcd, "old");
    let relay = Relay::start(etcd.addr());
    let ficus = Ficus::start_etcd(&relay.endpoint(), P).await;
    let load = Load::start(ficus.url("/steady"), 4);
    wait_paths(&ficus, &["/old"], &[], Duration::from_secs(5)).await;

    relay.cut();
    frontend(&etcd, "new");
    etcd.ctl(&["del", &format!("{P}/frontends/old/frontend")]);
    for i in 0..5 {
        frontend(&etcd, &format!("churn{i}"));
    }
    // The revisions Ficus would resume from are gone.
    etcd.compact();
    relay.heal();
    wait_paths(&ficus, &["/new", "/churn4"], &["/old"], Duration::from_secs(10)).await;
    let s = ficus.status().await;
    let problems = s["source"]["problems"].to_string() + &s["source"]["last_error"].to_string();
    assert!(problems.contains("compacted"), "the re-list is visible: {s}");
    // Writes after the re-list still arrive: the watch resumed from the listing's revision.
    frontend(&etcd, "later");
    wait_paths(&ficus, &["/later"], &[], Duration::from_secs(5)).await;
    load.finish(50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_with_sigstop_is_detected_and_resumed() {
    let etcd = Etcd::start();
    let _b = seed(&etcd).await;
    let ficus = Ficus::start_etcd(&etcd.endpoint(), P).await;
    let load = Load::start(ficus.url("/steady"), 4);
    frontend(&etcd, "one");
    wait_paths(&ficus, &["/one"], &[], Duration::from_secs(5)).await;

    etcd.signal("STOP");
    // Hung, not dead: the socket stays open, only keep-alive and timeouts can tell.
    let s = wait_state(&ficus, "error", Duration::from_secs(10)).await;
    assert!(s["source"]["last_error"].as_str().is_some(), "{s}");
    assert_eq!(get(&http1_client(), &ficus.url("/one")).await.0, 200);
    etcd.signal("CONT");
    frontend(&etcd, "two");
    wait_paths(&ficus, &["/one", "/two"], &[], Duration::from_secs(10)).await;
    wait_state(&ficus, "watching", Duration::from_secs(5)).await;
    load.finish(50).await;
}
