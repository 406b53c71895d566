//! In-process test upstreams on real loopback sockets.
//!
//! Paths: `/slow/<ms>` answers after a delay, `/status/<code>` answers that code, `/stream/<bytes>` streams
//! that many bytes, `/upload` counts the request body, `/ws` is a WebSocket echo; anything else echoes the
//! request (method, path, headers) as JSON. Every answer names the backend.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub struct TestBackend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let name_owned = name.to_string();
        let hits2 = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let name = name_owned.clone();
                let hits = hits2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        hits.fetch_add(1, Ordering::Relaxed);
                        answer(name.clone(), req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TestBackend { addr, hits, task }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

async fn answer(name: String, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let head = parts.next().unwrap_or("");
    let arg = parts.next().unwrap_or("");
    let resp = match head {
        "slow" => {
            let ms: u64 = arg.parse().unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(format!("{{\"backend\":\"{name}\",\"slept_ms\":{ms}}}")))
        }
        "status" => {
            let code: u16 = arg.parse().unwrap_or(500);
            let mut r = Response::new(full(format!("{{\"backend\":\"{name}\",\"status\":{code}}}")));
            *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            r
        }
        "stream" => {
            let total: u64 = arg.parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let n = left.min(chunk.len() as u64);
                    Some((Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))), left - n))
                }
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert("content-length", total.into());
            r
        }
        "upload" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                    Err(_) => break,
                }
            }
            Response::new(full(format!("{{\"backend\":\"{name}\",\"received\":{n}}}")))
        }
        "ws" => {
            let key = req.headers().get("sec-websocket-key").cloned();
            let Some(key) = key else {
                return Ok(Response::new(full("not a websocket request")));
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() {
                            break;
                        }
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .body(full(""))
                .expect("response")
        }
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (k.to_string(), serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                })
                .collect();
            let body = serde_json::json!({
                "backend": name,
                "method": req.method().as_str(),
                "path": path,
                "query": req.uri().query(),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            let mut r = Response::new(full(body.to_string()));
            r.headers_mut().insert("content-type", "application/json".parse().expect("static"));
            // Hop-by-hop headers the proxy must not pass on to the client.
            r.headers_mut().insert("keep-alive", "timeout=5".parse().expect("static"));
            r.headers_mut().insert("x-hop", "secret".parse().expect("static"));
            r.headers_mut().insert("connection", "x-hop".parse().expect("static"));
            r
        }
    };
    let mut resp = resp;
    resp.headers_mut().insert("x-served-by", name.parse().unwrap_or_else(|_| "?".parse().expect("static")));
    Ok(resp)
}

/// A server that accepts and immediately closes every connection (the "reset" upstream).
pub async fn closing_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = listener.accept().await {
                // Read a little so the request is sent, then drop: the proxy sees the connection close mid-exchange.
                let mut buf = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    let _ = s.readable().await;
                    let _ = s.try_read(&mut buf);
                })
                .await;
                drop(s);
            }
        }
    });
    (addr, task)
}

/// An address nothing listens on.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// A loopback address whose SYNs go unanswered, so a connect to it hangs until the caller's own timeout: a
/// listener that never accepts, with its accept queue filled by connections the guard holds. Linux drops a
/// SYN for a listener whose accept queue is full, and the connecting side retries for over a minute.
pub struct Unanswered {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _held: Vec<std::net::TcpStream>,
}

pub fn unanswered() -> Unanswered {
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
    listener.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr").as_socket().expect("an IP address");
    let mut held = Vec::new();
    // A backlog of 0 still queues a connection or two; fill the queue until a connect is left unanswered.
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => held.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("filling the accept queue of {addr}: {e}"),
        }
        assert!(held.len() < 64, "the accept queue of {addr} never filled");
    }
    Unanswered { addr, _listener: listener, _held: held }
}
