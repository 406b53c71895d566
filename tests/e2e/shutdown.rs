//! SIGTERM: stop accepting, finish what is in flight, close keep-alive connections politely, exit.

use crate::common;

use common::backend::TestBackend;
use common::*;
use http_body_util::Full;
use std::time::{Duration, Instant};

/// With two workers the drain waits for every worker's connections, not only those of the thread that accepts
/// (worker 0): the longer request is the one on worker 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_two_workers_finishes_in_flight_requests_on_both_then_exits() {
    use crate::workers::{wait_workers, worker_connections};
    let routes = Routes::new();
    let b = TestBackend::start("slow").await;
    routes.put("backends/slow/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"20s"}}}"#);
    routes.put("backends/slow/servers/s1", &format!(r#"{{"URL":"http://{}"}}"#, b.addr));
    routes.frontend("slow", "slow", "PathPrefix(`/`)");
    let opts = FicusOptions { extra: vec!["--threads".into(), "2".into()], ..Default::default() };
    let mut ficus = Ficus::start_with(routes.path(), opts).await;
    wait_workers(&ficus, &[0, 0]).await;
    // One connection on each worker, told apart by the counts.
    let mut first = RawConn::connect(ficus.addr).await;
    first.send(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(first.response().await.0, 200);
    let first_on_main = worker_connections(&ficus).await == [1, 0];
    let mut second = RawConn::connect(ficus.addr).await;
    second.send(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(second.response().await.0, 200);
    wait_workers(&ficus, &[1, 1]).await;
    let (mut on_main, mut on_other) = if first_on_main { (first, second) } else { (second, first) };
    on_main.send(b"GET /slow/200 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    on_other.send(b"GET /slow/3000 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    wait_for("both slow requests at the backend", || b.hits() >= 4).await;
    ficus.signal("TERM");
    // Each connection is dropped (closed on our side) once answered, so worker 0's ends long before worker 1's
    // request does.
    for (name, mut c) in [("worker 0", on_main), ("worker 1", on_other)] {
        let answer = tokio::time::timeout(Duration::from_secs(10), c.response_with_head()).await;
        let (status, head, _) = answer.unwrap_or_else(|_| panic!("no answer on {name}"));
        assert_eq!(status, 200, "{name}: {head}");
        assert!(head.to_ascii_lowercase().contains("connection: close"), "{name}: {head}");
    }
    let status = ficus.wait_exit(Duration::from_secs(30)).expect("exits once idle");
    assert!(status.success(), "{status}: {}", ficus.log_text());
    assert!(!ficus.log_text().contains("drain deadline reached"), "exited at the deadline, not idle");
}

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
    assert_cut(stuck).await;
}

/// The client whose request was cut sees its connection closed without a response, promptly (not at its own
/// 20 s timeout), and not a success.
async fn assert_cut(stuck: Stuck) {
    match stuck.await.expect("client task") {
        Ok(Err(e)) => {
            let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<hyper::Error>());
            assert!(
                source.is_some_and(|h| h.is_incomplete_message() || h.is_closed()),
                "the cut request fails as a closed connection, got {e:?}"
            );
        }
        Ok(Ok(resp)) => panic!("the cut request got a response: {}", resp.status()),
        Err(_) => panic!("the cut request hung past the exit"),
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
    assert_cut(stuck).await;
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

/// An HTTP/2 client is told of the drain with GOAWAY (NO_ERROR), then its connection is closed cleanly. Spoken
/// in raw frames, so the GOAWAY itself is seen, not a client library's reaction to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_get_goaway_at_a_drain() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let routes = Routes::new();
    let b = TestBackend::start("echo").await;
    routes.backend("echo", &[("s1", b.addr)]);
    routes.frontend("echo", "echo", "PathPrefix(`/`)");
    let mut ficus = Ficus::start(routes.path()).await;
    let mut conn = tokio::net::TcpStream::connect(ficus.addr).await.unwrap();
    // The h2c prior-knowledge preface and an empty SETTINGS frame.
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();

    /// Reads one frame: type, flags and payload; `None` at a clean end of the connection.
    async fn frame(conn: &mut tokio::net::TcpStream) -> Option<(u8, u8, Vec<u8>)> {
        let mut head = [0u8; 9];
        let read = tokio::time::timeout(Duration::from_secs(20), conn.read_exact(&mut head)).await.expect("a frame");
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => panic!("connection error: {e}"),
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.expect("frame payload");
        Some((head[3], head[4], payload))
    }

    // The server's SETTINGS, acknowledged; the connection is then established and idle.
    let (kind, _, _) = frame(&mut conn).await.expect("server settings");
    assert_eq!(kind, 0x4, "the server speaks first with SETTINGS");
    conn.write_all(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00").await.unwrap();

    ficus.signal("TERM");
    let mut goaway = None;
    loop {
        match frame(&mut conn).await {
            Some((0x7, _, payload)) => {
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                assert_eq!(code, 0, "GOAWAY with NO_ERROR");
                goaway = Some(code);
            }
            // SETTINGS acknowledgements, PINGs and window updates may come first.
            Some((0x6, 0, payload)) => {
                // A PING is answered, as a live client would.
                let mut ack = vec![0x00, 0x00, 0x08, 0x06, 0x01, 0, 0, 0, 0];
                ack.extend_from_slice(&payload);
                let _ = conn.write_all(&ack).await;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(goaway, Some(0), "the connection was closed without a GOAWAY");
    let status = ficus.wait_exit(Duration::from_secs(30)).expect("exits once idle");
    assert!(status.success(), "{status}: {}", ficus.log_text());
}
