//! Thread-per-core serving (`--threads N` with N > 1, and the default on a machine of several CPUs): N
//! single-threaded tokio runtimes, one per OS thread, the
//! way nginx runs N worker processes. Below every module that serves connections: `listen` hands each accepted
//! connection to a worker, `upstream`'s pools keep idle connections per worker, `admin` shows the spread.
//!
//! tokio's multi-thread scheduler lets its workers steal each other's tasks and wake each other: with two
//! threads Ficus made 0.26 context switches per request against 0.006 with one (docs/PERFORMANCE.md). Here a
//! connection and every task it spawns (HTTP/2 streams, upgrade tunnels) stay on the worker that received it,
//! and so do the upstream connections its requests open and reuse, since a socket is registered with the IO
//! driver of the runtime that opened it.
//!
//! Runtime 0 is the main thread's, which also runs the control plane (sources, reloads, health checks, admin,
//! signals) and the accept loops; connections go to the worker with the fewest open ones (exact balance, one
//! cross-thread spawn per connection; docs/PERFORMANCE.md has the measurements behind the choice).
//!
//! With one thread (`--threads 1`, or a process allowed one CPU) there is no [`Workers`] set, and [`current`]
//! is 0 everywhere.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The set of workers, once thread-per-core mode started them.
static WORKERS: OnceLock<Workers> = OnceLock::new();

/// The worker this thread is (0 outside workers and in the other modes): upstream pools index their idle
/// connections by it.
#[inline]
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// How many workers there are: 1 unless thread-per-core mode started several.
pub fn count() -> usize {
    WORKERS.get().map_or(1, |w| w.slots.len())
}

/// The workers, in thread-per-core mode.
pub fn get() -> Option<&'static Workers> {
    WORKERS.get()
}

/// Marks this thread as worker `id`: called first on each worker's thread, before its runtime runs anything.
pub fn enter(id: usize) {
    CURRENT.with(|c| c.set(id));
}

/// Installs the set of workers, once, before any listener accepts. Returns `false` if a set was already
/// installed (it is then left as it was).
pub fn install(handles: Vec<tokio::runtime::Handle>) -> bool {
    let slots = handles.into_iter().map(|handle| Slot { handle, open: Padded(AtomicUsize::new(0)) }).collect();
    WORKERS.set(Workers { slots, next: AtomicUsize::new(0) }).is_ok()
}

/// Each worker's count on its own cache line: the counts are written by different threads at every connection.
#[repr(align(128))]
struct Padded(AtomicUsize);

struct Slot {
    handle: tokio::runtime::Handle,
    /// Connections handed to this worker and not yet finished.
    open: Padded,
}

/// The workers' runtimes and how many connections each one serves.
pub struct Workers {
    slots: Box<[Slot]>,
    /// Where the search for the least loaded worker starts, turning at each connection, so ties do not all
    /// go to the first worker.
    next: AtomicUsize,
}

impl Workers {
    /// The worker with the fewest open connections, counted as serving one more until the returned
    /// [`Assigned`] is dropped (when the connection ends).
    pub fn assign(&'static self) -> Assigned {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = start;
        let mut fewest = usize::MAX;
        for i in 0..n {
            let w = (start + i) % n;
            let open = self.slots[w].open.0.load(Ordering::Relaxed);
            if open < fewest {
                fewest = open;
                best = w;
            }
        }
        self.slots[best].open.0.fetch_add(1, Ordering::Relaxed);
        Assigned { workers: self, id: best }
    }

    /// Each worker's open connections, in worker order (`/status`).
    pub fn connections(&self) -> Vec<usize> {
        self.slots.iter().map(|s| s.open.0.load(Ordering::Relaxed)).collect()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// A connection's place on a worker; the worker's count goes down when it is dropped.
pub struct Assigned {
    workers: &'static Workers,
    id: usize,
}

impl Assigned {
    pub fn id(&self) -> usize {
        self.id
    }

    /// The worker's runtime, to spawn the connection on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.workers.slots[self.id].handle
    }
}

impl Drop for Assigned {
    fn drop(&mut self) {
        self.workers.slots[self.id].open.0.fetch_sub(1, Ordering::Relaxed);
    }
}
