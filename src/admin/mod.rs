//! The admin listener (loopback by default): `/metrics` (Prometheus), `/status` (generation, counts, current
//! errors, draining servers, source state), `/config` (the validated config in force), `/health`, the
//! dashboard (`/dashboard/`; `/` redirects there), and `/shadow/<frontend>` (the comparison report of a
//! frontend's shadow traffic).
//!
//! It answers only requests whose `Host` is a loopback name, its own address or one configured in
//! `admin.allowed_hosts` (403 otherwise): a web page in a local browser can point its own name at 127.0.0.1
//! (DNS rebinding), but its requests then still carry that name. It has its own small connection cap, out of
//! the descriptors the proxy listeners leave free, so it answers while they are full.
//!
//! When `admin.token` is set, every endpoint but `/health*` wants it (`Authorization: Bearer <token>`, or basic
//! auth with the token as password, which is what a browser asks for): for an admin listener bound beyond
//! loopback. The dashboard (`/dashboard/`, see [`dashboard`]) is read-only like everything else here.
//!
//! It reads what the reload loop publishes and never touches the request path's data structures in a way
//! that could slow it down.

pub mod dashboard;
mod gauges;

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
    pub auth: Auth,
    pub dashboard: Arc<dashboard::Dashboard>,
}

/// The admin token, when one is configured (`admin.token`).
#[derive(Default)]
pub struct Auth(Option<String>);

impl Auth {
    pub fn new(token: Option<String>) -> Self {
        Auth(token.filter(|t| !t.is_empty()))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// True without a token, or when the request carries it as a bearer token or a basic-auth password.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.0 else { return true };
        let Some(value) = authorization else { return false };
        let given = if let Some(bearer) = strip_prefix_ignore_case(value, b"bearer ") {
            bearer.trim_ascii().to_vec()
        } else if let Some(basic) = strip_prefix_ignore_case(value, b"basic ") {
            match base64_decode(basic.trim_ascii()) {
                // Any user name: the token is the secret.
                Some(pair) => match pair.iter().position(|b| *b == b':') {
                    Some(i) => pair[i + 1..].to_vec(),
                    None => return false,
                },
                None => return false,
            }
        } else {
            return false;
        };
        constant_time_eq(&given, token.as_bytes())
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)).then(|| &value[prefix.len()..])
}

/// Compares every byte whatever the first difference, so the time taken does not tell how much was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64 with padding (what browsers send for basic auth); `None` for anything else.
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if input.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    for chunk in input.chunks(4) {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
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
        // Thread-per-core mode: how the connections are spread over the workers.
        if let (Some(map), Some(workers)) = (status.as_object_mut(), crate::worker::get()) {
            let list = workers.connections().into_iter().map(|n| serde_json::json!({ "connections": n })).collect();
            map.insert("workers".to_string(), serde_json::Value::Array(list));
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
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
            r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = req.uri().path();
        if !path.starts_with("/health")
            && !self.auth.allows(req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes()))
        {
            let mut r = text(StatusCode::UNAUTHORIZED, "this admin listener wants its token (admin.token)\n");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"ficus admin\""));
            return r;
        }
        let table = self.table.load();
        let status = || self.status.snapshot(&self.registry);
        if let Some(r) = self.dashboard.answer(path, req.uri().query(), status, &table, &self.registry) {
            return r;
        }
        match path {
            "/metrics" => {
                self.metrics.run_upkeep();
                let mut body = self.metrics.render();
                gauges::render(&status(), &mut body);
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
            path => match path.strip_prefix("/shadow/").map(|f| table.shadows.report(f)) {
                Some(Some(report)) => json(&report),
                Some(None) => text(StatusCode::NOT_FOUND, "no shadow in force for this frontend\n"),
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
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
        max_head_bytes: serve::http::DEFAULT_MAX_HEAD_BYTES,
    };
    tokio::spawn(admin.dashboard.clone().run(admin.table.clone(), shutdown.clone()));
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

    #[test]
    fn the_token_is_taken_as_bearer_or_as_a_basic_auth_password() {
        assert!(Auth::new(None).allows(None));
        assert!(Auth::new(Some(String::new())).allows(None));
        let auth = Auth::new(Some("s3cret".to_string()));
        assert!(!auth.allows(None));
        assert!(auth.allows(Some(b"Bearer s3cret")));
        assert!(auth.allows(Some(b"bearer  s3cret ")));
        assert!(!auth.allows(Some(b"Bearer s3cre")));
        // `ops:s3cret` and `:s3cret`
        assert!(auth.allows(Some(b"Basic b3BzOnMzY3JldA==")));
        assert!(auth.allows(Some(b"Basic OnMzY3JldA==")));
        // `ops:wrong`, no colon, not base64
        assert!(!auth.allows(Some(b"Basic b3BzOndyb25n")));
        assert!(!auth.allows(Some(b"Basic czNjcmV0")));
        assert!(!auth.allows(Some(b"Basic !!!!")));
        assert!(!auth.allows(Some(b"Digest s3cret")));
    }

    #[test]
    fn base64_decodes_padded_input_only() {
        assert_eq!(base64_decode(b"").unwrap(), b"");
        assert_eq!(base64_decode(b"Zg==").unwrap(), b"f");
        assert_eq!(base64_decode(b"Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode(b"Zm9v").unwrap(), b"foo");
        assert!(base64_decode(b"Zm9").is_none());
        assert!(base64_decode(b"Z===").is_none());
    }
}
