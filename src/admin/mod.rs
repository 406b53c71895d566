//! The admin listener (loopback by default): `/metrics` (Prometheus), `/status` (generation, counts, current
//! errors, draining servers, source state), `/config` (the validated config in force), `/health`.
//!
//! It answers only requests whose `Host` is a loopback name, its own address or one configured in
//! `admin.allowed_hosts` (403 otherwise): a web page in a local browser can point its own name at 127.0.0.1
//! (DNS rebinding), but its requests then still carry that name. It has its own small connection cap, out of
//! the descriptors the proxy listeners leave free, so it answers while they are full.
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
use metrics_exporter_prometheus::PrometheusHandle;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub struct Admin {
    pub metrics: PrometheusHandle,
    pub status: Arc<StatusBoard>,
    pub registry: Arc<Registry>,
    pub table: SharedTable,
    pub hosts: AllowedHosts,
}

/// Connections the admin listener serves at once.
const MAX_CONNECTIONS: usize = 64;

/// The `Host` values the admin listener answers, lower case, without port.
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    pub fn new(addr: std::net::SocketAddr, configured: &[String]) -> Self {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|h| h.to_string())
            .chain(configured.iter().map(|h| h.to_ascii_lowercase()))
            .collect();
        if !addr.ip().is_unspecified() {
            hosts.push(match addr.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            });
        }
        AllowedHosts(hosts)
    }

    /// True for an allowed name with or without a port, and for a request naming no host (HTTP/1.0 tools;
    /// a browser always sends one).
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        // `[::1]:8182`, `127.0.0.1:8182`, `localhost`: the port is whatever follows the last `:` after any `]`.
        let name = match host.rfind(':') {
            Some(i) if !host[i..].contains(']') => &host[..i],
            _ => host,
        };
        self.0.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
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

    /// Health changes without a reload (checks, ejections), so its gauges are set when scraped.
    fn health_gauges(&self) {
        for s in self.registry.health() {
            let up = matches!(s.state, crate::upstream::health::State::Healthy);
            metrics::gauge!(crate::telemetry::UPSTREAM_HEALTH, "backend" => s.backend, "server" => s.server)
                .set(if up { 1.0 } else { 0.0 });
        }
    }

    /// The reload loop's status, with each failover frontend's retries (they live in the table in service).
    fn status(&self) -> Response<Full<Bytes>> {
        let mut status = match serde_json::to_value(self.status.snapshot(&self.registry)) {
            Ok(v) => v,
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot render: {e}\n")),
        };
        let table = self.table.load();
        let mut failover: Vec<_> =
            table.router.frontends().filter_map(|f| f.failover.as_ref().map(|fo| fo.status(&f.id))).collect();
        failover.sort_by(|a, b| a.frontend.cmp(&b.frontend));
        if let (Some(map), Ok(list)) = (status.as_object_mut(), serde_json::to_value(failover)) {
            map.insert("failover".to_string(), list);
        }
        json(&status)
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let host = match req.headers().get(header::HOST) {
            Some(h) => Some(h.to_str().unwrap_or("?")),
            None => req.uri().authority().map(|a| a.as_str()),
        };
        if !self.hosts.allows(host) {
            return text(StatusCode::FORBIDDEN, "this Host is not served here; see admin.allowed_hosts\n");
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match req.uri().path() {
            "/metrics" => {
                self.draining_gauges();
                self.health_gauges();
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
            "/status" => self.status(),
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

/// The longest an admin client may take to send a request head (shorter when the proxy listeners' own
/// `header_timeout` is): short, so idle clients cannot hold the few admin connections for long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin endpoints until shutdown, through the serving kit's loop: a full admin listener closes new
/// connections at once (counted as refused), and at shutdown its in-flight answers finish.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, header_read_timeout: Duration, shutdown: Shutdown) {
    tracing::info!(addr = ?listener.local_addr().ok(), "admin listening");
    let options = serve::http::Options {
        name: "admin",
        max_connections: MAX_CONNECTIONS,
        when_full: serve::http::WhenFull::Close,
        refused: metrics::counter!(crate::telemetry::CONNECTIONS_REFUSED_TOTAL, "listener" => "admin"),
        open: None,
        header_read_timeout,
        drain_timeout: Duration::from_secs(5),
        http2_max_concurrent_streams: 16,
    };
    let service = move |_peer| {
        let admin = admin.clone();
        service_fn(move |req| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(admin.answer(&req)) }
        })
    };
    serve::http::serve(listener, options, service, async move { shutdown.wait().await }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_own_and_configured_hosts_only() {
        let hosts = AllowedHosts::new("127.0.0.1:8182".parse().unwrap(), &["Ops.Example".to_string()]);
        for ok in ["localhost", "localhost:8182", "127.0.0.1:8182", "[::1]:8182", "[::1]", "ops.example:80"] {
            assert!(hosts.allows(Some(ok)), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8182", "localhost.evil.example", "127.0.0.2"] {
            assert!(!hosts.allows(Some(bad)), "{bad}");
        }
        assert!(hosts.allows(None));
        let hosts = AllowedHosts::new("10.1.2.3:8182".parse().unwrap(), &[]);
        assert!(hosts.allows(Some("10.1.2.3:8182")));
    }
}
