//! The admin listener (loopback by default): `/metrics` (Prometheus), `/status` (generation, counts, current
//! errors, draining servers, source state), `/config` (the validated config in force), `/health`.
//!
//! It reads what the reload loop publishes and never touches the request path's data structures in a way
//! that could slow it down.

use crate::lifecycle::Shutdown;
use crate::table::reload::StatusBoard;
use crate::table::SharedTable;
use crate::upstream::Registry;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::PrometheusHandle;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

pub struct Admin {
    pub metrics: PrometheusHandle,
    pub status: Arc<StatusBoard>,
    pub registry: Arc<Registry>,
    pub table: SharedTable,
}

impl Admin {
    /// Draining servers change without a reload (requests finish), so their gauges are set when scraped.
    fn draining_gauges(&self) {
        // Servers reported at the last scrape and gone now are set to 0, not left at a stale count.
        static SHOWN: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
        let draining = self.registry.draining();
        metrics::gauge!(crate::telemetry::DRAINING_SERVERS).set(draining.len() as f64);
        let mut shown = SHOWN.lock().unwrap_or_else(|p| p.into_inner());
        for (backend, server) in shown.drain(..) {
            if !draining.iter().any(|d| d.backend == backend && d.server == server) {
                metrics::gauge!(crate::telemetry::DRAINING_INFLIGHT, "backend" => backend, "server" => server).set(0.0);
            }
        }
        for d in &draining {
            metrics::gauge!(crate::telemetry::DRAINING_INFLIGHT, "backend" => d.backend.clone(), "server" => d.server.clone())
                .set(d.inflight as f64);
            shown.push((d.backend.clone(), d.server.clone()));
        }
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match req.uri().path() {
            "/metrics" => {
                self.draining_gauges();
                self.metrics.run_upkeep();
                let mut body = self.metrics.render();
                if let Some(process) = crate::telemetry::process::ProcessStats::read() {
                    process.render(&mut body);
                }
                let mut r = text(StatusCode::OK, body);
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4"));
                r
            }
            "/status" => json(&self.status.snapshot(&self.registry)),
            "/config" => json(&*self.table.load().config),
            "/health" | "/health/live" => text(StatusCode::OK, "ok\n"),
            "/health/ready" => {
                if self.table.load().generation > 0 {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "no routing table yet\n")
                }
            }
            "/" => text(StatusCode::OK, "ficus admin: /metrics /status /config /health /health/ready\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot render: {e}\n")),
    }
}

/// Serves the admin endpoints until shutdown.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: Shutdown) {
    tracing::info!(addr = ?listener.local_addr().ok(), "admin listening");
    loop {
        let (stream, _) = tokio::select! {
            res = listener.accept() => match res {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.answer(&req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
