//! The store: which snapshot the service answers from right now, and the one before it for rollback. It sits
//! between the data directory (filled by the sync job) and the request handlers.
//!
//! Both snapshots and a generation number live in one immutable [`Loaded`] value behind one `ArcSwap`, so a
//! reader sees a consistent pair and a swap is a single store. Readers never block; reload and rollback are
//! serialised by a mutex among themselves only. A snapshot stays mapped while any request still holds it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use crate::builder::parse_snapshot_file_name;
use crate::snapshot::Snapshot;

/// How many published snapshots are kept on disk after a swap (the current one and one to roll back to).
const KEEP: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("no valid snapshot in {}", .dir.display())]
    NoSnapshot { dir: PathBuf },
    #[error("no previous snapshot to roll back to")]
    NoPrevious,
}

/// What the service is serving: swapped as a whole.
#[derive(Debug)]
pub struct Loaded {
    pub current: Arc<Snapshot>,
    pub previous: Option<Arc<Snapshot>>,
    /// Counts swaps since the process started; 1 for the first snapshot.
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A newer snapshot is now current.
    Swapped { path: PathBuf, products: usize, generation: u64 },
    /// The newest valid snapshot is the one already being served.
    Unchanged { path: PathBuf, products: usize, generation: u64 },
}

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    state: ArcSwapOption<Loaded>,
    writer: Mutex<()>,
}

impl Store {
    /// A store over `dir` with nothing loaded yet.
    pub fn new(dir: &Path) -> Store {
        Store { dir: dir.to_path_buf(), state: ArcSwapOption::empty(), writer: Mutex::new(()) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot to answer from, if any. One atomic load; hold the `Arc` for the whole request.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.state.load().as_ref().map(|loaded| Arc::clone(&loaded.current))
    }

    pub fn loaded(&self) -> Option<Arc<Loaded>> {
        self.state.load_full()
    }

    /// Re-scans the directory and swaps in its newest valid snapshot. On error the old snapshot keeps serving.
    pub fn reload(&self) -> Result<ReloadOutcome, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let newest = open_newest(&self.dir)?.ok_or_else(|| StoreError::NoSnapshot { dir: self.dir.clone() })?;
        let old = self.state.load_full();
        if let Some(old) = old.as_ref().filter(|old| old.current.path() == newest.path()) {
            return Ok(ReloadOutcome::Unchanged {
                path: newest.path().to_path_buf(),
                products: old.current.len(),
                generation: old.generation,
            });
        }
        let generation = old.as_ref().map_or(0, |o| o.generation) + 1;
        let path = newest.path().to_path_buf();
        let products = newest.len();
        let loaded =
            Loaded { current: Arc::new(newest), previous: old.as_ref().map(|o| Arc::clone(&o.current)), generation };
        let current = Arc::clone(&loaded.current);
        self.state.store(Some(Arc::new(loaded)));
        tracing::info!(snapshot = %path.display(), products, generation, "snapshot swapped in");
        warm_in_background(current);
        self.prune();
        Ok(ReloadOutcome::Swapped { path, products, generation })
    }

    /// Serves the previous snapshot again. The rolled-back file is renamed to `*.rolled-back` so that neither a
    /// later reload nor a restart picks it up again; it stays on disk for inspection.
    pub fn rollback(&self) -> Result<Arc<Loaded>, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.state.load_full();
        let old = old.as_ref().ok_or(StoreError::NoPrevious)?;
        let previous = old.previous.as_ref().ok_or(StoreError::NoPrevious)?;
        let bad = old.current.path();
        let mut quarantined = bad.as_os_str().to_owned();
        quarantined.push(".rolled-back");
        // Renaming a mapped file is harmless: requests still holding it keep reading the same bytes.
        if let Err(e) = fs::rename(bad, &quarantined) {
            tracing::warn!(snapshot = %bad.display(), error = %e, "could not set the rolled-back snapshot aside");
        }
        let loaded = Arc::new(Loaded { current: Arc::clone(previous), previous: None, generation: old.generation + 1 });
        self.state.store(Some(Arc::clone(&loaded)));
        tracing::warn!(
            from = %bad.display(),
            to = %loaded.current.path().display(),
            generation = loaded.generation,
            "rolled back to the previous snapshot"
        );
        Ok(loaded)
    }

    /// Deletes published snapshots beyond the newest [`KEEP`], never one that is current or previous.
    fn prune(&self) {
        let Ok(files) = list_snapshots(&self.dir) else {
            return;
        };
        let state = self.state.load();
        let in_use = |p: &Path| {
            state.as_ref().is_some_and(|s| s.current.path() == p || s.previous.as_ref().is_some_and(|q| q.path() == p))
        };
        for file in files.into_iter().skip(KEEP) {
            if in_use(&file.path) {
                continue;
            }
            // Unlinking a file that an old request still maps is safe: the pages live until it lets go.
            let path = file.path.display();
            match fs::remove_file(&file.path) {
                Ok(()) => tracing::info!(snapshot = %path, "deleted old snapshot"),
                Err(e) => {
                    tracing::warn!(snapshot = %path, error = %e, "could not delete old snapshot")
                }
            }
        }
    }
}

/// Faults the new snapshot's index pages in on a separate thread, so the first requests after a swap do not
/// each pay for page faults. Serving never waits for it.
fn warm_in_background(snapshot: Arc<Snapshot>) {
    let spawned = std::thread::Builder::new().name("gtin-warm".into()).spawn(move || {
        let started = std::time::Instant::now();
        let pages = snapshot.warm_index();
        let took = started.elapsed();
        tracing::info!(snapshot = %snapshot.path().display(), pages, ?took, "index pages warmed");
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the warm-up thread; pages will fault in on demand");
    }
}

/// A published snapshot file; ordering by it orders by age (build time, then sequence number).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotFile {
    pub stamp: String,
    pub seq: u32,
    pub path: PathBuf,
}

/// Published snapshot files in `dir`, newest first.
pub fn list_snapshots(dir: &Path) -> Result<Vec<SnapshotFile>, StoreError> {
    let io_err = |source| StoreError::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        if let Some((stamp, seq)) = name.to_str().and_then(parse_snapshot_file_name) {
            out.push(SnapshotFile { stamp, seq, path: entry.path() });
        }
    }
    out.sort_by(|a, b| b.cmp(a));
    Ok(out)
}

/// Opens the newest snapshot in `dir` that passes the open-time checks, logging and skipping corrupt ones.
/// `Ok(None)` when there is none (a missing directory counts as empty: the sync job may not have run yet).
pub fn open_newest(dir: &Path) -> Result<Option<Snapshot>, StoreError> {
    let files = match list_snapshots(dir) {
        Ok(files) => files,
        Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for file in files {
        match Snapshot::open(&file.path) {
            Ok(snapshot) => return Ok(Some(snapshot)),
            Err(e) => {
                tracing::warn!(snapshot = %file.path.display(), error = %e, "skipping unusable snapshot")
            }
        }
    }
    Ok(None)
}
