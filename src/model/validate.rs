//! Validation: per-key checks at decode time (`check_one`) and the cross-key pass (`ConfigState::validate`)
//! that produces the [`ValidatedConfig`] the routing table is compiled from. The cross-key pass is
//! incremental: it revisits only the entities whose keys changed (and the frontends naming a backend that came
//! or went), and keeps each entity's problems filed under it.
//!
//! Cross-key rules: a frontend's backends must exist (a newer value naming a missing backend leaves the last
//! good value serving; a new frontend stays out), servers and middlewares need their parent. Features that are
//! decoded but not implemented yet are reported as `unsupported`, never silently ignored.

use super::{
    BackendSpec, ConfigError, ConfigState, FrontendSettings, FrontendSpec, HostSpec, Key, ListenerSpec, MiddlewareSpec,
    ServerSpec, Spec,
};
use crate::route::{self, RouteExpr};
use http::uri::{Authority, Scheme};
use imbl::OrdMap;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Weights are relative; this bound keeps the precomputed balancing sequences small.
pub const MAX_WEIGHT: u32 = 10_000;

const MIDDLEWARE_TYPES: &[&str] = &["ratelimit", "connlimit", "rewrite", "cbreaker", "trace"];

/// The config as the table is compiled from it. The maps are persistent (copies share structure), so every
/// generation can keep its own copy for `/config` without copying 10,000 frontends per change.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ValidatedConfig {
    pub backends: OrdMap<String, ValidatedBackend>,
    /// Shared with the model's per-key cache: an unchanged frontend is the same `Arc` in every generation, which
    /// is how the table compiler knows it can keep what it compiled before.
    pub frontends: OrdMap<String, Arc<ValidatedFrontend>>,
    pub hosts: OrdMap<String, ValidatedHost>,
    pub listeners: OrdMap<String, ValidatedListener>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidatedBackend {
    pub id: String,
    pub settings: UpstreamSettings,
    pub servers: Vec<ValidatedServer>,
}

/// Backend settings with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct UpstreamSettings {
    #[serde(serialize_with = "ser_duration")]
    pub dial_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub read_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub tls_handshake_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub keep_alive_period: Duration,
    pub max_idle_per_host: u32,
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        // Vulcand's defaults, except Read: a proxy that never times out a hung upstream holds its slot forever.
        UpstreamSettings {
            dial_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            keep_alive_period: Duration::from_secs(30),
            max_idle_per_host: 256,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::format_duration(*d))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatedServer {
    pub id: String,
    pub url: String,
    #[serde(skip)]
    pub scheme: Scheme,
    #[serde(skip)]
    pub authority: Authority,
    pub weight: u32,
    pub draining: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidatedFrontend {
    pub id: String,
    pub route: String,
    #[serde(skip)]
    pub expr: RouteExpr,
    pub priority: i32,
    /// `(backend id, weight)`; one entry with weight 1 for a plain `BackendId`.
    pub backends: Vec<(String, u32)>,
    pub settings: FrontendSettings,
    pub middlewares: Vec<ValidatedMiddleware>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidatedMiddleware {
    pub id: String,
    pub kind: String,
    pub priority: i32,
}

#[derive(Clone, Serialize)]
pub struct ValidatedHost {
    pub name: String,
    pub default: bool,
    #[serde(skip)]
    pub certified_key: Arc<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for ValidatedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatedHost").field("name", &self.name).field("default", &self.default).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatedListener {
    pub id: String,
    pub protocol: Protocol,
    pub address: SocketAddr,
}

/// The outcome of the cross-key pass.
#[derive(Debug, Default)]
pub struct Validation {
    pub config: ValidatedConfig,
    /// What changed since the previous pass.
    pub delta: Delta,
    /// Values left out (or replaced by their last good value).
    pub errors: Vec<ConfigError>,
    /// Values in force but with a part that Ficus does not act on yet.
    pub unsupported: Vec<ConfigError>,
}

/// Per-key checks that need no other key; run at decode time so a bad value never replaces a good one.
pub(super) fn check_one(key: &Key, spec: &Spec) -> Result<(), ConfigError> {
    let key_id = match key {
        Key::Backend { backend } => backend,
        Key::Server { server, .. } => server,
        Key::Frontend { frontend } => frontend,
        Key::Middleware { middleware, .. } => middleware,
        Key::Host { host } => host,
        Key::Listener { listener } => listener,
    };
    let declared_id = match spec {
        Spec::Backend(BackendSpec { id, .. })
        | Spec::Server(ServerSpec { id, .. })
        | Spec::Frontend(FrontendSpec { id, .. })
        | Spec::Middleware(MiddlewareSpec { id, .. })
        | Spec::Listener(ListenerSpec { id, .. }) => id.as_deref(),
        Spec::Host(HostSpec { name, .. }) => name.as_deref(),
    };
    if let Some(declared) = declared_id {
        if declared != key_id {
            let field = if matches!(spec, Spec::Host(_)) { "Name" } else { "Id" };
            return Err(ConfigError::new(
                key,
                Some(field),
                format!("`{declared}` differs from the key's id `{key_id}`"),
            ));
        }
    }
    match spec {
        Spec::Backend(b) => check_type(key, &b.kind),
        Spec::Server(s) => server(key, key_id, s).map(|_| ()),
        Spec::Frontend(f) => frontend(key, key_id, f).map(|_| ()),
        Spec::Middleware(m) => {
            if MIDDLEWARE_TYPES.contains(&m.kind.as_str()) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    key,
                    Some("Type"),
                    format!("unknown middleware type `{}` (known: {})", m.kind, MIDDLEWARE_TYPES.join(", ")),
                ))
            }
        }
        Spec::Host(h) => host(key, key_id, h).map(|_| ()),
        Spec::Listener(l) => listener(key, key_id, l).map(|_| ()),
    }
}

fn check_type(key: &Key, kind: &str) -> Result<(), ConfigError> {
    if kind == "http" {
        Ok(())
    } else {
        Err(ConfigError::new(key, Some("Type"), format!("unsupported type `{kind}` (only `http`)")))
    }
}

fn server(key: &Key, id: &str, s: &ServerSpec) -> Result<ValidatedServer, ConfigError> {
    let bad = |msg: String| ConfigError::new(key, Some("URL"), msg);
    let uri: http::Uri = s.url.parse().map_err(|e| bad(format!("`{}` is not a URL: {e}", s.url)))?;
    let scheme = uri.scheme().cloned().ok_or_else(|| bad(format!("`{}` has no scheme (http://host:port)", s.url)))?;
    if scheme != Scheme::HTTP {
        return Err(bad(format!("scheme `{scheme}` is not supported for servers (only http)")));
    }
    let authority = uri.authority().cloned().ok_or_else(|| bad(format!("`{}` has no host", s.url)))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in server URLs are not supported".to_string()));
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if path != "/" && !path.is_empty() {
        return Err(bad(format!("path `{path}` is not supported: a server URL names scheme, host and port only")));
    }
    let weight = s.weight.unwrap_or(1);
    if weight > MAX_WEIGHT {
        return Err(ConfigError::new(key, Some("Weight"), format!("{weight} is above the maximum {MAX_WEIGHT}")));
    }
    Ok(ValidatedServer { id: id.to_string(), url: s.url.clone(), scheme, authority, weight, draining: s.draining })
}

pub(super) fn frontend(key: &Key, id: &str, f: &FrontendSpec) -> Result<ValidatedFrontend, ConfigError> {
    check_type(key, &f.kind)?;
    let expr = route::parse(&f.route).map_err(|e| ConfigError::new(key, Some("Route"), e))?;
    let backends = match (&f.backend_id, &f.backends) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(key, Some("Backends"), "set either BackendId or Backends, not both"));
        }
        (None, None) => return Err(ConfigError::new(key, Some("BackendId"), "missing: set BackendId or Backends")),
        (Some(b), None) if b.is_empty() => return Err(ConfigError::new(key, Some("BackendId"), "empty")),
        (Some(b), None) => vec![(b.clone(), 1)],
        (None, Some(list)) => {
            if list.is_empty() {
                return Err(ConfigError::new(key, Some("Backends"), "empty list"));
            }
            let mut out: Vec<(String, u32)> = Vec::with_capacity(list.len());
            for (i, wb) in list.iter().enumerate() {
                if out.iter().any(|(id, _)| *id == wb.id) {
                    return Err(ConfigError::new(
                        key,
                        Some(&format!("Backends[{i}].Id")),
                        format!("`{}` listed twice", wb.id),
                    ));
                }
                if wb.weight > MAX_WEIGHT {
                    let field = format!("Backends[{i}].Weight");
                    return Err(ConfigError::new(
                        key,
                        Some(&field),
                        format!("{} is above the maximum {MAX_WEIGHT}", wb.weight),
                    ));
                }
                out.push((wb.id.clone(), wb.weight));
            }
            if out.iter().all(|(_, w)| *w == 0) {
                return Err(ConfigError::new(key, Some("Backends"), "all weights are 0"));
            }
            out
        }
    };
    Ok(ValidatedFrontend {
        id: id.to_string(),
        route: f.route.clone(),
        expr,
        priority: f.priority,
        backends,
        settings: f.settings.clone(),
        middlewares: Vec::new(),
    })
}

fn host(key: &Key, id: &str, h: &HostSpec) -> Result<ValidatedHost, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let kp = h.settings.key_pair.as_ref().ok_or_else(|| ConfigError::new(key, Some("Settings.KeyPair"), "missing"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(kp.cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::new(key, Some("Settings.KeyPair.Cert"), format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(key, Some("Settings.KeyPair.Cert"), "no certificate in PEM"));
    }
    let private = PrivateKeyDer::from_pem_slice(kp.key.as_bytes())
        .map_err(|e| ConfigError::new(key, Some("Settings.KeyPair.Key"), format!("bad PEM private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| ConfigError::new(key, Some("Settings.KeyPair.Key"), format!("unusable private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        ConfigError::new(key, Some("Settings.KeyPair"), format!("certificate and key do not match: {e}"))
    })?;
    Ok(ValidatedHost { name: id.to_ascii_lowercase(), default: h.settings.default, certified_key: Arc::new(certified) })
}

fn listener(key: &Key, id: &str, l: &ListenerSpec) -> Result<ValidatedListener, ConfigError> {
    let protocol = match l.protocol.as_str() {
        "http" => Protocol::Http,
        "https" => Protocol::Https,
        other => {
            return Err(ConfigError::new(
                key,
                Some("Protocol"),
                format!("unsupported protocol `{other}` (http or https)"),
            ))
        }
    };
    if l.address.network != "tcp" {
        return Err(ConfigError::new(
            key,
            Some("Address.Network"),
            format!("unsupported network `{}` (only tcp)", l.address.network),
        ));
    }
    let address = l.address.address.parse().map_err(|e| {
        ConfigError::new(key, Some("Address.Address"), format!("`{}`: {e} (expected ip:port)", l.address.address))
    })?;
    Ok(ValidatedListener { id: id.to_string(), protocol, address })
}

/// What one validation pass changed, so the table compiler touches only that.
#[derive(Debug, Default, Clone)]
pub struct Delta {
    /// Backends whose validated value may differ (added, changed or removed).
    pub backends: Vec<String>,
    /// Frontends whose validated value may differ (added, changed, removed, or a named backend came or went).
    pub frontends: Vec<String>,
    pub hosts: bool,
    pub listeners: bool,
}

/// The entity a problem is filed under, so revalidating one entity replaces exactly its own problems.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Entity {
    Backend(String),
    Frontend(String),
    Host(String),
    Listener(String),
}

#[derive(Debug, Default)]
pub(super) struct Problems {
    errors: Vec<ConfigError>,
    unsupported: Vec<ConfigError>,
}

/// Entities touched since the last cross-key pass.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    pub(super) backends: std::collections::BTreeSet<String>,
    pub(super) frontends: std::collections::BTreeSet<String>,
    pub(super) hosts: std::collections::BTreeSet<String>,
    pub(super) listeners: std::collections::BTreeSet<String>,
}

impl Dirty {
    pub(super) fn mark(&mut self, key: &Key) {
        match key {
            Key::Backend { backend } | Key::Server { backend, .. } => self.backends.insert(backend.clone()),
            Key::Frontend { frontend } | Key::Middleware { frontend, .. } => self.frontends.insert(frontend.clone()),
            Key::Host { host } => self.hosts.insert(host.clone()),
            Key::Listener { listener } => self.listeners.insert(listener.clone()),
        };
    }
}

impl ConfigState {
    /// The cross-key pass, over what changed since the last pass only: a change costs what it touches, not a
    /// walk of every key. The result is the whole config all the same (its maps are persistent, so handing out
    /// a copy per pass is cheap), with every problem present now. Records which frontends passed, so a later
    /// bad value can fall back to them.
    pub fn validate(&mut self) -> Validation {
        let mut delta = Delta::default();
        let dirty = std::mem::take(&mut self.dirty);
        let mut frontends = dirty.frontends;
        for id in dirty.backends {
            let existed = self.validated.backends.contains_key(&id);
            self.validate_backend(&id);
            if existed != self.validated.backends.contains_key(&id) {
                if let Some(users) = self.backend_users.get(&id) {
                    frontends.extend(users.iter().cloned());
                }
            }
            delta.backends.push(id);
        }
        for id in frontends {
            self.validate_frontend(&id);
            delta.frontends.push(id);
        }
        for id in dirty.hosts {
            self.validate_host(&id);
            delta.hosts = true;
        }
        for id in dirty.listeners {
            self.validate_listener(&id);
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

    fn validate_backend(&mut self, id: &str) {
        let mut p = Problems::default();
        let key = Key::Backend { backend: id.to_string() };
        let servers_from = Key::Server { backend: id.to_string(), server: String::new() };
        let servers = self
            .specs
            .range(servers_from..)
            .take_while(|(k, _)| matches!(k, Key::Server { backend, .. } if backend == id));
        match self.specs.get(&key) {
            Some(Spec::Backend(b)) => {
                if b.settings.tls.is_some() {
                    p.unsupported.push(ConfigError::new(
                        &key,
                        Some("Settings.TLS"),
                        "upstream TLS is not supported yet; ignored",
                    ));
                }
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
                self.validated
                    .backends
                    .insert(id.to_string(), ValidatedBackend { id: id.to_string(), settings, servers: list });
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

    fn validate_frontend(&mut self, id: &str) {
        let mut p = Problems::default();
        let key = Key::Frontend { frontend: id.to_string() };
        let middlewares_from = Key::Middleware { frontend: id.to_string(), middleware: String::new() };
        let middlewares: Vec<ValidatedMiddleware> = self
            .specs
            .range(middlewares_from..)
            .map_while(|(k, spec)| match (k, spec) {
                (Key::Middleware { frontend, middleware }, Spec::Middleware(m)) if frontend == id => {
                    Some(ValidatedMiddleware { id: middleware.clone(), kind: m.kind.clone(), priority: m.priority })
                }
                _ => None,
            })
            .collect();
        let mut uses: Vec<String> = Vec::new();
        let chosen = match self.specs.get(&key) {
            Some(Spec::Frontend(spec)) => {
                // Parsed once when the value arrived (`ConfigState::apply`), not per pass.
                let current = match self.parsed_frontends.get(id) {
                    Some(f) => Ok(f.clone()),
                    None => frontend(&key, id, spec).map(Arc::new),
                };
                let backends = &self.validated.backends;
                let missing = |f: &ValidatedFrontend| -> Option<String> {
                    f.backends.iter().map(|(b, _)| b).find(|b| !backends.contains_key(*b)).cloned()
                };
                match current {
                    Ok(f) => {
                        uses.extend(f.backends.iter().map(|(b, _)| b.clone()));
                        match missing(&f) {
                            None => {
                                if self.good_frontends.get(id) != Some(spec) {
                                    self.good_frontends.insert(id.to_string(), spec.clone());
                                }
                                Some(f)
                            }
                            Some(b) => {
                                let good = self.good_frontends.get(id).and_then(|g| frontend(&key, id, g).ok());
                                if let Some(g) = &good {
                                    uses.extend(g.backends.iter().map(|(b, _)| b.clone()));
                                }
                                let fallback = good.filter(|vf| missing(vf).is_none()).map(Arc::new);
                                let what = if fallback.is_some() {
                                    "; the previous value keeps serving"
                                } else {
                                    "; the frontend is left out"
                                };
                                p.errors.push(ConfigError::new(
                                    &key,
                                    Some("BackendId"),
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
                if !f.settings.failover_predicate.is_empty() {
                    p.unsupported.push(ConfigError::new(
                        &key,
                        Some("Settings.FailoverPredicate"),
                        "retries are not supported yet; ignored",
                    ));
                }
                for m in &middlewares {
                    let mkey = Key::Middleware { frontend: id.to_string(), middleware: m.id.clone() };
                    p.unsupported.push(ConfigError::new(
                        mkey,
                        Some("Type"),
                        format!("middleware type `{}` is not supported yet; the frontend serves without it", m.kind),
                    ));
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

    fn validate_host(&mut self, id: &str) {
        let key = Key::Host { host: id.to_string() };
        let mut p = Problems::default();
        self.validated.hosts.remove(&id.to_ascii_lowercase());
        match self.specs.get(&key) {
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

    fn validate_listener(&mut self, id: &str) {
        let key = Key::Listener { listener: id.to_string() };
        let mut p = Problems::default();
        self.validated.listeners.remove(id);
        match self.specs.get(&key) {
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

fn upstream_settings(b: &BackendSpec) -> UpstreamSettings {
    let d = UpstreamSettings::default();
    let t = &b.settings.timeouts;
    let k = &b.settings.keep_alive;
    // A zero timeout in Vulcand means "use the default", not "never wait".
    let or = |v: Option<super::GoDuration>, dflt: Duration| v.map(|g| g.0).filter(|d| !d.is_zero()).unwrap_or(dflt);
    UpstreamSettings {
        dial_timeout: or(t.dial, d.dial_timeout),
        read_timeout: or(t.read, d.read_timeout),
        tls_handshake_timeout: or(t.tls_handshake, d.tls_handshake_timeout),
        keep_alive_period: or(k.period, d.keep_alive_period),
        max_idle_per_host: k.max_idle_conns_per_host.unwrap_or(d.max_idle_per_host),
        drain_timeout: or(b.settings.drain_timeout, d.drain_timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Change;

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
    fn orphans_and_unsupported_are_reported() {
        let mut s = base();
        put(&mut s, "backends/ghost/servers/s1", r#"{"URL":"http://127.0.0.1:1"}"#);
        put(&mut s, "frontends/f1/middlewares/rl", r#"{"Type":"ratelimit","Middleware":{}}"#);
        let v = s.validate();
        assert!(v.errors.iter().any(|e| e.key == "backends/ghost/servers/s1"));
        assert!(v.unsupported.iter().any(|e| e.key == "frontends/f1/middlewares/rl"));
    }

    #[test]
    fn per_key_checks() {
        let mut s = ConfigState::new();
        let bad = [
            ("backends/b/servers/s", r#"{"URL":"ftp://x:1"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://x:1/path"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://x:1","Weight":20000}"#, "Weight"),
            ("backends/b/servers/s", r#"{"Id":"t","URL":"http://x:1"}"#, "Id"),
            ("frontends/f/frontend", r#"{"Type":"http","Route":"Path(`/`)"}"#, "BackendId"),
            (
                "frontends/f/frontend",
                r#"{"Type":"http","Backends":[{"Id":"a","Weight":0}],"Route":"Path(`/`)"}"#,
                "Backends",
            ),
            ("frontends/f/frontend", r#"{"Type":"tcp","BackendId":"a","Route":"Path(`/`)"}"#, "Type"),
            ("frontends/f/middlewares/m", r#"{"Type":"magic"}"#, "Type"),
            ("listeners/l", r#"{"Protocol":"http","Address":{"Network":"tcp","Address":"nope"}}"#, "Address.Address"),
            ("hosts/h/host", r#"{"Settings":{"KeyPair":{"Cert":"x","Key":"y"}}}"#, "Settings.KeyPair.Cert"),
        ];
        for (key, value, field) in bad {
            let e = s.apply(Change::Put { key: key.into(), value: value.as_bytes().to_vec() }).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{key} {value}: {e}");
        }
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
                    value: br#"{"Type":"ratelimit","Middleware":{}}"#.to_vec(),
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
