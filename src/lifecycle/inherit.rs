//! Listening sockets that outlive one process, in the lifecycle layer (the hot upgrade hands them on; `listen`
//! takes them instead of binding): the ones this process inherited (from
//! the Ficus it replaces during a hot upgrade, or from systemd socket activation) and the ones it would hand
//! to its own successor.
//!
//! A hot upgrade never closes an accept queue: the old process passes its listening sockets to the new one
//! (the descriptors survive `exec` with `FD_CLOEXEC` cleared), and the new process takes them instead of
//! binding. The environment says which descriptor is which: `FICUS_INHERIT_FDS=3=http;4=ficus:admin`, or
//! systemd's `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` (descriptors from 3). A socket is matched to a
//! listener by its bound address (and name when both sides have one), so a systemd unit may name them or not.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// Ficus' own handover variable: `fd=name` pairs separated by `;`.
pub const FDS_ENV: &str = "FICUS_INHERIT_FDS";
/// The reserved names of the sockets that are not proxy listeners.
pub const ADMIN: &str = "ficus:admin";
pub const CONTROL: &str = "ficus:control";

const SD_LISTEN_FDS_START: RawFd = 3;

struct Inherited {
    name: Option<String>,
    fd: OwnedFd,
}

static POOL: OnceLock<Mutex<Vec<Inherited>>> = OnceLock::new();

/// Reads the environment once and takes ownership of the inherited descriptors. Call early (before anything
/// could close or reuse descriptor numbers); later calls are free.
pub fn init() {
    pool();
}

fn pool() -> &'static Mutex<Vec<Inherited>> {
    POOL.get_or_init(|| Mutex::new(from_env()))
}

fn from_env() -> Vec<Inherited> {
    let mut found = Vec::new();
    if let Ok(spec) = std::env::var(FDS_ENV) {
        for pair in spec.split(';').filter(|p| !p.is_empty()) {
            let Some((fd, name)) = pair.split_once('=') else { continue };
            match fd.parse::<RawFd>() {
                Ok(fd) => found.extend(adopt(fd, Some(name.to_string()))),
                Err(_) => tracing::warn!(entry = pair, "{FDS_ENV}: not a descriptor number; ignored"),
            }
        }
    } else if let Some(n) = systemd_fds() {
        let names: Vec<String> =
            std::env::var("LISTEN_FDNAMES").unwrap_or_default().split(':').map(str::to_string).collect();
        for i in 0..n {
            let name = names.get(i as usize).filter(|s| !s.is_empty() && *s != "unknown").cloned();
            found.extend(adopt(SD_LISTEN_FDS_START + i, name));
        }
    }
    if !found.is_empty() {
        tracing::info!(count = found.len(), "inherited listening sockets");
    }
    found
}

/// `LISTEN_FDS` when `LISTEN_PID` names this process (the variables are meant for exactly one process).
fn systemd_fds() -> Option<RawFd> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    std::env::var("LISTEN_FDS").ok()?.parse().ok()
}

fn adopt(fd: RawFd, name: Option<String>) -> Option<Inherited> {
    // SAFETY: F_GETFD only queries the descriptor table; it fails with EBADF for a number that is not open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if fd < SD_LISTEN_FDS_START || flags < 0 {
        tracing::warn!(fd, ?name, "inherited descriptor is not open; ignored");
        return None;
    }
    // SAFETY: the environment hands this open descriptor to this process, and the pool (initialised once)
    // is its only owner. Setting FD_CLOEXEC keeps it from leaking into unrelated children.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        Some(Inherited { name, fd: OwnedFd::from_raw_fd(fd) })
    }
}

/// Takes an inherited TCP listener bound to `addr` (preferring one named `name`).
pub fn take_tcp(name: &str, addr: SocketAddr) -> Option<std::net::TcpListener> {
    let local = |i: &Inherited| socket2::SockRef::from(&i.fd).local_addr().ok().and_then(|a| a.as_socket());
    if addr.port() == 0 {
        // "Any port": the socket this listener had in the old process, found by name on the same address,
        // so an upgrade keeps the port the kernel chose. Never another listener's socket.
        let named = |i: &Inherited| i.name.as_deref() == Some(name) && local(i).is_some_and(|a| a.ip() == addr.ip());
        return take(name, named).map(std::net::TcpListener::from);
    }
    take(name, |i: &Inherited| local(i) == Some(addr)).map(std::net::TcpListener::from)
}

/// Takes an inherited unix listener bound to `path`.
pub fn take_unix(name: &str, path: &Path) -> Option<std::os::unix::net::UnixListener> {
    let matches = |i: &Inherited| {
        socket2::SockRef::from(&i.fd).local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf))
            == Some(path.to_path_buf())
    };
    take(name, matches).map(std::os::unix::net::UnixListener::from)
}

fn take(name: &str, matches: impl Fn(&Inherited) -> bool) -> Option<OwnedFd> {
    let mut pool = pool().lock().unwrap_or_else(|p| p.into_inner());
    let at = pool
        .iter()
        .position(|i| i.name.as_deref() == Some(name) && matches(i))
        .or_else(|| pool.iter().position(&matches))?;
    Some(pool.remove(at).fd)
}

/// Closes inherited sockets that no listener claimed (a listener removed from the config in the meantime).
pub fn close_unclaimed() {
    let left = std::mem::take(&mut *pool().lock().unwrap_or_else(|p| p.into_inner()));
    for i in left {
        tracing::warn!(name = ?i.name, fd = i.fd.as_raw_fd(), "inherited socket matches no listener; closing it");
    }
}

/// The sockets this process would hand to a successor: a duplicate of each live listener's descriptor,
/// keyed by the listener's own descriptor number, listed from bind until the listener stops.
static LIVE: Mutex<Vec<(RawFd, String, OwnedFd)>> = Mutex::new(Vec::new());

/// Puts a listening socket on the handover list under `name` until [`unregister`] is called with the same
/// descriptor.
pub fn register(name: &str, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    // A duplicate (close-on-exec) so the handover list never holds a number that the listener's owner
    // closed and the kernel reused.
    let dup = fd.try_clone_to_owned()?;
    LIVE.lock().unwrap_or_else(|p| p.into_inner()).push((fd.as_raw_fd(), name.to_string(), dup));
    Ok(())
}

/// Takes a listener off the handover list; call before closing it.
pub fn unregister(fd: BorrowedFd<'_>) {
    LIVE.lock().unwrap_or_else(|p| p.into_inner()).retain(|(key, _, _)| *key != fd.as_raw_fd());
}

/// Runs `f` with every live `(name, fd)`; the list cannot change (and no listed fd can close) until it returns.
pub fn with_live<R>(f: impl FnOnce(&[(String, RawFd)]) -> R) -> R {
    let live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    let list: Vec<(String, RawFd)> = live.iter().map(|(_, n, fd)| (n.clone(), fd.as_fd().as_raw_fd())).collect();
    f(&list)
}

/// The `FICUS_INHERIT_FDS` value for a list of live sockets.
pub fn env_value(list: &[(String, RawFd)]) -> String {
    list.iter().map(|(name, fd)| format!("{fd}={name}")).collect::<Vec<_>>().join(";")
}
