//! The request path. One fixed series of phases per request:
//!
//! ```text
//!  match route ──> pick backend ──> pick server ──> build upstream request ──> send ──> filter response ──> log
//!  (404)           (503)            (503)           hop-by-hop, X-Forwarded-*,  (502/504)  hop-by-hop,       on body end
//!                                                   Host, X-Request-Id                     X-Request-Id
//! ```
//!
//! The table is loaded once per request and that `Arc` is held until the response head is built (the chosen
//! server's `Arc` lives until the body ends), so a reload in the middle of a request changes nothing for it.
//! Errors are small JSON bodies that name the frontend, and say where the fault is: 404 no route, 503 no
//! server, 502 upstream unreachable or reset, 504 upstream timeout.

mod body;
mod error;
pub mod headers;
pub mod limits;
pub mod path;

pub use crate::upstream::{RequestBody, RequestBodyError};
pub use body::{Completion, ProxyBody};
pub use error::{ProxyError, UpstreamFailure};

use crate::lifecycle::tracker::Tracker;
use crate::route::Request as RouteRequest;
use crate::table::{Frontend, SharedTable};
use crate::telemetry;
use headers::{RequestIds, X_REQUEST_ID};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What the proxy knows about one client connection, worked out once at accept time.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    pub tls: bool,
    /// The listener trusts X-Forwarded-* from its clients (it sits behind another proxy or load balancer).
    pub trust_forward_header: bool,
    client_ip: HeaderValue,
    proto: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, listener: Arc<str>, tls: bool, trust_forward_header: bool) -> Self {
        let client_ip = HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        ConnInfo { peer, listener, tls, trust_forward_header, client_ip, proto }
    }
}

/// Shared by every connection of every listener.
pub struct Proxy {
    pub table: SharedTable,
    /// Open tunnels (WebSocket and other upgrades): a drain waits for them, within its deadline.
    pub tunnels: Tracker,
    ids: RequestIds,
    limits: limits::Limits,
}

impl Proxy {
    pub fn new(table: SharedTable) -> Self {
        Proxy { table, tunnels: Tracker::new(), ids: RequestIds::new(), limits: limits::Limits::default() }
    }

    pub fn with_limits(mut self, limits: limits::Limits) -> Self {
        self.limits = limits;
        self
    }

    pub async fn handle(&self, conn: &ConnInfo, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let table = self.table.load_full();

        let request_id = match req.headers().get(&X_REQUEST_ID) {
            Some(id) if !id.is_empty() && id.len() <= 200 => id.clone(),
            _ => self.ids.next(),
        };
        // Phase 1: check the head (sizes, one host, framing), normalise the path, match.
        // A request with both Content-Length and Transfer-Encoding (the request-smuggling shape) never reaches
        // here with both: hyper's parser keeps the chunked framing and drops Content-Length, and the upstream
        // request is re-framed from the body (tests/proxy.rs covers it).
        let host_value = match headers::check_head(&req, &self.limits) {
            Ok(h) => h,
            Err(err) => return reject(&req, conn, err, &request_id, start),
        };
        let host = host_value.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
        let path = match path::normalize(req.uri().path(), self.limits.encoded_slash) {
            Ok(p) => p,
            Err(e) => return reject(&req, conn, ProxyError::BadRequest(e.reason()), &request_id, start),
        };
        let found =
            table.router.find(&RouteRequest { method: req.method(), host, path: &path, headers: req.headers() });
        let normalized_path = match path {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let Some(frontend) = found.cloned() else {
            telemetry::count_unrouted(404);
            let err = ProxyError::NoRoute;
            log_error(&req, conn, None, &err, &request_id, start);
            return err.response(None, &request_id);
        };

        // Phase 2: pick the backend of the split, then a server of that backend.
        let Some((bi, backend)) = frontend.split.pick_indexed() else {
            return self.fail(&frontend, None, &req, conn, ProxyError::NoBackend, &request_id, start);
        };
        let backend = backend.clone();
        let Some((si, server)) = backend.servers.pick_indexed() else {
            let err = ProxyError::NoServer { backend: backend.id.clone() };
            return self.fail(&frontend, Some((bi, &backend.id)), &req, conn, err, &request_id, start);
        };
        let server = server.clone();
        drop(table);

        if let (Some(limit), Some(len)) = (frontend.max_body_bytes, content_length(req.headers())) {
            if len > limit {
                let err = ProxyError::BodyTooLarge { limit };
                return self.fail(&frontend, Some((bi, &backend.id)), &req, conn, err, &request_id, start);
            }
        }

        // Phase 3: the upstream request.
        let upgrade = headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let upgrade_value = if upgrade { req.headers().get(header::UPGRADE).cloned() } else { None };
        let method = req.method().clone();
        let client_version = req.version();
        let log_req = access_log_enabled().then(|| RequestLog::new(&req, host_value.as_ref()));
        let (mut parts, body) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        // Room for what is added below (X-Forwarded-*, Host, X-Request-Id) in one step: hyper sizes the map to
        // the headers it parsed, so each insert would otherwise grow it.
        parts.headers.reserve(5);
        if let Some(proto) = upgrade_value {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto);
        }
        let trust = frontend.trust_forward_header || conn.trust_forward_header;
        headers::set_forwarded(&mut parts.headers, trust, &conn.client_ip, &conn.proto, host_value.as_ref());
        let upstream_host = match (&frontend.hostname, frontend.pass_host_header, &host_value) {
            (Some(h), _, _) => h.clone(),
            (None, true, Some(h)) => h.clone(),
            _ => server.host_header.clone(),
        };
        parts.headers.insert(header::HOST, upstream_host);
        parts.headers.insert(X_REQUEST_ID.clone(), request_id.clone());
        // Origin form (`/path?query`): the server is reached directly, and the Host header names it.
        let origin_form = match normalized_path {
            Some(p) => {
                let pq = match parts.uri.query() {
                    Some(q) => format!("{p}?{q}"),
                    None => p,
                };
                Uri::try_from(pq).ok()
            }
            // An HTTP/1.1 request target usually is origin form already, and is forwarded as it came.
            None if parts.uri.scheme().is_none() && parts.uri.authority().is_none() => {
                Some(std::mem::take(&mut parts.uri))
            }
            None => Some(parts.uri.path_and_query().cloned().map_or_else(|| Uri::from_static("/"), Uri::from)),
        };
        parts.uri = match origin_form {
            Some(u) if !u.path().is_empty() => u,
            Some(_) => Uri::from_static("/"),
            None => {
                let err = ProxyError::BadRequest("request target cannot be forwarded");
                return self.fail(
                    &frontend,
                    Some((bi, &backend.id)),
                    &Request::from_parts(parts, ()),
                    conn,
                    err,
                    &request_id,
                    start,
                );
            }
        };
        // Upstreams speak HTTP/1.1 whatever the client spoke.
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, RequestBody::new(body, frontend.max_body_bytes));

        // Phase 4: send, bounded by the backend's Read timeout (time to the response head).
        let guard = server.begin();
        let sent = tokio::select! {
            // Counted from the request's start, read once already, rather than from another clock read.
            sent = tokio::time::timeout_at(
                tokio::time::Instant::from_std(start) + backend.settings.read_timeout,
                server.pool.send(upstream_req, start),
            ) => sent,
            _ = server.aborted() => {
                telemetry::upstream_error(&backend.id, &server.id, "drain_deadline");
                let err = ProxyError::Upstream {
                    failure: UpstreamFailure::DrainDeadline(backend.settings.drain_timeout),
                    server: server.id.clone(),
                    backend: backend.id.clone(),
                };
                let status = err.status().as_u16();
                frontend.metrics.record(Some((bi, &backend.id)), Some((si, &server.id)), status, start.elapsed());
                tracing::warn!(target: "access", frontend = %frontend.id, backend = %backend.id, server = %server.id,
                    method = %method, status, request_id = ?request_id, "cut by the server's drain deadline");
                return err.response(Some(&frontend.id), &request_id);
            }
        };
        let (mut resp, upstream_conn) = match sent {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                let failure = UpstreamFailure::classify(&e);
                telemetry::upstream_error(&backend.id, &server.id, failure.kind());
                let err = ProxyError::Upstream { failure, server: server.id.clone(), backend: backend.id.clone() };
                let status = err.status().as_u16();
                frontend.metrics.record(Some((bi, &backend.id)), Some((si, &server.id)), status, start.elapsed());
                tracing::warn!(target: "access", frontend = %frontend.id, backend = %backend.id, server = %server.id,
                    method = %method, status, error = %e, request_id = ?request_id, "upstream request failed");
                return err.response(Some(&frontend.id), &request_id);
            }
            Err(_) => {
                telemetry::upstream_error(&backend.id, &server.id, "timeout");
                let err = ProxyError::Upstream {
                    failure: UpstreamFailure::Timeout(backend.settings.read_timeout),
                    server: server.id.clone(),
                    backend: backend.id.clone(),
                };
                frontend.metrics.record(Some((bi, &backend.id)), Some((si, &server.id)), 504, start.elapsed());
                tracing::warn!(target: "access", frontend = %frontend.id, backend = %backend.id, server = %server.id,
                    method = %method, status = 504, request_id = ?request_id, "upstream timed out");
                return err.response(Some(&frontend.id), &request_id);
            }
        };

        // Phase 5: the response.
        let status = resp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                let frontend_id = frontend.id.clone();
                let tunnel = self.tunnels.enter();
                tokio::spawn(async move {
                    // The in-flight guard lives as long as the tunnel, so a drain waits for it too.
                    let (guard, _tunnel) = (guard, tunnel);
                    match tokio::try_join!(client_upgrade, upstream_upgrade) {
                        Ok((client, upstream)) => {
                            let mut client = TokioIo::new(client);
                            let mut upstream = TokioIo::new(upstream);
                            tokio::select! {
                                res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => if let Err(e) = res {
                                    tracing::debug!(frontend = %frontend_id, error = %e, "upgraded connection ended");
                                },
                                _ = guard.server().aborted() => {
                                    tracing::info!(frontend = %frontend_id, "upgraded connection cut by the drain deadline");
                                }
                            }
                        }
                        Err(e) => tracing::warn!(frontend = %frontend_id, error = %e, "upgrade failed"),
                    }
                });
                frontend.metrics.record(Some((bi, &backend.id)), Some((si, &server.id)), 101, start.elapsed());
                let (parts, _) = resp.into_parts();
                return Response::from_parts(parts, ProxyBody::empty());
            }
        } else {
            headers::strip_hop_by_hop(resp.headers_mut());
        }
        resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
        // Answer in the client's protocol version, not the upstream's (an HTTP/1.0 upstream must not
        // downgrade a keep-alive HTTP/1.1 client).
        *resp.version_mut() = client_version;
        let log = log_req.map(|request| AccessRecord {
            frontend: frontend.id.clone(),
            backend: backend.id.clone(),
            server: server.id.clone(),
            method,
            request,
            status: status.as_u16(),
            peer: conn.peer,
            request_id,
            start,
        });
        let (parts, body) = resp.into_parts();
        let done = Box::new(Completion {
            bytes: 0,
            guard: Some(guard),
            log,
            conn: Some(upstream_conn),
            complete: false,
            abort_wait: None,
            outcome: body::Outcome { frontend, backend: bi, server: si, status: status.as_u16(), start },
            failed: None,
        });
        Response::from_parts(parts, ProxyBody::Upstream { body, done: Some(done) })
    }

    #[allow(clippy::too_many_arguments)]
    fn fail<B>(
        &self,
        frontend: &Frontend,
        backend: Option<(usize, &str)>,
        req: &Request<B>,
        conn: &ConnInfo,
        err: ProxyError,
        request_id: &HeaderValue,
        start: Instant,
    ) -> Response<ProxyBody> {
        frontend.metrics.record(backend, None, err.status().as_u16(), start.elapsed());
        log_error(req, conn, Some(&frontend.id), &err, request_id, start);
        err.response(Some(&frontend.id), request_id)
    }
}

/// A request refused before it matched a frontend.
fn reject<B>(
    req: &Request<B>,
    conn: &ConnInfo,
    err: ProxyError,
    id: &HeaderValue,
    start: Instant,
) -> Response<ProxyBody> {
    telemetry::count_unrouted(err.status().as_u16());
    log_error(req, conn, None, &err, id, start);
    err.response(None, id)
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn access_log_enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

fn log_error<B>(
    req: &Request<B>,
    conn: &ConnInfo,
    frontend: Option<&str>,
    err: &ProxyError,
    id: &HeaderValue,
    start: Instant,
) {
    tracing::info!(target: "access", frontend = frontend.unwrap_or("-"), method = %req.method(), path = %req.uri().path(),
        status = err.status().as_u16(), peer = %conn.peer, duration_ms = start.elapsed().as_secs_f64() * 1e3,
        request_id = ?id, error = %err, "request");
}

/// What the access log says about the request itself, taken before the request is forwarded. Header values
/// are reference-counted, so keeping them costs no copy of their bytes.
struct RequestLog {
    path: String,
    query: Option<String>,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    version: Version,
    /// The request body's declared length (Content-Length); `None` for a streamed (chunked) body.
    bytes_in: Option<u64>,
}

impl RequestLog {
    fn new<B>(req: &Request<B>, host: Option<&HeaderValue>) -> Self {
        let bytes_in = match content_length(req.headers()) {
            Some(n) => Some(n),
            None if req.headers().contains_key(header::TRANSFER_ENCODING) => None,
            // HTTP/1.1 without either header, and HTTP/2 without one, carry no body worth logging here.
            None => Some(0),
        };
        RequestLog {
            path: req.uri().path().to_string(),
            query: req.uri().query().map(str::to_string),
            host: host.cloned(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            referer: req.headers().get(header::REFERER).cloned(),
            version: req.version(),
            bytes_in,
        }
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

fn header_text(h: &Option<HeaderValue>) -> Option<std::borrow::Cow<'_, str>> {
    h.as_ref().map(|h| String::from_utf8_lossy(h.as_bytes()))
}

/// One access-log line, written when the response body ends.
pub struct AccessRecord {
    frontend: Arc<str>,
    backend: Arc<str>,
    server: Arc<str>,
    method: Method,
    request: RequestLog,
    status: u16,
    peer: SocketAddr,
    request_id: HeaderValue,
    start: Instant,
}

impl AccessRecord {
    fn emit(self, bytes: u64) {
        let r = &self.request;
        let (host, user_agent, referer) = (header_text(&r.host), header_text(&r.user_agent), header_text(&r.referer));
        telemetry::access::AccessLine {
            frontend: &self.frontend,
            backend: &self.backend,
            server: &self.server,
            method: self.method.as_str(),
            host: host.as_deref(),
            path: &r.path,
            query: r.query.as_deref(),
            protocol: protocol(r.version),
            status: self.status,
            bytes_in: r.bytes_in,
            bytes_out: bytes,
            user_agent: user_agent.as_deref(),
            referer: referer.as_deref(),
            peer: self.peer,
            duration_ms: self.start.elapsed().as_secs_f64() * 1e3,
            request_id: self.request_id.to_str().unwrap_or("-"),
        }
        .write();
    }
}

/// Methods are compared by the router; re-exported for tests that build requests by hand.
pub use http::Method as HttpMethod;
