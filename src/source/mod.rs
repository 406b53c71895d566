//! Config sources: where `(key, value)` pairs come from. Every source speaks the same small protocol: a full
//! listing first, then changes, each batch applied as one table swap.
//!
//! The routes directory ([`file`]) is the embedded default; etcd follows the same contract.

pub mod file;

use crate::model::Change;
use serde::Serialize;

/// What a source sends to the reload loop.
#[derive(Debug)]
pub enum SourceEvent {
    /// Everything under the prefix at `revision`: keys not listed are gone.
    Snapshot { revision: u64, entries: Vec<(String, Vec<u8>)> },
    /// Changes of one revision (one etcd transaction, one directory rescan), applied together.
    Changes { revision: u64, changes: Vec<Change> },
    /// A problem reading the source itself (not a bad value): shown in `/status`, the last table keeps serving.
    Problem { message: String },
}

/// The source's state as `/status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    pub kind: &'static str,
    pub location: String,
    pub state: &'static str,
    pub revision: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}
