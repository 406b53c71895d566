//! Operational endpoints: readiness, metrics, and the admin actions that swap snapshots (`/admin/reload`,
//! `/admin/rollback`). They change what is served only through the [`crate::store::Store`], all or nothing.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::json::{error, json};
use super::{App, HttpResponse};
use crate::store::{Loaded, ReloadOutcome, StoreError};
use crate::telemetry as t;

pub(super) async fn reload(app: &Arc<App>) -> HttpResponse {
    let worker = Arc::clone(app);
    // Scanning the directory and unlinking old files is blocking I/O; keep it off the request threads.
    let result = tokio::task::spawn_blocking(move || worker.store.reload()).await;
    match result {
        Ok(Ok(outcome)) => {
            let (status, path, products, generation) = match outcome {
                ReloadOutcome::Swapped { path, products, generation } => ("swapped", path, products, generation),
                ReloadOutcome::Unchanged { path, products, generation } => ("unchanged", path, products, generation),
            };
            metrics::counter!(t::RELOADS, "result" => status).increment(1);
            if let Some(loaded) = app.store.loaded() {
                publish_gauges(&loaded);
            }
            let snapshot = path.file_name().map(|n| n.to_string_lossy().into_owned());
            json(StatusCode::OK, &AdminJson { status, snapshot, products, generation })
        }
        Ok(Err(e)) => {
            metrics::counter!(t::RELOADS, "result" => "failed").increment(1);
            tracing::error!(error = %e, "reload failed; still serving the previous snapshot");
            error(StatusCode::INTERNAL_SERVER_ERROR, "reload_failed", e.to_string(), None, None)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload_failed", e.to_string(), None, None),
    }
}

pub(super) async fn rollback(app: &Arc<App>) -> HttpResponse {
    let worker = Arc::clone(app);
    match tokio::task::spawn_blocking(move || worker.store.rollback()).await {
        Ok(Ok(loaded)) => {
            metrics::counter!(t::RELOADS, "result" => "rolled_back").increment(1);
            publish_gauges(&loaded);
            let snapshot = loaded.current.path().file_name().map(|n| n.to_string_lossy().into_owned());
            let body = AdminJson {
                status: "rolled_back",
                snapshot,
                products: loaded.current.len(),
                generation: loaded.generation,
            };
            json(StatusCode::OK, &body)
        }
        Ok(Err(e @ StoreError::NoPrevious)) => {
            error(StatusCode::CONFLICT, "no_previous_snapshot", e.to_string(), None, None)
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "rollback_failed", e.to_string(), None, None),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "rollback_failed", e.to_string(), None, None),
    }
}

/// Sets the snapshot gauges from what is being served.
pub fn publish_gauges(loaded: &Loaded) {
    metrics::gauge!(t::SNAPSHOT_PRODUCTS).set(loaded.current.len() as f64);
    metrics::gauge!(t::SNAPSHOT_GENERATION).set(loaded.generation as f64);
    metrics::gauge!(t::SNAPSHOT_BUILT_AT).set(loaded.current.header().built_at as f64);
}

pub(super) fn ready(app: &App) -> HttpResponse {
    match app.store.loaded() {
        Some(loaded) => json(StatusCode::OK, &Status::ready(&loaded)),
        None => json(StatusCode::SERVICE_UNAVAILABLE, &Status::not_ready()),
    }
}

pub(super) fn not_ready() -> HttpResponse {
    let message = "no snapshot loaded yet: run `gtin-service sync`, then POST /admin/reload".to_string();
    error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message, None, None)
}

pub(super) fn render_metrics(app: &App) -> HttpResponse {
    let text = app.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
#[derive(Serialize)]
pub(super) struct AdminJson {
    status: &'static str,
    snapshot: Option<String>,
    products: usize,
    generation: u64,
}

#[derive(Serialize)]
pub(super) struct Status {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    products: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<String>,
}

impl Status {
    pub(super) fn live() -> Status {
        Status { status: "live", products: None, generation: None, snapshot: None }
    }
    pub(super) fn not_ready() -> Status {
        Status { status: "not_ready", products: None, generation: None, snapshot: None }
    }
    pub(super) fn ready(loaded: &Loaded) -> Status {
        Status {
            status: "ready",
            products: Some(loaded.current.len()),
            generation: Some(loaded.generation),
            snapshot: loaded.current.path().file_name().map(|n| n.to_string_lossy().into_owned()),
        }
    }
}
