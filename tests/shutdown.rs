//! SIGTERM: stop accepting, finish what is in flight, close keep-alive connections politely, exit.

mod common;

use common::backend::TestBackend;
use common::*;
use http_body_util::Full;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let routes = Routes::new();
    let b = TestBackend::start("slow").await;
    routes.backend("slow", &[("s1", b.addr)]);
    routes.frontend("slow", "slow", "PathPrefix(`/`)");
    let mut ficus = Ficus::start(routes.path()).await;
    let url = ficus.url("/slow/1500");
    let h1 = http1_client();
    let h2 = h2c_client();
    // An idle keep-alive connection, to be closed politely.
    assert_eq!(get(&h1, &ficus.url("/warm")).await.0, 200);
    let in_flight: Vec<_> = [h1.clone(), h2.clone(), h1.clone()]
        .into_iter()
        .map(|c| {
            let url = url.clone();
            tokio::spawn(async move { request(&c, http::Request::get(url).body(Full::default()).unwrap()).await })
        })
        .collect();
    // The warm-up request plus the three in flight have reached the backend.
    wait_for("three requests at the backend", || b.hits() >= 4).await;
    ficus.signal("TERM");
    for r in in_flight {
        let (code, body) = r.await.unwrap();
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }
    // The listener closed: new connections are refused.
    wait_for("the listener closed", || std::net::TcpStream::connect(ficus.addr).is_err()).await;
    // Well within the 5 s drain deadline the test starts Ficus with, so a clean exit means it went idle.
    let status = ficus.wait_exit(Duration::from_secs(30)).expect("exits once idle");
    assert!(status.success(), "{status}: {}", ficus.log_text());
    let log = ficus.log_text();
    assert!(log.contains("SIGTERM: draining") && log.contains("drained; exiting"), "{log}");
}

/// Idle keep-alive connections give their buffers back (they park); a drain still closes them politely, and
/// one whose client speaks just as the drain begins is answered first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_are_answered_or_closed_politely_at_a_drain() {
    let routes = Routes::new();
    let b = TestBackend::start("echo").await;
    routes.backend("echo", &[("s1", b.addr)]);
    routes.frontend("echo", "echo", "PathPrefix(`/`)");
    let mut ficus = Ficus::start(routes.path()).await;
    let mut quiet = RawConn::connect(ficus.addr).await;
    let mut late = RawConn::connect(ficus.addr).await;
    for c in [&mut quiet, &mut late] {
        c.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(c.response().await.0, 200);
    }
    let parked = async {
        while ficus.metric("ficus_parked_connections").await < 2.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), parked).await.expect("both connections park");

    ficus.signal("TERM");
    // The drain has begun once the listener is closed; the late client speaks within its grace for quiet
    // connections.
    while std::net::TcpStream::connect(ficus.addr).is_ok() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    late.send(b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let (status, head, _) = tokio::time::timeout(Duration::from_secs(5), late.response_with_head()).await.unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    for c in [&mut quiet, &mut late] {
        assert!(tokio::time::timeout(Duration::from_secs(5), c.closed()).await.unwrap(), "closed with a reset");
    }
    let status = ficus.wait_exit(Duration::from_secs(30)).expect("exits once idle");
    assert!(status.success(), "{status}: {}", ficus.log_text());
    assert!(!ficus.log_text().contains("drain deadline reached"), "exited at the deadline, not idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_bounds_a_stuck_request() {
    let (_routes, _b, mut ficus, stuck) = stuck_request("1s").await;
    let signalled = Instant::now();
    ficus.signal("TERM");
    let status = ficus.wait_exit(Duration::from_secs(30)).expect("exits at the drain deadline");
    let took = signalled.elapsed();
    // A lower bound only: the drain waited for the deadline instead of dropping the request at once.
    assert!(took >= Duration::from_millis(900), "exit after {took:?}, before the 1 s deadline");
    assert!(status.success(), "{status}");
    assert!(ficus.log_text().contains("drain deadline reached"), "{}", ficus.log_text());
    // The client whose request was cut sees its connection closed without a response, promptly (not at its own
    // 20 s timeout), and not a success.
    match stuck.await.expect("client task") {
        Ok(Err(e)) => {
            let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<hyper::Error>());
            assert!(
                source.is_some_and(|h| h.is_incomplete_message() || h.is_closed()),
                "the cut request fails as a closed connection, got {e:?}"
            );
        }
        Ok(Ok(resp)) => panic!("the cut request got a response: {}", resp.status()),
        Err(_) => panic!("the cut request hung past the drain deadline"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let (_routes, _b, mut ficus, stuck) = stuck_request("30s").await;
    ficus.signal("TERM");
    assert!(ficus.log_shows("SIGTERM: draining").await, "the first signal starts a drain: {}", ficus.log_text());
    assert!(ficus.wait_exit(Duration::from_millis(10)).is_none(), "the first signal drains, it does not exit");
    ficus.signal("TERM");
    // The drain deadline is 30 s: an exit well before it comes from the second signal.
    let status = ficus.wait_exit(Duration::from_secs(20)).expect("the second signal exits at once");
    assert!(!status.success(), "an interrupted drain is not a clean exit: {status}");
    let _ = stuck.await;
}

type Stuck = tokio::task::JoinHandle<
    Result<
        Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
        tokio::time::error::Elapsed,
    >,
>;

/// A gateway with `--drain-timeout drain` and one request in flight that the backend holds for 30 s.
async fn stuck_request(drain: &str) -> (Routes, TestBackend, Ficus, Stuck) {
    let routes = Routes::new();
    let b = TestBackend::start("stuck").await;
    routes.put("backends/stuck/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"60s"}}}"#);
    routes.put("backends/stuck/servers/s1", &format!(r#"{{"URL":"http://{}"}}"#, b.addr));
    routes.frontend("stuck", "stuck", "PathPrefix(`/`)");
    let ficus = Ficus::start_with(
        routes.path(),
        FicusOptions { extra: vec!["--drain-timeout".into(), drain.into()], ..Default::default() },
    )
    .await;
    let url = ficus.url("/slow/30000");
    let c = http1_client();
    let stuck = tokio::spawn(async move {
        let req = http::Request::get(url).body(Full::default()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), c.request(req)).await
    });
    wait_for("the stuck request at the backend", || b.hits() >= 1).await;
    (routes, b, ficus, stuck)
}
