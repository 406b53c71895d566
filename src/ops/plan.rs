//! `ficus apply routes/` and `ficus export`: the strangler plan kept in files, moved to and from etcd.
//!
//! `apply` validates the directory exactly as `ficus check` does, reads the prefix with every key's mod
//! revision, prints what differs, and writes all of it in one transaction whose guards are those mod revisions
//! (and "still absent" for new keys): either the whole plan lands, or nothing does and the operator is told who
//! got in between. Values are compared as JSON, so reformatting a file is not a change.
//!
//! etcd refuses a transaction of more than `--max-txn-ops` operations (128 unless its operator raised it). A
//! larger plan is written in several guarded transactions, dependencies first: backends, servers, hosts and
//! listeners; then frontends and middlewares; then deletions of frontends and middlewares; then the rest of the
//! deletions. Every intermediate state is then a config in which each frontend's backends exist, so the gateways
//! following etcd never see a frontend pointing at nothing. If a later transaction meets a conflict, the earlier
//! ones have landed; the error says how many, and running `apply` again finishes the plan.

use super::OpsError;
use crate::check::check_dir;
use crate::model::Key;
use crate::source::etcd::{connect, prefix_end, rpc, EtcdSettings};
use crate::source::file;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Print the diff, write nothing.
    pub dry_run: bool,
    /// Also delete keys under the prefix that no file defines (leased keys are left alone: they belong to
    /// servers that registered themselves).
    pub prune: bool,
    /// Write without the mod-revision guards.
    pub force: bool,
    /// The etcd server's `--max-txn-ops`: a plan with more operations is split into several transactions.
    pub max_txn_ops: usize,
}

/// etcd's own default for `--max-txn-ops`.
pub const ETCD_MAX_TXN_OPS: usize = 128;

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions { dry_run: false, prune: false, force: false, max_txn_ops: ETCD_MAX_TXN_OPS }
    }
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
    /// The etcd revision of the write (the last one, if the plan took several), when one happened.
    pub written_at: Option<i64>,
    /// Transactions the write took: 1, or more for a plan over etcd's per-transaction limit.
    pub transactions: usize,
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
            // A rollout's state is not part of the plan: never diffed, pruned or exported.
            let rel = settings.relative_key(kv.key()).filter(|k| !crate::model::is_own_state(k))?;
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

/// Order in which a split plan is written: what others depend on first, what depends on others deleted first.
fn phase(key: &str, delete: bool) -> u8 {
    let frontend_side = matches!(Key::parse(key), Ok(Key::Frontend { .. } | Key::Middleware { .. }));
    match (delete, frontend_side) {
        (false, false) => 0,
        (false, true) => 1,
        (true, true) => 2,
        (true, false) => 3,
    }
}

/// Writes a plan guarded by the mod revisions it was computed from (unless `force`): in one transaction, or in
/// dependency order over several when it has more operations than etcd takes in one. Returns the revision of
/// the (last) write and how many transactions it took, or `None` when there was nothing to write.
pub async fn write(
    settings: &EtcdSettings,
    plan: &Plan,
    opts: &ApplyOptions,
) -> Result<Option<(i64, usize)>, OpsError> {
    if plan.diff.is_empty(opts.prune) {
        return Ok(None);
    }
    // (phase, guard, op) per key.
    let mut steps: Vec<(u8, Option<Compare>, TxnOp)> = Vec::new();
    for key in plan.diff.added.iter().chain(&plan.diff.changed) {
        let abs = settings.absolute_key(key);
        let guard = match plan.stored.get(key) {
            Some(e) => Compare::mod_revision(abs.clone(), CompareOp::Equal, e.mod_revision),
            None => Compare::create_revision(abs.clone(), CompareOp::Equal, 0),
        };
        steps.push((phase(key, false), Some(guard), TxnOp::put(abs, plan.files[key].clone(), None)));
    }
    if opts.prune {
        for key in &plan.diff.removed {
            let abs = settings.absolute_key(key);
            let guard =
                plan.stored.get(key).map(|e| Compare::mod_revision(abs.clone(), CompareOp::Equal, e.mod_revision));
            steps.push((phase(key, true), guard, TxnOp::delete(abs, None)));
        }
    }
    let per_txn = opts.max_txn_ops.max(1);
    let batches: Vec<Vec<(u8, Option<Compare>, TxnOp)>> = if steps.len() <= per_txn {
        vec![steps]
    } else {
        steps.sort_by_key(|(phase, _, _)| *phase);
        let mut out: Vec<Vec<(u8, Option<Compare>, TxnOp)>> = Vec::new();
        for step in steps {
            match out.last_mut() {
                // A batch never mixes phases, so each transaction leaves a consistent config behind.
                Some(batch) if batch.len() < per_txn && batch[0].0 == step.0 => batch.push(step),
                _ => out.push(vec![step]),
            }
        }
        out
    };
    let total = batches.len();
    let mut client = connect(settings).await?;
    let mut revision = 0;
    for (done, batch) in batches.into_iter().enumerate() {
        let mut guards = Vec::with_capacity(batch.len());
        let mut ops = Vec::with_capacity(batch.len());
        for (_, guard, op) in batch {
            guards.extend(guard);
            ops.push(op);
        }
        let mut txn = Txn::new();
        if !opts.force {
            txn = txn.when(guards);
        }
        let resp = rpc(settings, "apply transaction", client.txn(txn.and_then(ops))).await?;
        if !resp.succeeded() {
            return Err(conflict(settings, &mut client, plan, done, total).await);
        }
        revision = resp.header().map(|h| h.revision()).unwrap_or(revision);
    }
    Ok(Some((revision, total)))
}

/// Names a key that moved since the plan was read, so the operator knows what to look at.
async fn conflict(
    settings: &EtcdSettings,
    client: &mut etcd_client::Client,
    plan: &Plan,
    done: usize,
    total: usize,
) -> OpsError {
    let now = match list_with_revisions(settings, client).await {
        Ok(now) => now,
        Err(e) => return e,
    };
    let d = &plan.diff;
    let moved = d.added.iter().chain(&d.changed).chain(&d.removed).find_map(|key| {
        let before = plan.stored.get(key).map(|e| e.mod_revision).unwrap_or(0);
        let after = now.get(key).map(|e| e.mod_revision).unwrap_or(0);
        if before == after {
            return None;
        }
        // A key an earlier transaction of this apply wrote has moved too: it is the conflict only if it no longer
        // holds what was written.
        let ours = match (plan.files.get(key), now.get(key)) {
            (Some(file), Some(n)) => same_json(&n.value, file),
            (None, None) => true,
            _ => false,
        };
        (done == 0 || !ours).then(|| (key.clone(), before, after))
    });
    let (key, expected, found) = moved.unwrap_or_else(|| ("(unknown)".into(), 0, 0));
    let outcome = if done == 0 {
        "nothing was written, run it again (or pass --force)".to_string()
    } else {
        format!("{done} of {total} transactions had landed; run apply again to finish the plan (or pass --force)")
    };
    OpsError::Conflict { key, expected, found, outcome }
}

/// `plan`, then (unless dry-run) `write`.
pub async fn apply(dir: &Path, settings: &EtcdSettings, opts: &ApplyOptions) -> Result<ApplyReport, OpsError> {
    let plan = plan(dir, settings).await?;
    let written = if opts.dry_run { None } else { write(settings, &plan, opts).await? };
    Ok(ApplyReport {
        diff: plan.diff,
        written_at: written.map(|(rev, _)| rev),
        transactions: written.map(|(_, n)| n).unwrap_or(0),
        warnings: plan.warnings,
    })
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
