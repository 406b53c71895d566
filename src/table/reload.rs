//! The reload loop: source events in, one validated and compiled table out per batch.
//!
//! Events that arrive while a table is being built are applied together before the next build, so a burst of
//! writes costs one build, not one per write. A reload is all or nothing: the new table is stored with a
//! single `ArcSwap::store`; anything refused is reported (log, `/status`, metrics) and the values that were
//! good keep serving.

use super::{Compiler, RoutingTable, SharedTable};
use crate::model::{ConfigError, ConfigState, MiddlewareConfig, Rejection, ValidatedConfig};
use crate::route::Router;
use crate::source::{Locations, SourceEvent, SourceStatus, MAX_PROBLEMS};
use crate::telemetry;
use crate::upstream::{DrainingServer, Registry};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// Quiet time after which the route overlay is folded into the base index. Long enough that a run of writes
/// (a deploy script, a canary ramp) is not interrupted by a rebuild of the whole index.
const COMPACT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What `/status` shows. Written by the reload loop only; read by the admin listener.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub generation: u64,
    pub reloaded_at_unix: u64,
    pub source: SourceStatus,
    pub counts: Counts,
    /// Each frontend's middleware chain in the order it runs (frontends without middleware are left out).
    pub chains: std::collections::BTreeMap<String, Vec<ChainEntry>>,
    /// Keys whose latest value was refused (the previous good value, if any, still serves).
    pub rejected: Vec<Rejection>,
    /// Cross-key problems: values left out or replaced by their last good value.
    pub errors: Vec<ConfigError>,
    /// Values in force with a part Ficus does not act on yet.
    pub unsupported: Vec<ConfigError>,
    pub draining: Vec<DrainingServer>,
    /// Every server's health (active checks, passive ejection), read when asked.
    pub servers: Vec<crate::upstream::ServerHealth>,
    /// `listeners/<id>` keys in force whose address could not be bound (in use, not local, no permission):
    /// valid values, so not among `rejected`, but not serving either. Retried every few seconds. Written by
    /// the listener manager just after each table is published, so a key deleted while unbound may be
    /// listed for a moment after the table without it.
    pub unbound_listeners: Vec<UnboundListener>,
}

/// A keyed listener that is not listening, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnboundListener {
    pub key: String,
    pub address: String,
    pub error: String,
}

/// One middleware of a frontend's chain, as `/status` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ChainEntry {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub priority: i32,
    /// False for a type Ficus decodes but does not act on yet (it is also listed under `unsupported`).
    pub enforced: bool,
    /// A circuit breaker's state (`standby`, `tripped`, `recovering`), read when `/status` is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::middleware::BreakerView>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub frontends: usize,
    pub backends: usize,
    pub servers: usize,
    pub hosts: usize,
    pub listeners: usize,
    pub middlewares: usize,
}

/// Shared status, behind a lock that only the reload loop and `/status` take (never the request path).
#[derive(Default)]
pub struct StatusBoard {
    inner: Mutex<Status>,
}

impl StatusBoard {
    pub fn snapshot(&self, registry: &Registry) -> Status {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.draining = registry.draining();
        s.servers = registry.health();
        s
    }

    /// Written by the listener manager after each pass over the keyed listeners.
    pub fn set_unbound_listeners(&self, unbound: Vec<UnboundListener>) {
        self.update(|s| s.unbound_listeners = unbound);
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

pub struct Reloader {
    state: ConfigState,
    compiler: Compiler,
    table: SharedTable,
    registry: Arc<Registry>,
    status: Arc<StatusBoard>,
    generation: u64,
    /// Where the source keeps each key (a file source: its file), so errors name the file too.
    locations: Locations,
    /// The listeners of the latest config, for the listener manager.
    config_tx: watch::Sender<Arc<ValidatedConfig>>,
    /// The revision of changes applied to the state but not yet built into a table: `/status` shows it only
    /// once the table that holds them is published.
    pending_revision: Option<u64>,
}

impl Reloader {
    pub fn new(
        table: SharedTable,
        registry: Arc<Registry>,
        status: Arc<StatusBoard>,
        source: SourceStatus,
    ) -> (Self, watch::Receiver<Arc<ValidatedConfig>>) {
        status.update(|s| s.source = source);
        let (config_tx, config_rx) = watch::channel(Arc::new(ValidatedConfig::default()));
        let generation = table.load().generation;
        (
            Reloader {
                state: ConfigState::new(),
                compiler: Compiler::new(),
                table,
                registry,
                status,
                generation,
                locations: Locations::new(),
                config_tx,
                pending_revision: None,
            },
            config_rx,
        )
    }

    /// Applies one event to the state (no build). Returns true when something changed.
    pub fn apply(&mut self, event: SourceEvent) -> bool {
        match event {
            SourceEvent::Snapshot { revision, entries, locations } => {
                self.locations = locations;
                let (errors, changed) = self.state.reset(entries);
                self.report_rejections(&errors);
                self.status.update(|s| {
                    s.source.state = "watching";
                    s.source.problems.clear();
                });
                let build = changed || !errors.is_empty() || self.generation == 0;
                self.note_revision(revision, build);
                build
            }
            SourceEvent::Changes { revision, changes, locations } => {
                let mut changed = false;
                let mut errors = Vec::new();
                self.locations.extend(locations);
                for change in changes {
                    if let crate::model::Change::Delete { key } = &change {
                        self.locations.remove(key);
                    }
                    match self.state.apply(change) {
                        Ok(c) => changed |= c,
                        Err(e) => errors.push(e),
                    }
                }
                self.report_rejections(&errors);
                self.status.update(|s| s.source.state = "watching");
                let build = changed || !errors.is_empty();
                self.note_revision(revision, build);
                build
            }
            SourceEvent::Watching { revision } => {
                self.status.update(|s| s.source.state = "watching");
                let at_least = self.pending_revision.unwrap_or(0).max(revision);
                self.note_revision(at_least, false);
                false
            }
            SourceEvent::Problem { message } => {
                tracing::error!(target: "config", "{message}");
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                self.status.update(|s| {
                    s.source.state = "error";
                    s.source.errors_total += 1;
                    s.source.last_error = Some(message.clone());
                    s.source.last_error_at_unix = Some(now);
                    if s.source.problems.len() >= MAX_PROBLEMS {
                        s.source.problems.remove(0);
                    }
                    s.source.problems.push(message);
                });
                false
            }
        }
    }

    /// Records the revision the state now reflects: straight into `/status` when the table in force already
    /// serves it (nothing to build), else held until the table with it is published (`rebuild`). A revision
    /// that follows one still waiting for its build waits too.
    fn note_revision(&mut self, revision: u64, build: bool) {
        if build || self.pending_revision.is_some() {
            self.pending_revision = Some(revision);
        } else {
            self.status.update(|s| s.source.revision = s.source.revision.max(revision));
        }
    }

    fn report_rejections(&self, errors: &[ConfigError]) {
        for e in errors {
            let kind = crate::model::Key::parse(&e.key).map(|k| k.kind()).unwrap_or("unknown");
            metrics::counter!(telemetry::CONFIG_REJECTED_TOTAL, "kind" => kind).increment(1);
            tracing::error!(target: "config", key = %e.key, file = self.file_hint(&e.key), "rejected: {e}; the previous value (if any) keeps serving");
        }
    }

    fn file_hint(&self, key: &str) -> &str {
        self.locations.get(key).map_or("", String::as_str)
    }

    /// Validates, compiles and publishes the current state as the next generation.
    pub fn rebuild(&mut self) {
        let validation = self.state.validate();
        for e in validation.errors.iter() {
            tracing::error!(target: "config", key = %e.key, file = self.file_hint(&e.key), "{e}");
        }
        for e in validation.unsupported.iter() {
            tracing::warn!(target: "config", key = %e.key, "{e}");
        }
        self.generation += 1;
        let config = Arc::new(validation.config);
        let (table, retired) =
            self.compiler.compile(config.clone(), &validation.delta, self.generation, &self.registry);
        self.table.store(Arc::new(table));
        // Only now can no new request pick them.
        self.registry.retire(retired);
        let counts = Counts {
            frontends: config.frontends.len(),
            backends: config.backends.len(),
            servers: config.backends.values().map(|b| b.servers.len()).sum(),
            hosts: config.hosts.len(),
            listeners: config.listeners.len(),
            middlewares: config.frontends.values().map(|f| f.middlewares.len()).sum(),
        };
        let chains = config
            .frontends
            .iter()
            .filter(|(_, f)| !f.middlewares.is_empty())
            .map(|(id, f)| {
                let breakers = self.compiler.middleware_state();
                let chain = f.middlewares.iter().map(|m| ChainEntry {
                    state: breakers.breaker(id, m).map(crate::middleware::BreakerView),
                    id: m.id.clone(),
                    kind: m.kind.clone(),
                    priority: m.priority,
                    enforced: !matches!(m.config, MiddlewareConfig::Unsupported),
                });
                (id.clone(), chain.collect())
            })
            .collect();
        let rejected: Vec<Rejection> = self.state.rejected().cloned().collect();
        let problems = rejected.len() + validation.errors.len();
        metrics::gauge!(telemetry::CONFIG_GENERATION).set(self.generation as f64);
        metrics::gauge!(telemetry::CONFIG_ERRORS).set(problems as f64);
        metrics::gauge!(telemetry::CONFIG_FRONTENDS).set(counts.frontends as f64);
        metrics::gauge!(telemetry::CONFIG_SERVERS).set(counts.servers as f64);
        metrics::counter!(telemetry::CONFIG_RELOADS_TOTAL).increment(1);
        tracing::info!(target: "config", generation = self.generation, frontends = counts.frontends,
            backends = counts.backends, servers = counts.servers, problems, "routing table published");
        let generation = self.generation;
        let revision = self.pending_revision.take();
        self.status.update(|s| {
            if let Some(revision) = revision {
                s.source.revision = revision;
            }
            s.generation = generation;
            s.reloaded_at_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            s.counts = counts;
            s.chains = chains;
            s.rejected = rejected;
            s.errors = validation.errors;
            s.unsupported = validation.unsupported;
        });
        self.config_tx.send_replace(config);
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Folds the route overlay into the base index and publishes the result under the same generation: what
    /// requests match does not change, only how fast the lookup is.
    pub fn compact(&mut self) {
        let router = self.compiler.compact();
        self.publish_layers(router);
    }

    fn publish_layers(&self, router: super::TableRouter) {
        let current = self.table.load_full();
        self.table.store(Arc::new(RoutingTable {
            generation: current.generation,
            router,
            certs: current.certs.clone(),
            config: current.config.clone(),
            shadows: current.shadows.clone(),
        }));
    }

    /// Runs until the source closes. Coalesces whatever queued up during a build into the next build, and
    /// compacts the route layers once the config has been quiet for a moment.
    pub async fn run(mut self, mut events: mpsc::Receiver<SourceEvent>) {
        loop {
            let next = if self.compiler.has_pending() {
                match tokio::time::timeout(COMPACT_AFTER, events.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // The base build takes tens of milliseconds at 10,000 routes: off the runtime's threads,
                        // and given up (to be retried at the next quiet moment) as soon as a change arrives.
                        let input = self.compiler.base_input();
                        let (epoch, ids) = (input.epoch, input.ids);
                        let routes = input.routes;
                        let mut build = tokio::task::spawn_blocking(move || Router::build(routes));
                        tokio::select! {
                            built = &mut build => {
                                if let Ok(router) = built {
                                    if self.compiler.install_base(router, epoch, ids) {
                                        self.publish_layers(self.compiler.current_router());
                                    }
                                }
                                continue;
                            }
                            next = events.recv() => next,
                        }
                    }
                }
            } else {
                events.recv().await
            };
            let Some(first) = next else { break };
            let mut changed = self.apply(first);
            while let Ok(more) = events.try_recv() {
                changed |= self.apply(more);
            }
            if changed {
                self.rebuild();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Change;
    use arc_swap::ArcSwap;

    fn reloader() -> Reloader {
        let table: SharedTable = Arc::new(ArcSwap::from_pointee(RoutingTable::empty()));
        let status = Arc::new(StatusBoard::default());
        Reloader::new(table, Arc::new(Registry::new()), status, SourceStatus::default()).0
    }

    #[test]
    fn errors_name_the_location_the_source_gave_for_the_key() {
        let mut r = reloader();
        let key = "backends/b1/servers/s1";
        let locations = Locations::from([(key.to_string(), "routes/backends/b1/servers/s1.json".to_string())]);
        r.apply(SourceEvent::Snapshot { revision: 1, entries: vec![(key.into(), b"nope".to_vec())], locations });
        assert_eq!(r.file_hint(key), "routes/backends/b1/servers/s1.json");
        // A source without locations (etcd) names the key alone.
        assert_eq!(r.file_hint("backends/b2/backend"), "");
        // A deleted key's location goes with it; a new snapshot replaces them all.
        let changes = vec![Change::Delete { key: key.into() }];
        r.apply(SourceEvent::Changes { revision: 2, changes, locations: Locations::new() });
        assert_eq!(r.file_hint(key), "");
    }

    #[test]
    fn status_shows_a_revision_only_once_the_table_that_serves_it_is_published() {
        let mut r = reloader();
        let revision = |r: &Reloader| r.status.snapshot(&r.registry).source.revision;
        let put = |key: &str, value: &str| Change::Put { key: key.into(), value: value.as_bytes().to_vec() };
        let entries = vec![("backends/b/backend".to_string(), br#"{"Type":"http"}"#.to_vec())];
        assert!(r.apply(SourceEvent::Snapshot { revision: 5, entries, locations: Locations::new() }));
        assert_eq!(revision(&r), 0, "received, not built");
        r.rebuild();
        assert_eq!(revision(&r), 5);
        // A change, then a progress notice, both before the build: neither shows until the table is out.
        let changes = vec![put("backends/b/servers/s1", r#"{"URL":"http://127.0.0.1:1"}"#)];
        assert!(r.apply(SourceEvent::Changes { revision: 6, changes, locations: Locations::new() }));
        assert!(!r.apply(SourceEvent::Watching { revision: 7 }));
        assert_eq!(revision(&r), 5);
        r.rebuild();
        assert_eq!(revision(&r), 7);
        assert_eq!(r.status.snapshot(&r.registry).counts.servers, 1);
        // Nothing to build (the same value again): the table in force already serves it.
        let changes = vec![put("backends/b/servers/s1", r#"{"URL":"http://127.0.0.1:1"}"#)];
        assert!(!r.apply(SourceEvent::Changes { revision: 8, changes, locations: Locations::new() }));
        assert_eq!(revision(&r), 8);
    }
}
