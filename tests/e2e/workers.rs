//! Thread-per-core mode (`--threads 2`): connections are handed to the worker with the fewest open ones, and
//! `/status` shows each worker's count. The drain, the hot upgrade and keyed listeners with two workers are
//! tested beside their one-runtime forms (`shutdown`, `upgrade`, `reload`).

use crate::common;

use common::backend::TestBackend;
use common::*;
use std::time::Duration;

/// Each worker's open connections, from `/status`.
pub async fn worker_connections(ficus: &Ficus) -> Vec<u64> {
    let status = ficus.status().await;
    let list = status["workers"].as_array().unwrap_or_else(|| panic!("/status has no workers list: {status}"));
    list.iter().map(|w| w["connections"].as_u64().expect("a worker's connections")).collect()
}

/// Waits until `/status` shows `want` connections per worker.
pub async fn wait_workers(ficus: &Ficus, want: &[u64]) {
    let wait = async {
        loop {
            if worker_connections(ficus).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), wait).await.is_err() {
        panic!("workers never had {want:?} connections; last {:?}", worker_connections(ficus).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_evenly_over_two_workers_and_each_worker_serves() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let ficus = Ficus::start_with(
        routes.path(),
        FicusOptions { extra: vec!["--threads".into(), "2".into()], ..Default::default() },
    )
    .await;
    // The harness's readiness probe connected once; it is gone before the count starts.
    wait_workers(&ficus, &[0, 0]).await;
    let mut conns = Vec::new();
    for i in 0..4 {
        let mut c = RawConn::connect(ficus.addr).await;
        c.send(format!("GET /first{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
        assert_eq!(c.response().await.0, 200);
        conns.push(c);
    }
    // One at a time, each to the worker with fewer: two each.
    wait_workers(&ficus, &[2, 2]).await;
    // Every connection, whichever worker holds it, keeps serving (its upstream connections are its worker's).
    for round in 0..3 {
        for c in conns.iter_mut() {
            c.send(format!("GET /again{round} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
            assert_eq!(c.response().await.0, 200);
        }
    }
    drop(conns);
    wait_workers(&ficus, &[0, 0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_shows_no_workers_list() {
    let routes = Routes::new();
    let ficus = Ficus::start_with(
        routes.path(),
        FicusOptions { extra: vec!["--threads".into(), "1".into()], ..Default::default() },
    )
    .await;
    let status = ficus.status().await;
    assert!(status.get("workers").is_none(), "{status}");
}
