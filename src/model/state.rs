//! The decoded configuration as it stands, key by key, with the last good value of every key kept.
//!
//! Sources feed changes in; a value that fails to decode is recorded as a [`Rejection`] and the key's previous
//! value (if any) stays in force. This is the one place that rule is implemented, so etcd and the routes
//! directory behave the same.

use super::validate::{Engine, Inputs};
use super::{decode, ConfigError, Key, Spec, ValidatedFrontend, Validation};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One change from a source, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Put { key, .. } | Change::Delete { key } => key,
        }
    }
}

/// A key whose latest value was refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    #[serde(flatten)]
    pub error: ConfigError,
    /// True when an earlier good value of the key is still serving.
    pub kept_previous: bool,
}

#[derive(Debug, Default)]
pub struct ConfigState {
    specs: BTreeMap<Key, Spec>,
    /// Raw bytes per key, so a re-list or a directory rescan skips values that did not change.
    raw: BTreeMap<String, Vec<u8>>,
    rejected: BTreeMap<String, Rejection>,
    /// Each frontend in `specs`, checked and with its route parsed, by id: done once per value, not per reload.
    parsed_frontends: HashMap<String, Arc<ValidatedFrontend>>,
    /// The cross-key pass and its state between passes.
    engine: Engine,
}

impl ConfigState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one change. Returns the error when the value was refused; the key's previous value then stays.
    /// Returns `Ok(false)` when the value equals what is already held (nothing to rebuild).
    pub fn apply(&mut self, change: Change) -> Result<bool, ConfigError> {
        match change {
            Change::Delete { key } => {
                let was_raw = self.raw.remove(&key).is_some();
                let was_rejected = self.rejected.remove(&key).is_some();
                if let Ok(parsed) = Key::parse(&key) {
                    if let Key::Frontend { frontend } = &parsed {
                        self.engine.frontend_deleted(frontend);
                        self.parsed_frontends.remove(frontend);
                    }
                    let was_spec = self.specs.remove(&parsed).is_some();
                    if was_spec {
                        self.engine.changed(&parsed);
                    }
                    return Ok(was_spec || was_raw || was_rejected);
                }
                Ok(was_raw || was_rejected)
            }
            Change::Put { key, value } => {
                if self.raw.get(&key) == Some(&value) && !self.rejected.contains_key(&key) {
                    return Ok(false);
                }
                let parsed = match Key::parse(&key) {
                    Ok(k) => k,
                    Err(e) => {
                        let err = ConfigError::new(&key, None, key_reason(&e));
                        self.rejected.insert(key, Rejection { error: err.clone(), kept_previous: false });
                        return Err(err);
                    }
                };
                match decode(&parsed, &value) {
                    Ok(spec) => {
                        if let (Key::Frontend { frontend }, Spec::Frontend(f)) = (&parsed, &spec) {
                            // decode just checked this value, so this only fails on a bug; then validate parses it.
                            match super::check::frontend(&parsed, frontend, f) {
                                Ok(vf) => self.parsed_frontends.insert(frontend.clone(), Arc::new(vf)),
                                Err(_) => self.parsed_frontends.remove(frontend),
                            };
                        }
                        self.rejected.remove(&key);
                        self.raw.insert(key, value);
                        self.engine.changed(&parsed);
                        self.specs.insert(parsed, spec);
                        Ok(true)
                    }
                    Err(err) => {
                        let kept_previous = self.specs.contains_key(&parsed);
                        self.rejected.insert(key, Rejection { error: err.clone(), kept_previous });
                        Err(err)
                    }
                }
            }
        }
    }

    /// Replaces the whole state with a full listing (first load, or a re-list after an etcd compaction).
    /// Keys missing from the listing are deleted; values that fail to decode keep their previous good value.
    /// Returns the refused values and whether anything changed.
    pub fn reset<I>(&mut self, listing: I) -> (Vec<ConfigError>, bool)
    where
        I: IntoIterator<Item = (String, Vec<u8>)>,
    {
        let listing: BTreeMap<String, Vec<u8>> = listing.into_iter().collect();
        let stale: Vec<String> = self
            .raw
            .keys()
            .chain(self.rejected.keys())
            .chain(self.specs.keys().map(|k| k.to_string()).collect::<Vec<_>>().iter())
            .filter(|k| !listing.contains_key(*k))
            .cloned()
            .collect();
        let mut errors = Vec::new();
        let mut changed = false;
        for key in stale {
            changed |= self.apply(Change::Delete { key }).unwrap_or(true);
        }
        for (key, value) in listing {
            match self.apply(Change::Put { key, value }) {
                Ok(c) => changed |= c,
                Err(e) => errors.push(e),
            }
        }
        (errors, changed)
    }

    pub fn specs(&self) -> &BTreeMap<Key, Spec> {
        &self.specs
    }

    pub fn rejected(&self) -> impl Iterator<Item = &Rejection> {
        self.rejected.values()
    }

    pub fn rejected_count(&self) -> usize {
        self.rejected.len()
    }

    /// The cross-key pass, over what changed since the last pass only: a change costs what it touches, not a
    /// walk of every key. The result is the whole config all the same (its maps are persistent, so handing out
    /// a copy per pass is cheap), with every problem present now.
    pub fn validate(&mut self) -> Validation {
        self.engine.validate(&Inputs { specs: &self.specs, parsed_frontends: &self.parsed_frontends })
    }

    /// Makes the next pass revisit everything, as a pass over a fresh state would: the reference the
    /// incremental pass is checked against.
    #[cfg(test)]
    pub(super) fn mark_all_dirty(&mut self) {
        self.engine.mark_all_dirty(&self.specs);
    }
}

fn key_reason(e: &super::KeyError) -> String {
    // The key is already named by ConfigError; keep only the reason.
    let full = e.to_string();
    match full.split_once(": ") {
        Some((_, reason)) => reason.to_string(),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Change {
        Change::Put { key: key.into(), value: value.as_bytes().to_vec() }
    }

    #[test]
    fn bad_value_keeps_previous() {
        let mut s = ConfigState::new();
        s.apply(put("backends/b1/servers/s1", r#"{"URL":"http://127.0.0.1:1"}"#)).unwrap();
        let err = s.apply(put("backends/b1/servers/s1", r#"{"URL":"#)).unwrap_err();
        assert_eq!(err.key, "backends/b1/servers/s1");
        assert_eq!(s.specs().len(), 1);
        let r: Vec<_> = s.rejected().collect();
        assert!(r[0].kept_previous);
        // A good value clears the rejection.
        s.apply(put("backends/b1/servers/s1", r#"{"URL":"http://127.0.0.1:2"}"#)).unwrap();
        assert_eq!(s.rejected_count(), 0);
    }

    #[test]
    fn new_bad_key_stays_out_and_delete_clears_it() {
        let mut s = ConfigState::new();
        assert!(s.apply(put("backends/b1/servers/s1", "nope")).is_err());
        assert!(s.specs().is_empty());
        assert!(!s.rejected().next().unwrap().kept_previous);
        s.apply(Change::Delete { key: "backends/b1/servers/s1".into() }).unwrap();
        assert_eq!(s.rejected_count(), 0);
    }

    #[test]
    fn unchanged_put_is_a_no_op_and_reset_deletes_missing_keys() {
        let mut s = ConfigState::new();
        let v = r#"{"URL":"http://127.0.0.1:1"}"#;
        assert!(s.apply(put("backends/b1/servers/s1", v)).unwrap());
        assert!(!s.apply(put("backends/b1/servers/s1", v)).unwrap());
        s.apply(put("backends/b1/servers/s2", v)).unwrap();
        let (errors, changed) = s.reset(vec![("backends/b1/servers/s2".to_string(), v.as_bytes().to_vec())]);
        assert!(errors.is_empty() && changed);
        assert_eq!(s.specs().len(), 1);
    }

    #[test]
    fn a_stray_key_beside_a_real_one_neither_refuses_nor_removes_it() {
        let mut s = ConfigState::new();
        let v = r#"{"URL":"http://127.0.0.1:1"}"#;
        s.apply(put("backends/b1/servers/s1", v)).unwrap();
        // `/vulcand/backends/b1/servers/s1/` and `/vulcand//backends/b1/servers/s1`, relative to the prefix.
        for stray in ["backends/b1/servers/s1/", "/backends/b1/servers/s1"] {
            let e = s.apply(put(stray, "garbage")).unwrap_err();
            assert_eq!(e.key, stray);
            s.apply(Change::Delete { key: stray.into() }).unwrap();
            assert_eq!(s.specs().len(), 1, "the real key's value is still in force after {stray}");
            assert_eq!(s.rejected_count(), 0);
        }
    }

    #[test]
    fn unknown_key_is_reported() {
        let mut s = ConfigState::new();
        let e = s.apply(put("backend/b1", "{}")).unwrap_err();
        assert!(e.to_string().starts_with("backend/b1: not a Ficus key"), "{e}");
    }
}
