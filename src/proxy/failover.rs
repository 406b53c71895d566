//! Health in the pick and send phases: the pick skips servers that failed their checks or were ejected
//! (failing open when none is left), and the send phase reports each exchange's outcome to passive health.
//! The health itself lives on each server (`upstream::health`), shared by every frontend of the backend.

use super::UpstreamFailure;
use crate::table::Backend;
use crate::upstream::health::{millis, Outcome};
use crate::upstream::Server;
use std::sync::Arc;
use std::time::Instant;

/// A server of `backend` for a request that started at `start`, other than those at the positions in
/// `tried` when there is one: a usable one if any, else (fail open) any.
#[inline]
pub(super) fn pick_server<'b>(
    backend: &'b Backend,
    start: Instant,
    tried: &[usize],
) -> Option<(usize, &'b Arc<Server>)> {
    if !backend.health.active() && tried.is_empty() {
        return backend.servers.pick_indexed();
    }
    let now = millis(start);
    let healthy = |i: usize, s: &Arc<Server>| s.health.usable(now) && !tried.contains(&i);
    let items = backend.servers.items();
    let position = |s: &Arc<Server>| items.iter().position(|x| Arc::ptr_eq(x, s)).unwrap_or(usize::MAX);
    if let Some(picked) = backend.servers.pick_indexed_where(|s| healthy(position(s), s)) {
        backend.health.picked_healthy(&backend.id);
        return Some(picked);
    }
    if !tried.is_empty() {
        // A retry that finds no other usable server: any server not tried yet, then any at all.
        if let Some(picked) = backend.servers.pick_indexed_where(|s| !tried.contains(&position(s))) {
            return Some(picked);
        }
        return backend.servers.pick_indexed();
    }
    backend.health.failed_open(&backend.id);
    backend.servers.pick_indexed()
}

/// Reports one exchange to passive health: `status` of the answer, or the failure.
#[inline]
pub(super) fn observe(backend: &Backend, server: &Server, start: Instant, result: Result<u16, &UpstreamFailure>) {
    if backend.health.outlier.is_none() {
        return;
    }
    let outcome = match result {
        Ok(status) if status >= 500 => Outcome::Failed,
        Ok(_) => Outcome::Answered,
        Err(UpstreamFailure::Connect(_) | UpstreamFailure::DialTimeout | UpstreamFailure::Reset(_)) => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    };
    backend.health.observe(backend.servers.items(), server, outcome, millis(start));
}
