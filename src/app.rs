//! Wires the parts together and owns the order in which they start and stop.
//!
//! Start: metrics, the first routing table from the source (so the first request already sees the routes),
//! the reload loop, the listeners, the admin listener. Stop: stop accepting, drain in-flight requests up to
//! the deadline, stop the source.

use crate::admin::{self, Admin};
use crate::lifecycle::Shutdown;
use crate::listen::{self, ListenerConfig};
use crate::model::{Protocol, ValidatedConfig};
use crate::proxy::limits::Limits;
use crate::proxy::Proxy;
use crate::source::etcd::EtcdSettings;
use crate::source::{etcd, file, SourceEvent, SourceStatus};
use crate::table::reload::{Reloader, StatusBoard};
use crate::table::{RoutingTable, SharedTable};
use crate::telemetry::LogFormat;
use crate::upstream::Registry;
use arc_swap::ArcSwap;
use serde::Deserialize;
use serve::duration::de_duration;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// `ficus.toml`. Every field has a default, so an empty file is a valid config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub listeners: Vec<ListenerSettings>,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub routes: RoutesSettings,
    /// When set, config comes from etcd and `routes` is not read.
    #[serde(default)]
    pub etcd: Option<EtcdSettings>,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default = "default_drain", deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
    /// Pid file, control socket and hot upgrade.
    #[serde(default)]
    pub process: crate::lifecycle::upgrade::ProcessSettings,
    /// Request-head sizes, connections per listener, encoded slashes (`[limits]`).
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSettings {
    pub name: String,
    pub address: SocketAddr,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// Believe X-Forwarded-* from clients of this listener (it sits behind a trusted load balancer).
    #[serde(default)]
    pub trust_forward_header: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// `None` turns the admin listener off.
    #[serde(default = "default_admin")]
    pub address: Option<SocketAddr>,
    /// Host names the admin listener answers besides loopback ones (`localhost`, `127.0.0.1`, `[::1]`) and its
    /// own address: a page in a local browser reaching it through DNS rebinding names another host.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// When set, every admin endpoint but `/health*` (the dashboard, `/status`, `/config`, `/metrics`) wants
    /// this token: `Authorization: Bearer <token>`, or basic auth with it as the password. For an admin
    /// listener bound beyond loopback.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesSettings {
    #[serde(default = "default_routes")]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default = "default_format")]
    pub format: LogFormat,
    #[serde(default = "default_true")]
    pub access_log: bool,
    /// Access lines go to this file (reopened on SIGHUP) instead of stdout.
    #[serde(default)]
    pub access_log_file: Option<PathBuf>,
}

fn default_drain() -> Duration {
    Duration::from_secs(30)
}
fn default_protocol() -> Protocol {
    Protocol::Http
}
fn default_admin() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 8182)))
}
fn default_routes() -> PathBuf {
    PathBuf::from("routes")
}
fn default_format() -> LogFormat {
    LogFormat::Text
}
fn default_true() -> bool {
    true
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings { address: default_admin(), allowed_hosts: Vec::new(), token: None }
    }
}
impl Default for RoutesSettings {
    fn default() -> Self {
        RoutesSettings { dir: default_routes() }
    }
}
impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { format: default_format(), access_log: true, access_log_file: None }
    }
}
impl Default for Settings {
    fn default() -> Self {
        Settings {
            listeners: Vec::new(),
            admin: AdminSettings::default(),
            routes: RoutesSettings::default(),
            etcd: None,
            log: LogSettings::default(),
            drain_timeout: default_drain(),
            process: Default::default(),
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("config file {path}: {message}")]
    Settings { path: PathBuf, message: String },
    #[error(transparent)]
    Bind(#[from] listen::BindError),
    #[error("admin listener on {addr}: {source}")]
    Admin { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Source(#[from] file::FileSourceError),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("no listener configured: give --listen or [[listeners]] in the config file")]
    NoListener,
    #[error(transparent)]
    Limits(#[from] crate::proxy::limits::LimitsError),
    #[error(transparent)]
    Process(#[from] crate::lifecycle::upgrade::UpgradeError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, AppError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AppError::Settings { path: path.to_path_buf(), message: e.to_string() })?;
        toml::from_str(&text).map_err(|e| AppError::Settings { path: path.to_path_buf(), message: e.to_string() })
    }
}

/// Runs the gateway until `shutdown` fires and the drain completes.
pub async fn run(settings: Settings, shutdown: Shutdown) -> Result<(), AppError> {
    if settings.listeners.is_empty() {
        return Err(AppError::NoListener);
    }
    settings.limits.validate()?;
    let metrics = crate::telemetry::install_metrics().map_err(AppError::Metrics)?;
    {
        let shutdown = shutdown.clone();
        tokio::spawn(serve::upkeep::metrics_upkeep(metrics.clone(), async move { shutdown.wait().await }));
    }
    let table: SharedTable = Arc::new(ArcSwap::from_pointee(RoutingTable::empty()));
    let registry = Arc::new(Registry::new());
    let status = Arc::new(StatusBoard::default());

    // The first table is built before any listener opens, so no request ever sees an empty table.
    let (events_tx, mut events_rx) = mpsc::channel::<SourceEvent>(1024);
    let (source_status, source_task) = match settings.etcd.clone() {
        Some(etcd_settings) => {
            let status = SourceStatus {
                kind: "etcd",
                location: format!("{} {}", etcd_settings.endpoints_label(), etcd_settings.normalized_prefix()),
                state: "starting",
                ..Default::default()
            };
            let task = tokio::spawn(etcd::watch(etcd_settings, events_tx));
            (status, task)
        }
        None => {
            let dir = settings.routes.dir.clone();
            file::scan(&dir)?;
            let status = SourceStatus {
                kind: "file",
                location: dir.display().to_string(),
                state: "starting",
                ..Default::default()
            };
            let watch_dir = dir.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = file::watch(watch_dir, events_tx).await {
                    tracing::error!(error = %e, "route directory watch stopped; the last table keeps serving");
                }
            });
            (status, task)
        }
    };
    let (mut reloader, config_rx) = Reloader::new(table.clone(), registry.clone(), status.clone(), source_status);
    loop {
        // Until the first listing arrives (etcd may be down at start) nothing is served, but a shutdown is obeyed.
        let next = tokio::select! {
            ev = events_rx.recv() => ev,
            _ = shutdown.wait() => {
                source_task.abort();
                return Ok(());
            }
        };
        match next {
            Some(ev @ SourceEvent::Snapshot { .. }) => {
                reloader.apply(ev);
                reloader.rebuild();
                break;
            }
            Some(other) => {
                reloader.apply(other);
            }
            None => break,
        }
    }
    let reload_task = tokio::spawn(reloader.run(events_rx));

    let proxy = Arc::new(Proxy::new(table.clone()).with_limits(settings.limits));
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(listen::server_config(table.clone())?));
    let mut tasks = Vec::new();
    // Where each listener really is (a configured port 0 becomes the kernel's choice), for the address file.
    let mut bound = Vec::new();
    let mut admin_bound = None;
    for l in &settings.listeners {
        let cfg = ListenerConfig {
            name: l.name.clone(),
            addr: l.address,
            protocol: l.protocol,
            trust_forward_header: l.trust_forward_header,
            limits: settings.limits,
        };
        let listener = listen::bind(&cfg)?;
        if let Ok(local) = listener.local_addr() {
            bound.push((cfg.name.clone(), local));
        }
        let acceptor = (cfg.protocol == Protocol::Https).then(|| tls.clone());
        tasks.push(tokio::spawn(listen::serve(
            listener,
            cfg,
            proxy.clone(),
            acceptor,
            shutdown.clone(),
            settings.drain_timeout,
        )));
    }
    let keyed = tokio::spawn(keyed_listeners(
        config_rx,
        status.clone(),
        proxy.clone(),
        tls.clone(),
        shutdown.clone(),
        settings.drain_timeout,
        settings.limits,
    ));

    if let Some(addr) = settings.admin.address {
        let listener = listen::bind_admin(addr).map_err(|source| AppError::Admin { addr, source })?;
        admin_bound = listener.local_addr().ok();
        let hosts = admin::AllowedHosts::new(addr, &settings.admin.allowed_hosts);
        let auth = admin::Auth::new(settings.admin.token.clone());
        if !addr.ip().is_loopback() && !auth.is_set() {
            tracing::warn!(%addr, "the admin listener is reachable beyond loopback without admin.token");
        }
        let dashboard = Arc::default();
        let admin = Arc::new(Admin { metrics, status, registry, table: table.clone(), hosts, auth, dashboard });
        // Never longer than the proxy listeners' own head timeout, so one setting bounds every idle client.
        let head_timeout = settings.limits.header_timeout.min(admin::HEADER_READ_TIMEOUT);
        tokio::spawn(admin::serve(listener, admin, head_timeout, shutdown.clone()));
    }
    if let Some(path) = &settings.process.address_file {
        crate::lifecycle::upgrade::write_address_file(path, &bound, admin_bound)?;
    }
    tracing::info!(generation = table.load().generation, "ficus ready");
    let process = crate::lifecycle::upgrade::ready(&settings.process, shutdown.clone()).await?;

    shutdown.wait().await;
    for t in tasks {
        let _ = t.await;
    }
    let _ = keyed.await;
    source_task.abort();
    reload_task.abort();
    process.stopped();
    tracing::info!("drained; exiting");
    Ok(())
}

/// How often a keyed listener that could not bind is tried again: its address may be freed (a process
/// stopping, a hot upgrade's old process letting go) without any key changing.
const REBIND_EVERY: Duration = Duration::from_secs(5);

/// Listeners defined by `listeners/<id>` keys: bound when they appear, drained when they go or change. One
/// that cannot bind is listed in `/status` (`unbound_listeners`) and tried again every [`REBIND_EVERY`].
async fn keyed_listeners(
    mut config: watch::Receiver<Arc<ValidatedConfig>>,
    status: Arc<crate::table::reload::StatusBoard>,
    proxy: Arc<Proxy>,
    tls: tokio_rustls::TlsAcceptor,
    shutdown: Shutdown,
    drain_timeout: Duration,
    limits: Limits,
) {
    let mut running: HashMap<String, (crate::model::ValidatedListener, Shutdown, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    // The last failure of each listener that is not bound, by id: logged when it first happens or changes,
    // not at every retry.
    let mut unbound: std::collections::BTreeMap<String, crate::table::reload::UnboundListener> = Default::default();
    loop {
        let wanted = config.borrow_and_update().listeners.clone();
        running.retain(|id, (spec, stop, _)| {
            let keep = wanted.get(id) == Some(spec);
            if !keep {
                tracing::info!(listener = %id, "listener removed or changed: draining it");
                stop.trigger();
            }
            keep
        });
        unbound.retain(|id, _| wanted.contains_key(id));
        for (id, spec) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let cfg = ListenerConfig {
                name: id.clone(),
                addr: spec.address,
                protocol: spec.protocol,
                trust_forward_header: false,
                limits,
            };
            match listen::bind(&cfg) {
                Ok(listener) => {
                    let stop = Shutdown::new();
                    let acceptor = (spec.protocol == Protocol::Https).then(|| tls.clone());
                    let task = tokio::spawn(listen::serve(
                        listener,
                        cfg,
                        proxy.clone(),
                        acceptor,
                        stop.clone(),
                        drain_timeout,
                    ));
                    if unbound.remove(&id).is_some() {
                        tracing::info!(target: "config", key = %format!("listeners/{id}"), address = %spec.address, "listener bound");
                    }
                    running.insert(id, (spec, stop, task));
                }
                Err(e) => {
                    let failure = crate::table::reload::UnboundListener {
                        key: format!("listeners/{id}"),
                        address: spec.address.to_string(),
                        error: e.source.to_string(),
                    };
                    if unbound.get(&id) != Some(&failure) {
                        tracing::error!(target: "config", key = %failure.key, "{e}; retried every {}s", REBIND_EVERY.as_secs());
                    }
                    unbound.insert(id, failure);
                }
            }
        }
        status.set_unbound_listeners(unbound.values().cloned().collect());
        tokio::select! {
            changed = config.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(REBIND_EVERY), if !unbound.is_empty() => {}
            _ = shutdown.wait() => break,
        }
    }
    for (_, (_, stop, task)) in running {
        stop.trigger();
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses_with_its_limits_filled_in() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ficus.toml");
        let s = Settings::load(&path).unwrap();
        assert_eq!(s.limits, Limits::default());
        let text = std::fs::read_to_string(&path).unwrap();
        // The commented-out [limits] block, uncommented, is valid and says the defaults.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with("[limits]")
                        || rest.starts_with("max_")
                        || rest.starts_with("encoded_slash")
                        || rest.starts_with("header_timeout") =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let s: Settings = toml::from_str(&uncommented).unwrap();
        assert_eq!(s.limits, Limits::default());
        let bad: Result<Settings, _> = toml::from_str("[limits]\nmax_head_bytes = \"big\"\n");
        assert!(bad.unwrap_err().to_string().contains("max_head_bytes"));
    }
}
