//! Metric names (all of them, in one place), metric handles prepared at table-build time, and log setup.
//!
//! Per request the proxy touches only pre-resolved handles: a counter for (frontend, backend, server,
//! status) is registered the first time that combination is seen and then reused, so the hot path never
//! formats labels or hashes a metric key.

pub mod access;
pub mod batch;
pub mod live;
pub mod process;

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

/// Request counters and the latency histogram of one frontend.
pub struct FrontendMetrics {
    frontend: Arc<str>,
    /// Start of each backend's servers in `slots`, in split order; one extra slot per backend for "no server".
    offsets: Box<[usize]>,
    slots: Box<[OnceLock<StatusCounters>]>,
    /// Requests answered before a backend was picked.
    no_backend: OnceLock<StatusCounters>,
    latency: OnceLock<Histogram>,
    /// The dashboard's counters of the frontend and of each backend of its split, in split order.
    live: Arc<live::Live>,
    live_backends: Box<[Arc<live::Live>]>,
}

impl FrontendMetrics {
    /// `backends`: each backend's id and server count, in the order of the frontend's split.
    pub fn new(frontend: &str, backends: &[(&str, usize)]) -> Self {
        let mut offsets = Vec::with_capacity(backends.len());
        let mut total = 0;
        for (_, n) in backends {
            offsets.push(total);
            total += n + 1;
        }
        FrontendMetrics {
            frontend: frontend.into(),
            offsets: offsets.into_boxed_slice(),
            slots: (0..total).map(|_| OnceLock::new()).collect(),
            no_backend: OnceLock::new(),
            latency: OnceLock::new(),
            live: live::handle(live::Kind::Frontend, frontend),
            live_backends: backends.iter().map(|(id, _)| live::handle(live::Kind::Backend, id)).collect(),
        }
    }

    /// Counts a request answered for this frontend. `server` is `None` when no server was picked (503).
    pub fn record(
        &self,
        backend: Option<(usize, &str)>,
        server: Option<(usize, &str)>,
        status: u16,
        elapsed: Duration,
    ) {
        let slot = backend.and_then(|(bi, _)| {
            let base = *self.offsets.get(bi)?;
            let next = self.offsets.get(bi + 1).copied().unwrap_or(self.slots.len());
            let idx = match server {
                Some((si, _)) => base + si,
                None => next - 1,
            };
            (idx < next).then_some(idx)
        });
        let b = backend.map_or(NONE, |(_, b)| b);
        let s = server.map_or(NONE, |(_, s)| s);
        let counters = match slot {
            Some(idx) => &self.slots[idx],
            None => &self.no_backend,
        };
        counters.get_or_init(StatusCounters::new).increment(status, (&self.frontend, b, s));
        self.latency
            .get_or_init(|| metrics::histogram!(REQUEST_DURATION, "frontend" => self.frontend.to_string()))
            .record(elapsed.as_secs_f64());
        self.live.record(status, elapsed);
        if let Some(live) = backend.and_then(|(bi, _)| self.live_backends.get(bi)) {
            live.record(status, elapsed);
        }
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
