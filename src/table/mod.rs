//! The routing table: compiled from a validated config, immutable, published with one `ArcSwap::store`.
//!
//! Everything a request needs that can be worked out ahead of time is worked out by the [`Compiler`]: the route
//! index, the balancing sequences, header values, metric slots. Per request the proxy does one
//! `load_full()` and keeps that `Arc` until the response is done, so a swap never changes a request midway.
//!
//! A change costs what it touches. The compiler keeps what it compiled between generations and revisits only the
//! frontends and backends a validation pass reports as changed. Routes live in two layers: a base index over
//! every frontend, rebuilt rarely, and a small overlay index of the routes added or changed since, which is
//! cheap to rebuild on every change. Base routes that were replaced or removed are masked out of the search.
//! When the overlay grows, or the config has been quiet for a moment, the base is rebuilt and the overlay
//! emptied, with no change in what any request matches.

pub mod reload;

/// What a frontend's sticky split decided for a request (the proxy reads it through the frontend).
pub use crate::balance::sticky::Choice as StickyChoice;

use crate::balance::Weighted;
use crate::model::{Delta, StickyKey, UpstreamSettings, ValidatedBackend, ValidatedConfig, ValidatedFrontend};
use crate::route::{Request, RouteSet, RouteSpec, Router};
use crate::telemetry::FrontendMetrics;
use crate::upstream::health::Policy;
use crate::upstream::{Registry, Server};
use arc_swap::ArcSwap;
use http::HeaderValue;
use rustls::sign::CertifiedKey;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// The one shared, swappable pointer readers go through.
pub type SharedTable = Arc<ArcSwap<RoutingTable>>;

pub struct RoutingTable {
    pub generation: u64,
    pub router: TableRouter,
    pub certs: Arc<CertStore>,
    /// What the table was built from, for `/config`.
    pub config: Arc<ValidatedConfig>,
    /// Every frontend's shadow state, for the admin listener's `/shadow/<frontend>`.
    pub shadows: Arc<crate::shadow::Registry>,
}

/// Past this many overlay routes plus masked base routes, the next change rebuilds the base instead: the
/// overlay's build cost and its share of every lookup stay small.
const COMPACT_AT: usize = 256;

/// The route layers of one table and the compiled frontends their routes point at (by slot).
pub struct TableRouter {
    base: Arc<Router<u32>>,
    /// Base routes that a newer value replaced or removed.
    masked: Arc<RouteSet>,
    overlay: Arc<Router<u32>>,
    frontends: Slots<Arc<Frontend>>,
    len: usize,
}

impl TableRouter {
    fn empty() -> Self {
        TableRouter {
            base: Arc::default(),
            masked: Arc::default(),
            overlay: Arc::default(),
            frontends: Slots::default(),
            len: 0,
        }
    }

    /// The frontend whose route wins for `req`, by the precedence rules of [`route`].
    pub fn find(&self, req: &Request<'_>) -> Option<&Arc<Frontend>> {
        let masked = (!self.masked.is_empty()).then_some(&*self.masked);
        let base = self.base.find_ranked(req, masked);
        let (router, index) = if self.overlay.is_empty() {
            (&*self.base, base?.1)
        } else {
            match (base, self.overlay.find_ranked(req, None)) {
                (Some(b), Some(o)) => {
                    // Equal precedence: the smaller id wins, as inside one index.
                    let base_wins = b.0 > o.0
                        || (b.0 == o.0 && self.base.entry(b.1).map(|e| e.0) < self.overlay.entry(o.1).map(|e| e.0));
                    if base_wins {
                        (&*self.base, b.1)
                    } else {
                        (&*self.overlay, o.1)
                    }
                }
                (Some(b), None) => (&*self.base, b.1),
                (None, Some(o)) => (&*self.overlay, o.1),
                (None, None) => return None,
            }
        };
        let (_, slot) = router.entry(index)?;
        self.frontends.get(*slot)
    }

    /// Every frontend in the table, in slot order (for `/status`).
    pub fn frontends(&self) -> impl Iterator<Item = &Arc<Frontend>> {
        self.frontends.chunks.iter().flat_map(|c| c.iter().flatten())
    }

    /// Frontends in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Routes in the overlay and masked base routes: what the next compaction folds into the base.
    pub fn pending(&self) -> usize {
        self.overlay.len() + self.masked.len()
    }
}

const CHUNK: usize = 256;

/// A vector shared between generations in chunks: a copy shares every chunk, and a write copies only the
/// chunk it lands in. Lookups cost two indexings.
struct Slots<T> {
    chunks: Vec<Arc<Vec<Option<T>>>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots { chunks: Vec::new() }
    }
}

impl<T: Clone> Clone for Slots<T> {
    fn clone(&self) -> Self {
        Slots { chunks: self.chunks.clone() }
    }
}

impl<T: Clone> Slots<T> {
    fn get(&self, slot: u32) -> Option<&T> {
        let slot = slot as usize;
        self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)?.as_ref()
    }

    fn set(&mut self, slot: u32, value: Option<T>) {
        let (chunk, at) = (slot as usize / CHUNK, slot as usize % CHUNK);
        while self.chunks.len() <= chunk {
            self.chunks.push(Arc::new(vec![None; CHUNK]));
        }
        Arc::make_mut(&mut self.chunks[chunk])[at] = value;
    }
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
    /// `Settings.FailoverPredicate` with its retry budget; `None` (one check per request) without a predicate.
    pub failover: Option<crate::upstream::failover::Failover>,
    /// The middleware chain, in order; empty (no allocation, one length check per request) for most frontends.
    pub chain: crate::middleware::Chain,
    /// `Sticky`: the split by client key instead of by request; `None` for the plain split.
    pub sticky: Option<crate::balance::sticky::Sticky>,
    /// `Shadow`: where copies of the selected requests go, and the state comparing their answers.
    pub shadow: Option<ShadowRoute>,
}

pub struct ShadowRoute {
    pub state: Arc<crate::shadow::Shadow>,
    pub backend: Arc<Backend>,
}

pub struct Backend {
    pub id: Arc<str>,
    /// Servers marked draining are not in here: they take no new requests.
    pub servers: Weighted<Arc<Server>>,
    pub settings: UpstreamSettings,
    /// Whether picks skip unhealthy servers, and what passive health does with each exchange's outcome.
    pub health: Policy,
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
            router: TableRouter::empty(),
            certs: Arc::default(),
            config: Arc::default(),
            shadows: Arc::default(),
        }
    }
}

struct BackendEntry {
    spec: ValidatedBackend,
    compiled: Arc<Backend>,
}

struct FrontendEntry {
    id: Arc<str>,
    counter: Arc<AtomicUsize>,
    /// The sticky split's new-client counter: kept while the frontend exists, so a reload does not restart it.
    sticky_next: Arc<AtomicUsize>,
    spec: Arc<ValidatedFrontend>,
    compiled: Arc<Frontend>,
    slot: u32,
    /// Index of this frontend's current route in the base index; `None` while the route is in the overlay.
    base: Option<u32>,
}

/// Compiles tables generation after generation, keeping what it compiled: the compiled frontends and backends,
/// the base route index, the overlay, and which frontends use which backend. Owned by the reload loop.
pub struct Compiler {
    backends: HashMap<String, BackendEntry>,
    frontends: HashMap<String, FrontendEntry>,
    /// Backend id to the frontends compiled against it: a changed backend recompiles exactly those.
    users: HashMap<String, HashSet<Arc<str>>>,
    /// Balancer positions by `f:<frontend>` / `b:<backend>`: a recompiled value keeps its place in the sequence.
    counters: HashMap<String, Arc<AtomicUsize>>,
    slots: Slots<Arc<Frontend>>,
    free_slots: Vec<u32>,
    next_slot: u32,
    base: Arc<Router<u32>>,
    masked: Arc<RouteSet>,
    overlay: BTreeMap<String, RouteSpec<u32>>,
    overlay_router: Arc<Router<u32>>,
    certs: Arc<CertStore>,
    /// Counts route changes, so a base index built in the background is installed only if still current.
    epoch: u64,
    /// Middleware state (token buckets, connection counts) kept across generations while unchanged.
    middleware_state: crate::middleware::Registry,
    /// Failover retry budgets by frontend id, kept across recompiles so a change spends no fresh burst.
    retry_budgets: crate::upstream::failover::Budgets,
    /// Shadow state (queues, reports) kept across generations while unchanged.
    shadows: Arc<crate::shadow::Registry>,
}

/// A snapshot of every current route, in the order the base index will hold them.
pub struct BaseInput {
    pub epoch: u64,
    pub ids: Vec<Arc<str>>,
    pub routes: Vec<RouteSpec<u32>>,
}

impl Default for Compiler {
    fn default() -> Self {
        Self::new()
    }
}

fn same_backend(a: &ValidatedBackend, b: &ValidatedBackend) -> bool {
    a.id == b.id && a.settings == b.settings && a.tls == b.tls && a.health == b.health && a.servers == b.servers
}

impl Compiler {
    /// The middleware state kept across tables (breakers for `/status`).
    pub fn middleware_state(&self) -> &crate::middleware::Registry {
        &self.middleware_state
    }

    pub fn new() -> Self {
        Compiler {
            backends: HashMap::new(),
            frontends: HashMap::new(),
            users: HashMap::new(),
            counters: HashMap::new(),
            slots: Slots::default(),
            free_slots: Vec::new(),
            next_slot: 0,
            base: Arc::default(),
            masked: Arc::default(),
            overlay: BTreeMap::new(),
            overlay_router: Arc::default(),
            certs: Arc::default(),
            epoch: 0,
            middleware_state: crate::middleware::Registry::new(),
            retry_budgets: Default::default(),
            shadows: Arc::default(),
        }
    }

    /// Builds the next table from `config`, revisiting only what `delta` names (and the frontends using a
    /// changed backend). Returns the table and the servers it no longer uses: publish the table, then hand
    /// those to [`Registry::retire`] so they drain.
    pub fn compile(
        &mut self,
        config: Arc<ValidatedConfig>,
        delta: &Delta,
        generation: u64,
        registry: &Registry,
    ) -> (RoutingTable, Vec<Arc<Server>>) {
        let mut retired = Vec::new();
        // Frontends whose backend objects were replaced; their own values did not change (a frontend whose
        // validated value changed is in `delta.frontends`).
        let mut rebind: HashSet<Arc<str>> = HashSet::new();
        for id in &delta.backends {
            let new = config.backends.get(id);
            match (self.backends.get(id), new) {
                (Some(old), Some(new)) if same_backend(&old.spec, new) => continue,
                (None, None) => continue,
                _ => {}
            }
            let old = self.backends.remove(id);
            if let Some(b) = new {
                let counter = self.counter(format!("b:{id}"));
                let servers: Vec<_> = b
                    .servers
                    .iter()
                    .filter(|s| !s.draining)
                    .map(|s| (registry.server(id, s, b.settings, b.tls.as_ref()), s.weight))
                    .collect();
                for (server, _) in &servers {
                    registry.health_check(server, b.health.check.as_ref());
                }
                let compiled = Arc::new(Backend {
                    id: id.as_str().into(),
                    servers: Weighted::new(servers, counter),
                    settings: b.settings,
                    health: Policy::new(b.health.outlier, b.health.check.is_some()),
                });
                self.backends.insert(id.clone(), BackendEntry { spec: b.clone(), compiled });
            } else {
                self.counters.remove(&format!("b:{id}"));
            }
            if let Some(old) = old {
                let kept: HashSet<*const Server> = match self.backends.get(id) {
                    Some(e) => e.compiled.servers.items().iter().map(Arc::as_ptr).collect(),
                    None => HashSet::new(),
                };
                retired
                    .extend(old.compiled.servers.items().iter().filter(|s| !kept.contains(&Arc::as_ptr(s))).cloned());
            }
            if let Some(users) = self.users.get(id) {
                rebind.extend(users.iter().cloned());
            }
        }

        let mut routes_changed = false;
        for id in &delta.frontends {
            rebind.remove(id.as_str());
            routes_changed |= self.frontend(id, config.frontends.get(id));
        }
        if routes_changed {
            self.epoch += 1;
        }
        for id in rebind {
            self.rebind(&id);
        }
        if routes_changed {
            if self.overlay.len() + self.masked.len() > COMPACT_AT {
                self.rebuild_base();
            } else {
                self.overlay_router = Arc::new(Router::build(self.overlay.values().cloned().collect()));
            }
        }
        if delta.hosts {
            self.certs = Arc::new(cert_store(&config));
        }
        let table = RoutingTable {
            generation,
            router: self.router(),
            certs: self.certs.clone(),
            config,
            shadows: self.shadows.clone(),
        };
        (table, retired)
    }

    /// Recompiles one frontend (or drops it). Returns true when its route changed.
    fn frontend(&mut self, id: &str, new: Option<&Arc<ValidatedFrontend>>) -> bool {
        let Some(f) = new else {
            let Some(old) = self.frontends.remove(id) else { return false };
            self.unuse(id, &old.spec);
            self.counters.remove(&format!("f:{id}"));
            self.slots.set(old.slot, None);
            self.free_slots.push(old.slot);
            if let Some(at) = old.base {
                Arc::make_mut(&mut self.masked).insert(at as usize);
            }
            self.overlay.remove(id);
            return true;
        };
        let backends = &self.backends;
        if let Some(old) = self.frontends.get(id) {
            let items = old.compiled.split.items();
            let same_backends = items.len() == f.backends.len()
                && items.iter().all(|b| backends.get(&*b.id).is_some_and(|nb| Arc::ptr_eq(&nb.compiled, b)))
                && old
                    .compiled
                    .shadow
                    .as_ref()
                    .map(|s| &s.backend)
                    .map_or(true, |b| backends.get(&*b.id).is_some_and(|nb| Arc::ptr_eq(&nb.compiled, b)));
            if Arc::ptr_eq(&old.spec, f) && same_backends {
                return false;
            }
        }
        let old = self.frontends.remove(id);
        let id_arc: Arc<str> = old.as_ref().map(|o| o.id.clone()).unwrap_or_else(|| id.into());
        let counter = match &old {
            Some(o) => o.counter.clone(),
            None => self.counter(format!("f:{id}")),
        };
        let sticky_next = old.as_ref().map(|o| o.sticky_next.clone()).unwrap_or_default();
        let state = (&self.middleware_state, &*self.shadows, &self.retry_budgets);
        let compiled = compile_frontend(&id_arc, f, &self.backends, (&counter, &sticky_next), state);
        let slot = old.as_ref().map(|o| o.slot).unwrap_or_else(|| self.alloc_slot());
        self.slots.set(slot, Some(compiled.clone()));
        let same_route = old.as_ref().is_some_and(|o| o.spec.route == f.route && o.spec.priority == f.priority);
        let mut base = old.as_ref().and_then(|o| o.base);
        if !same_route {
            if let Some(at) = base.take() {
                Arc::make_mut(&mut self.masked).insert(at as usize);
            }
            let spec = RouteSpec { id: id_arc.clone(), priority: f.priority, expr: f.expr.clone(), value: slot };
            self.overlay.insert(id.to_string(), spec);
        }
        let same_names = old.as_ref().is_some_and(|o| named_backends(&o.spec).eq(named_backends(f)));
        if !same_names {
            if let Some(old) = &old {
                self.unuse(id, &old.spec);
            }
            for b in named_backends(f) {
                self.users.entry(b.clone()).or_default().insert(id_arc.clone());
            }
        }
        let entry = FrontendEntry { id: id_arc, counter, sticky_next, spec: f.clone(), compiled, slot, base };
        self.frontends.insert(id.to_string(), entry);
        !same_route
    }

    /// Recompiles a frontend against its backends' new objects. Its route and slot stay.
    fn rebind(&mut self, id: &str) {
        let Some(entry) = self.frontends.get_mut(id) else { return };
        let counters = (&entry.counter, &entry.sticky_next);
        let state = (&self.middleware_state, &*self.shadows, &self.retry_budgets);
        entry.compiled = compile_frontend(&entry.id, &entry.spec, &self.backends, counters, state);
        self.slots.set(entry.slot, Some(entry.compiled.clone()));
    }

    fn unuse(&mut self, id: &str, spec: &ValidatedFrontend) {
        for b in named_backends(spec) {
            if let Some(users) = self.users.get_mut(b) {
                users.remove(id);
                if users.is_empty() {
                    self.users.remove(b);
                }
            }
        }
    }

    fn counter(&mut self, name: String) -> Arc<AtomicUsize> {
        self.counters.entry(name).or_default().clone()
    }

    fn alloc_slot(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        })
    }

    /// Folds the overlay into a new base index, here and now.
    fn rebuild_base(&mut self) {
        let input = self.base_input();
        let router = Router::build(input.routes);
        self.install_base(router, input.epoch, input.ids);
    }

    /// Whether a compaction would change the route layers.
    pub fn has_pending(&self) -> bool {
        !self.overlay.is_empty() || !self.masked.is_empty()
    }

    /// What a new base index is built from, so the build can run away from the reload loop.
    pub fn base_input(&self) -> BaseInput {
        let mut ids = Vec::with_capacity(self.frontends.len());
        let mut routes = Vec::with_capacity(self.frontends.len());
        for e in self.frontends.values() {
            ids.push(e.id.clone());
            routes.push(RouteSpec {
                id: e.id.clone(),
                priority: e.spec.priority,
                expr: e.spec.expr.clone(),
                value: e.slot,
            });
        }
        BaseInput { epoch: self.epoch, ids, routes }
    }

    /// Installs a base index built from [`base_input`](Self::base_input) and empties the overlay. Returns false
    /// (and installs nothing) when routes changed since that input was taken.
    pub fn install_base(&mut self, router: Router<u32>, epoch: u64, ids: Vec<Arc<str>>) -> bool {
        if epoch != self.epoch {
            return false;
        }
        // Ids are unique, so the index keeps every route at its input position.
        for (at, id) in ids.iter().enumerate() {
            if let Some(e) = self.frontends.get_mut(&**id) {
                e.base = Some(at as u32);
            }
        }
        self.base = Arc::new(router);
        self.masked = Arc::default();
        self.overlay.clear();
        self.overlay_router = Arc::default();
        true
    }

    /// Rebuilds the base index with every current route and empties the overlay. Matching is unchanged; the
    /// returned router is for a table identical to the last one compiled but for its layers.
    pub fn compact(&mut self) -> TableRouter {
        self.rebuild_base();
        self.router()
    }

    /// The route layers as they stand, for a table that differs from the last one only in its layers.
    pub fn current_router(&self) -> TableRouter {
        self.router()
    }

    fn router(&self) -> TableRouter {
        TableRouter {
            base: self.base.clone(),
            masked: self.masked.clone(),
            overlay: self.overlay_router.clone(),
            frontends: self.slots.clone(),
            len: self.frontends.len(),
        }
    }
}

fn compile_frontend(
    id: &Arc<str>,
    f: &ValidatedFrontend,
    backends: &HashMap<String, BackendEntry>,
    (counter, sticky_next): (&Arc<AtomicUsize>, &Arc<AtomicUsize>),
    (middleware_state, shadows, budgets): (
        &crate::middleware::Registry,
        &crate::shadow::Registry,
        &crate::upstream::failover::Budgets,
    ),
) -> Arc<Frontend> {
    // Validation guarantees every named backend exists; filter anyway rather than trust it blindly.
    let split: Vec<(Arc<Backend>, u32)> =
        f.backends.iter().filter_map(|(b, w)| backends.get(b.as_str()).map(|e| (e.compiled.clone(), *w))).collect();
    let sticky = f.sticky.as_ref().map(|key| {
        use crate::balance::sticky::{KeySource, Sticky};
        let source = match key {
            StickyKey::Cookie(name) => KeySource::Cookie(name.as_str().into()),
            // Checked as a header name when the value arrived; an unusable one falls back to the client IP.
            StickyKey::Header(name) => {
                http::HeaderName::from_bytes(name.as_bytes()).map_or(KeySource::ClientIp, KeySource::Header)
            }
            StickyKey::ClientIp => KeySource::ClientIp,
        };
        let items: Vec<(&str, u32)> = split.iter().map(|(b, w)| (&*b.id, *w)).collect();
        Sticky::new(source, &items, sticky_next.clone())
    });
    let shadow = f.shadow.as_ref().and_then(|spec| {
        let backend = backends.get(spec.backend.as_str())?.compiled.clone();
        Some(ShadowRoute { state: shadows.compile(id, spec), backend })
    });
    let server_counts: Vec<(&str, usize)> = split.iter().map(|(b, _)| (&*b.id, b.servers.items().len())).collect();
    let hostname =
        (!f.settings.hostname.is_empty()).then(|| HeaderValue::from_str(&f.settings.hostname).ok()).flatten();
    Arc::new(Frontend {
        id: id.clone(),
        metrics: FrontendMetrics::new(id, &server_counts),
        split: Weighted::new(split, counter.clone()),
        pass_host_header: f.settings.pass_host_header,
        trust_forward_header: f.settings.trust_forward_header,
        hostname,
        max_body_bytes: (f.settings.limits.max_body_bytes > 0).then_some(f.settings.limits.max_body_bytes),
        failover: f.failover.as_ref().map(|c| crate::upstream::failover::Failover::new(id, c.clone(), budgets.get(id))),
        chain: middleware_state.compile(id, &f.middlewares),
        sticky,
        shadow,
    })
}

/// The backends a frontend names: its split's, then its shadow's.
fn named_backends(f: &ValidatedFrontend) -> impl Iterator<Item = &String> {
    f.backends.iter().map(|(b, _)| b).chain(f.shadow.iter().map(|s| &s.backend))
}

fn cert_store(config: &ValidatedConfig) -> CertStore {
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
    certs
}

#[cfg(test)]
mod tests;
