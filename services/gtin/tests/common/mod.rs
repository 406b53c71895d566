//! Test harness shared by the process-level tests: start the real `gtin-service` binary as a child on an
//! ephemeral port, talk HTTP to it with a hyper client, and build snapshots in its data directory. Everything
//! started here is killed on drop, and every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use gtin::builder::SnapshotBuilder;
use gtin::record::Product;

pub const BIN: &str = env!("CARGO_BIN_EXE_gtin-service");

/// A running `gtin-service serve`, killed when dropped.
pub struct Service {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Service {
    pub fn start(data: &Path, log_dir: &Path) -> anyhow::Result<Service> {
        Service::start_draining_for(data, log_dir, "5s")
    }

    /// Like `start`, with the given `--drain-timeout`.
    pub fn start_draining_for(data: &Path, log_dir: &Path, drain: &str) -> anyhow::Result<Service> {
        let log = log_dir.join(format!("serve-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log)?;
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--drain-timeout", drain, "--data"])
            .arg(data)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("spawning gtin-service serve")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let service = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Service { child, addr: addr.parse()?, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("service did not report its address; log: {}", std::fs::read_to_string(&log)?);
            }
        };
        Ok(service)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        self.signal_term()?;
        self.wait_exit(within)
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal_term(&self) -> anyhow::Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        Ok(())
    }

    /// Waits (bounded) until the service's log contains `needle`.
    pub fn logged(&self, needle: &str, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains(needle)) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the exit status.
    pub fn wait_exit(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                bail!("service did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// One request; the status and the body parsed as JSON (or as a JSON string when it is not JSON).
pub async fn call(
    client: &HttpClient,
    method: &str,
    url: &str,
    body: Option<String>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response =
        tokio::time::timeout(Duration::from_secs(10), client.request(request)).await.context("request timed out")??;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, value))
}

pub async fn get(client: &HttpClient, url: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    call(client, "GET", url, None).await
}

pub async fn post(client: &HttpClient, url: &str, body: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    call(client, "POST", url, Some(body.to_string())).await
}

/// Builds, verifies and publishes a snapshot of `products` into `dir`.
pub fn publish(dir: &Path, products: &[Product<'_>]) -> anyhow::Result<PathBuf> {
    let mut builder = SnapshotBuilder::new(dir, "test")?;
    for p in products {
        builder.add(p)?;
    }
    let built = builder.finish()?;
    built.open()?.verify()?;
    Ok(built.publish()?)
}

/// Runs `gtin-service <args>` to completion within `within`; its stderr is returned for assertions and
/// debugging. The child is killed if it overruns.
pub fn run_cli(args: &[&str], within: Duration) -> anyhow::Result<(std::process::ExitStatus, String)> {
    let log = tempfile::NamedTempFile::new()?;
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log.reopen()?)
        .spawn()
        .context("spawning gtin-service")?;
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("gtin-service {args:?} did not finish within {within:?}: {}", std::fs::read_to_string(log.path())?);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((status, std::fs::read_to_string(log.path())?))
}

/// A tiny export server for sync tests: `GET /export` answers whatever text is current, streamed in small
/// chunks (chunked transfer encoding) so the reader sees lines split across frames.
pub struct ExportServer {
    pub addr: SocketAddr,
    pub text: std::sync::Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl ExportServer {
    pub async fn start(text: String) -> anyhow::Result<ExportServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = std::sync::Arc::new(std::sync::Mutex::new(text));
        let text = std::sync::Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let text = std::sync::Arc::clone(&text);
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = text.lock().map(|t| t.clone()).unwrap_or_default();
                    async move {
                        let mut response = hyper::Response::new(Chunks::new(&body, 997));
                        if req.uri().path() != "/export" {
                            *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                            *response.body_mut() = Chunks::new("", 1);
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(ExportServer { addr, text: shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}/export", self.addr)
    }

    pub fn set(&self, text: String) {
        if let Ok(mut t) = self.text.lock() {
            *t = text;
        }
    }
}

impl Drop for ExportServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A body that yields its text in fixed-size frames and has no length, so hyper sends it chunked.
pub struct Chunks(std::collections::VecDeque<Bytes>);

impl Chunks {
    pub fn new(text: &str, size: usize) -> Chunks {
        Chunks(text.as_bytes().chunks(size).map(Bytes::copy_from_slice).collect())
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Runs an async test body on a fresh runtime with a deadline, so a hang fails the test instead of the suite.
pub fn run(within: Duration, test: impl std::future::Future<Output = anyhow::Result<()>>) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async { tokio::time::timeout(within, test).await.expect("test timed out") }).expect("test failed");
}

/// Whether the server has read everything `client` sent it: the server's end of that connection (found in
/// /proc/net/tcp) has an empty receive queue. Before the server accepts and reads, the request waits there.
pub fn server_read_all(server: SocketAddr, client: SocketAddr) -> bool {
    fn hex(a: SocketAddr) -> Option<String> {
        match a {
            // /proc/net/tcp prints the IPv4 address as the kernel's u32 in host order (little-endian here).
            SocketAddr::V4(v4) => Some(format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port())),
            SocketAddr::V6(_) => None,
        }
    }
    let (Some(local), Some(remote)) = (hex(server), hex(client)) else { return false };
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 4 && f[1] == local && f[2] == remote && f[4].split(':').nth(1) == Some("00000000")
    })
}
