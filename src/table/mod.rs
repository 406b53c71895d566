//! The routing table: compiled from a validated config, immutable, published with one `ArcSwap::store`.
//!
//! Everything a request needs that can be worked out ahead of time is worked out in [`compile`]: the route
//! index, the balancing sequences, header values, metric slots. Per request the proxy does one
//! `load_full()` and keeps that `Arc` until the response is done, so a swap never changes a request midway.

pub mod reload;
pub mod route;

use crate::balance::Weighted;
use crate::model::{UpstreamSettings, ValidatedBackend, ValidatedConfig, ValidatedFrontend};
use crate::telemetry::FrontendMetrics;
use crate::upstream::{Registry, RegistrySession, Server};
use arc_swap::ArcSwap;
use http::HeaderValue;
use route::{RouteSpec, Router};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// The one shared, swappable pointer readers go through.
pub type SharedTable = Arc<ArcSwap<RoutingTable>>;

pub struct RoutingTable {
    pub generation: u64,
    pub router: Router<Arc<Frontend>>,
    pub certs: Arc<CertStore>,
    /// What the table was built from, for `/config`.
    pub config: Arc<ValidatedConfig>,
    /// What each frontend and backend was compiled from, so the next generation reuses what did not change.
    reuse: Reuse,
}

#[derive(Default)]
struct Reuse {
    frontends: HashMap<Arc<str>, (Arc<ValidatedFrontend>, Arc<Frontend>)>,
    backends: HashMap<Arc<str>, (ValidatedBackend, Arc<Backend>)>,
}

fn same_backend(a: &ValidatedBackend, b: &ValidatedBackend) -> bool {
    a.id == b.id && a.settings == b.settings && a.servers == b.servers
}

pub struct Frontend {
    pub id: Arc<str>,
    pub split: Weighted<Arc<Backend>>,
    pub pass_host_header: bool,
    pub trust_forward_header: bool,
    /// `Settings.Hostname`: overrides the Host header sent upstream.
    pub hostname: Option<HeaderValue>,
    pub max_body_bytes: Option<u64>,
    pub metrics: FrontendMetrics,
}

pub struct Backend {
    pub id: Arc<str>,
    /// Servers marked draining are not in here: they take no new requests.
    pub servers: Weighted<Arc<Server>>,
    pub settings: UpstreamSettings,
}

/// SNI certificates by lower-case host name, plus the default for clients that send no (or an unknown) name.
#[derive(Default, Debug)]
pub struct CertStore {
    pub by_name: HashMap<String, Arc<CertifiedKey>>,
    pub default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn resolve(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = self.by_name.get(&name) {
                return Some(k.clone());
            }
            // One level of wildcard, as certificates allow (`*.example.com` covers `a.example.com` only).
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.by_name.get(&format!("*.{parent}")) {
                    return Some(k.clone());
                }
            }
        }
        self.default.clone()
    }
}

impl RoutingTable {
    pub fn empty() -> Self {
        RoutingTable {
            generation: 0,
            router: Router::build(Vec::new()),
            certs: Arc::default(),
            config: Arc::default(),
            reuse: Reuse::default(),
        }
    }
}

/// Builds a table. The caller publishes it and then calls `session.finish()`. Frontends and backends that are
/// the same as in `prev` are reused as they are (their validated value is the same `Arc`, their backends the
/// same objects), so a change costs what it touches plus the route index, not a recompile of every frontend.
pub fn compile(
    config: Arc<ValidatedConfig>,
    generation: u64,
    session: &mut RegistrySession<'_>,
    prev: Option<&RoutingTable>,
) -> RoutingTable {
    let mut reuse = Reuse::default();
    let mut backends: HashMap<&str, Arc<Backend>> = HashMap::with_capacity(config.backends.len());
    for (id, b) in &config.backends {
        let live = b.servers.iter().filter(|s| !s.draining);
        if let Some((old_spec, old)) = prev.and_then(|p| p.reuse.backends.get(id.as_str())) {
            if same_backend(old_spec, b) {
                // Still registered with this session, or `finish` would start draining them.
                for s in live {
                    session.server(id, s, b.settings);
                }
                session.counter(&format!("b:{id}"));
                backends.insert(id.as_str(), old.clone());
                reuse.backends.insert(old.id.clone(), (b.clone(), old.clone()));
                continue;
            }
        }
        let servers = live.map(|s| (session.server(id, s, b.settings), s.weight)).collect();
        let backend = Arc::new(Backend {
            id: id.as_str().into(),
            servers: Weighted::new(servers, session.counter(&format!("b:{id}"))),
            settings: b.settings,
        });
        reuse.backends.insert(backend.id.clone(), (b.clone(), backend.clone()));
        backends.insert(id.as_str(), backend);
    }

    let mut routes = Vec::with_capacity(config.frontends.len());
    for (id, f) in &config.frontends {
        if let Some((old_spec, old)) = prev.and_then(|p| p.reuse.frontends.get(id.as_str())) {
            let items = old.split.items();
            let same_backends = items.len() == f.backends.len()
                && items.iter().all(|b| backends.get(&*b.id).is_some_and(|nb| Arc::ptr_eq(nb, b)));
            if Arc::ptr_eq(old_spec, f) && same_backends {
                session.counter(&format!("f:{id}"));
                reuse.frontends.insert(old.id.clone(), (f.clone(), old.clone()));
                routes.push(RouteSpec {
                    id: old.id.clone(),
                    priority: f.priority,
                    expr: f.expr.clone(),
                    value: old.clone(),
                });
                continue;
            }
        }
        // Validation guarantees every named backend exists; filter anyway rather than trust it blindly.
        let split: Vec<(Arc<Backend>, u32)> =
            f.backends.iter().filter_map(|(b, w)| backends.get(b.as_str()).map(|b| (b.clone(), *w))).collect();
        let server_counts: Vec<usize> = split.iter().map(|(b, _)| b.servers.items().len()).collect();
        let hostname =
            (!f.settings.hostname.is_empty()).then(|| HeaderValue::from_str(&f.settings.hostname).ok()).flatten();
        let frontend = Arc::new(Frontend {
            id: id.as_str().into(),
            metrics: FrontendMetrics::new(id, &server_counts),
            split: Weighted::new(split, session.counter(&format!("f:{id}"))),
            pass_host_header: f.settings.pass_host_header,
            trust_forward_header: f.settings.trust_forward_header,
            hostname,
            max_body_bytes: (f.settings.limits.max_body_bytes > 0).then_some(f.settings.limits.max_body_bytes),
        });
        reuse.frontends.insert(frontend.id.clone(), (f.clone(), frontend.clone()));
        routes.push(RouteSpec { id: frontend.id.clone(), priority: f.priority, expr: f.expr.clone(), value: frontend });
    }

    let mut certs = CertStore::default();
    for (name, h) in &config.hosts {
        certs.by_name.insert(name.clone(), h.certified_key.clone());
        if h.default {
            certs.default = Some(h.certified_key.clone());
        }
    }
    if certs.default.is_none() && certs.by_name.len() == 1 {
        // With a single certificate, serving it to clients without SNI is what everyone expects.
        certs.default = certs.by_name.values().next().cloned();
    }

    RoutingTable { generation, router: Router::build(routes), certs: Arc::new(certs), config, reuse }
}

/// Compiles, publishes and retires unused servers in one step.
pub fn publish(shared: &SharedTable, registry: &Registry, config: Arc<ValidatedConfig>, generation: u64) {
    let mut session = registry.session();
    let prev = shared.load_full();
    let table = compile(config, generation, &mut session, Some(&prev));
    drop(prev);
    shared.store(Arc::new(table));
    session.finish();
}
