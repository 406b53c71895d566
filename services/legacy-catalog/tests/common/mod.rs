//! Shared helpers for the integration tests: run the real `legacy-catalog` binary as a child process on a
//! free port, talk HTTP to it with hyper's client, and bound every test in time.
//!
//! The child is killed when the `Server` handle drops, so a failing or timed-out test never leaves a
//! process behind.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// A running `legacy-catalog` child process.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the binary with `--listen 127.0.0.1:0` and `args`, and waits for its "listening" line.
    pub fn start(args: &[&str]) -> anyhow::Result<Server> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_legacy-catalog"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning legacy-catalog")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut stderr_pipe = child.stderr.take().context("child stderr")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut text) = sink.lock() {
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("legacy-catalog listening on http://") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let mut server = Server { child, addr: ([127, 0, 0, 1], 0).into(), stderr };
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| anyhow!("no listening line; stderr:\n{}", server.stderr()))?;
        server.addr = addr.parse().context("parsing the announced address")?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the child wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether the child's stderr contains `needle` within `limit` (the reader thread may lag the child).
    pub fn logged(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.stderr().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM (through `kill`, to avoid a libc dependency for one call).
    pub fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().context("running kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.pid());
        }
        Ok(())
    }

    /// Waits for the child to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("the child did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child's resident set size in bytes, from /proc/<pid>/status.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
        let kb: u64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
        Ok(kb * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c), no upgrade dance.
pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

pub async fn get_with(client: &HttpClient, url: &str) -> anyhow::Result<Reply> {
    let response = client.get(url.parse()?).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply { status: parts.status, headers: parts.headers, body: String::from_utf8(body.to_vec())? })
}

pub async fn get(url: &str) -> anyhow::Result<Reply> {
    get_with(&client(), url).await
}

/// Runs `test` with a time limit, so a hung server fails the test instead of hanging the suite.
pub async fn within<T>(limit: Duration, test: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(limit, test).await.map_err(|_| anyhow!("test timed out after {limit:?}"))?
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
