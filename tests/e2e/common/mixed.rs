//! Mixed client load for the zero-downtime tests: several kinds of client at once, every failure recorded
//! with what it was (status, reset, refused connect, short body).
//!
//! Clients: HTTP/1.1 keep-alive, HTTP/1.1 with a new connection per request (raw sockets, so a refused or
//! reset connect is seen as such), h2c multiplexed (8 streams at a time), slow requests that are in flight
//! at any moment, one long streamed response read slowly, and one WebSocket exchanging messages in sessions.

use super::{h2c_client, http1_client, HttpClient};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
pub struct Counts {
    pub ok: AtomicUsize,
    pub h1: AtomicUsize,
    pub fresh: AtomicUsize,
    pub h2: AtomicUsize,
    pub slow: AtomicUsize,
    pub streamed: AtomicUsize,
    pub ws_messages: AtomicUsize,
    pub failures: Mutex<Vec<String>>,
    /// The longest single request, in ms.
    pub longest_ms: AtomicUsize,
}

impl Counts {
    fn fail(&self, what: &str, e: impl std::fmt::Display) {
        self.failures.lock().unwrap().push(format!("{what}: {e}"));
    }
    fn done(&self, kind: &AtomicUsize, started: Instant) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        kind.fetch_add(1, Ordering::Relaxed);
        self.longest_ms.fetch_max(started.elapsed().as_millis() as usize, Ordering::Relaxed);
    }
}

pub struct MixedLoad {
    stop: Arc<AtomicBool>,
    pub counts: Arc<Counts>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Bytes of the streamed response, and how it is paced (bytes per read, pause between reads).
const STREAM_BYTES: u64 = 8 * 1024 * 1024;
const STREAM_PAUSE: Duration = Duration::from_millis(15);
const SLOW_MS: u64 = 400;

/// A GET that must succeed, sent again once if the server's HTTP/2 GOAWAY said it never processed the stream:
/// RFC 9113 section 6.8 makes such a request safe to retry, and real clients do. Any other error is a failure.
pub async fn get_ok(c: &HttpClient, url: &str) -> Result<(), String> {
    match get_once(c, url).await {
        Err(e) if e.contains("GoAway(") && e.contains("NO_ERROR") => get_once(c, url).await,
        other => other,
    }
}

async fn get_once(c: &HttpClient, url: &str) -> Result<(), String> {
    let req = http::Request::get(url).body(Full::default()).map_err(|e| e.to_string())?;
    let fut = async {
        let resp = c.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| format!("body: {e:?}"))?.to_bytes();
        if status != 200 {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(15), fut).await.map_err(|_| "no answer in 15 s".to_string())?
}

/// One request on a fresh connection, `Connection: close`; the raw socket shows refused and reset connects.
async fn fresh_connection(addr: SocketAddr) -> Result<(), String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET /fresh HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if buf.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("answer: {:?}", String::from_utf8_lossy(&buf[..buf.len().min(200)])))
        }
    };
    tokio::time::timeout(Duration::from_secs(15), fut).await.map_err(|_| "no answer in 15 s".to_string())?
}

/// The streamed response, read slowly. A stall (no head, or no body bytes, for 15 s) is a failure, as is the
/// whole taking more than 120 s: a stream a hot upgrade left hanging must not pass unseen.
async fn stream_slowly(c: &HttpClient, url: &str) -> Result<(), String> {
    const STALL: Duration = Duration::from_secs(15);
    let req = http::Request::get(url).body(Full::default()).map_err(|e| e.to_string())?;
    let whole = async {
        let resp = tokio::time::timeout(STALL, c.request(req))
            .await
            .map_err(|_| "no response head in 15 s".to_string())?
            .map_err(|e| format!("{e:?}"))?;
        if resp.status() != 200 {
            return Err(format!("status {}", resp.status()));
        }
        let mut body = resp.into_body();
        let mut n = 0u64;
        loop {
            let Some(frame) = tokio::time::timeout(STALL, body.frame())
                .await
                .map_err(|_| format!("stalled for 15 s after {n} bytes"))?
            else {
                break;
            };
            let frame = frame.map_err(|e| format!("after {n} bytes: {e:?}"))?;
            n += frame.data_ref().map(|d| d.len() as u64).unwrap_or(0);
            tokio::time::sleep(STREAM_PAUSE).await;
        }
        Ok(n)
    };
    let n = tokio::time::timeout(Duration::from_secs(120), whole)
        .await
        .map_err(|_| "streamed response not finished in 120 s".to_string())??;
    if n != STREAM_BYTES {
        return Err(format!("short body: {n} of {STREAM_BYTES}"));
    }
    Ok(())
}

/// One WebSocket session: 20 messages echoed, 30 ms apart, then a clean close.
async fn ws_session(addr: SocketAddr, counts: &Counts) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp).await.map_err(|e| format!("handshake: {e}"))?;
    use tokio_tungstenite::tungstenite::Message;
    for i in 0..20 {
        let text = format!("message {i}");
        ws.send(Message::Text(text.clone())).await.map_err(|e| format!("send {i}: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t == text => {
                counts.ws_messages.fetch_add(1, Ordering::Relaxed);
            }
            other => return Err(format!("echo {i}: {other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    Ok(())
}

impl MixedLoad {
    pub fn start(addr: SocketAddr) -> MixedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let mut tasks = Vec::new();
        let url = |p: &str| format!("http://{addr}{p}");
        macro_rules! spawn_loop {
            ($body:expr) => {{
                let (stop, counts) = (stop.clone(), counts.clone());
                tasks.push(tokio::spawn(async move {
                    #[allow(clippy::redundant_closure_call)]
                    while !stop.load(Ordering::Relaxed) {
                        $body(counts.clone()).await;
                    }
                }));
            }};
        }
        for _ in 0..2 {
            let (c, u) = (http1_client(), url("/h1"));
            spawn_loop!(|counts: Arc<Counts>| {
                let (c, u) = (c.clone(), u.clone());
                async move {
                    let t = Instant::now();
                    match get_ok(&c, &u).await {
                        Ok(()) => counts.done(&counts.h1, t),
                        Err(e) => counts.fail("h1 keep-alive", e),
                    }
                }
            });
        }
        spawn_loop!(|counts: Arc<Counts>| async move {
            let t = Instant::now();
            match fresh_connection(addr).await {
                Ok(()) => counts.done(&counts.fresh, t),
                Err(e) => counts.fail("h1 new connection", e),
            }
        });
        let (c2, u2) = (h2c_client(), url("/h2"));
        spawn_loop!(|counts: Arc<Counts>| {
            let (c, u) = (c2.clone(), u2.clone());
            async move {
                let t = Instant::now();
                let all = futures_util::future::join_all((0..8).map(|_| get_ok(&c, &u))).await;
                for r in all {
                    match r {
                        Ok(()) => counts.done(&counts.h2, t),
                        Err(e) => counts.fail("h2", e),
                    }
                }
            }
        });
        for i in 0..2 {
            let c = if i == 0 { http1_client() } else { h2c_client() };
            let u = url(&format!("/slow/{SLOW_MS}"));
            spawn_loop!(|counts: Arc<Counts>| {
                let (c, u) = (c.clone(), u.clone());
                async move {
                    let t = Instant::now();
                    match get_ok(&c, &u).await {
                        Ok(()) => counts.done(&counts.slow, t),
                        Err(e) => counts.fail("slow", e),
                    }
                }
            });
        }
        let (cs, us) = (http1_client(), url(&format!("/stream/{STREAM_BYTES}")));
        spawn_loop!(|counts: Arc<Counts>| {
            let (c, u) = (cs.clone(), us.clone());
            async move {
                let t = Instant::now();
                match stream_slowly(&c, &u).await {
                    Ok(()) => counts.done(&counts.streamed, t),
                    Err(e) => counts.fail("stream", e),
                }
            }
        });
        spawn_loop!(|counts: Arc<Counts>| async move {
            let t = Instant::now();
            match tokio::time::timeout(Duration::from_secs(60), ws_session(addr, &counts)).await {
                Ok(Ok(())) => counts.done(&AtomicUsize::new(0), t),
                Ok(Err(e)) => counts.fail("websocket", e),
                Err(_) => counts.fail("websocket", "session not finished in 60 s"),
            }
        });
        MixedLoad { stop, counts, tasks }
    }

    /// Stops the clients (each finishes what it is doing) and returns the counts. A client still busy after
    /// 150 s (longer than any one bounded exchange above) is hung: it is stopped and counted as a failure.
    pub async fn stop(self) -> Arc<Counts> {
        self.stop.store(true, Ordering::Relaxed);
        for mut t in self.tasks {
            match tokio::time::timeout(Duration::from_secs(150), &mut t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.counts.fail("client task", e),
                Err(_) => {
                    t.abort();
                    self.counts.fail("client task", "hung: still busy 150 s after the load was stopped");
                }
            }
        }
        self.counts
    }
}

impl Counts {
    pub fn summary(&self) -> String {
        format!(
            "ok {} (h1 {}, new-conn {}, h2 {}, slow {}, streamed {}, ws messages {}), failed {}, longest {} ms",
            self.ok.load(Ordering::Relaxed),
            self.h1.load(Ordering::Relaxed),
            self.fresh.load(Ordering::Relaxed),
            self.h2.load(Ordering::Relaxed),
            self.slow.load(Ordering::Relaxed),
            self.streamed.load(Ordering::Relaxed),
            self.ws_messages.load(Ordering::Relaxed),
            self.failures.lock().unwrap().len(),
            self.longest_ms.load(Ordering::Relaxed),
        )
    }
}
