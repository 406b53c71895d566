//! Hot binary upgrade, end to end: real `ficus` processes handing their listening sockets on under mixed
//! load (HTTP/1.1 keep-alive and new connections, h2c, slow requests, a long stream, a WebSocket), with the
//! pid file, the control socket, SIGUSR2, failed upgrades, and systemd's notify socket and socket activation.

mod common;

use common::backend::TestBackend;
use common::mixed::MixedLoad;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Paths unique to one test, so process counting never sees another test's gateways.
struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        Run { dir: tempfile::tempdir().expect("temp dir") }
    }
    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("ficus.pid")
    }
    fn control(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }
    fn args(&self, extra: &[&str]) -> FicusOptions {
        let mut v: Vec<String> = vec![
            "--pid-file".into(),
            self.pid_file().display().to_string(),
            "--control".into(),
            self.control().display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        FicusOptions { extra: v, ..Default::default() }
    }
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }
    /// Live (not zombie) processes whose command line names this run's control socket.
    fn processes(&self) -> Vec<u32> {
        let needle = self.control().display().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let zombie = stat.rsplit(')').next().map(|s| s.trim_start().starts_with('Z')).unwrap_or(true);
            if !zombie && String::from_utf8_lossy(&cmdline).split('\0').any(|a| a == needle) {
                found.push(pid);
            }
        }
        found
    }
    /// Waits until exactly one process of this run is left, and returns it.
    fn wait_single(&self, limit: Duration) -> u32 {
        let deadline = Instant::now() + limit;
        loop {
            let p = self.processes();
            if p.len() == 1 {
                return p[0];
            }
            assert!(Instant::now() < deadline, "processes left: {p:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    /// Every process of this run is killed, whatever the test did.
    fn drop(&mut self) {
        for pid in self.processes() {
            signal(pid, libc::SIGKILL);
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill only sends a signal to a process this test started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

async fn app_routes(routes: &Routes, b: &TestBackend) {
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_hot_upgrades_under_mixed_load_fail_no_request() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    app_routes(&routes, &b).await;
    let run = Run::new();
    let first = Ficus::start_with(routes.path(), run.args(&["--drain-timeout", "10s"])).await;
    assert_eq!(run.pid(), Some(first.pid()));
    let load = MixedLoad::start(first.addr);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut durations = Vec::new();
    let mut previous = first.pid();
    for i in 0..10 {
        let started = Instant::now();
        let ctl = run.control();
        let (ok, text) = tokio::task::spawn_blocking(move || upgrade_at(&ctl)).await.unwrap();
        assert!(ok, "upgrade {i} failed: {text}\n{}", first.log_text());
        let now = run.pid().expect("pid file");
        assert_ne!(now, previous, "upgrade {i}: pid file still names the old process");
        assert!(text.contains(&now.to_string()), "{text}");
        // The old process stops once its in-flight work is done (longest: a streamed response).
        assert!(wait_gone(previous, Duration::from_secs(12)), "old process {previous} still running");
        durations.push(started.elapsed());
        previous = now;
        // Route changes between upgrades: the new process follows the routes directory.
        routes.put(
            "frontends/extra/frontend",
            &format!(r#"{{"Type":"http","BackendId":"app","Route":"Path(`/extra{i}`)"}}"#),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let counts = load.stop().await;
    let failures = counts.failures.lock().unwrap().clone();
    eprintln!("upgrade durations (old process gone): {durations:?}");
    eprintln!("{}", counts.summary());
    assert!(
        failures.is_empty(),
        "{}: {:#?}\n{}",
        counts.summary(),
        &failures[..failures.len().min(10)],
        first.log_text()
    );
    assert!(counts.ok.load(std::sync::atomic::Ordering::Relaxed) > 1000, "{}", counts.summary());
    let last = run.wait_single(Duration::from_secs(15));
    assert_eq!(Some(last), run.pid());
    // The survivor serves the last route change.
    let (code, _) = get(&http1_client(), &first.url("/extra9")).await;
    assert_eq!(code, 200);
    signal(last, libc::SIGTERM);
    assert!(wait_gone(last, Duration::from_secs(10)), "last process did not stop on SIGTERM");
    assert!(run.pid().is_none(), "pid file left behind after a clean stop");
}

/// Runs `ficus upgrade`; returns whether it succeeded and what it printed.
fn upgrade_at(control: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ficus"))
        .args(["upgrade", "--control"])
        .arg(control)
        .args(["--wait", "30s"])
        .output()
        .expect("run ficus upgrade");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
