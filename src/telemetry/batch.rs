//! Access-log lines gathered per runtime thread and handed to the log writer thread in batches.
//!
//! With one access-log line per request, handing each line to the writer thread on its own costs a channel
//! send, a wake-up of that thread and a `write` per request: measured, about a millisecond of p99 at load
//! (docs/PERFORMANCE.md has the figures). So a runtime thread appends its lines to a buffer of its own and passes the
//! buffer on when it fills ([`LIMIT`]) or when the thread runs out of work ([`flush_thread`], called as the
//! thread goes idle, and when it stops). A line therefore waits at most until its thread is next idle, which
//! under load is a fraction of a millisecond and at worst the time to fill the buffer. Access lines from any
//! other thread, and every other log line (few, and wanted at once), go straight to the writer thread, so an
//! access line can appear a little after a later warning. The writer thread writes to stdout, or to the
//! access-log file when one is configured ([`super::access::ReopeningFile`]).

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use tracing_appender::non_blocking::NonBlocking;

/// A runtime thread's buffer is passed on once it holds this much.
const LIMIT: usize = 16 * 1024;

static SINK: OnceLock<NonBlocking> = OnceLock::new();

thread_local! {
    /// `None` until the thread first goes idle, which only runtime worker threads report.
    static LOCAL: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Access lines go to `sink` (the writer thread the other log lines use too); set once per process.
pub fn set_sink(sink: NonBlocking) {
    let _ = SINK.set(sink);
}

/// Writes whole access-log lines: into this thread's batch if it keeps one, else straight to the writer thread.
pub fn write_line(buf: &[u8]) {
    let buffered = LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        let Some(local) = local.as_mut() else { return false };
        local.extend_from_slice(buf);
        if local.len() >= LIMIT {
            send(local);
            local.clear();
        }
        true
    });
    if !buffered {
        send(buf);
    }
}

fn send(bytes: &[u8]) {
    if let Some(sink) = SINK.get() {
        // The writer thread's channel is bounded and lossy when full, by its own design: logging never blocks.
        let _ = sink.clone().write_all(bytes);
    }
}

/// Passes this thread's buffered lines on. Called as a runtime thread goes idle: the first call makes the
/// thread buffer its lines from then on.
pub fn flush_thread() {
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        match local.as_mut() {
            Some(buf) => {
                if !buf.is_empty() {
                    send(buf);
                    buf.clear();
                }
            }
            None => *local = Some(Vec::with_capacity(LIMIT)),
        }
    });
}

/// Passes this thread's buffered lines on and stops buffering here (a thread that is about to stop, or the
/// main thread once its runtime has returned).
pub fn stop_thread() {
    if let Some(batch) = LOCAL.with(|local| local.borrow_mut().take()) {
        if !batch.is_empty() {
            send(&batch);
        }
    }
}
