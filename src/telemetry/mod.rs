//! Metric names (all of them, in one place), metric handles prepared at table-build time, and log setup.
//!
//! Per request the proxy touches only pre-resolved handles: a counter for (frontend, backend, server,
//! status) is registered the first time that combination is seen and then reused, so the hot path never
//! formats labels or hashes a metric key.

pub mod access;
pub mod batch;
pub mod live;
pub mod process;

use arc_swap::ArcSwapOption;
use metrics::{Counter, Histogram};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub const REQUESTS_TOTAL: &str = "ficus_requests_total";
pub const REQUEST_DURATION: &str = "ficus_request_duration_seconds";
pub const UPSTREAM_ERRORS_TOTAL: &str = "ficus_upstream_errors_total";
pub const OPEN_CONNECTIONS: &str = "ficus_open_connections";
pub const CONNECTIONS_TOTAL: &str = "ficus_connections_total";
/// Connections closed at accept because their listener was at its connection cap.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "ficus_connections_refused_total";
pub const PARKED_CONNECTIONS: &str = "ficus_parked_connections";
pub const CONFIG_GENERATION: &str = "ficus_config_generation";
pub const CONFIG_RELOADS_TOTAL: &str = "ficus_config_reloads_total";
pub const CONFIG_REJECTED_TOTAL: &str = "ficus_config_rejected_total";
pub const CONFIG_ERRORS: &str = "ficus_config_errors";
pub const CONFIG_FRONTENDS: &str = "ficus_config_frontends";
pub const CONFIG_SERVERS: &str = "ficus_config_servers";
pub const DRAINING_SERVERS: &str = "ficus_draining_servers";
pub const DRAINING_INFLIGHT: &str = "ficus_draining_inflight";
/// Listeners defined by `listeners/<id>` keys that could not bind their address (listed in `/status`).
pub const LISTENERS_UNBOUND: &str = "ficus_listeners_unbound";
pub const BUILD_INFO: &str = "ficus_build_info";
/// Requests a frontend's middleware refused, by `frontend`, `middleware` and `reason` (`rate`, `connections`).
pub const MIDDLEWARE_REJECTED_TOTAL: &str = "ficus_middleware_rejected_total";
/// Shadow copies by frontend and result (equal, different, dropped, error, skipped).
pub const SHADOW_TOTAL: &str = "ficus_shadow_total";
/// A server's health by `backend` and `server`: 1 takes requests, 0 failing its checks or ejected.
pub const UPSTREAM_HEALTH: &str = "ficus_upstream_health";
/// Passive ejections by `backend` and `server`.
pub const EJECTIONS_TOTAL: &str = "ficus_upstream_ejections_total";
/// Active health checks by `backend`, `server` and `result` (`pass`, `fail`).
pub const HEALTH_CHECKS_TOTAL: &str = "ficus_health_checks_total";
/// Failover decisions by `frontend` and `outcome`: `retried` (sent again), `budget` (refused by the retry
/// budget), `not_replayable` (the body could not be sent again).
pub const RETRIES_TOTAL: &str = "ficus_retries_total";
/// A circuit breaker's state, by `frontend` and `middleware`: 0 standby, 1 tripped, 2 recovering.
pub const CIRCUIT_STATE: &str = "ficus_circuit_state";
/// Trace records dropped (the sender's queue was full or the socket refused them), by `frontend`.
pub const TRACE_DROPPED_TOTAL: &str = "ficus_trace_dropped_total";

/// The `frontend` label of requests that matched no frontend (404, or 400 before matching); no frontend id
/// can take this value (ids have no parentheses).
pub const UNROUTED: &str = "(unrouted)";
/// The `backend` or `server` label of a request answered before one was picked (503 no server, 413, ...).
pub const NONE: &str = "(none)";

/// Latency buckets in seconds: fine below 10 ms where a proxy's own overhead lives, coarse above.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How many distinct status codes a series keeps its own lock-free handle for; a proxy answers with a few
/// (200, 304, 404, 502, ...). Further codes are still counted exactly, through the recorder's own lookup.
const CODES_PER_SERIES: usize = 8;

/// The `code`-labelled counters of one (frontend, backend, server): the label is the exact status (`200`,
/// `404`), as Prometheus' Go client and Traefik write it. The first requests with a new status claim a slot
/// (a compare-and-swap), later ones find it by a scan of a few atomics: no lock, no allocation.
struct StatusCounters {
    codes: [AtomicU16; CODES_PER_SERIES],
    counters: [OnceLock<Counter>; CODES_PER_SERIES],
}

impl StatusCounters {
    fn new() -> Self {
        StatusCounters {
            codes: std::array::from_fn(|_| AtomicU16::new(0)),
            counters: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn increment(&self, status: u16, labels: (&str, &str, &str)) {
        for (code, counter) in self.codes.iter().zip(&self.counters) {
            let mut seen = code.load(Ordering::Acquire);
            if seen == 0 {
                seen = match code.compare_exchange(0, status, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => status,
                    Err(other) => other,
                };
            }
            if seen == status {
                counter.get_or_init(|| request_counter(labels, status)).increment(1);
                return;
            }
        }
        request_counter(labels, status).increment(1);
    }
}

fn request_counter((frontend, backend, server): (&str, &str, &str), status: u16) -> Counter {
    metrics::counter!(REQUESTS_TOTAL, "frontend" => frontend.to_string(), "backend" => backend.to_string(),
        "server" => server.to_string(), "code" => status.to_string())
}

/// Where a request went inside a backend: the server list in force (its `list` number, which no other
/// compiled list shares and which grows with every compile, and its length), the server's position in it
/// and its id.
#[derive(Debug, Clone, Copy)]
pub struct ServerAt<'a> {
    pub list: u64,
    pub len: usize,
    pub index: usize,
    pub id: &'a str,
}

/// Request counters and the latency histogram of one frontend.
///
/// The counters of each (backend, server) pair are found by the server's position in the backend's server
/// list. That list changes without the frontend being recompiled (a server put rebuilds one backend and no
/// frontend), so each backend of the split keeps its per-server slots for one list at a time, replaced on
/// the first request that comes with a newer list. The Prometheus counters behind the slots are the
/// recorder's, by label, so replacing the slots loses no count.
pub struct FrontendMetrics {
    frontend: Arc<str>,
    /// One per backend of the split, in split order.
    backends: Box<[BackendCounters]>,
    /// Requests answered before a backend was picked.
    no_backend: OnceLock<StatusCounters>,
    latency: OnceLock<Histogram>,
    /// The dashboard's counters of the frontend.
    live: Arc<live::Live>,
}

struct BackendCounters {
    /// Requests answered before a server was picked (503).
    no_server: OnceLock<StatusCounters>,
    servers: ArcSwapOption<ServerCounters>,
    /// The dashboard's counters of the backend.
    live: Arc<live::Live>,
}

/// The counters of one server list's servers, by position.
struct ServerCounters {
    list: u64,
    slots: Box<[OnceLock<StatusCounters>]>,
}

impl FrontendMetrics {
    /// `backends`: the ids of the frontend's split, in its order.
    pub fn new(frontend: &str, backends: &[&str]) -> Self {
        FrontendMetrics {
            frontend: frontend.into(),
            backends: backends
                .iter()
                .map(|id| BackendCounters {
                    no_server: OnceLock::new(),
                    servers: ArcSwapOption::empty(),
                    live: live::handle(live::Kind::Backend, id),
                })
                .collect(),
            no_backend: OnceLock::new(),
            latency: OnceLock::new(),
            live: live::handle(live::Kind::Frontend, frontend),
        }
    }

    /// Counts a request answered for this frontend. `backend`: its position in the split and its id;
    /// `server` is `None` when no server was picked (503).
    pub fn record(&self, backend: Option<(usize, &str)>, server: Option<ServerAt<'_>>, status: u16, elapsed: Duration) {
        let counters = backend.and_then(|(bi, id)| Some((self.backends.get(bi)?, id)));
        match (counters, server) {
            (Some((b, id)), Some(s)) => b.server(s, status, (&self.frontend, id, s.id)),
            (Some((b, id)), None) => {
                b.no_server.get_or_init(StatusCounters::new).increment(status, (&self.frontend, id, NONE))
            }
            (None, _) => {
                self.no_backend.get_or_init(StatusCounters::new).increment(status, (&self.frontend, NONE, NONE))
            }
        }
        self.latency
            .get_or_init(|| metrics::histogram!(REQUEST_DURATION, "frontend" => self.frontend.to_string()))
            .record(elapsed.as_secs_f64());
        self.live.record(status, elapsed);
        if let Some((b, _)) = counters {
            b.live.record(status, elapsed);
        }
    }
}

impl BackendCounters {
    fn server(&self, at: ServerAt<'_>, status: u16, labels: (&str, &str, &str)) {
        let current = self.servers.load();
        if let Some(c) = current.as_deref().filter(|c| c.list == at.list) {
            if let Some(slot) = c.slots.get(at.index) {
                slot.get_or_init(StatusCounters::new).increment(status, labels);
                return;
            }
        }
        if current.as_deref().is_some_and(|c| c.list > at.list) || at.index >= at.len {
            // A request picked from an older list than the slots already in place (it ended after a newer
            // one's first request): counted through the recorder's own lookup, once.
            request_counter(labels, status).increment(1);
            return;
        }
        let fresh = ServerCounters { list: at.list, slots: (0..at.len).map(|_| OnceLock::new()).collect() };
        fresh.slots[at.index].get_or_init(StatusCounters::new).increment(status, labels);
        // Two first requests of a new list may both store: either set of slots is right for that list.
        self.servers.store(Some(Arc::new(fresh)));
    }
}

/// Requests that matched no frontend (404, or a 400 before matching): `frontend="(unrouted)"`.
pub fn count_unrouted(status: u16) {
    static UNROUTED_COUNTERS: OnceLock<StatusCounters> = OnceLock::new();
    UNROUTED_COUNTERS.get_or_init(StatusCounters::new).increment(status, (UNROUTED, NONE, NONE));
}

/// Upstream failures by kind (`connect`, `timeout`, `reset`, ...). Rare, so labels are built per call.
pub fn upstream_error(backend: &str, server: &str, kind: &'static str) {
    metrics::counter!(UPSTREAM_ERRORS_TOTAL, "backend" => backend.to_string(), "server" => server.to_string(), "kind" => kind)
        .increment(1);
}

/// Installs the Prometheus recorder; the handle renders `/metrics`.
pub fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_string()), LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?;
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // A second install (tests running several apps in one process) keeps the first recorder; still usable.
    let _ = metrics::set_global_recorder(recorder);
    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS_TOTAL,
        "Requests answered, by frontend, backend, server and status code (frontend=\"(unrouted)\" when none matched)"
    );
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Time from request head to response head, by frontend");
    describe_counter!(UPSTREAM_ERRORS_TOTAL, "Failed upstream exchanges, by backend, server and kind");
    describe_gauge!(OPEN_CONNECTIONS, "Client connections open now, by listener");
    describe_counter!(CONNECTIONS_TOTAL, "Client connections accepted, by listener");
    describe_counter!(CONNECTIONS_REFUSED_TOTAL, "Connections closed at accept because the listener was at its cap");
    describe_gauge!(
        PARKED_CONNECTIONS,
        "Idle HTTP/1.1 keep-alive connections holding no buffers (part of ficus_open_connections), by listener"
    );
    describe_gauge!(CONFIG_GENERATION, "Generation of the routing table in service");
    describe_counter!(CONFIG_RELOADS_TOTAL, "Routing table builds");
    describe_counter!(CONFIG_REJECTED_TOTAL, "Config values refused (the previous good value kept), by kind");
    describe_gauge!(CONFIG_ERRORS, "Config problems present now (see /status)");
    describe_gauge!(CONFIG_FRONTENDS, "Frontends in the routing table");
    describe_gauge!(CONFIG_SERVERS, "Servers in the routing table (draining excluded)");
    describe_gauge!(BUILD_INFO, "Always 1; the version label is the running Ficus version");
}

/// Log output format, shared with the companion services.
pub use serve::logging::LogFormat;

/// Where log lines go, and what keeps them flowing until the process exits.
pub struct LogGuards {
    _stdout: tracing_appender::non_blocking::WorkerGuard,
    _access: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Sets up tracing. `RUST_LOG` overrides the default filter. Logs go through a background writer so a slow
/// terminal or pipe never stalls request handling (access-log lines in batches per runtime thread, see
/// [`batch`] and [`access`]); the guards flush them on exit. With `access_file`, access lines (the batched
/// ones and the `access` target's other lines) go to that file, reopened on SIGHUP, and the rest to stdout.
pub fn init_logging(
    format: LogFormat,
    access_log: bool,
    access_file: Option<&std::path::Path>,
) -> std::io::Result<LogGuards> {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let default = if access_log { "info" } else { "info,access=off" };
    let filter = serve::logging::filter(default);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    access::set_format(format);
    let access_writer = match access_file {
        Some(path) => Some(tracing_appender::non_blocking(access::ReopeningFile::open(path.to_path_buf())?)),
        None => None,
    };
    // Other log lines are few (config changes, warnings, errors) and wanted at once: they go to the writer
    // thread line by line, as before; only access lines are batched.
    let (access_guard, result) = match access_writer {
        Some((file, file_guard)) => {
            batch::set_sink(file.clone());
            let is_access = |m: &tracing::Metadata<'_>| m.target() == "access";
            let make = writer.with_filter(move |m| !is_access(m)).and(file.with_filter(is_access));
            let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(make).with_target(true);
            let result = match format {
                // The file gets no colours, and stdout keeps them only on a terminal.
                LogFormat::Text => builder.with_ansi(false).try_init(),
                LogFormat::Json => builder.json().flatten_event(true).try_init(),
            };
            (Some(file_guard), result)
        }
        None => {
            batch::set_sink(writer.clone());
            let builder =
                tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(true).with_ansi(ansi);
            let result = match format {
                LogFormat::Text => builder.try_init(),
                LogFormat::Json => builder.json().flatten_event(true).try_init(),
            };
            (None, result)
        }
    };
    if let Err(e) = result {
        eprintln!("logging already set up: {e}");
    }
    Ok(LogGuards { _stdout: guard, _access: access_guard })
}

/// Reopens the access-log file on every SIGHUP (what logrotate sends after moving the file away). Without
/// an access-log file SIGHUP is only logged: it no longer stops the process, as its default action would.
pub async fn reopen_access_log_on_sighup(has_file: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; the access log will not be reopened");
        return;
    };
    while hup.recv().await.is_some() {
        if has_file {
            access::request_reopen();
            tracing::info!("SIGHUP: reopening the access log before its next line");
        } else {
            tracing::info!("SIGHUP: no access-log file to reopen");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend's server list changes under a frontend that is not recompiled: each request is counted under
    /// the server it went to, whether it came with the newer list, the older one (a request that ended after
    /// the change), or the newer one again.
    #[test]
    fn server_counters_follow_the_backends_current_server_list() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let m = FrontendMetrics::new("f", &["b"]);
            let at = |list, len, index, id| Some(ServerAt { list, len, index, id });
            let ms = Duration::from_millis(1);
            m.record(Some((0, "b")), at(1, 2, 0, "s1"), 200, ms);
            m.record(Some((0, "b")), at(1, 2, 1, "s2"), 200, ms);
            m.record(Some((0, "b")), at(2, 1, 0, "s3"), 200, ms);
            m.record(Some((0, "b")), at(1, 2, 1, "s2"), 502, ms);
            m.record(Some((0, "b")), at(2, 1, 0, "s3"), 200, ms);
            m.record(Some((0, "b")), None, 503, ms);
            m.record(None, None, 404, ms);
        });
        let text = handle.render();
        for (labels, want) in [
            (r#"backend="b",server="s1",code="200""#, 1),
            (r#"backend="b",server="s2",code="200""#, 1),
            (r#"backend="b",server="s2",code="502""#, 1),
            (r#"backend="b",server="s3",code="200""#, 2),
            (r#"backend="b",server="(none)",code="503""#, 1),
            (r#"backend="(none)",server="(none)",code="404""#, 1),
        ] {
            let series = format!("{REQUESTS_TOTAL}{{frontend=\"f\",{labels}}} {want}");
            assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
        }
    }
}
