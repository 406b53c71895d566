//! `ficus apply routes/` and `ficus export`: the strangler plan kept in files, moved to and from etcd.
//!
//! `apply` validates the directory exactly as `ficus check` does, reads the prefix with every key's mod
//! revision, prints what differs, and writes all of it in one transaction whose guards are those mod revisions
//! (and "still absent" for new keys): either the whole plan lands, or nothing does and the operator is told who
//! got in between. Values are compared as JSON, so reformatting a file is not a change.

use super::OpsError;
use crate::check::check_dir;
use crate::model::Key;
use crate::source::etcd::{connect, prefix_end, rpc, EtcdSettings};
use crate::source::file;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Print the diff, write nothing.
    pub dry_run: bool,
    /// Also delete keys under the prefix that no file defines (leased keys are left alone: they belong to
    /// servers that registered themselves).
    pub prune: bool,
    /// Write without the mod-revision guards.
    pub force: bool,
}

/// What differs between the files and etcd, by relative key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    /// Keys only etcd has; deleted with `--prune`.
    pub removed: Vec<String>,
    /// Keys only etcd has that hold a lease: never pruned.
    pub leased: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self, prune: bool) -> bool {
        self.added.is_empty() && self.changed.is_empty() && (!prune || self.removed.is_empty())
    }
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub diff: Diff,
    /// The etcd revision of the write, when one happened.
    pub written_at: Option<i64>,
    pub warnings: Vec<String>,
}

struct Entry {
    value: Vec<u8>,
    mod_revision: i64,
    lease: i64,
}

fn same_json(a: &[u8], b: &[u8]) -> bool {
    match (serde_json::from_slice::<serde_json::Value>(a), serde_json::from_slice::<serde_json::Value>(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

async fn list_with_revisions(
    settings: &EtcdSettings,
    client: &mut etcd_client::Client,
) -> Result<BTreeMap<String, Entry>, OpsError> {
    let prefix = settings.watch_prefix();
    let opts = GetOptions::new().with_range(prefix_end(prefix.as_bytes()));
    let resp = rpc(settings, "list", client.get(prefix, Some(opts))).await?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let rel = settings.relative_key(kv.key())?;
            Some((rel, Entry { value: kv.value().to_vec(), mod_revision: kv.mod_revision(), lease: kv.lease() }))
        })
        .collect())
}

/// The diff of a routes directory against etcd, with the mod revisions it was computed from.
pub struct Plan {
    pub diff: Diff,
    pub warnings: Vec<String>,
    files: BTreeMap<String, Vec<u8>>,
    stored: BTreeMap<String, Entry>,
}

/// Validates `dir` (refusing it if any value would be refused) and diffs it against etcd.
pub async fn plan(dir: &Path, settings: &EtcdSettings) -> Result<Plan, OpsError> {
    let check = check_dir(dir)?;
    if !check.errors.is_empty() {
        for e in &check.errors {
            eprintln!("error: {e}");
        }
        return Err(OpsError::InvalidPlan(check.errors.len()));
    }
    let files: BTreeMap<String, Vec<u8>> = file::scan(dir)?.entries.into_iter().collect();
    let mut client = connect(settings).await?;
    let stored = list_with_revisions(settings, &mut client).await?;
    let mut diff = Diff::default();
    for (key, value) in &files {
        match stored.get(key) {
            None => diff.added.push(key.clone()),
            Some(e) if !same_json(&e.value, value) => diff.changed.push(key.clone()),
            Some(_) => {}
        }
    }
    for (key, e) in &stored {
        if !files.contains_key(key) {
            if e.lease != 0 {
                diff.leased.push(key.clone());
            } else {
                diff.removed.push(key.clone());
            }
        }
    }
    Ok(Plan { diff, warnings: check.warnings, files, stored })
}

/// Writes a plan in one transaction guarded by the mod revisions it was computed from (unless `force`).
/// Returns the revision of the write, or `None` when there was nothing to write.
pub async fn write(settings: &EtcdSettings, plan: &Plan, opts: &ApplyOptions) -> Result<Option<i64>, OpsError> {
    if plan.diff.is_empty(opts.prune) {
        return Ok(None);
    }
    let mut guards = Vec::new();
    let mut ops = Vec::new();
    for key in plan.diff.added.iter().chain(&plan.diff.changed) {
        let abs = settings.absolute_key(key);
        guards.push(match plan.stored.get(key) {
            Some(e) => Compare::mod_revision(abs.clone(), CompareOp::Equal, e.mod_revision),
            None => Compare::create_revision(abs.clone(), CompareOp::Equal, 0),
        });
        ops.push(TxnOp::put(abs, plan.files[key].clone(), None));
    }
    if opts.prune {
        for key in &plan.diff.removed {
            let abs = settings.absolute_key(key);
            if let Some(e) = plan.stored.get(key) {
                guards.push(Compare::mod_revision(abs.clone(), CompareOp::Equal, e.mod_revision));
            }
            ops.push(TxnOp::delete(abs, None));
        }
    }
    let mut txn = Txn::new();
    if !opts.force {
        txn = txn.when(guards);
    }
    let mut client = connect(settings).await?;
    let resp = rpc(settings, "apply transaction", client.txn(txn.and_then(ops))).await?;
    if resp.succeeded() {
        return Ok(resp.header().map(|h| h.revision()));
    }
    // Name a key that moved, so the operator knows what to look at.
    let now = list_with_revisions(settings, &mut client).await?;
    let d = &plan.diff;
    let moved = d.added.iter().chain(&d.changed).chain(&d.removed).find_map(|key| {
        let before = plan.stored.get(key).map(|e| e.mod_revision).unwrap_or(0);
        let after = now.get(key).map(|e| e.mod_revision).unwrap_or(0);
        (before != after).then(|| (key.clone(), before, after))
    });
    let (key, expected, found) = moved.unwrap_or_else(|| ("(unknown)".into(), 0, 0));
    Err(OpsError::Conflict { key, expected, found, hint: " (or pass --force)" })
}

/// `plan`, then (unless dry-run) `write`.
pub async fn apply(dir: &Path, settings: &EtcdSettings, opts: &ApplyOptions) -> Result<ApplyReport, OpsError> {
    let plan = plan(dir, settings).await?;
    let written_at = if opts.dry_run { None } else { write(settings, &plan, opts).await? };
    Ok(ApplyReport { diff: plan.diff, written_at, warnings: plan.warnings })
}

/// Writes every Ficus key under the prefix as a route file in `dir` (created if needed), exactly as stored.
/// Keys that are not Ficus keys are skipped with a warning: their ids could name paths outside `dir`.
pub async fn export(settings: &EtcdSettings, dir: &Path) -> Result<(usize, Vec<String>), OpsError> {
    let mut client = connect(settings).await?;
    let stored = list_with_revisions(settings, &mut client).await?;
    let mut warnings = Vec::new();
    let mut written = 0;
    for (key, e) in stored {
        if let Err(err) = Key::parse(&key) {
            warnings.push(format!("skipped: {err}"));
            continue;
        }
        let path = file::file_of(dir, &key);
        let io = |source| OpsError::Io { path: path.clone(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, &e.value).map_err(io)?;
        written += 1;
    }
    Ok((written, warnings))
}
