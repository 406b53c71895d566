//! The workspace's own services as child processes for the story tests: the legacy catalog and the GTIN
//! service, started on port 0 and found by the address they announce, killed when their handle drops.

use super::http1_client;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A sibling binary of the workspace (built by `cargo build --workspace --bins`, which scripts/test runs).
pub fn sibling(name: &str) -> PathBuf {
    let ficus = PathBuf::from(env!("CARGO_BIN_EXE_ficus"));
    let path = ficus.with_file_name(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins` first", path.display());
    path
}

pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a service on port 0 and reads the port it got from the line it prints once it listens.
pub fn spawn_announced(mut cmd: Command, prefix: &'static str) -> (Proc, u16) {
    use std::io::BufRead;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps reading after the line, so the service never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix(prefix).and_then(|a| a.parse::<std::net::SocketAddr>().ok()) {
                let _ = tx.send(port.port());
            }
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(20)).expect("the service announces its address within 20 s");
    (proc, port)
}

pub async fn wait_ok(url: &str) {
    let c = http1_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), c.get(url.parse().unwrap())).await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} not up in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The story's two services, ready: the legacy catalog (2,000 products, seed 1) and the GTIN service synced from
/// its export. Both are killed when this drops.
pub struct StoryServices {
    pub legacy_port: u16,
    pub gtin_port: u16,
    _legacy: Proc,
    _gtin: Proc,
    _data: tempfile::TempDir,
}

impl StoryServices {
    pub async fn start() -> StoryServices {
        let data = tempfile::tempdir().expect("temp dir");
        let mut legacy = Command::new(sibling("legacy-catalog"));
        legacy.args(["--listen", "127.0.0.1:0", "--products", "2000", "--seed", "1"]);
        let (legacy, legacy_port) = spawn_announced(legacy, "legacy-catalog listening on http://");
        let mut gtin = Command::new(sibling("gtin-service"));
        gtin.args(["serve", "--listen", "127.0.0.1:0", "--data"]).arg(data.path());
        let (gtin, gtin_port) = spawn_announced(gtin, "listening on ");
        wait_ok(&format!("http://127.0.0.1:{legacy_port}/health")).await;
        wait_ok(&format!("http://127.0.0.1:{gtin_port}/health/live")).await;
        let sync = Command::new(sibling("gtin-service"))
            .args(["sync", "--from", &format!("http://127.0.0.1:{legacy_port}/export"), "--data"])
            .arg(data.path())
            .args(["--notify", &format!("http://127.0.0.1:{gtin_port}")])
            .output()
            .expect("gtin-service sync runs");
        assert!(sync.status.success(), "sync failed: {}", String::from_utf8_lossy(&sync.stderr));
        wait_ok(&format!("http://127.0.0.1:{gtin_port}/health/ready")).await;
        StoryServices { legacy_port, gtin_port, _legacy: legacy, _gtin: gtin, _data: data }
    }
}
