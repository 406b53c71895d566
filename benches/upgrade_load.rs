//! Load while Ficus upgrades itself, drains a server and shifts routes: a reproducible harness for the
//! zero-downtime claims (issue 4). Not a criterion bench: it runs real processes and prints a report.
//!
//! `cargo bench --bench upgrade_load` (env: `SECS` load time, default 20; `UPGRADES`, default 10;
//! `CLIENTS` per kind, default 8). Clients: HTTP/1.1 keep-alive, h2c multiplexed, a tight new-connection
//! loop, and slow requests (`SLOW_MS`, default 1000) so every upgrade has long requests in flight. Prints
//! requests, failures by kind, latency percentiles, upgrade durations against the longest request + 1 s, and
//! the new-connection loop's refused and reset counts.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Default)]
struct Stats {
    latencies_us: Mutex<Vec<u32>>,
    failures: Mutex<Vec<String>>,
    refused: AtomicU64,
    reset: AtomicU64,
    longest_ms: AtomicU64,
}

impl Stats {
    fn ok(&self, started: Instant) {
        let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        self.longest_ms.fetch_max(u64::from(us / 1000), Ordering::Relaxed);
        self.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).push(us);
    }
    fn fail(&self, what: String) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).push(what);
    }
}

/// A small upstream: `/slow/<ms>` sleeps, anything else answers a short body at once.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
                    if let Some(ms) = req.uri().path().strip_prefix("/slow/").and_then(|m| m.parse().ok()) {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn put(dir: &Path, key: &str, value: &str) {
    let file = dir.join(format!("{key}.json"));
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    let tmp = file.with_extension("tmp~");
    std::fs::write(&tmp, value).expect("write");
    std::fs::rename(&tmp, &file).expect("rename");
}

fn server(dir: &Path, backend: &str, id: &str, addr: SocketAddr, draining: bool) {
    put(
        dir,
        &format!("backends/{backend}/servers/{id}"),
        &format!(r#"{{"URL":"http://{addr}","Draining":{draining}}}"#),
    );
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn pid_of(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs = env_or("SECS", 20);
    let upgrades = env_or("UPGRADES", 10);
    let clients = env_or("CLIENTS", 8) as usize;
    let slow_ms = env_or("SLOW_MS", 1000);
    let work = tempfile::tempdir().expect("temp dir");
    let routes = work.path().join("routes");
    let (blue, green) = (backend("blue").await, backend("green").await);
    put(&routes, "backends/blue/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"30s"}}}"#);
    put(&routes, "backends/green/backend", r#"{"Type":"http","Settings":{"Timeouts":{"Read":"30s"}}}"#);
    server(&routes, "blue", "b1", blue, false);
    server(&routes, "blue", "b2", green, false);
    server(&routes, "green", "g1", green, false);
    let split = |b: u32| {
        format!(
            r#"{{"Type":"http","Route":"PathPrefix(`/`)","Backends":[{{"Id":"blue","Weight":{b}}},{{"Id":"green","Weight":{}}}]}}"#,
            100 - b
        )
    };
    put(&routes, "frontends/app/frontend", &split(100));
    let (addr, admin) = (free_addr(), free_addr());
    let (pid_file, control) = (work.path().join("ficus.pid"), work.path().join("control.sock"));
    let log = std::fs::File::create(work.path().join("ficus.log")).expect("log");
    let mut first = Command::new(env!("CARGO_BIN_EXE_ficus"))
        .args(["serve", "--listen", &addr.to_string(), "--admin", &admin.to_string(), "--no-access-log"])
        .arg("--routes")
        .arg(&routes)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--control")
        .arg(&control)
        .args(["--drain-timeout", "30s"])
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start ficus");
    let ready = Instant::now() + Duration::from_secs(20);
    while pid_of(&pid_file).is_none() || tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < ready, "ficus did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (h1, h2, fresh, slow) = (
        Arc::new(Stats::default()),
        Arc::new(Stats::default()),
        Arc::new(Stats::default()),
        Arc::new(Stats::default()),
    );
    let mut tasks = Vec::new();
    for i in 0..clients * 2 {
        let h2_client = i % 2 == 1;
        let stats = if h2_client { h2.clone() } else { h1.clone() };
        let stop = stop.clone();
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(h2_client).build_http();
        let url: http::Uri = format!("http://{addr}/x").parse().expect("uri");
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let req = http::Request::get(url.clone()).body(Full::default()).expect("request");
                match client.request(req).await {
                    Ok(r) if r.status() == 200 => match r.into_body().collect().await {
                        Ok(_) => stats.ok(t),
                        Err(e) => stats.fail(format!("body: {e}")),
                    },
                    Ok(r) => stats.fail(format!("status {}", r.status())),
                    Err(e) => stats.fail(format!("{e:?}")),
                }
            }
        }));
    }
    for i in 0..2 {
        let (stats, stop) = (slow.clone(), stop.clone());
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(i == 1).build_http();
        let url: http::Uri = format!("http://{addr}/slow/{slow_ms}").parse().expect("uri");
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let all =
                    futures_util::future::join_all((0..4).map(|_| {
                        client.request(http::Request::get(url.clone()).body(Full::default()).expect("request"))
                    }))
                    .await;
                for r in all {
                    match r {
                        Ok(r) if r.status() == 200 => stats.ok(t),
                        Ok(r) => stats.fail(format!("status {}", r.status())),
                        Err(e) => stats.fail(format!("{e:?}")),
                    }
                }
            }
        }));
    }
    {
        // The tight new-connection loop: connect, one request, read to the end, again.
        let (stats, stop) = (fresh.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut s = match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => s,
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::ConnectionRefused {
                            stats.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        stats.fail(format!("connect: {e}"));
                        continue;
                    }
                };
                let mut buf = Vec::with_capacity(256);
                let res = async {
                    s.write_all(b"GET /fresh HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").await?;
                    s.read_to_end(&mut buf).await
                }
                .await;
                match res {
                    Ok(_) if buf.starts_with(b"HTTP/1.1 200") => stats.ok(t),
                    Ok(_) => stats.fail(format!("answer {:?}", String::from_utf8_lossy(&buf[..buf.len().min(60)]))),
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::ConnectionReset {
                            stats.reset.fetch_add(1, Ordering::Relaxed);
                        }
                        stats.fail(format!("io: {e}"));
                    }
                }
            }
        }));
    }

    // The operations, spread over the run: upgrades, route shifts, a drain of b2 and its return.
    let started = Instant::now();
    let mut durations = Vec::new();
    let step = Duration::from_secs(secs) / (upgrades as u32 + 1);
    let mut shifts = 0;
    for i in 0..upgrades {
        tokio::time::sleep(step / 2).await;
        put(&routes, "frontends/app/frontend", &split(if i % 2 == 0 { 50 } else { 95 }));
        server(&routes, "blue", "b2", green, i % 2 == 0);
        shifts += 1;
        tokio::time::sleep(step / 2).await;
        let old = pid_of(&pid_file).expect("pid file");
        let t = Instant::now();
        let out = tokio::task::spawn_blocking({
            let control = control.clone();
            move || Command::new(env!("CARGO_BIN_EXE_ficus")).arg("upgrade").arg("--control").arg(control).output()
        })
        .await
        .expect("join")
        .expect("run ficus upgrade");
        if !out.status.success() {
            eprintln!("upgrade {i} failed: {}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        while alive(old) && t.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        durations.push(t.elapsed());
    }
    tokio::time::sleep(step / 2).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();

    println!(
        "load {:.1} s, {upgrades} upgrades, {shifts} route shifts + drain toggles, {clients} clients per kind",
        elapsed.as_secs_f64()
    );
    let mut total = 0;
    let mut failed = 0;
    for (name, s) in [("http/1.1 keep-alive", &h1), ("h2c", &h2), ("new connection", &fresh), ("slow", &slow)] {
        let mut l = s.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
        l.sort_unstable();
        let f = s.failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
        total += l.len() + f.len();
        failed += f.len();
        println!(
            "{name:>20}: {:>8} ok {:>4} failed   p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms",
            l.len(),
            f.len(),
            percentile(&l, 0.5),
            percentile(&l, 0.9),
            percentile(&l, 0.99),
            percentile(&l, 1.0)
        );
        for e in f.iter().take(3) {
            println!("{:>20}  e.g. {e}", "");
        }
    }
    let longest = [&h1, &h2, &fresh, &slow].iter().map(|s| s.longest_ms.load(Ordering::Relaxed)).max().unwrap_or(0);
    println!("total: {total} requests, {failed} failed");
    println!(
        "new-connection loop: {} refused, {} reset",
        fresh.refused.load(Ordering::Relaxed),
        fresh.reset.load(Ordering::Relaxed)
    );
    let ms: Vec<u128> = durations.iter().map(|d| d.as_millis()).collect();
    println!("upgrade durations (command to old process gone), ms: {ms:?}");
    println!(
        "longest request {longest} ms; budget longest + 1 s = {} ms; slowest upgrade {} ms",
        longest + 1000,
        ms.iter().max().copied().unwrap_or(0)
    );
    if let Some(pid) = pid_of(&pid_file) {
        // SAFETY: kill sends SIGTERM to the gateway this harness started (the pid file names it).
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        while alive(pid) && t.elapsed() < Duration::from_secs(35) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = first.kill();
    let _ = first.wait();
}
