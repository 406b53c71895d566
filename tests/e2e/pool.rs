//! The upstream connection pool, seen from a backend that counts its connections: reuse, a connection the
//! backend closed while it sat idle, the idle limit, and a server leaving the config.

use crate::common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A keep-alive HTTP/1.1 backend on a raw socket, so every connection is visible: it counts accepts and open
/// connections, and on `close_idle` closes every connection that is between requests (as a server does
/// when its idle timeout fires, or when it restarts). `/slow/<n>` holds each request until n of them wait
/// together, so they certainly overlap: each needs its own upstream connection.
struct CountingBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    close_idle: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

/// Requests waiting for the rest of their batch, and the signal that releases a full batch.
#[derive(Default)]
struct Barrier {
    waiting: std::sync::Mutex<usize>,
    released: tokio::sync::Notify,
}

impl Barrier {
    /// Waits until `n` requests wait here together. If they never do (the pool did not open `n` connections at
    /// once), the gateway's 5 s Read timeout answers 504 and the test fails on that; the 20 s bound only keeps
    /// the backend from holding a connection forever.
    async fn wait(&self, n: usize) {
        let released = self.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        {
            let mut waiting = self.waiting.lock().expect("barrier lock");
            *waiting += 1;
            if *waiting >= n {
                *waiting = 0;
                self.released.notify_waiters();
                return;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), released).await;
    }
}

impl Drop for CountingBackend {
    fn drop(&mut self) {
        self.task.abort();
        // Connection tasks end with the watch sender.
    }
}

impl CountingBackend {
    async fn start() -> CountingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (close_idle, rx) = watch::channel(0u64);
        let (a, o) = (accepted.clone(), open.clone());
        let barrier = Arc::new(Barrier::default());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (o, rx, barrier) = (o.clone(), rx.clone(), barrier.clone());
                tokio::spawn(async move {
                    serve(stream, rx, &barrier).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        CountingBackend { addr, accepted, open, close_idle, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn close_idle(&self) {
        self.close_idle.send_modify(|n| *n += 1);
    }

    /// Waits (up to 10 s) until `open` connections remain.
    async fn wait_open(&self, open: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.open() != open {
            assert!(Instant::now() < deadline, "backend has {} connections open, expected {open}", self.open());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One connection: request heads (no bodies) answered in turn until the client closes, or `close` fires
/// while the connection sits idle between two requests.
async fn serve(mut stream: TcpStream, mut close: watch::Receiver<u64>, barrier: &Barrier) {
    close.borrow_and_update();
    let mut buf = Vec::with_capacity(4096);
    let mut served = 0;
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = if buf.is_empty() && served > 0 {
                tokio::select! {
                    r = stream.read(&mut chunk) => r,
                    _ = close.changed() => return,
                }
            } else {
                stream.read(&mut chunk).await
            };
            match n {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        if let Some(rest) = head.strip_prefix("GET /slow/") {
            let n = rest.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(1);
            barrier.wait(n).await;
        }
        let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
        if stream.write_all(resp).await.is_err() {
            return;
        }
        // A close asked for while this request was served fires right after it: the harshest timing.
        served += 1;
    }
}

fn routes_for(b: &CountingBackend, max_idle: u32) -> Routes {
    let routes = Routes::new();
    let settings = serde_json::json!({"Type":"http","Settings":{"Timeouts":{"Read":"5s","Dial":"1s"},
        "KeepAlive":{"MaxIdleConnsPerHost": max_idle}}});
    routes.put("backends/b/backend", &settings.to_string());
    routes.put("backends/b/servers/s1", &format!(r#"{{"URL":"http://{}"}}"#, b.addr));
    routes.frontend("f", "b", "PathPrefix(`/`)");
    routes
}

/// One thread: with several, a second client connection (the client opens one when the first is not yet back
/// in its own pool) may land on the other worker, which keeps idle connections of its own
/// (`idle_connections_are_capped_per_worker_with_two_workers`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection() {
    let b = CountingBackend::start().await;
    let routes = routes_for(&b, 16);
    let opts = FicusOptions { extra: vec!["--threads".into(), "1".into()], ..Default::default() };
    let ficus = Ficus::start_with(routes.path(), opts).await;
    let client = http1_client();
    for _ in 0..100 {
        let (code, body) = get(&client, &ficus.url("/x")).await;
        assert_eq!((code, &body[..]), (200, &b"ok"[..]));
    }
    assert_eq!(b.accepted(), 1, "100 sequential requests should share one upstream connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_backend_closed_while_idle_do_not_fail_requests() {
    let b = CountingBackend::start().await;
    let routes = routes_for(&b, 16);
    let ficus = Ficus::start(routes.path()).await;
    let client = http1_client();
    for round in 0..5 {
        // Several pooled connections, then the backend drops all of them while they sit idle.
        let slow = ficus.url("/slow/4");
        let batch: Vec<_> = (0..4).map(|_| get(&client, &slow)).collect();
        for (code, _) in futures_util::future::join_all(batch).await {
            assert_eq!(code, 200, "round {round}");
        }
        b.close_idle();
        b.wait_open(0).await;
        for i in 0..10 {
            let (code, body) = get(&client, &ficus.url("/after")).await;
            assert_eq!(code, 200, "round {round}, request {i} after the backend closed idle connections: {body:?}");
        }
    }
}

/// One thread: the cap is then the server's whole idle pool (with several, each worker's; below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_per_server() {
    let b = CountingBackend::start().await;
    let routes = routes_for(&b, 2);
    let opts = FicusOptions { extra: vec!["--threads".into(), "1".into()], ..Default::default() };
    let ficus = Ficus::start_with(routes.path(), opts).await;
    let client = http1_client();
    let slow = ficus.url("/slow/8");
    let batch: Vec<_> = (0..8).map(|_| get(&client, &slow)).collect();
    for (code, _) in futures_util::future::join_all(batch).await {
        assert_eq!(code, 200);
    }
    assert_eq!(b.accepted(), 8, "eight overlapping requests need eight connections");
    // Of the eight, the pool keeps two and closes the rest.
    b.wait_open(2).await;
    for _ in 0..10 {
        assert_eq!(get(&client, &ficus.url("/x")).await.0, 200);
    }
    assert_eq!(b.accepted(), 8, "the two idle connections are reused");
}

/// With two workers each keeps its own idle connections (a socket belongs to the worker that opened it), so
/// `MaxIdleConnsPerHost` caps each worker's: eight overlapping requests on eight client connections, four per
/// worker, leave two idle connections on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_per_worker_with_two_workers() {
    let b = CountingBackend::start().await;
    let routes = routes_for(&b, 2);
    let opts = FicusOptions { extra: vec!["--threads".into(), "2".into()], ..Default::default() };
    let ficus = Ficus::start_with(routes.path(), opts).await;
    crate::workers::wait_workers(&ficus, &[0, 0]).await;
    let client = http1_client();
    let slow = ficus.url("/slow/8");
    let batch: Vec<_> = (0..8).map(|_| get(&client, &slow)).collect();
    for (code, _) in futures_util::future::join_all(batch).await {
        assert_eq!(code, 200);
    }
    assert_eq!(crate::workers::worker_connections(&ficus).await, [4, 4], "eight client connections, four each");
    assert_eq!(b.accepted(), 8, "eight overlapping requests need eight connections");
    b.wait_open(4).await;
    for _ in 0..10 {
        assert_eq!(get(&client, &ficus.url("/x")).await.0, 200);
    }
    assert_eq!(b.accepted(), 8, "the idle connections are reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_leaving_the_config_closes_its_idle_connections() {
    let b = CountingBackend::start().await;
    let other = CountingBackend::start().await;
    let routes = routes_for(&b, 16);
    let ficus = Ficus::start(routes.path()).await;
    let client = http1_client();
    let slow = ficus.url("/slow/3");
    let batch: Vec<_> = (0..3).map(|_| get(&client, &slow)).collect();
    for (code, _) in futures_util::future::join_all(batch).await {
        assert_eq!(code, 200);
    }
    assert_eq!(b.open(), 3);
    let generation = ficus.generation().await;
    routes.put("backends/b/servers/s2", &format!(r#"{{"URL":"http://{}"}}"#, other.addr));
    routes.delete("backends/b/servers/s1");
    ficus.wait_generation_above(generation).await;
    // Wait for the table without s1 (the two files may land in two reloads).
    let deadline = Instant::now() + Duration::from_secs(10);
    while other.accepted() == 0 {
        assert_eq!(get(&client, &ficus.url("/x")).await.0, 200);
        assert!(Instant::now() < deadline, "requests never reached the new server");
    }
    b.wait_open(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_under_load_survive_a_backend_closing_idle_connections_over_and_over() {
    let b = Arc::new(CountingBackend::start().await);
    let routes = routes_for(&b, 16);
    let ficus = Ficus::start(routes.path()).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closer = {
        let (b, stop) = (b.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                b.close_idle();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = ficus.url("/load");
            tokio::spawn(async move {
                let client = http1_client();
                let mut failed = Vec::new();
                for _ in 0..100 {
                    let (code, body) = get(&client, &url).await;
                    if code != 200 {
                        failed.push((code, String::from_utf8_lossy(&body).into_owned()));
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = Vec::new();
    for c in clients {
        failed.extend(c.await.expect("client task"));
    }
    stop.store(true, Ordering::SeqCst);
    closer.await.expect("closer");
    let log = ficus.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("upstream request failed")).take(3).collect();
    assert!(
        failed.is_empty(),
        "{} of 400 failed: {:?}\n{}",
        failed.len(),
        &failed[..failed.len().min(3)],
        errors.join("\n")
    );
    assert!(b.accepted() > 4, "the backend closed connections during the run");
}
