//! Operator commands that write etcd: `ficus apply` (the strangler plan in files → etcd, one guarded
//! transaction), `ficus export` (etcd → files), `ficus canary` (one split, or a rollout in judged steps:
//! [`rollout`]) and `ficus drain`. They sit beside the data flow,
//! upstream of it: they only write the same plain keys `etcdctl` would, and the watching gateways pick the
//! writes up like any other. Every value is checked with the gateway's own decoder before it is written, and
//! every write is guarded by the mod revision it was computed from, so a concurrent change is never overwritten
//! silently.

mod plan;
pub mod rollout;

pub use plan::{apply, export, plan, write, ApplyOptions, ApplyReport, Diff, Plan, ETCD_MAX_TXN_OPS};

use crate::model::{decode, ConfigError, Key};
use crate::source::etcd::{connect, rpc, EtcdError, EtcdSettings};
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("{key}: not found in etcd")]
    Missing { key: String },
    #[error("{key}: stored value is not a JSON object: {why}")]
    NotJson { key: String, why: String },
    #[error("{key}: changed by someone else while we worked (mod revision {expected} → {found}); {outcome}")]
    Conflict { key: String, expected: i64, found: i64, outcome: String },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Files(#[from] crate::source::file::FileSourceError),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("the routes directory has {0} invalid value(s); nothing was written")]
    InvalidPlan(usize),
    /// A rollout that cannot go on (etcd refused a write); says what the frontend was left with.
    #[error("{0}")]
    Stopped(String),
}

/// One stored value with what the guards need.
struct Stored {
    value: Vec<u8>,
    mod_revision: i64,
    lease: i64,
}

async fn read(
    settings: &EtcdSettings,
    client: &mut etcd_client::Client,
    rel: &str,
) -> Result<Option<Stored>, OpsError> {
    let key = settings.absolute_key(rel);
    let resp = rpc(settings, "get", client.get(key, Some(GetOptions::new()))).await?;
    Ok(resp.kvs().first().map(|kv| Stored {
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }))
}

/// Writes `value` to `rel` if it still has `expected` mod revision, keeping its lease (a self-registered server
/// must keep vanishing when its owner dies).
async fn guarded_put(
    settings: &EtcdSettings,
    client: &mut etcd_client::Client,
    rel: &str,
    stored: &Stored,
    value: Vec<u8>,
) -> Result<(), OpsError> {
    let key = settings.absolute_key(rel);
    let mut put = PutOptions::new();
    if stored.lease != 0 {
        put = put.with_lease(stored.lease);
    }
    let txn = Txn::new()
        .when(vec![Compare::mod_revision(key.clone(), CompareOp::Equal, stored.mod_revision)])
        .and_then(vec![TxnOp::put(key, value, Some(put))]);
    let resp = rpc(settings, "txn", client.txn(txn)).await?;
    if resp.succeeded() {
        return Ok(());
    }
    let found = read(settings, client, rel).await?.map(|s| s.mod_revision).unwrap_or(0);
    let outcome = "nothing was written, run it again".to_string();
    Err(OpsError::Conflict { key: rel.to_string(), expected: stored.mod_revision, found, outcome })
}

fn object(rel: &str, stored: &Stored) -> Result<serde_json::Map<String, Value>, OpsError> {
    match serde_json::from_slice::<Value>(&stored.value) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(OpsError::NotJson { key: rel.to_string(), why: "not an object".into() }),
        Err(e) => Err(OpsError::NotJson { key: rel.to_string(), why: e.to_string() }),
    }
}

fn checked(rel: &str, value: &Value) -> Result<Vec<u8>, OpsError> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| OpsError::NotJson { key: rel.to_string(), why: e.to_string() })?;
    // A key typed on the command line may start with `/`.
    let key = Key::parse(rel.strip_prefix('/').unwrap_or(rel)).map_err(|e| OpsError::Usage(e.to_string()))?;
    decode(&key, &bytes)?;
    Ok(bytes)
}

/// Parses `blue=95` arguments.
pub fn parse_split(args: &[String]) -> Result<Vec<(String, u32)>, OpsError> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for a in args {
        let (id, pct) =
            a.split_once('=').ok_or_else(|| OpsError::Usage(format!("`{a}`: expected <backend>=<percent>")))?;
        let pct: u32 = pct
            .trim_end_matches('%')
            .parse()
            .map_err(|_| OpsError::Usage(format!("`{a}`: percent is not a whole number")))?;
        if out.iter().any(|(b, _)| b == id) {
            return Err(OpsError::Usage(format!("backend `{id}` given twice")));
        }
        out.push((id.to_string(), pct));
    }
    let sum: u32 = out.iter().map(|(_, p)| p).sum();
    if out.is_empty() || sum != 100 {
        return Err(OpsError::Usage(format!("percents must sum to 100, got {sum}")));
    }
    Ok(out)
}

/// `ficus canary <frontend> blue=95 green=5`: one guarded put of the frontend's `Backends`. Every backend
/// must exist. Returns the value written.
pub async fn canary(settings: &EtcdSettings, frontend: &str, split: &[(String, u32)]) -> Result<String, OpsError> {
    let mut client = connect(settings).await?;
    for (b, _) in split {
        let key = Key::Backend { backend: b.clone() }.to_string();
        if read(settings, &mut client, &key).await?.is_none() {
            return Err(OpsError::Missing { key });
        }
    }
    let rel = Key::Frontend { frontend: frontend.to_string() }.to_string();
    let stored = read(settings, &mut client, &rel).await?.ok_or_else(|| OpsError::Missing { key: rel.clone() })?;
    let mut obj = object(&rel, &stored)?;
    obj.remove("BackendId");
    let list: Vec<Value> = split.iter().map(|(id, w)| serde_json::json!({"Id": id, "Weight": w})).collect();
    obj.insert("Backends".into(), Value::Array(list));
    let value = Value::Object(obj);
    let bytes = checked(&rel, &value)?;
    guarded_put(settings, &mut client, &rel, &stored, bytes).await?;
    Ok(value.to_string())
}

/// `ficus drain <backend>/<server>`: sets `Draining` (or clears it with `undo`) on the server's key, keeping its
/// lease. Returns the value written.
pub async fn drain(settings: &EtcdSettings, target: &str, undo: bool) -> Result<String, OpsError> {
    let (backend, server) =
        target.split_once('/').ok_or_else(|| OpsError::Usage(format!("`{target}`: expected <backend>/<server>")))?;
    let rel = Key::Server { backend: backend.to_string(), server: server.to_string() }.to_string();
    let mut client = connect(settings).await?;
    let stored = read(settings, &mut client, &rel).await?.ok_or_else(|| OpsError::Missing { key: rel.clone() })?;
    let mut obj = object(&rel, &stored)?;
    if undo {
        obj.remove("Draining");
    } else {
        obj.insert("Draining".into(), Value::Bool(true));
    }
    let value = Value::Object(obj);
    let bytes = checked(&rel, &value)?;
    guarded_put(settings, &mut client, &rel, &stored, bytes).await?;
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_must_sum_to_100() {
        let s = |v: &[&str]| parse_split(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["blue=95", "green=5%"]).unwrap(), vec![("blue".into(), 95), ("green".into(), 5)]);
        assert!(s(&["blue=95", "green=6"]).unwrap_err().to_string().contains("sum to 100, got 101"));
        assert!(s(&["blue"]).is_err());
        assert!(s(&["blue=50", "blue=50"]).is_err());
    }
}
