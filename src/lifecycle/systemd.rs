//! systemd integration, in the lifecycle layer: `sd_notify` messages (`READY=1`, `STOPPING=1`, `MAINPID=`)
//! written to `$NOTIFY_SOCKET`, so a `Type=notify` unit knows when Ficus serves, when it stops, and which
//! process serves after a hot upgrade. Socket activation (`LISTEN_FDS`) is read by `inherit`.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op; a failed send is logged and never fatal, because serving
//! traffic matters more than telling the supervisor about it.

use std::os::unix::net::UnixDatagram;

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends one notification (newline-separated `KEY=VALUE` pairs). Returns false when there was nowhere to send
/// it or the send failed.
pub fn notify(message: &str) -> bool {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else { return false };
    match send(&path, message) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(socket = ?path, error = %e, "sd_notify failed");
            false
        }
    }
}

fn send(path: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    // An address starting with `@` is in Linux's abstract namespace (systemd uses one in containers).
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        sock.send_to(message.as_bytes(), path)?;
    }
    Ok(())
}

/// The process serves: `READY=1` with its pid (after an upgrade the new process is the main one).
pub fn ready() {
    notify(&format!("READY=1\nMAINPID={}\nSTATUS=serving", std::process::id()));
}

/// Another process took over serving (hot upgrade); systemd should follow it, not this one.
pub fn handed_over(new_pid: u32) {
    notify(&format!("MAINPID={new_pid}\nREADY=1\nSTATUS=handed over to {new_pid}"));
}

/// A real stop (SIGTERM/SIGINT): the drain has started.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=draining");
}
