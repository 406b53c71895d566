//! Config sources: where `(key, value)` pairs come from. Every source speaks the same small protocol: a full
//! listing first, then changes, each batch applied as one table swap.
//!
//! The routes directory ([`file`]) is the embedded default; [`etcd`] is the production source and follows the
//! same contract (both pass the one contract suite in `tests/e2e/source_contract.rs`).

pub mod etcd;
pub mod file;

use crate::model::Change;
use serde::Serialize;
use std::collections::HashMap;

/// Where a source keeps each key, when that is somewhere an operator edits other than the key itself (the
/// routes directory: `routes/backends/b1/backend.json`), so an error about a key can name the file too.
/// Keys a source does not list here are located by the key alone (etcd lists none).
pub type Locations = HashMap<String, String>;

/// What a source sends to the reload loop.
#[derive(Debug)]
pub enum SourceEvent {
    /// Everything under the prefix at `revision`: keys not listed are gone (and so are their locations).
    Snapshot { revision: u64, entries: Vec<(String, Vec<u8>)>, locations: Locations },
    /// Changes of one revision (one etcd transaction, one directory rescan), applied together, with the
    /// locations of the keys they put (a deleted key's location goes with it).
    Changes { revision: u64, changes: Vec<Change>, locations: Locations },
    /// The source follows changes (again) and has seen everything up to `revision`: after a reconnect that
    /// resumed without a new listing, or a progress notification. Nothing to rebuild.
    Watching { revision: u64 },
    /// A problem reading the source itself (not a bad value): shown in `/status`, the last table keeps serving.
    Problem { message: String },
}

/// The source's state as `/status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    pub kind: &'static str,
    pub location: String,
    /// `starting`, `watching` or `error` (retrying, the last table serving).
    pub state: &'static str,
    /// The etcd revision (or the routes directory's rescan count) that the routing table in force reflects:
    /// a change received but not yet built into a table does not count, so a tool that waits for a revision
    /// here knows the change is being served.
    pub revision: u64,
    /// The most recent source problem, kept after recovery so a flapping etcd is visible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_at_unix: Option<u64>,
    /// How many source problems were seen since start.
    pub errors_total: u64,
    /// Problems since the source last delivered a full listing (the newest last, at most [`MAX_PROBLEMS`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Bounds `problems`, so an etcd that stays down for a week does not grow `/status` without end.
pub const MAX_PROBLEMS: usize = 20;
