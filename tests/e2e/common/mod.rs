//! Test harness: real processes, real sockets. A Ficus child process on free loopback ports, a routes
//! directory in a temp dir, in-process test backends, and HTTP/1.1, h2c and TLS clients.
//!
//! Every process started here is killed when its handle drops, and every wait is bounded.

pub mod backend;
pub mod browser;
pub mod etcd;
pub mod load;
pub mod mixed;
pub mod services;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A loopback port that is free now and that no outgoing connection will take before the child binds it.
///
/// Ports are drawn *below* the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by default):
/// the ephemeral range is where every client socket of every concurrent test gets its source port, so a port
/// picked there and released can be taken by a connect() before etcd or Ficus binds it (CI saw exactly that).
/// Each test process starts at its own offset and walks forward, checking each candidate with a real bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = port_pool();
    let span = u32::from(high - low);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let k = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = low + k as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind an ephemeral port")
}

/// `[10000, start of the ephemeral range)`, or a fixed band when the range leaves too little room below it.
fn port_pool() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse::<u16>().ok()))
        .unwrap_or(32768);
    if ephemeral_low >= 12000 {
        (10000, ephemeral_low)
    } else {
        (61000, 65535)
    }
}

/// The address file a child wrote once it bound its listeners (`--address-file`), read as JSON.
async fn wait_for_addresses(path: &Path, child: &mut Child) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Written by rename, so a file that exists is complete.
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).map_err(|e| format!("address file {}: {e}: {text}", path.display()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("ficus exited with {status} before binding"));
        }
        if Instant::now() > deadline {
            return Err("ficus wrote no address file in 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A routes directory in a temp dir; files are named by key.
pub struct Routes {
    pub dir: tempfile::TempDir,
}

impl Routes {
    pub fn new() -> Self {
        Routes { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, key: &str) -> PathBuf {
        self.dir.path().join(format!("{key}.json"))
    }

    /// Writes a key atomically (temp file + rename), as a deploy tool would.
    pub fn put(&self, key: &str, value: &str) {
        let file = self.file(key);
        std::fs::create_dir_all(file.parent().expect("key has a parent")).expect("mkdir");
        let tmp = file.with_extension("json.tmp~");
        std::fs::write(&tmp, value).expect("write");
        std::fs::rename(&tmp, &file).expect("rename");
    }

    /// Writes in place, the way an editor without atomic saves would (readers may see a partial file).
    pub fn put_in_place(&self, key: &str, value: &str) {
        let file = self.file(key);
        std::fs::create_dir_all(file.parent().expect("key has a parent")).expect("mkdir");
        std::fs::write(&file, value).expect("write");
    }

    pub fn delete(&self, key: &str) {
        let _ = std::fs::remove_file(self.file(key));
    }

    pub fn backend(&self, id: &str, servers: &[(&str, SocketAddr)]) {
        self.put(
            &format!("backends/{id}/backend"),
            r#"{"Type":"http","Settings":{"Timeouts":{"Read":"2s","Dial":"500ms"}}}"#,
        );
        for (sid, addr) in servers {
            self.put(&format!("backends/{id}/servers/{sid}"), &format!(r#"{{"URL":"http://{addr}"}}"#));
        }
    }

    pub fn frontend(&self, id: &str, backend: &str, route: &str) {
        let v = serde_json::json!({"Type":"http","BackendId":backend,"Route":route});
        self.put(&format!("frontends/{id}/frontend"), &v.to_string());
    }
}

/// A running `ficus serve`.
pub struct Ficus {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

#[derive(Default)]
pub struct FicusOptions {
    pub tls: bool,
    pub extra: Vec<String>,
    /// Extra environment variables for the process.
    pub env: Vec<(String, String)>,
    /// Open-file limit (soft and hard) of the process, as `ulimit -n` would set it.
    pub nofile: Option<u64>,
}

impl Ficus {
    pub async fn start(routes: &Path) -> Ficus {
        Self::start_with(routes, FicusOptions::default()).await
    }

    /// A gateway that follows etcd at `endpoint` under `prefix`, with fault detection tuned for tests.
    pub async fn start_etcd(endpoint: &str, prefix: &str) -> Ficus {
        let extra = ["--etcd", endpoint, "--etcd-prefix", prefix, "--etcd-timeout", "1s", "--etcd-keepalive", "500ms"];
        let opts = FicusOptions { extra: extra.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        Self::start_with(Path::new("/nonexistent-routes"), opts).await
    }

    pub async fn start_with(routes: &Path, opts: FicusOptions) -> Ficus {
        let logdir = tempfile::tempdir().expect("temp dir");
        let log = logdir.path().join("ficus.log");
        let address_file = logdir.path().join("addresses.json");
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ficus"));
        // Port 0 everywhere: the kernel picks, Ficus reports what it got in the address file, and no port can be
        // taken by someone else between choosing and binding.
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin")
            .arg("127.0.0.1:0")
            .arg("--address-file")
            .arg(&address_file)
            .arg("--routes")
            .arg(routes)
            .args(&opts.extra)
            .env("RUST_LOG", "info")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        if !opts.extra.iter().any(|a| a == "--drain-timeout") {
            cmd.arg("--drain-timeout").arg("5s");
        }
        if opts.tls {
            cmd.arg("--tls-listen").arg("127.0.0.1:0");
        }
        if let Some(n) = opts.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn ficus");
        let bound = match wait_for_addresses(&address_file, &mut child).await {
            Ok(bound) => bound,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{why}; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        let listener = |name: &str| bound["listeners"][name].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
        let addr = listener("http").expect("address file names the http listener");
        let admin = bound["admin"].as_str().and_then(|a| a.parse().ok()).expect("address file names the admin");
        let tls_addr = opts.tls.then(|| listener("https").expect("address file names the https listener"));
        let mut f = Ficus { child, addr, admin, tls_addr, log, _logdir: logdir };
        f.wait_ready().await;
        f
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = http1_client();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ficus exited early with {status}; log:\n{}", self.log_text());
            }
            let uri = format!("http://{}/health/ready", self.admin);
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), client.get(uri.parse().expect("uri"))).await
            {
                if r.status() == 200 && std::net::TcpStream::connect(self.addr).is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "ficus not ready in 20s; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the log comes to contain `needle` within 5 s: lines reach the file through a writer thread.
    pub async fn log_shows(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log_text().contains(needle) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// The sum of a metric's series on the admin listener.
    /// The `/metrics` exposition as text.
    pub async fn metrics_text(&self) -> String {
        String::from_utf8_lossy(&get(&http1_client(), &format!("http://{}/metrics", self.admin)).await.1).into_owned()
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = get(&http1_client(), &format!("http://{}/status", self.admin)).await;
        assert_eq!(code, 200);
        serde_json::from_slice(&body).expect("status is JSON")
    }

    pub async fn generation(&self) -> u64 {
        self.status().await["generation"].as_u64().unwrap_or(0)
    }

    /// Waits until the status shows a generation above `after` (a reload happened), up to 10 s.
    pub async fn wait_generation_above(&self, after: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status().await;
            if s["generation"].as_u64().unwrap_or(0) > after {
                return s;
            }
            assert!(Instant::now() < deadline, "no reload after generation {after}; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status();
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Ficus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// GET with a 10 s bound; returns status and body.
/// A client connection spoken to byte by byte, for what a pooled client hides (which connection, when).
pub struct RawConn(pub tokio::io::BufReader<tokio::net::TcpStream>);

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn(tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await.expect("connect")))
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.0.get_mut().write_all(bytes).await.expect("write");
    }

    /// Reads one HTTP/1.1 response with a Content-Length body: status and body.
    pub async fn response(&mut self) -> (u16, Vec<u8>) {
        let (status, _, body) = self.response_with_head().await;
        (status, body)
    }

    pub async fn response_with_head(&mut self) -> (u16, String, Vec<u8>) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut head = String::new();
        let mut length = None;
        loop {
            let mut line = String::new();
            assert!(self.0.read_line(&mut line).await.expect("read") > 0, "closed before a whole head: {head}");
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>().expect("length"));
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let status = head[9..12].parse().expect("status");
        let mut body = vec![0; length.unwrap_or_else(|| panic!("no content-length in {head}"))];
        self.0.read_exact(&mut body).await.expect("body");
        (status, head, body)
    }

    /// True once the server closed the connection cleanly (EOF), false on a reset.
    pub async fn closed(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        self.0.read_to_end(&mut rest).await.is_ok() && rest.is_empty()
    }
}

pub async fn get(client: &HttpClient, url: &str) -> (u16, Bytes) {
    request(client, http::Request::get(url).body(Full::default()).expect("request")).await
}

pub async fn request(client: &HttpClient, req: http::Request<Full<Bytes>>) -> (u16, Bytes) {
    let (parts, body) = request_full(client, req).await;
    (parts.status.as_u16(), body)
}

pub async fn request_full(client: &HttpClient, req: http::Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
    let fut = async {
        let resp = client.request(req).await.expect("request sent");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body read").to_bytes();
        (parts, body)
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.expect("request within 10 s")
}

/// Which test backend answered (its `x-served-by` header, echoed in the body).
pub fn served_by(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["backend"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Waits until every path answers 200 (and every `gone` path 404), up to `limit`.
pub async fn wait_paths(ficus: &Ficus, ok: &[&str], gone: &[&str], limit: Duration) {
    let c = http1_client();
    let deadline = Instant::now() + limit;
    loop {
        let mut missing = Vec::new();
        for p in ok {
            if get(&c, &ficus.url(p)).await.0 != 200 {
                missing.push(format!("{p} not routed"));
            }
        }
        for p in gone {
            if get(&c, &ficus.url(p)).await.0 != 404 {
                missing.push(format!("{p} still routed"));
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} after {limit:?}; status {}\nlog:\n{}",
            ficus.status().await,
            ficus.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `cond` holds, polling every 10 ms, and fails naming `what` after 30 s: a generous bound, since
/// the machine running the suite may be busy and only the condition matters, not how soon it comes.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
