//! The incremental cross-key engine: turns the decoded state into the [`ValidatedConfig`] that `table/`
//! compiles. It revisits only the entities whose keys changed (and the frontends naming a backend that came or
//! went), and keeps each entity's problems filed under it. Its state is private to this file: `ConfigState`
//! tells it which keys changed and asks it for a pass, nothing more.
//!
//! Cross-key rules: a frontend's backends must exist (a newer value naming a missing backend leaves the last
//! good value serving; a new frontend stays out), servers and middlewares need their parent. Features that are
//! decoded but not implemented yet are reported as `unsupported`, never silently ignored.

use super::check::{frontend, host, listener, server, upstream_settings};
use super::{
    ConfigError, Delta, FrontendSpec, Key, MiddlewareConfig, Spec, ValidatedBackend, ValidatedConfig,
    ValidatedFrontend, ValidatedMiddleware, Validation,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// What the engine reads: the decoded values by key, and each frontend already checked with its route parsed
/// (done once per value when it arrived, not per pass).
pub(super) struct Inputs<'a> {
    pub specs: &'a BTreeMap<Key, Spec>,
    pub parsed_frontends: &'a HashMap<String, Arc<ValidatedFrontend>>,
}

/// The engine's state between passes.
#[derive(Debug, Default)]
pub(super) struct Engine {
    /// Frontends as they last passed the cross-key checks, served while a newer value names a missing backend.
    good_frontends: BTreeMap<String, FrontendSpec>,
    /// What the next pass must revisit.
    dirty: Dirty,
    /// The outcome of the passes so far, updated entity by entity.
    validated: ValidatedConfig,
    problems: BTreeMap<Entity, Problems>,
    /// Backend id to the frontends whose values name it; and the reverse.
    backend_users: HashMap<String, HashSet<String>>,
    frontend_uses: HashMap<String, Vec<String>>,
}

/// The entity a problem is filed under, so revalidating one entity replaces exactly its own problems.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Entity {
    Backend(String),
    Frontend(String),
    Host(String),
    Listener(String),
}

#[derive(Debug, Default)]
struct Problems {
    errors: Vec<ConfigError>,
    unsupported: Vec<ConfigError>,
}

/// Entities touched since the last cross-key pass.
#[derive(Debug, Default)]
struct Dirty {
    backends: BTreeSet<String>,
    frontends: BTreeSet<String>,
    hosts: BTreeSet<String>,
    listeners: BTreeSet<String>,
}

impl Dirty {
    fn mark(&mut self, key: &Key) {
        match key {
            Key::Backend { backend } | Key::Server { backend, .. } => self.backends.insert(backend.clone()),
            Key::Frontend { frontend } | Key::Middleware { frontend, .. } => self.frontends.insert(frontend.clone()),
            Key::Host { host } => self.hosts.insert(host.clone()),
            Key::Listener { listener } => self.listeners.insert(listener.clone()),
        };
    }
}

impl Engine {
    /// A key's value was put or deleted: its entity is revisited by the next pass.
    pub(super) fn changed(&mut self, key: &Key) {
        self.dirty.mark(key);
    }

    /// A frontend's key was deleted: its last good value goes with it.
    pub(super) fn frontend_deleted(&mut self, id: &str) {
        self.good_frontends.remove(id);
    }

    /// Makes the next pass revisit everything, as a pass over a fresh state would: the reference the
    /// incremental pass is checked against.
    #[cfg(test)]
    pub(super) fn mark_all_dirty(&mut self, specs: &BTreeMap<Key, Spec>) {
        for key in specs.keys() {
            self.dirty.mark(key);
        }
        self.dirty.backends.extend(self.validated.backends.keys().cloned());
        self.dirty.frontends.extend(self.validated.frontends.keys().cloned());
        self.dirty.frontends.extend(self.good_frontends.keys().cloned());
    }

    /// One pass over what changed since the last one. Records which frontends passed, so a later bad value
    /// can fall back to them.
    pub(super) fn validate(&mut self, inputs: &Inputs<'_>) -> Validation {
        let mut delta = Delta::default();
        let dirty = std::mem::take(&mut self.dirty);
        let mut frontends = dirty.frontends;
        for id in dirty.backends {
            let existed = self.validated.backends.contains_key(&id);
            self.validate_backend(inputs, &id);
            if existed != self.validated.backends.contains_key(&id) {
                if let Some(users) = self.backend_users.get(&id) {
                    frontends.extend(users.iter().cloned());
                }
            }
            delta.backends.push(id);
        }
        for id in frontends {
            self.validate_frontend(inputs, &id);
            delta.frontends.push(id);
        }
        for id in dirty.hosts {
            self.validate_host(inputs, &id);
            delta.hosts = true;
        }
        for id in dirty.listeners {
            self.validate_listener(inputs, &id);
            delta.listeners = true;
        }
        let mut v = Validation { config: self.validated.clone(), delta, ..Validation::default() };
        for p in self.problems.values() {
            v.errors.extend(p.errors.iter().cloned());
            v.unsupported.extend(p.unsupported.iter().cloned());
        }
        v
    }

    fn file(&mut self, entity: Entity, p: Problems) {
        if p.errors.is_empty() && p.unsupported.is_empty() {
            self.problems.remove(&entity);
        } else {
            self.problems.insert(entity, p);
        }
    }

    fn validate_backend(&mut self, inputs: &Inputs<'_>, id: &str) {
        let mut p = Problems::default();
        let key = Key::Backend { backend: id.to_string() };
        let servers_from = Key::Server { backend: id.to_string(), server: String::new() };
        let servers = inputs
            .specs
            .range(servers_from..)
            .take_while(|(k, _)| matches!(k, Key::Server { backend, .. } if backend == id));
        match inputs.specs.get(&key) {
            Some(Spec::Backend(b)) => {
                let mut list = Vec::new();
                for (k, spec) in servers {
                    // check_one passed for everything held in specs, so these only fail on a bug; report instead
                    // of panicking all the same.
                    let result = match (k, spec) {
                        (Key::Server { server: sid, .. }, Spec::Server(s)) => server(k, sid, s),
                        _ => Err(ConfigError::new(k, None, "internal: key and value kinds differ")),
                    };
                    match result {
                        Ok(vs) => list.push(vs),
                        Err(e) => p.errors.push(e),
                    }
                }
                let settings = upstream_settings(b);
                let any_https = list.iter().any(|s| s.scheme == http::uri::Scheme::HTTPS);
                let tls = match super::upstream_tls::build(&key, b.settings.tls.as_deref(), settings.http2, any_https) {
                    Ok(tls) => tls,
                    Err(e) => {
                        // No way to reach its https servers: they are left out, the rest serve.
                        p.errors.push(e);
                        list.retain(|s| s.scheme != http::uri::Scheme::HTTPS);
                        None
                    }
                };
                // Checked when the value arrived (check_one); a failure here would be a bug, and the backend
                // then serves without health settings rather than not at all.
                let health = super::health::health(&key, b.settings.health_check.as_ref(), b.settings.outlier.as_ref())
                    .unwrap_or_else(|e| {
                        p.errors.push(e);
                        super::BackendHealth::default()
                    });
                self.validated.backends.insert(
                    id.to_string(),
                    ValidatedBackend { id: id.to_string(), settings, tls, health, servers: list, role: b.role },
                );
            }
            _ => {
                for (k, _) in servers {
                    p.errors.push(ConfigError::new(
                        k,
                        None,
                        format!("backend `{id}` is not defined (backends/{id}/backend)"),
                    ));
                }
                self.validated.backends.remove(id);
            }
        }
        self.file(Entity::Backend(id.to_string()), p);
    }

    fn validate_frontend(&mut self, inputs: &Inputs<'_>, id: &str) {
        let mut p = Problems::default();
        let key = Key::Frontend { frontend: id.to_string() };
        let middlewares_from = Key::Middleware { frontend: id.to_string(), middleware: String::new() };
        let mut middlewares: Vec<ValidatedMiddleware> = Vec::new();
        for (k, spec) in inputs.specs.range(middlewares_from..) {
            let (Key::Middleware { frontend, middleware }, Spec::Middleware(m)) = (k, spec) else { break };
            if frontend != id {
                break;
            }
            // Held values passed this check when they arrived, so it fails only on a bug; report it all the same.
            match super::middleware::check(k, middleware, m) {
                Ok(vm) => middlewares.push(vm),
                Err(e) => p.errors.push(e),
            }
        }
        // The chain's order: smaller Priority first, ties by middleware id.
        middlewares.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
        let mut uses: Vec<String> = Vec::new();
        let chosen = match inputs.specs.get(&key) {
            Some(Spec::Frontend(spec)) => {
                // Parsed once when the value arrived (`ConfigState::apply`), not per pass.
                let current = match inputs.parsed_frontends.get(id) {
                    Some(f) => Ok(f.clone()),
                    None => frontend(&key, id, spec).map(Arc::new),
                };
                let backends = &self.validated.backends;
                // The backend named and the field naming it: the split's, then the shadow's.
                let missing = |f: &ValidatedFrontend| -> Option<(String, String)> {
                    // A split (`Backends`) is named by its entry, as the value was written.
                    let listed = spec.backends.is_some();
                    let split = f.backends.iter().enumerate().map(|(i, (b, _))| {
                        (if listed { format!("Backends[{i}].Id") } else { "BackendId".to_string() }, b)
                    });
                    let shadow = f.shadow.iter().map(|s| ("Shadow.BackendId".to_string(), &s.backend));
                    split.chain(shadow).find(|(_, b)| !backends.contains_key(*b)).map(|(field, b)| (field, b.clone()))
                };
                let named = |f: &ValidatedFrontend| -> Vec<String> {
                    f.backends
                        .iter()
                        .map(|(b, _)| b.clone())
                        .chain(f.shadow.iter().map(|s| s.backend.clone()))
                        .collect()
                };
                match current {
                    Ok(f) => {
                        uses.extend(named(&f));
                        match missing(&f) {
                            None => {
                                if self.good_frontends.get(id) != Some(spec) {
                                    self.good_frontends.insert(id.to_string(), spec.clone());
                                }
                                Some(f)
                            }
                            Some((field, b)) => {
                                let good = self.good_frontends.get(id).and_then(|g| frontend(&key, id, g).ok());
                                if let Some(g) = &good {
                                    uses.extend(named(g));
                                }
                                let fallback = good.filter(|vf| missing(vf).is_none()).map(Arc::new);
                                let what = if fallback.is_some() {
                                    "; the previous value keeps serving"
                                } else {
                                    "; the frontend is left out"
                                };
                                p.errors.push(ConfigError::new(
                                    &key,
                                    Some(&field),
                                    format!("backend `{b}` is not defined{what}"),
                                ));
                                fallback
                            }
                        }
                    }
                    Err(e) => {
                        p.errors.push(e);
                        None
                    }
                }
            }
            _ => {
                for m in &middlewares {
                    let mkey = Key::Middleware { frontend: id.to_string(), middleware: m.id.clone() };
                    p.errors.push(ConfigError::new(
                        mkey,
                        None,
                        format!("frontend `{id}` is not defined (frontends/{id}/frontend)"),
                    ));
                }
                None
            }
        };
        match chosen {
            Some(mut f) => {
                for m in &middlewares {
                    let mkey = Key::Middleware { frontend: id.to_string(), middleware: m.id.clone() };
                    if let MiddlewareConfig::Unsupported = &m.config {
                        p.unsupported.push(ConfigError::new(
                            mkey,
                            Some("Type"),
                            format!(
                                "middleware type `{}` is not supported yet; the frontend serves without it",
                                m.kind
                            ),
                        ));
                    }
                }
                if !middlewares.is_empty() {
                    Arc::make_mut(&mut f).middlewares = middlewares;
                }
                self.validated.frontends.insert(id.to_string(), f);
            }
            None => {
                // Gone, or never passed: no last good value to fall back to.
                self.good_frontends.remove(id);
                self.validated.frontends.remove(id);
            }
        }
        self.track_uses(id, uses);
        self.file(Entity::Frontend(id.to_string()), p);
    }

    /// Remembers which backends a frontend's values name, so a backend that comes or goes revalidates them.
    fn track_uses(&mut self, id: &str, uses: Vec<String>) {
        if let Some(old) = self.frontend_uses.remove(id) {
            for b in old {
                if let Some(users) = self.backend_users.get_mut(&b) {
                    users.remove(id);
                    if users.is_empty() {
                        self.backend_users.remove(&b);
                    }
                }
            }
        }
        if !uses.is_empty() {
            for b in &uses {
                self.backend_users.entry(b.clone()).or_default().insert(id.to_string());
            }
            self.frontend_uses.insert(id.to_string(), uses);
        }
    }

    fn validate_host(&mut self, inputs: &Inputs<'_>, id: &str) {
        let key = Key::Host { host: id.to_string() };
        let mut p = Problems::default();
        self.validated.hosts.remove(&id.to_ascii_lowercase());
        match inputs.specs.get(&key) {
            Some(Spec::Host(h)) => match host(&key, id, h) {
                Ok(vh) => {
                    self.validated.hosts.insert(vh.name.clone(), vh);
                }
                Err(e) => p.errors.push(e),
            },
            Some(_) => p.errors.push(ConfigError::new(&key, None, "internal: key and value kinds differ")),
            None => {}
        }
        self.file(Entity::Host(id.to_string()), p);
    }

    fn validate_listener(&mut self, inputs: &Inputs<'_>, id: &str) {
        let key = Key::Listener { listener: id.to_string() };
        let mut p = Problems::default();
        self.validated.listeners.remove(id);
        match inputs.specs.get(&key) {
            Some(Spec::Listener(l)) => match listener(&key, id, l) {
                Ok(vl) => {
                    self.validated.listeners.insert(vl.id.clone(), vl);
                }
                Err(e) => p.errors.push(e),
            },
            Some(_) => p.errors.push(ConfigError::new(&key, None, "internal: key and value kinds differ")),
            None => {}
        }
        self.file(Entity::Listener(id.to_string()), p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, ConfigState};

    fn put(s: &mut ConfigState, key: &str, value: &str) {
        s.apply(Change::Put { key: key.into(), value: value.as_bytes().to_vec() }).unwrap();
    }

    fn base() -> ConfigState {
        let mut s = ConfigState::new();
        put(&mut s, "backends/b1/backend", r#"{"Type":"http"}"#);
        put(&mut s, "backends/b10/backend", r#"{"Type":"http"}"#);
        put(&mut s, "backends/b1/servers/s1", r#"{"URL":"http://127.0.0.1:9001"}"#);
        put(&mut s, "backends/b10/servers/s1", r#"{"URL":"http://127.0.0.1:9010"}"#);
        put(&mut s, "frontends/f1/frontend", r#"{"Type":"http","BackendId":"b1","Route":"Path(`/`)"}"#);
        s
    }

    #[test]
    fn servers_belong_to_their_exact_backend() {
        let mut s = base();
        let v = s.validate();
        assert!(v.errors.is_empty(), "{:?}", v.errors);
        assert_eq!(v.config.backends["b1"].servers.len(), 1);
        assert_eq!(v.config.backends["b1"].servers[0].url, "http://127.0.0.1:9001");
        assert_eq!(v.config.backends["b10"].servers[0].url, "http://127.0.0.1:9010");
    }

    #[test]
    fn missing_backend_keeps_last_good_frontend() {
        let mut s = base();
        s.validate();
        put(&mut s, "frontends/f1/frontend", r#"{"Type":"http","BackendId":"nope","Route":"Path(`/x`)"}"#);
        let v = s.validate();
        assert_eq!(v.config.frontends["f1"].route, "Path(`/`)");
        assert_eq!(v.errors.len(), 1);
        assert!(v.errors[0].to_string().contains("backend `nope` is not defined; the previous value keeps serving"));
        // A new frontend naming a missing backend stays out.
        put(&mut s, "frontends/f2/frontend", r#"{"Type":"http","BackendId":"nope","Route":"Path(`/y`)"}"#);
        let v = s.validate();
        assert!(!v.config.frontends.contains_key("f2"));
    }

    #[test]
    fn a_split_names_the_entry_whose_backend_is_missing() {
        let mut s = base();
        s.validate();
        put(
            &mut s,
            "frontends/f1/frontend",
            r#"{"Type":"http","Backends":[{"Id":"b1","Weight":1},{"Id":"nope","Weight":1}],"Route":"Path(`/x`)"}"#,
        );
        let v = s.validate();
        assert_eq!(v.errors[0].field.as_deref(), Some("Backends[1].Id"), "{}", v.errors[0]);
    }

    #[test]
    fn orphans_are_reported_and_an_enforced_breaker_is_not_unsupported() {
        let mut s = base();
        put(&mut s, "backends/ghost/servers/s1", r#"{"URL":"http://127.0.0.1:1"}"#);
        put(
            &mut s,
            "frontends/f1/middlewares/rl",
            r#"{"Type":"cbreaker","Middleware":{"Condition":"NetworkErrorRatio() > 0.5","OnTripped":{"URL":"https://h.example/x"}}}"#,
        );
        let v = s.validate();
        assert!(v.errors.iter().any(|e| e.key == "backends/ghost/servers/s1"));
        assert!(!v.unsupported.iter().any(|e| e.key == "frontends/f1/middlewares/rl"), "a breaker is enforced");
    }

    /// The incremental pass must agree with a pass that revisits everything, after every change of a long
    /// random sequence: backends and servers coming and going, frontends naming missing backends (and falling
    /// back to their last good value), middlewares without their frontend.
    #[test]
    fn incremental_pass_agrees_with_a_full_pass() {
        let mut rng = crate::test_rng::Rng(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next();
        let (mut inc, mut full) = (ConfigState::new(), ConfigState::new());
        let summary = |v: &Validation| {
            let backends: Vec<String> = v.config.backends.values().map(|b| format!("{b:?}")).collect();
            let frontends: Vec<String> = v
                .config
                .frontends
                .values()
                .map(|f| format!("{} {} {:?} {:?}", f.id, f.route, f.backends, f.middlewares))
                .collect();
            let mut errors: Vec<String> = v.errors.iter().map(|e| e.to_string()).collect();
            let mut unsupported: Vec<String> = v.unsupported.iter().map(|e| e.to_string()).collect();
            errors.sort();
            unsupported.sort();
            (backends, frontends, errors, unsupported)
        };
        for step in 0..3000 {
            let b = format!("b{}", next() % 4);
            let f = format!("f{}", next() % 6);
            let change = match next() % 9 {
                0 => Change::Delete { key: format!("backends/{b}/backend") },
                1 => Change::Put { key: format!("backends/{b}/backend"), value: br#"{"Type":"http"}"#.to_vec() },
                2 => Change::Put {
                    key: format!("backends/{b}/servers/s{}", next() % 2),
                    value: format!(r#"{{"URL":"http://127.0.0.1:{}"}}"#, 9000 + next() % 3).into_bytes(),
                },
                3 => Change::Delete { key: format!("backends/{b}/servers/s{}", next() % 2) },
                4 => Change::Delete { key: format!("frontends/{f}/frontend") },
                5 => Change::Put {
                    key: format!("frontends/{f}/middlewares/m"),
                    value: br#"{"Type":"ratelimit","Middleware":{"Requests":1,"PeriodSeconds":1,"Burst":3,"Variable":"client.ip"}}"#.to_vec(),
                },
                6 => Change::Delete { key: format!("frontends/{f}/middlewares/m") },
                _ => Change::Put {
                    key: format!("frontends/{f}/frontend"),
                    value: format!(r#"{{"Type":"http","BackendId":"{b}","Route":"Path(`/{}`)"}}"#, next() % 3)
                        .into_bytes(),
                },
            };
            let _ = inc.apply(change.clone());
            let _ = full.apply(change);
            if next() % 3 == 0 {
                continue; // several changes per pass too
            }
            full.mark_all_dirty();
            let (a, b) = (inc.validate(), full.validate());
            assert_eq!(summary(&a), summary(&b), "step {step}");
        }
    }
}
