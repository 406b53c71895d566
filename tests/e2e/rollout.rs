//! `ficus canary --to ... --steps ...` against a real etcd, a real gateway following it and real backends under
//! steady traffic: a healthy canary reaches 100%; a step counts the requests of every instance listed; a canary
//! that starts answering 500 at step 2 is rolled back to 0% at that step's judgement; a command killed mid-way
//! continues from the stored step when run again; an operator's own write to the frontend pauses the rollout;
//! `ficus rollout abort` rolls it back and stops a running command; too little traffic holds a step and says
//! so; an etcd that fails stops the rollout with the weights it last wrote. Intervals are 1 s; every wait is
//! bounded and every process is stopped.

use crate::common;

use bytes::Bytes;
use common::backend::TestBackend;
use common::etcd::Etcd;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const FRONTEND: &str = "/vulcand/frontends/gtin/frontend";

/// The canary: answers 200, or 500 once `failing` is set.
struct Canary {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn canary() -> Canary {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind canary");
    let addr = listener.local_addr().expect("addr");
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let flag = flag.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let code = if flag.load(Ordering::Relaxed) { 500 } else { 200 };
                    async move {
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(br#"{"backend":"gtin"}"#)));
                        *r.status_mut() = http::StatusCode::from_u16(code).expect("status");
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Canary { addr, failing, task }
}

/// etcd, the legacy backend, the canary, a gateway following etcd, and steady traffic through it.
struct World {
    etcd: Etcd,
    ficus: Ficus,
    canary: Canary,
    _legacy: TestBackend,
    /// Whether the load sends requests now.
    sending: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    load: tokio::task::JoinHandle<()>,
}

impl World {
    async fn start() -> World {
        let etcd = Etcd::start();
        let legacy = TestBackend::start("legacy").await;
        let canary = canary().await;
        etcd.put("/vulcand/backends/legacy/backend", r#"{"Type":"http"}"#);
        etcd.put("/vulcand/backends/legacy/servers/l1", &format!(r#"{{"URL":"http://{}"}}"#, legacy.addr));
        etcd.put("/vulcand/backends/gtin/backend", r#"{"Type":"http"}"#);
        etcd.put("/vulcand/backends/gtin/servers/g1", &format!(r#"{{"URL":"http://{}"}}"#, canary.addr));
        etcd.put(FRONTEND, r#"{"Type":"http","BackendId":"legacy","Route":"PathPrefix(`/`)"}"#);
        let ficus = Ficus::start_etcd(&etcd.endpoint(), "/vulcand").await;
        let sending = Arc::new(AtomicBool::new(true));
        let stopped = Arc::new(AtomicBool::new(false));
        let (on, stop) = (sending.clone(), stopped.clone());
        let url = ficus.url("/stores/1/gtins/1");
        let load = tokio::spawn(async move {
            let c = http1_client();
            while !stop.load(Ordering::Relaxed) {
                if on.load(Ordering::Relaxed) {
                    let _ = tokio::time::timeout(Duration::from_secs(2), get(&c, &url)).await;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        World { etcd, ficus, canary, _legacy: legacy, sending, stopped, load }
    }

    fn admin(&self) -> String {
        format!("http://{}", self.ficus.admin)
    }

    /// `ficus canary gtin --to gtin` judged by this world's gateway, its stdout read line by line.
    fn rollout(&self, steps: &str, interval: &str) -> Running {
        self.rollout_judged_by(&self.admin(), steps, interval)
    }

    fn rollout_judged_by(&self, admin: &str, steps: &str, interval: &str) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ficus"))
            .args(["canary", "gtin", "--to", "gtin", "--steps", steps, "--interval", interval])
            .args(["--max-error-rate", "1%", "--max-p99", "2s", "--min-requests", "5"])
            .args(["--admin", admin, "--etcd", &self.etcd.endpoint(), "--etcd-timeout", "1s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ficus canary");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Running { child, lines, seen: Vec::new() }
    }

    fn ficus_cmd(&self, args: &[&str]) -> (i32, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ficus"))
            .args(args)
            .args(["--etcd", &self.etcd.endpoint()])
            .output()
            .expect("run ficus");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }

    /// The frontend's weights as stored: (legacy, gtin).
    fn weights(&self) -> (u64, u64) {
        let v: serde_json::Value =
            serde_json::from_str(&self.etcd.ctl(&["get", "--print-value-only", FRONTEND])).expect("frontend JSON");
        let of = |id: &str| {
            v["Backends"].as_array().and_then(|l| l.iter().find(|b| b["Id"] == id)).and_then(|b| b["Weight"].as_u64())
        };
        (of("legacy").unwrap_or(0), of("gtin").unwrap_or(0))
    }

    async fn stop(self) {
        self.stopped.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.load).await;
    }
}

struct Running {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl Running {
    /// Reads lines until one contains `needle`; fails after 60 s or at the end of the output.
    async fn until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                other => panic!("no line with {needle:?} ({other:?}); output so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits (up to 60 s) for the command to exit; its exit code, whole stdout and stderr.
    async fn finish(mut self) -> (i32, String, String) {
        while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line()).await {
            self.seen.push(line);
        }
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the rollout command ends")
            .expect("wait");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut err).await;
        }
        (status.code().unwrap_or(-1), self.seen.join("\n"), err)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_step_by_step_to_100_percent() {
    let w = World::start().await;
    let (code, out, err) = w.rollout("5,25,50,100", "1s").finish().await;
    assert_eq!(code, 0, "{out}\n{err}");
    for step in ["step 1/4 (5%): healthy", "step 2/4 (25%): healthy", "step 4/4 (100%): healthy", "done"] {
        assert!(out.contains(step), "{step:?} missing:\n{out}");
    }
    assert_eq!(w.weights(), (0, 100));
    let (code, status, _) = w.ficus_cmd(&["rollout", "status", "gtin"]);
    assert_eq!(code, 0);
    assert!(status.contains("rollout of gtin to gtin: done at 100% (steps 5,25,50,100; interval 1s)"), "{status}");
    assert!(status.contains("as the rollout wrote it"), "{status}");
    // The rollout's own key is not config: the gateway refuses no key, and export leaves it out.
    let s = w.ficus.status().await;
    assert_eq!(s["rejected"].as_array().map_or(0, |r| r.len()), 0, "{s}");
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, out, err) = w.ficus_cmd(&["export", &dir.path().display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("skipped"), "{out}");
    assert!(!dir.path().join("ficus").exists());
    assert!(dir.path().join("frontends/gtin/frontend.json").exists());
    w.stop().await;
}

/// Every instance's counters count: with all traffic through a second gateway, a rollout that read only the
/// first would find too little to judge at every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_is_judged_from_the_requests_of_every_instance() {
    let w = World::start().await;
    w.sending.store(false, Ordering::Relaxed);
    let other = Ficus::start_etcd(&w.etcd.endpoint(), "/vulcand").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (halt, url) = (stop.clone(), other.url("/stores/1/gtins/1"));
    let load = tokio::spawn(async move {
        let c = http1_client();
        while !halt.load(Ordering::Relaxed) {
            let _ = tokio::time::timeout(Duration::from_secs(2), get(&c, &url)).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    let admins = format!("{},http://{}", w.admin(), other.admin);
    let (code, out, err) = w.rollout_judged_by(&admins, "25,100", "1s").finish().await;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(5), load).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("too little to judge"), "{out}");
    assert!(out.contains("step 1/2 (25%): healthy") && out.contains("step 2/2 (100%): healthy"), "{out}");
    assert_eq!(w.weights(), (0, 100));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_traffic_is_said_and_the_step_held_until_there_is_enough() {
    let w = World::start().await;
    w.sending.store(false, Ordering::Relaxed);
    let mut run = w.rollout("50,100", "1s");
    let line = run.until("too little to judge").await;
    assert!(line.starts_with("step 1/2 (50%): 0 request(s) to gtin so far, fewer than --min-requests 5"), "{line}");
    assert!(line.ends_with("holding another 1s"), "{line}");
    assert_eq!(w.weights(), (50, 50), "held, not promoted");
    w.sending.store(true, Ordering::Relaxed);
    run.until("step 1/2 (50%): healthy").await;
    let (code, out, err) = run.finish().await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.weights(), (0, 100));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_fails_at_step_2_is_rolled_back_to_0_at_that_steps_judgement() {
    let w = World::start().await;
    let mut run = w.rollout("5,25,50,100", "1s");
    run.until("step 1/4 (5%): healthy").await;
    run.until("step 2/4 (25%): legacy 75%, gtin 25% written").await;
    w.canary.failing.store(true, Ordering::Relaxed);
    let (code, out, err) = run.finish().await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("step 2/4 (25%): BREACH: error rate"), "{out}");
    assert!(out.contains("is above --max-error-rate 1%"), "{out}");
    assert!(out.contains("step 2/4 (25%): rolled back to legacy 100%, gtin 0%"), "{out}");
    assert!(!out.contains("step 3/4"), "{out}");
    assert_eq!(w.weights(), (100, 0));
    let (_, status, _) = w.ficus_cmd(&["rollout", "status", "gtin"]);
    assert!(status.contains("rolled back at 0%"), "{status}");
    assert!(status.contains("step 2/4 (25%): rolled back: error rate"), "{status}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_rollout_continues_from_the_stored_step() {
    let w = World::start().await;
    let mut run = w.rollout("5,25,50,100", "1s");
    run.until("step 2/4 (25%): legacy 75%, gtin 25% written").await;
    run.child.kill().await.expect("kill the rollout command");
    let (_, status, _) = w.ficus_cmd(&["rollout", "status", "gtin"]);
    assert!(status.contains("running at 25%"), "{status}");
    assert_eq!(w.weights(), (75, 25));

    let (code, out, err) = w.rollout("5,25,50,100", "1s").finish().await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("resuming the rollout of gtin to gtin (running at 25%) at step 2/4 (25%)"), "{out}");
    assert!(!out.contains("step 1/4"), "{out}");
    assert!(out.contains("step 4/4 (100%): healthy"), "{out}");
    assert_eq!(w.weights(), (0, 100));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_write_pauses_the_rollout_and_abort_rolls_it_back() {
    let w = World::start().await;
    let mut run = w.rollout("5,25,50,100", "30s");
    run.until("step 1/4 (5%): legacy 95%, gtin 5% written").await;
    let mine = r#"{"Type":"http","Route":"PathPrefix(`/`)","Backends":[{"Id":"legacy","Weight":90},{"Id":"gtin","Weight":10}]}"#;
    w.etcd.put(FRONTEND, mine);
    let (code, out, _) = run.finish().await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("was written by someone else"), "{out}");
    assert!(out.contains("rollout paused at 5% rather than overwrite it"), "{out}");
    assert_eq!(w.weights(), (90, 10), "the operator's write stands");
    let (_, status, _) = w.ficus_cmd(&["rollout", "status", "gtin"]);
    assert!(status.contains("paused at 5%"), "{status}");
    assert!(status.contains("changed since the rollout wrote it"), "{status}");

    // Running it again continues from the operator's value; abort then rolls back and stops it.
    let mut run = w.rollout("5,25,50,100", "30s");
    run.until("continuing from it").await;
    run.until("step 1/4 (5%): legacy 95%, gtin 5% written").await;
    let (code, out, err) = w.ficus_cmd(&["rollout", "abort", "gtin"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rolled back (legacy 100%, gtin 0%); rollout aborted"), "{out}");
    let (code, out, _) = run.finish().await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("aborted at 5% by `ficus rollout abort`"), "{out}");
    assert_eq!(w.weights(), (100, 0));
    let (code, _, err) = w.ficus_cmd(&["rollout", "abort", "gtin"]);
    assert_eq!(code, 1);
    assert!(err.contains("the rollout of gtin is aborted: nothing to abort"), "{err}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_that_fails_stops_the_rollout_with_the_weights_it_last_wrote() {
    let mut w = World::start().await;
    let mut run = w.rollout("5,25,50,100", "30s");
    run.until("step 1/4 (5%): legacy 95%, gtin 5% written").await;
    w.etcd.kill();
    let (code, out, err) = run.finish().await;
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("the rollout stopped"), "{err}");
    assert!(err.contains("frontends/gtin/frontend keeps the weights last written (gtin at 5%)"), "{err}");
    w.etcd.restart();
    assert_eq!(w.weights(), (95, 5));
    let (_, status, _) = w.ficus_cmd(&["rollout", "status", "gtin"]);
    assert!(status.contains("running at 5%"), "{status}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_rolls_back_when_it_shows_not_at_the_end_of_a_long_step() {
    let w = World::start().await;
    // Five minutes a step: the test's own 60 s bound fails it if the breach waited for the end of the step.
    let mut run = w.rollout("50,100", "5m");
    run.until("step 1/2 (50%): legacy 50%, gtin 50% written").await;
    w.canary.failing.store(true, Ordering::Relaxed);
    let breach = run.until("step 1/2 (50%): BREACH: error rate").await;
    assert!(breach.contains("into the step's 300s)"), "{breach}");
    let (code, out, err) = run.finish().await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("step 1/2 (50%): rolled back to legacy 100%, gtin 0%"), "{out}");
    assert_eq!(w.weights(), (100, 0));
    w.stop().await;
}
