//! Hot binary upgrade, in the lifecycle layer: `ficus upgrade --control PATH` or SIGUSR2 starts the binary
//! again (same path, same arguments, so a replaced file is the new version) with this process' listening
//! sockets, waits until the new process says it is ready, and only then drains this one.
//!
//! ```text
//!  old: spawn(exe, FICUS_INHERIT_FDS, FICUS_READY_FD) ──> wait for "ready" on the pipe (deadline)
//!  new: take inherited sockets, load config, serve, write pid file, sd_notify, "ready <pid>" ──┘
//!  old: ready? ── yes ──> MAINPID=new, stop accepting (queues stay open in the new process), drain, exit
//!              └─ no (exit, "error ...", deadline) ──> kill the new one, keep serving, report why
//! ```
//!
//! The control socket is a unix stream socket speaking one line each way (`upgrade` → `ok ...` or
//! `error ...`); it is itself handed over, so `ficus upgrade` always reaches the process that serves.

use super::inherit;
use super::{systemd, Shutdown};
use serde::Deserialize;
use serve::duration::de_duration;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// The pipe on which a new process reports `ready <pid>` or `error <why>` to the one that started it.
pub const READY_FD_ENV: &str = "FICUS_READY_FD";

/// `[process]` in ficus.toml; flags override it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSettings {
    /// Kept naming the process that serves, across upgrades.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// The unix control socket `ficus upgrade` talks to.
    #[serde(default)]
    pub control: Option<PathBuf>,
    /// Written once the listeners are bound: the pid and the address each listener got (JSON), so a
    /// supervisor or test that asked for port 0 learns the port, as Envoy's `--admin-address-path` does.
    #[serde(default)]
    pub address_file: Option<PathBuf>,
    /// How long a new process may take to become ready before it is killed and the old one keeps serving.
    #[serde(default = "default_upgrade_timeout", deserialize_with = "de_duration")]
    pub upgrade_timeout: Duration,
}

fn default_upgrade_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            pid_file: None,
            control: None,
            address_file: None,
            upgrade_timeout: default_upgrade_timeout(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("control socket {path}: {source}")]
    Control { path: PathBuf, source: std::io::Error },
    #[error("address file {path}: {source}")]
    AddressFile { path: PathBuf, source: std::io::Error },
    #[error("control socket {0}: another process is listening on it")]
    ControlInUse(PathBuf),
    #[error("pid file {path}: {source}")]
    PidFile { path: PathBuf, source: std::io::Error },
    #[error("an upgrade is already running")]
    Busy,
    #[error("this process is draining (shutting down or already replaced)")]
    Draining,
    #[error("cannot start {exe}: {source}")]
    Spawn { exe: PathBuf, source: std::io::Error },
    #[error("new process {pid} exited ({status}) before it was ready")]
    Exited { pid: u32, status: String },
    #[error("new process {pid} failed: {message}")]
    Failed { pid: u32, message: String },
    #[error("new process {pid} was not ready within {timeout:?}; it was killed")]
    Timeout { pid: u32, timeout: Duration },
    #[error("upgrade: {0}")]
    Io(#[from] std::io::Error),
}

/// The binary and arguments this process was started with.
struct Exe {
    path: PathBuf,
    args: Vec<OsString>,
}

static EXE: OnceLock<Exe> = OnceLock::new();
static READY_PIPE: Mutex<Option<File>> = Mutex::new(None);

/// Call first thing in `serve`: remembers how this process was started (before anyone replaces the file)
/// and takes the inherited sockets and readiness pipe.
pub fn init() {
    EXE.get_or_init(capture_exe);
    inherit::init();
    if let Some(fd) = std::env::var(READY_FD_ENV).ok().and_then(|v| v.parse::<RawFd>().ok()) {
        // SAFETY: F_GETFD only queries the descriptor table.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if fd > 2 && flags >= 0 {
            // SAFETY: the parent passed this open pipe end to this process alone; READY_PIPE becomes its one
            // owner (init runs before anything else could claim it). FD_CLOEXEC keeps it out of our children.
            let file = unsafe {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                File::from(OwnedFd::from_raw_fd(fd))
            };
            *READY_PIPE.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        }
    }
}

/// The path to start again. `/proc/self/exe` would name the *old* inode once the file is replaced, so the
/// path comes from argv[0] (made absolute now, in case the working directory changes) and only falls back to
/// the resolved executable when argv[0] was found through `PATH`.
fn capture_exe() -> Exe {
    let args: Vec<OsString> = std::env::args_os().collect();
    let from_argv = args.first().map(PathBuf::from).filter(|p| p.components().count() > 1).map(|p| {
        if p.is_absolute() {
            p
        } else {
            std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
        }
    });
    let path = from_argv.or_else(|| std::env::current_exe().ok()).unwrap_or_else(|| PathBuf::from("ficus"));
    Exe { path, args }
}

fn report_to_parent(line: &str) {
    if let Some(mut pipe) = READY_PIPE.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = pipe.write_all(line.as_bytes());
    }
}

/// Tells the process that started this one (if any) why this one cannot serve. Call before exiting on error.
pub fn report_failure(message: &str) {
    report_to_parent(&format!("error {}\n", message.replace('\n', " ")));
}

/// The serving process' upgrade state.
struct Upgrader {
    settings: ProcessSettings,
    shutdown: Shutdown,
    busy: AtomicBool,
    handed_over: AtomicBool,
}

/// The serving process, as upgrades and supervisors see it; [`stopped`](Process::stopped) once drained.
pub struct Process(Arc<Upgrader>);

impl Process {
    /// The drain is over: the pid file goes, unless a new process took over (it owns the file now). Called by
    /// the process itself rather than left to a task, which the runtime could drop before it ran.
    pub fn stopped(&self) {
        if self.0.handed_over.load(Ordering::SeqCst) {
            return;
        }
        if let Some(path) = &self.0.settings.pid_file {
            if read_pid_file(path) == Some(std::process::id()) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Called once the gateway serves: control socket, pid file, SIGUSR2, sd_notify, and "ready" to the parent.
pub async fn ready(settings: &ProcessSettings, shutdown: Shutdown) -> Result<Process, UpgradeError> {
    let control = settings.control.as_deref().map(bind_control).transpose()?;
    if let Some(path) = &settings.pid_file {
        write_pid_file(path)?;
    }
    let up = Arc::new(Upgrader {
        settings: settings.clone(),
        shutdown: shutdown.clone(),
        busy: AtomicBool::new(false),
        handed_over: AtomicBool::new(false),
    });
    if let Some(listener) = control {
        tokio::spawn(control_server(listener, up.clone()));
    }
    tokio::spawn(on_sigusr2(up.clone()));
    systemd::ready();
    report_to_parent(&format!("ready {}\n", std::process::id()));
    tokio::spawn(async {
        // Keyed listeners bind right after the first table; whatever is left unclaimed after that is a
        // listener the config no longer has.
        tokio::time::sleep(Duration::from_secs(2)).await;
        inherit::close_unclaimed();
    });
    let process = Process(up.clone());
    tokio::spawn(async move {
        up.shutdown.wait().await;
        if !up.handed_over.load(Ordering::SeqCst) {
            systemd::stopping();
        }
    });
    Ok(process)
}

fn bind_control(path: &Path) -> Result<tokio::net::UnixListener, UpgradeError> {
    let err = |source| UpgradeError::Control { path: path.to_path_buf(), source };
    let listener = match inherit::take_unix(inherit::CONTROL, path) {
        Some(l) => l,
        None => {
            if path.exists() {
                // A socket file left by a process that died; refuse to steal one that still answers.
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(UpgradeError::ControlInUse(path.to_path_buf()));
                }
                std::fs::remove_file(path).map_err(err)?;
            }
            std::os::unix::net::UnixListener::bind(path).map_err(err)?
        }
    };
    listener.set_nonblocking(true).map_err(err)?;
    inherit::register(inherit::CONTROL, listener.as_fd()).map_err(err)?;
    tokio::net::UnixListener::from_std(listener).map_err(err)
}

fn write_pid_file(path: &Path) -> Result<(), UpgradeError> {
    let err = |source| UpgradeError::PidFile { path: path.to_path_buf(), source };
    write_atomically(path, format!("{}\n", std::process::id()).as_bytes()).map_err(err)
}

/// The address file: `{"pid":..,"listeners":{"<name>":"<ip:port>",..},"admin":"<ip:port>"|null}`.
pub fn write_address_file(
    path: &Path,
    listeners: &[(String, std::net::SocketAddr)],
    admin: Option<std::net::SocketAddr>,
) -> Result<(), UpgradeError> {
    let listeners: serde_json::Map<String, serde_json::Value> =
        listeners.iter().map(|(name, a)| (name.clone(), a.to_string().into())).collect();
    let doc = serde_json::json!({
        "pid": std::process::id(),
        "listeners": listeners,
        "admin": admin.map(|a| a.to_string()),
    });
    write_atomically(path, format!("{doc}\n").as_bytes())
        .map_err(|source| UpgradeError::AddressFile { path: path.to_path_buf(), source })
}

/// Written beside and renamed, so a reader never sees an empty or half-written file.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

pub fn read_pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

async fn on_sigusr2(up: Arc<Upgrader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        tracing::error!("cannot install the SIGUSR2 handler; use `ficus upgrade --control`");
        return;
    };
    loop {
        tokio::select! {
            got = usr2.recv() => if got.is_none() { return },
            _ = up.shutdown.wait() => return,
        }
        tracing::info!("SIGUSR2: hot upgrade");
        // The outcome is logged by `upgrade` itself.
        let _ = up.upgrade().await;
    }
}

async fn control_server(listener: tokio::net::UnixListener, up: Arc<Upgrader>) {
    loop {
        let stream = tokio::select! {
            res = listener.accept() => match res {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // A successor (or nobody, at shutdown) answers from now on; the socket itself stays open.
            _ = up.shutdown.wait() => return,
        };
        let up = up.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read.take(256));
            if tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await.is_err() {
                return;
            }
            let reply = match line.trim() {
                "upgrade" => {
                    let started = Instant::now();
                    match up.upgrade().await {
                        Ok(pid) => format!("ok new process {pid} serving after {} ms\n", started.elapsed().as_millis()),
                        Err(e) => format!("error {e}\n"),
                    }
                }
                "pid" => format!("ok {}\n", std::process::id()),
                other => format!("error unknown command {other:?} (try `upgrade` or `pid`)\n"),
            };
            let _ = write.write_all(reply.as_bytes()).await;
        });
    }
}

impl Upgrader {
    async fn upgrade(self: &Arc<Self>) -> Result<u32, UpgradeError> {
        if self.shutdown.is_triggered() {
            return Err(UpgradeError::Draining);
        }
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(UpgradeError::Busy);
        }
        let started = Instant::now();
        let timeout = self.settings.upgrade_timeout;
        let result = tokio::task::spawn_blocking(move || start_successor(timeout))
            .await
            .unwrap_or_else(|e| Err(UpgradeError::Io(std::io::Error::other(e.to_string()))));
        match result {
            Ok(pid) => {
                self.handed_over.store(true, Ordering::SeqCst);
                systemd::handed_over(pid);
                tracing::info!(
                    new_pid = pid,
                    ready_ms = started.elapsed().as_millis() as u64,
                    "hot upgrade: the new process serves; draining this one"
                );
                self.shutdown.trigger();
                Ok(pid)
            }
            Err(e) => {
                tracing::error!(error = %e, "hot upgrade failed; this process keeps serving");
                self.busy.store(false, Ordering::SeqCst);
                Err(e)
            }
        }
    }
}

/// Starts the successor with the live sockets and waits (blocking, bounded) for its verdict.
fn start_successor(timeout: Duration) -> Result<u32, UpgradeError> {
    let exe = EXE.get_or_init(capture_exe);
    let (read_end, write_end) = pipe()?;
    let write_fd = write_end.as_raw_fd();
    let spawned = inherit::with_live(|live| {
        let mut cmd = std::process::Command::new(&exe.path);
        cmd.args(exe.args.iter().skip(1))
            .env(inherit::FDS_ENV, inherit::env_value(live))
            .env(READY_FD_ENV, write_fd.to_string())
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES");
        let keep: Vec<RawFd> = live.iter().map(|(_, fd)| *fd).chain([write_fd]).collect();
        // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe and `keep` was allocated
        // before the fork, so nothing here allocates or takes a lock.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &keep {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        tracing::info!(exe = %exe.path.display(), sockets = %inherit::env_value(live), "hot upgrade: starting the new process");
        cmd.spawn()
    });
    let mut child = spawned.map_err(|source| UpgradeError::Spawn { exe: exe.path.clone(), source })?;
    // Our copy of the write end must go, or the pipe never reports the child's exit as end of file.
    drop(write_end);
    let pid = child.id();
    let verdict = read_verdict(read_end, Instant::now() + timeout);
    let fail = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    match verdict {
        Verdict::Ready => Ok(pid),
        Verdict::Error(message) => {
            fail(&mut child);
            Err(UpgradeError::Failed { pid, message })
        }
        Verdict::Closed => {
            // The pipe closed without a word: the process is exiting; give it a moment to be reaped.
            let deadline = Instant::now() + Duration::from_secs(2);
            let status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break s.to_string(),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                    _ => {
                        fail(&mut child);
                        break "closed its readiness pipe".to_string();
                    }
                }
            };
            Err(UpgradeError::Exited { pid, status })
        }
        Verdict::Timeout => {
            fail(&mut child);
            Err(UpgradeError::Timeout { pid, timeout })
        }
    }
}

enum Verdict {
    Ready,
    Error(String),
    Closed,
    Timeout,
}

fn read_verdict(pipe: OwnedFd, deadline: Instant) -> Verdict {
    let mut file = File::from(pipe);
    let mut got = Vec::new();
    loop {
        if let Some(end) = got.iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&got[..end]).into_owned();
            return match line.split_once(' ') {
                Some(("ready", _)) => Verdict::Ready,
                Some(("error", why)) => Verdict::Error(why.to_string()),
                _ => Verdict::Error(format!("unexpected report {line:?}")),
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Verdict::Timeout;
        }
        let mut pfd = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll reads and writes only the one pollfd we pass.
        let n = unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Verdict::Closed;
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 512];
        match file.read(&mut buf) {
            Ok(0) => return Verdict::Closed,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Verdict::Closed,
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass; both are close-on-exec.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `ficus upgrade`: asks the serving process to upgrade itself and waits for the outcome.
pub fn request_upgrade(control: &Path, wait: Duration) -> Result<String, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(control)
        .map_err(|e| format!("cannot reach the control socket {}: {e}", control.display()))?;
    stream.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    stream.write_all(b"upgrade\n").map_err(|e| format!("control socket: {e}"))?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(|e| format!("no answer within {wait:?}: {e}"))?;
    let reply = reply.trim();
    match reply.split_once(' ') {
        Some(("ok", rest)) => Ok(rest.to_string()),
        Some(("error", rest)) => Err(rest.to_string()),
        _ if reply.is_empty() => Err("the serving process closed the control connection without an answer".into()),
        _ => Err(format!("unexpected answer {reply:?}")),
    }
}
