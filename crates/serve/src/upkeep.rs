//! The Prometheus recorder's upkeep, the same in every binary that exports metrics: histogram samples pile up
//! between scrapes, and the recorder runs no task of its own, so one task folds them in regularly and memory
//! stays flat even when nobody scrapes `/metrics`. It sits beside the metrics path, never in a request.

use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::time::Duration;

/// How often the samples are folded in.
pub const EVERY: Duration = Duration::from_secs(5);

/// Runs the upkeep every [`EVERY`] until `stop` resolves; spawn it once after installing the recorder.
pub async fn metrics_upkeep(handle: PrometheusHandle, stop: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(EVERY);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            () = &mut stop => return,
        }
    }
}
