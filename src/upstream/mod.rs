//! Upstream servers and their connection pools, kept across routing-table generations.
//!
//! The table is rebuilt on every config change, but a server whose URL and backend settings did not change
//! keeps the same [`Server`] (same pool, same in-flight counter), so a reload never drops pooled connections.
//! A server that leaves the config is dropped from the registry; requests still running hold it through the
//! table they loaded, and when the last one finishes its pool (and every idle connection in it) is closed.
//! Until then it is listed as draining.

use crate::model::{HealthCheck, UpstreamSettings, UpstreamTls, ValidatedServer};
use http::uri::{Authority, Scheme};
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

mod body;
pub mod failover;
pub mod forwarded;
pub mod h1;
pub mod health;
pub mod hop_by_hop;
pub mod pool;
mod sockets;

pub use body::{ClientBody, RequestBody, RequestBodyError};
pub use forwarded::Forwarded;

/// One upstream server as the proxy uses it.
pub struct Server {
    pub backend: Arc<str>,
    pub id: Arc<str>,
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// The `Host` header value sent when the frontend does not pass the client's host.
    pub host_header: HeaderValue,
    pub settings: UpstreamSettings,
    /// The TLS it was built with (https servers), kept so the registry can find it again.
    tls: Option<UpstreamTls>,
    pub pool: pool::Pool<RequestBody>,
    /// Active checks and passive ejection; read by the pick phase.
    pub health: health::Health,
    inflight: AtomicUsize,
    served: AtomicU64,
    /// Set when the server's drain deadline passed: whatever still runs on it is cut.
    aborted: std::sync::atomic::AtomicBool,
    abort_notify: tokio::sync::Notify,
}

impl Server {
    fn new(backend: &str, spec: &ValidatedServer, settings: UpstreamSettings, tls: Option<&UpstreamTls>) -> Self {
        let pool = pool::Pool::new(&spec.scheme, &spec.authority, &settings, tls);
        // Authority is valid ASCII by construction (it came from a parsed URI).
        let host_header =
            HeaderValue::from_str(spec.authority.as_str()).unwrap_or(HeaderValue::from_static("localhost"));
        Server {
            backend: backend.into(),
            id: spec.id.as_str().into(),
            url: spec.url.clone(),
            scheme: spec.scheme.clone(),
            authority: spec.authority.clone(),
            host_header,
            settings,
            tls: tls.cloned(),
            pool,
            health: health::Health::default(),
            inflight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            aborted: std::sync::atomic::AtomicBool::new(false),
            abort_notify: tokio::sync::Notify::new(),
        }
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// A pool of its own to this server, for traffic that must not share connections (or their tasks) with the
    /// request path: shadow copies run on a runtime of their own.
    pub fn separate_pool(&self) -> pool::Pool<RequestBody> {
        pool::Pool::new(&self.scheme, &self.authority, &self.settings, self.tls.as_ref())
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Resolves once the drain deadline cut this server off.
    pub async fn aborted(&self) {
        let notified = self.abort_notify.notified();
        tokio::pin!(notified);
        // Register before checking the flag, so an abort between the two is not missed.
        notified.as_mut().enable();
        if self.is_aborted() {
            return;
        }
        notified.await;
    }

    /// The drain deadline passed: the flag first, so whatever fails from here on is told apart as cut; then
    /// tunnels are woken, and the pool's sockets shut down, which fails the requests and bodies still on them.
    fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.abort_notify.notify_waiters();
        self.pool.cut();
    }

    /// Counts the request as in flight until the guard drops (response body finished or failed).
    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("backend", &self.backend).field("id", &self.id).field("url", &self.url).finish()
    }
}

/// Bounds a leaving server's drain: after its backend's `DrainTimeout`, requests still running on it are cut
/// (their clients see the connection fail rather than wait forever) and its pool is released.
fn arm_drain_deadline(server: &Arc<Server>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let weak = Arc::downgrade(server);
    let deadline = server.settings.drain_timeout;
    runtime.spawn(async move {
        tokio::time::sleep(deadline).await;
        if let Some(server) = weak.upgrade() {
            let inflight = server.inflight();
            if inflight > 0 {
                tracing::warn!(backend = %server.backend, server = %server.id, inflight,
                    deadline = %crate::model::format_duration(deadline), "drain deadline reached; cutting what still runs");
            }
            server.abort();
        }
    });
}

pub struct InflightGuard(Arc<Server>);

impl InflightGuard {
    pub fn server(&self) -> &Arc<Server> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    backend: String,
    id: String,
    url: String,
    settings: UpstreamSettings,
    tls: Option<UpstreamTls>,
}

/// What `/status` shows about a server that left the config but still has work or references.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainingServer {
    pub backend: String,
    pub server: String,
    pub url: String,
    pub inflight: usize,
}

/// Servers that outlive a table. Locked only while a table is compiled, never per request.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    servers: HashMap<ServerKey, Arc<Server>>,
    draining: Vec<Weak<Server>>,
    /// The active checker of each checked server, by the server's address: one per server, however many
    /// frontends use its backend.
    checkers: HashMap<usize, Checker>,
}

struct Checker {
    check: Arc<HealthCheck>,
    task: tokio::task::AbortHandle,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What `/status` and the metrics show about a server's health.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerHealth {
    pub backend: String,
    pub server: String,
    pub url: String,
    pub state: health::State,
    /// Active checks run for it.
    pub checked: bool,
    pub ejections: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The server for this backend, spec and settings: the one already known (same pool, same counters) when
    /// nothing that shapes it changed, a new one otherwise.
    pub fn server(
        &self,
        backend: &str,
        spec: &ValidatedServer,
        settings: UpstreamSettings,
        tls: Option<&UpstreamTls>,
    ) -> Arc<Server> {
        // Only https servers use the TLS settings; a TLS change leaves plain ones (and their pools) alone.
        let tls = tls.filter(|_| spec.scheme == Scheme::HTTPS);
        let key = ServerKey {
            backend: backend.to_string(),
            id: spec.id.clone(),
            url: spec.url.clone(),
            settings,
            tls: tls.cloned(),
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.servers.entry(key).or_insert_with(|| Arc::new(Server::new(backend, spec, settings, tls))).clone()
    }

    /// Forgets servers no table uses any more and starts their drain. Call after the table that no longer
    /// names them was published, so no new request can pick them.
    pub fn retire(&self, servers: impl IntoIterator<Item = Arc<Server>>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for server in servers {
            let key = ServerKey {
                backend: server.backend.to_string(),
                id: server.id.to_string(),
                url: server.url.clone(),
                settings: server.settings,
                tls: server.tls.clone(),
            };
            if inner.servers.get(&key).is_some_and(|s| Arc::ptr_eq(s, &server)) {
                inner.servers.remove(&key);
                inner.checkers.remove(&(Arc::as_ptr(&server) as usize));
                inner.draining.push(Arc::downgrade(&server));
                arm_drain_deadline(&server);
            }
        }
        inner.draining.retain(|w| w.strong_count() > 0);
    }

    /// Visits every server the tables use (draining ones are in [`Registry::draining`]), for read-only views
    /// such as the dashboard's in-flight counts.
    pub fn for_each_server(&self, mut f: impl FnMut(&Server)) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.servers.values().for_each(|s| f(s));
    }

    /// Starts, changes or stops the active checks of `server` (a server of the table being compiled). Its health
    /// stays whatever the checks said so far; a checker whose settings did not change keeps running.
    pub fn health_check(&self, server: &Arc<Server>, check: Option<&Arc<HealthCheck>>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let at = Arc::as_ptr(server) as usize;
        match check {
            None => {
                if inner.checkers.remove(&at).is_some() {
                    health::unchecked(server);
                }
            }
            Some(check) => {
                if inner.checkers.get(&at).is_some_and(|c| c.check == *check) {
                    return;
                }
                if let Some(task) = health::spawn_checker(server, check.clone()) {
                    inner.checkers.insert(at, Checker { check: check.clone(), task });
                }
            }
        }
    }

    /// The health of every server in the config.
    pub fn health(&self) -> Vec<ServerHealth> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = health::millis(std::time::Instant::now());
        let mut out: Vec<ServerHealth> = inner
            .servers
            .values()
            .map(|s| {
                let (passed, failed) = s.health.checks();
                ServerHealth {
                    backend: s.backend.to_string(),
                    server: s.id.to_string(),
                    url: s.url.clone(),
                    state: s.health.state(now),
                    checked: inner.checkers.contains_key(&(Arc::as_ptr(s) as usize)),
                    ejections: s.health.ejections(),
                    checks_passed: passed,
                    checks_failed: failed,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.backend, &a.server).cmp(&(&b.backend, &b.server)));
        out
    }

    pub fn draining(&self) -> Vec<DrainingServer> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.draining.retain(|w| w.strong_count() > 0);
        inner
            .draining
            .iter()
            .filter_map(Weak::upgrade)
            .map(|s| DrainingServer {
                backend: s.backend.to_string(),
                server: s.id.to_string(),
                url: s.url.clone(),
                inflight: s.inflight(),
            })
            .collect()
    }
}
