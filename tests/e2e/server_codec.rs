//! Ficus's own HTTP/1.1 server codec (`listen::h1`) where its unit and differential tests do not reach: a real
//! gateway process, raw client sockets and a raw upstream that shows what happens to its side. A client that
//! leaves while its request waits on the upstream, a client that stops reading a large response, a declared
//! body that never completes, pipelined heads, and one keep-alive connection passed between the codec and
//! hyper's server and back.

use crate::common;

use common::backend::TestBackend;
use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw HTTP/1.1 upstream that counts what happens to its connections. `/hold/...` is never answered,
/// `/big` streams a 1 GiB body for as long as it can write, anything else is answered with its own path.
struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Requests read off a connection (held ones included).
    requests: Arc<AtomicUsize>,
    /// Connections that ended (read end or failed write) on the upstream's side.
    closed: Arc<AtomicUsize>,
    /// Body bytes `/big` got written into its socket.
    streamed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let streamed = Arc::new(AtomicU64::new(0));
        let (a, r, c, s) = (accepted.clone(), requests.clone(), closed.clone(), streamed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let (r, c, s) = (r.clone(), c.clone(), s.clone());
                tokio::spawn(async move {
                    serve_raw(stream, &r, &s).await;
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        RawUpstream { addr, accepted, requests, closed, streamed, task }
    }
}

/// One upstream connection: requests without bodies, answered in turn, until the connection ends.
async fn serve_raw(mut stream: TcpStream, requests: &AtomicUsize, streamed: &AtomicU64) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        requests.fetch_add(1, Ordering::SeqCst);
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        if path.starts_with("/hold") {
            // Never answered: the connection ends when the gateway drops it.
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }
        if path == "/big" {
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let block = vec![b'x'; 64 * 1024];
            loop {
                if stream.write_all(&block).await.is_err() {
                    return;
                }
                streamed.fetch_add(block.len() as u64, Ordering::SeqCst);
            }
        }
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}", path.len());
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Waits (up to `limit`) for `what` to hold.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One response read off a raw connection.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads responses (framed by Content-Length) one after another off one connection.
struct Reader<R> {
    r: R,
    buf: Vec<u8>,
}

impl<R: AsyncReadExt + Unpin> Reader<R> {
    fn new(r: R) -> Self {
        Reader { r, buf: Vec::new() }
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(15), self.r.read(&mut chunk)).await.expect("bytes in 15 s") {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next response; `None` when the connection ended first.
    async fn answer(&mut self) -> Option<Answer> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0usize);
        while self.buf.len() < end + len {
            if !self.fill().await {
                return None;
            }
        }
        let body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        Some(Answer { status, head, body })
    }
}

/// The access log's lines (its answers and its upstream failures) in the gateway's output.
fn access_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains(" access:")).count()
}

async fn raw_setup(upstream: &RawUpstream, extra: &[&str]) -> (Routes, Ficus) {
    let routes = Routes::new();
    routes.backend("raw", &[("s1", upstream.addr)]);
    // A read timeout far past the tests' own waits: only the client's leaving or the header timeout can
    // end a held request or a stalled response, never the upstream timeout.
    routes.put("backends/raw/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"60s","Dial":"500ms"}}}"#);
    routes.frontend("raw", "raw", "PathPrefix(`/`)");
    let opts = FicusOptions { extra: extra.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let ficus = Ficus::start_with(routes.path(), opts).await;
    (routes, ficus)
}

/// Leaves a request held by the upstream: the client sends `request`, waits until the upstream has it, and
/// closes its connection. Returns once the upstream saw its connection end.
async fn leave_held_request(ficus: &Ficus, upstream: &RawUpstream, request: &[u8]) {
    let requests = upstream.requests.load(Ordering::SeqCst);
    let closed = upstream.closed.load(Ordering::SeqCst);
    let mut client = TcpStream::connect(ficus.addr).await.expect("connect");
    client.write_all(request).await.expect("send");
    wait_for("the upstream has the request", Duration::from_secs(10), || {
        upstream.requests.load(Ordering::SeqCst) > requests
    })
    .await;
    drop(client);
    wait_for("the upstream connection dropped after the client left", Duration::from_secs(10), || {
        upstream.closed.load(Ordering::SeqCst) > closed
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_its_request_as_with_hyper() {
    let upstream = RawUpstream::start().await;
    let (_routes, ficus) = raw_setup(&upstream, &[]).await;
    let client = http1_client();

    let before = ficus.metric("ficus_requests_total").await;
    let errors_before = ficus.metric("ficus_upstream_errors_total").await;
    // An HTTP/1.1 GET: the codec's own path.
    leave_held_request(&ficus, &upstream, b"GET /hold/codec HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let (status, body) = get(&client, &ficus.url("/after-codec")).await;
    assert_eq!((status, &body[..]), (200, &b"/after-codec"[..]), "the gateway keeps serving");
    assert!(ficus.log_shows("/after-codec").await, "the access log has the answered request");
    let codec_lines = access_lines(&ficus.log_text());
    let codec = ficus.metric("ficus_requests_total").await - before;
    let codec_errors = ficus.metric("ficus_upstream_errors_total").await - errors_before;

    // The same request forced onto hyper's path by HTTP/1.0.
    leave_held_request(&ficus, &upstream, b"GET /hold/hyper HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let (status, body) = get(&client, &ficus.url("/after-hyper")).await;
    assert_eq!((status, &body[..]), (200, &b"/after-hyper"[..]), "the gateway keeps serving");
    assert!(ficus.log_shows("/after-hyper").await, "the access log has the answered request");
    let hyper_lines = access_lines(&ficus.log_text()) - codec_lines;
    let hyper = ficus.metric("ficus_requests_total").await - before - codec;
    let hyper_errors = ficus.metric("ficus_upstream_errors_total").await - errors_before - codec_errors;

    assert_eq!(codec, hyper, "requests counted for a cancelled request: codec {codec}, hyper {hyper}");
    assert_eq!(codec_errors, hyper_errors, "upstream errors counted for a cancelled request");
    assert_eq!(codec_lines, hyper_lines, "access log lines for a cancelled request and the next one, codec vs hyper");
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_large_response_is_cut_at_the_header_timeout() {
    let upstream = RawUpstream::start().await;
    let (_routes, ficus) = raw_setup(&upstream, &["--header-timeout", "2s"]).await;
    let rss_before = ficus.rss_kib();

    let mut stalled = TcpStream::connect(ficus.addr).await.expect("connect");
    stalled.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("send");
    let mut first = [0u8; 12];
    stalled.read_exact(&mut first).await.expect("the response starts");
    assert_eq!(&first, b"HTTP/1.1 200");
    // From here on the client reads nothing: the gateway's writes stall, the header timeout cuts the
    // connection, and the upstream connection goes with it.
    wait_for("the upstream connection released", Duration::from_secs(20), || {
        upstream.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    let streamed = upstream.streamed.load(Ordering::SeqCst);
    assert!(streamed < 64 << 20, "the upstream got {streamed} bytes written while the client read nothing");
    let grown = ficus.rss_kib().saturating_sub(rss_before);
    eprintln!("while the client read nothing: {streamed} bytes from the upstream, the gateway grew {grown} KiB");
    assert!(grown < 64 << 10, "the gateway grew by {grown} KiB holding a response nobody reads");

    // The client's connection was cut: what it has buffered ends before the declared gigabyte.
    let mut got = 12u64;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(15), stalled.read(&mut chunk)).await.expect("the end in 15 s") {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    assert!(got < 1 << 30, "the client read {got} bytes");

    let (status, body) = get(&http1_client(), &ficus.url("/after")).await;
    assert_eq!((status, &body[..]), (200, &b"/after"[..]), "the gateway keeps serving");
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2, "the cut upstream connection was not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_that_never_completes_is_answered_408_at_the_header_timeout() {
    let upstream = RawUpstream::start().await;
    let (_routes, ficus) = raw_setup(&upstream, &["--header-timeout", "2s"]).await;
    let stream = TcpStream::connect(ficus.addr).await.expect("connect");
    let (r, mut w) = stream.into_split();
    // 100 bytes declared (in the codec's scope), 10 sent, and the write side kept open.
    w.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789").await.expect("send");
    let mut reader = Reader::new(r);
    let answer = reader.answer().await.expect("an answer before the connection closes");
    assert_eq!(answer.status, 408, "{}", answer.head);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 0, "the unfinished request never went upstream");
    drop(w);
}

async fn backend_setup(extra: &[&str]) -> (Routes, TestBackend, Ficus) {
    let routes = Routes::new();
    let backend = TestBackend::start("app").await;
    routes.backend("app", &[("s1", backend.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let opts = FicusOptions { extra: extra.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let ficus = Ficus::start_with(routes.path(), opts).await;
    (routes, backend, ficus)
}

fn echoed(a: &Answer) -> serde_json::Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|_| panic!("JSON body: {}", String::from_utf8_lossy(&a.body)))
}

fn get_head(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")
}

fn chunked_post() -> &'static str {
    "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_gets_are_answered_in_order() {
    let (_routes, _backend, ficus) = backend_setup(&[]).await;
    let stream = TcpStream::connect(ficus.addr).await.expect("connect");
    let (r, mut w) = stream.into_split();
    let paths: Vec<String> = (1..=8).map(|i| format!("/p/{i}")).collect();
    let all: String = paths.iter().map(|p| get_head(p)).collect();
    w.write_all(all.as_bytes()).await.expect("send all heads in one write");
    let mut reader = Reader::new(r);
    for path in &paths {
        let a = reader.answer().await.unwrap_or_else(|| panic!("an answer for {path}"));
        assert_eq!(a.status, 200, "{}", a.head);
        assert_eq!(echoed(&a)["path"], path.as_str(), "answers in the order of the requests");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_alternates_between_the_codec_and_hyper() {
    let (_routes, _backend, ficus) = backend_setup(&[]).await;
    let stream = TcpStream::connect(ficus.addr).await.expect("connect");
    let (r, mut w) = stream.into_split();
    let mut reader = Reader::new(r);

    // Pipelined in one write: the codec answers the first GET and hands the rest to hyper at the chunked POST.
    let first =
        [get_head("/a"), chunked_post().to_string(), get_head("/b"), chunked_post().to_string(), get_head("/c")];
    w.write_all(first.concat().as_bytes()).await.expect("send");
    let check = |a: Answer, want: &str| {
        assert_eq!(a.status, 200, "{}", a.head);
        let v = echoed(&a);
        match want {
            "upload" => assert_eq!(v["received"], 11, "the chunked body went upstream whole: {v}"),
            path => assert_eq!(v["path"], path, "answers in order: {v}"),
        }
    };
    for want in ["/a", "upload", "/b", "upload", "/c"] {
        check(reader.answer().await.unwrap_or_else(|| panic!("an answer for {want}")), want);
    }

    // One at a time, with the connection parked in between, so the codec takes it back from hyper.
    for round in 0..2 {
        w.write_all(get_head(&format!("/g/{round}")).as_bytes()).await.expect("send");
        check(reader.answer().await.expect("an answer"), &format!("/g/{round}"));
        w.write_all(chunked_post().as_bytes()).await.expect("send");
        check(reader.answer().await.expect("an answer"), "upload");
        w.write_all(get_head(&format!("/h/{round}")).as_bytes()).await.expect("send");
        check(reader.answer().await.expect("an answer"), &format!("/h/{round}"));
        // Answered, so not parked now; parked once quiet (the next round's GET is then the codec's again).
        let deadline = Instant::now() + Duration::from_secs(10);
        while ficus.metric("ficus_parked_connections").await < 1.0 {
            assert!(Instant::now() < deadline, "the connection parked within 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
