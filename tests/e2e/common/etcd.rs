//! Real etcd for the tests: a child `etcd` process (Debian's etcd-server, v3 API) on random loopback client and
//! peer ports with a temp data dir and fast elections, `etcdctl` beside it, and a TCP relay the test controls to
//! cut Ficus off from etcd. Every process is killed when its handle drops; every wait is bounded.

use super::free_port;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Several etcd members forming one cluster, each on its own random client and peer ports.
pub struct EtcdCluster {
    pub members: Vec<Etcd>,
}

impl EtcdCluster {
    pub fn start(n: usize) -> EtcdCluster {
        // Slower elections than a single test member's: three members on two busy cores with 10 ms heartbeats
        // elect leaders back to back and never settle. (A later flag overrides an earlier one.)
        let timing: Vec<String> =
            ["--heartbeat-interval", "50", "--election-timeout", "1000"].iter().map(|s| s.to_string()).collect();
        for attempt in 1.. {
            let mut members: Vec<Etcd> =
                (0..n).map(|i| Etcd::unstarted(&format!("m{i}"), timing.clone(), "http", Vec::new())).collect();
            let cluster = members.iter().map(|m| m.initial_cluster.clone()).collect::<Vec<_>>().join(",");
            for m in &mut members {
                m.initial_cluster = cluster.clone();
                m.launch();
            }
            let taken = members.iter_mut().any(|m| m.wait_healthy(Duration::from_secs(30)).is_err());
            if !taken {
                return EtcdCluster { members };
            }
            assert!(attempt < 3, "etcd members lost their ports to other processes three times");
        }
        unreachable!()
    }

    /// Puts through a member that is up: right after a member dies the others may still be electing a leader.
    pub fn put(&self, from: usize, key: &str, value: &str) {
        self.ctl(from, &["put", key, value]);
    }

    /// Runs etcdctl against the first member (from `from` on, skipping dead ones) that succeeds within the bound.
    pub fn ctl(&self, from: usize, args: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        for i in (0..).map(|k| (from + k) % self.members.len()) {
            let m = &self.members[i];
            if m.child.is_some() {
                let out = m.ctl_output(args);
                if out.status.success() {
                    return;
                }
                last = String::from_utf8_lossy(&out.stderr).into_owned();
            }
            assert!(Instant::now() < deadline, "no member ran {args:?} in 30 s: {last}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every member's client URL, comma-separated, as `--etcd` takes them.
    pub fn endpoints(&self) -> String {
        self.members.iter().map(Etcd::endpoint).collect::<Vec<_>>().join(",")
    }
}

/// etcd exited at start because another process held one of its ports.
pub struct PortTaken;

pub struct Etcd {
    child: Option<Child>,
    /// Never healthy yet: its ports may still be re-picked.
    fresh: bool,
    pub client_port: u16,
    pub peer_port: u16,
    pub dir: tempfile::TempDir,
    /// Extra flags (TLS, ...) kept for restarts.
    extra: Vec<String>,
    scheme: &'static str,
    /// Flags etcdctl needs to reach this etcd (TLS files, user).
    pub ctl_flags: Vec<String>,
    name: String,
    /// `--initial-cluster`: this member alone, or every member of an [`EtcdCluster`].
    initial_cluster: String,
}

impl Etcd {
    pub fn start() -> Etcd {
        Self::start_with(Vec::new(), "http", Vec::new())
    }

    /// `extra` goes to etcd; `scheme` is `http` or `https`; `ctl_flags` to every etcdctl call.
    pub fn start_with(extra: Vec<String>, scheme: &'static str, ctl_flags: Vec<String>) -> Etcd {
        let mut e = Self::unstarted("test", extra, scheme, ctl_flags);
        e.spawn();
        e
    }

    fn unstarted(name: &str, extra: Vec<String>, scheme: &'static str, ctl_flags: Vec<String>) -> Etcd {
        assert!(std::path::Path::new(ETCD).exists(), "{ETCD} is required (apt-get install etcd-server)");
        let peer_port = free_port();
        Etcd {
            child: None,
            fresh: true,
            client_port: free_port(),
            peer_port,
            dir: tempfile::tempdir().expect("temp dir"),
            extra,
            scheme,
            ctl_flags,
            name: name.to_string(),
            initial_cluster: format!("{name}=http://127.0.0.1:{peer_port}"),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// Starts and waits until healthy. A port taken by another process between the pick and etcd's bind gets
    /// fresh ports (first start only: a restart must keep its address).
    fn spawn(&mut self) {
        for attempt in 1.. {
            self.launch();
            if self.wait_healthy(Duration::from_secs(20)).is_ok() {
                return;
            }
            assert!(attempt < 3 && self.fresh, "etcd could not bind its ports:\n{}", self.log_text());
            self.client_port = free_port();
            self.peer_port = free_port();
            self.initial_cluster = format!("{}=http://127.0.0.1:{}", self.name, self.peer_port);
        }
    }

    /// Starts the process without waiting: a cluster member is healthy only once a quorum runs.
    fn launch(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let child = Command::new(ETCD)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--heartbeat-interval")
            .arg("10")
            .arg("--election-timeout")
            .arg("50")
            .arg("--logger")
            .arg("zap")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Waits until etcd answers a health check. `Err` only when it exited because a port was taken (the caller
    /// may retry on other ports); any other failure panics with etcd's log.
    fn wait_healthy(&mut self, limit: Duration) -> Result<(), PortTaken> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                let log = self.log_text();
                if log.contains("address already in use") {
                    // Keep the next attempt's log free of this one's failure.
                    let _ = std::fs::remove_file(self.dir.path().join("etcd.log"));
                    return Err(PortTaken);
                }
                panic!("etcd exited early with {status}:\n{log}");
            }
            let out = self.ctl_output(&["endpoint", "health", "--command-timeout=1s"]);
            if out.status.success() {
                self.fresh = false;
                return Ok(());
            }
            assert!(Instant::now() < deadline, "etcd not healthy in {limit:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("etcd is running")
    }

    /// SIGKILL and reap: the hard way an etcd node dies.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same ports and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    fn ctl_command(&self) -> Command {
        let mut cmd = Command::new(ETCDCTL);
        cmd.env("ETCDCTL_API", "3").arg("--endpoints").arg(self.endpoint()).args(&self.ctl_flags);
        cmd
    }

    pub fn ctl_output(&self, args: &[&str]) -> Output {
        self.ctl_command().args(args).stdin(Stdio::null()).output().expect("run etcdctl")
    }

    /// Runs etcdctl and asserts success; returns stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_output(args);
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs etcdctl with `stdin` (for `txn`).
    pub fn ctl_stdin(&self, args: &[&str], stdin: &str) -> String {
        let mut child = self
            .ctl_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        let out = child.wait_with_output().expect("etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, value]);
    }

    /// The current revision of the store.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&["get", "x-no-such-key", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        v["header"]["revision"].as_i64().expect("revision")
    }

    pub fn compact(&self) {
        let rev = self.revision();
        self.ctl(&["compact", &rev.to_string(), "--physical"]);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A stopped process ignores nothing but SIGKILL; continue it anyway so nothing is left half-alive.
            let _ = Command::new("kill").arg("-CONT").arg(c.id().to_string()).status();
        }
        self.kill();
    }
}

const OPEN: u8 = 0;
const REFUSE: u8 = 1;

/// A TCP relay in front of etcd. `cut()` drops every relayed connection and refuses new ones; `heal()` relays
/// again. Runs on plain threads so it keeps working while the test's runtime is busy.
pub struct Relay {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicU8>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let mode = Arc::new(AtomicU8::new(OPEN));
        let stop = Arc::new(AtomicU8::new(0));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (m, s, c) = (mode.clone(), stop.clone(), conns.clone());
        std::thread::spawn(move || {
            while s.load(Ordering::Relaxed) == 0 {
                let (down, _) = match listener.accept() {
                    Ok(pair) => pair,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if m.load(Ordering::Relaxed) == REFUSE {
                    drop(down);
                    continue;
                }
                let _ = down.set_nonblocking(false);
                let Ok(up) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else { continue };
                let _ = up.set_nodelay(true);
                let _ = down.set_nodelay(true);
                let mut list = c.lock().unwrap_or_else(|p| p.into_inner());
                for (from, to) in [(&down, &up), (&up, &down)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { continue };
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
                list.push(down);
                list.push(up);
            }
        });
        Relay { addr, mode, conns, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every relayed connection and refuses new ones until `heal`.
    pub fn cut(&self) {
        self.mode.store(REFUSE, Ordering::Relaxed);
        for s in self.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.mode.store(OPEN, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(1, Ordering::Relaxed);
        self.cut();
    }
}
