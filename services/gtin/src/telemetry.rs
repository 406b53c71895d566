//! Observability in one place: every metric name the service exports and the Prometheus recorder (logging is
//! the serving kit's). Handlers and the store refer to the constants here, so the full list of series can be
//! read in one screen (the Sozu habit).

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter, labels `route` and `code` (the exact status, `200`; the label name Ficus and Prometheus' clients use).
pub const HTTP_REQUESTS: &str = "gtin_http_requests_total";
/// Histogram (seconds), label `route`: whole request handling, body read to response built.
pub const HTTP_DURATION: &str = "gtin_http_request_duration_seconds";
/// Histogram (seconds): one snapshot lookup, search plus record decode.
pub const LOOKUP_DURATION: &str = "gtin_lookup_duration_seconds";
/// Counter, label `result` (`found`, `not_found`, `invalid`, `unprocessable`).
pub const LOOKUPS: &str = "gtin_lookups_total";
/// Gauge: products in the snapshot being served.
pub const SNAPSHOT_PRODUCTS: &str = "gtin_snapshot_products";
/// Gauge: how many swaps (reloads and rollbacks) this process has made; 0 before the first snapshot.
pub const SNAPSHOT_GENERATION: &str = "gtin_snapshot_generation";
/// Gauge: build time of the snapshot being served, Unix seconds.
pub const SNAPSHOT_BUILT_AT: &str = "gtin_snapshot_built_at_seconds";
/// Counter, label `result` (`swapped`, `unchanged`, `failed`, `rolled_back`).
pub const RELOADS: &str = "gtin_snapshot_reloads_total";
/// Gauge: open client connections.
pub const CONNECTIONS: &str = "gtin_http_connections";
/// Counter: connections that found the service at `--max-connections` and waited in the accept queue.
pub const CONNECTIONS_WAITED: &str = "gtin_http_connections_waited_total";

const LATENCY_BUCKETS: [f64; 14] = [
    0.000_000_5,
    0.000_001,
    0.000_002,
    0.000_005,
    0.000_010,
    0.000_025,
    0.000_050,
    0.000_100,
    0.000_250,
    0.000_500,
    0.001,
    0.005,
    0.025,
    0.1,
];

/// Installs the global Prometheus recorder. Once per process: the handle renders `/metrics`.
pub fn install_metrics() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &LATENCY_BUCKETS)?
        .install_recorder()?;
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route and status code");
    metrics::describe_histogram!(HTTP_DURATION, metrics::Unit::Seconds, "request handling time by route");
    metrics::describe_histogram!(LOOKUP_DURATION, metrics::Unit::Seconds, "snapshot lookup time");
    metrics::describe_counter!(LOOKUPS, "GTIN lookups by result");
    metrics::describe_gauge!(SNAPSHOT_PRODUCTS, "products in the snapshot being served");
    metrics::describe_gauge!(SNAPSHOT_GENERATION, "snapshot swaps made by this process");
    metrics::describe_gauge!(SNAPSHOT_BUILT_AT, "build time of the served snapshot, Unix seconds");
    metrics::describe_counter!(RELOADS, "snapshot reloads and rollbacks by result");
    metrics::describe_gauge!(CONNECTIONS, "open client connections");
    metrics::describe_counter!(CONNECTIONS_WAITED, "connections that waited for a free slot at the cap");
    metrics::gauge!(SNAPSHOT_GENERATION).set(0.0);
    Ok(handle)
}
