//! Hot binary upgrade, end to end: real `ficus` processes handing their listening sockets on under mixed
//! load (HTTP/1.1 keep-alive and new connections, h2c, slow requests, a long stream, a WebSocket), with the
//! pid file, the control socket, SIGUSR2, failed upgrades, and systemd's notify socket and socket activation.

use crate::common;

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
    hot_upgrades_under_mixed_load(10, &[]).await;
}

/// With two workers, each old process drains the connections of both before it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_upgrades_with_two_workers_under_mixed_load_fail_no_request() {
    hot_upgrades_under_mixed_load(4, &["--threads", "2"]).await;
}

async fn hot_upgrades_under_mixed_load(upgrades: usize, extra: &[&str]) {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    app_routes(&routes, &b).await;
    let run = Run::new();
    let mut args = vec!["--drain-timeout", "10s"];
    args.extend_from_slice(extra);
    let first = Ficus::start_with(routes.path(), run.args(&args)).await;
    assert_eq!(run.pid(), Some(first.pid()));
    let load = MixedLoad::start(first.addr);
    tokio::time::sleep(Duration::from_millis(500)).await;
    if extra.contains(&"--threads") {
        let spread = crate::workers::worker_connections(&first).await;
        assert!(spread.iter().all(|n| *n > 0), "the load's connections on both workers: {spread:?}");
    }

    let mut durations = Vec::new();
    let mut previous = first.pid();
    for i in 0..upgrades {
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
        // Five route changes between upgrades, 50 in all: the new process follows the routes directory.
        for k in 0..5 {
            routes.put(
                "frontends/extra/frontend",
                &format!(r#"{{"Type":"http","BackendId":"app","Route":"Path(`/extra{i}-{k}`)"}}"#),
            );
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
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
    let (code, _) = get(&http1_client(), &first.url(&format!("/extra{}-4", upgrades - 1))).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upgrade_keeps_the_old_process_serving_and_says_why() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    app_routes(&routes, &b).await;
    let run = Run::new();
    let config = run.dir.path().join("ficus.toml");
    std::fs::write(&config, "drain_timeout = \"5s\"\n").unwrap();
    let cfg = config.display().to_string();
    let ficus = Ficus::start_with(routes.path(), run.args(&["--config", &cfg, "--upgrade-timeout", "2s"])).await;
    let load = common::load::Load::start(ficus.url("/x"), 4);

    // The new process cannot start: its config file is broken now.
    std::fs::write(&config, "drain_timeout = \"5s\"\nbogus = 1\n").unwrap();
    let ctl = run.control();
    let (ok, text) = tokio::task::spawn_blocking(move || upgrade_at(&ctl)).await.unwrap();
    assert!(!ok, "{text}");
    assert!(text.contains("unknown field `bogus`"), "{text}");
    assert_eq!(run.pid(), Some(ficus.pid()));

    // The new process never becomes ready (its etcd does not answer): killed at the deadline.
    std::fs::write(&config, "[etcd]\nendpoints = [\"http://127.0.0.1:1\"]\n").unwrap();
    let ctl = run.control();
    let (ok, text) = tokio::task::spawn_blocking(move || upgrade_at(&ctl)).await.unwrap();
    assert!(!ok, "{text}");
    // The message names the deadline as the cause: no timing of the test's own is needed.
    assert!(text.contains("not ready within 2s"), "{text}");
    assert_eq!(run.pid(), Some(ficus.pid()));
    assert_eq!(run.processes(), vec![ficus.pid()]);
    assert!(ficus.log_shows("hot upgrade failed; this process keeps serving").await);

    // Fixed config: the next upgrade works.
    std::fs::write(&config, "drain_timeout = \"5s\"\n").unwrap();
    let ctl = run.control();
    let (ok, text) = tokio::task::spawn_blocking(move || upgrade_at(&ctl)).await.unwrap();
    assert!(ok, "{text}");
    load.finish(50).await;
    assert_eq!(run.wait_single(Duration::from_secs(10)), run.pid().unwrap());
}

/// A datagram socket standing in for systemd's `$NOTIFY_SOCKET`.
struct Notify {
    sock: std::os::unix::net::UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn new(run: &Run) -> Notify {
        let path = run.dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Notify { sock, path }
    }
    /// Collects messages until one contains `want` (10 s bound); returns everything received.
    fn wait_for(&self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                all.push_str(&String::from_utf8_lossy(&buf[..n]));
                all.push('|');
                if all.contains(want) {
                    return all;
                }
            }
        }
        panic!("no {want:?} on the notify socket; got {all:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_upgrade_tells_systemd_and_sigterm_then_finishes_in_flight() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    app_routes(&routes, &b).await;
    let run = Run::new();
    let notify = Notify::new(&run);
    let mut opts = run.args(&[]);
    opts.env.push(("NOTIFY_SOCKET".into(), notify.path.display().to_string()));
    let mut ficus = Ficus::start_with(routes.path(), opts).await;
    let old = ficus.pid();
    notify.wait_for(&format!("READY=1\nMAINPID={old}"));

    // A slow request in flight on the old process while it is replaced.
    let c = http1_client();
    let before = b.hits();
    let slow = {
        let (c, u) = (c.clone(), ficus.url("/slow/1500"));
        tokio::spawn(async move { get(&c, &u).await })
    };
    wait_for("the slow request at the backend", || b.hits() > before).await;
    ficus.signal("USR2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.pid() == Some(old) {
        assert!(Instant::now() < deadline, "pid file not updated; log:\n{}", ficus.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new = run.pid().unwrap();
    let got = notify.wait_for(&format!("MAINPID={new}\nREADY=1"));
    assert!(!got.contains("STOPPING=1"), "an upgrade is not a stop: {got}");
    assert_eq!(slow.await.unwrap().0, 200);
    assert!(ficus.wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()), "old process did not exit");

    // SIGTERM on the new process: in-flight requests finish, systemd hears STOPPING=1.
    let before = b.hits();
    let slow = {
        let (c, u) = (c.clone(), ficus.url("/slow/1000"));
        tokio::spawn(async move { get(&c, &u).await })
    };
    wait_for("the slow request at the backend", || b.hits() > before).await;
    signal(new, libc::SIGTERM);
    notify.wait_for("STOPPING=1");
    assert_eq!(slow.await.unwrap().0, 200);
    assert!(wait_gone(new, Duration::from_secs(10)), "new process did not exit after SIGTERM");
    assert_eq!(run.pid(), None, "pid file left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_serves_on_the_passed_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    app_routes(&routes, &b).await;
    let run = Run::new();
    // The test holds the listening socket, as systemd would: a fresh bind by Ficus would fail.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let admin = format!("127.0.0.1:{}", free_port());
    let log = run.dir.path().join("ficus.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be the pid of the process that reads it: set it in the shell that execs Ficus.
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec "$@""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_ficus"))
        .args(["serve", "--listen", &addr.to_string(), "--admin", &admin, "--routes"])
        .arg(routes.path())
        .arg("--control")
        .arg(run.control())
        .env("RUST_LOG", "info")
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    // SAFETY: dup2 in the forked child puts the listening socket at fd 3, as systemd does.
    unsafe {
        cmd.pre_exec(move || if libc::dup2(fd, 3) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let mut child = cmd.spawn().unwrap();
    let c = http1_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(1), c.get(format!("http://{addr}/x").parse().unwrap())).await
        {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Log lines reach the file through a writer thread: wait for the line rather than read the file once.
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read_log().contains("using the inherited socket") {
        assert!(Instant::now() < deadline, "{}", read_log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The activated socket is handed on at an upgrade too.
    let ctl = run.control();
    let (ok, msg) = tokio::task::spawn_blocking(move || upgrade_at(&ctl)).await.unwrap();
    assert!(ok, "{msg}");
    assert_eq!(get(&c, &format!("http://{addr}/y")).await.0, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_server_with_slow_requests_is_shown_until_idle() {
    let routes = Routes::new();
    let (one, two) = (TestBackend::start("one").await, TestBackend::start("two").await);
    routes.backend("gtin", &[("one", one.addr), ("two", two.addr)]);
    // Room for the 4 s requests: the harness's backends answer 504 after a 2 s Read timeout.
    routes.put("backends/gtin/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"10s","Dial":"500ms"}}}"#);
    routes.frontend("gtin", "gtin", "PathPrefix(`/`)");
    let ficus = std::sync::Arc::new(Ficus::start(routes.path()).await);
    let c = http1_client();
    // 4 s requests in flight on both servers (before the load starts, so the backends' counts are theirs).
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let (c, u) = (c.clone(), ficus.url("/slow/4000"));
            tokio::spawn(async move { get(&c, &u).await })
        })
        .collect();
    wait_for("the slow requests at the backends", || one.hits() + two.hits() == 4).await;
    let load = common::load::Load::start(ficus.url("/x"), 4);
    let gen = ficus.generation().await;
    routes.put("backends/gtin/servers/two", &format!(r#"{{"URL":"http://{}","Draining":true}}"#, two.addr));
    let status = ficus.wait_generation_above(gen).await;
    let draining = status["draining"].as_array().cloned().unwrap_or_default();
    assert!(draining.iter().any(|d| d["server"] == "two" && d["inflight"].as_u64().unwrap_or(0) >= 1), "{status}");
    let metrics = String::from_utf8_lossy(&get(&c, &format!("http://{}/metrics", ficus.admin)).await.1).into_owned();
    assert!(metrics.contains("ficus_draining_servers 1"), "{metrics}");
    assert!(metrics.contains(r#"ficus_draining_inflight{backend="gtin",server="two"}"#), "{metrics}");
    let before = two.hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(two.hits(), before, "a draining server got new requests");
    for s in slow {
        assert_eq!(s.await.unwrap().0, 200);
    }
    // Idle now: gone from /status, so a deploy script may stop it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = ficus.status().await;
        if s["draining"].as_array().map(Vec::len) == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    load.finish(50).await;
}
