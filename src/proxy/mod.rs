//! The request path: one fixed series of phases per request over one [`RequestCtx`], each phase a function.
//!
//! ```text
//!  route ──> request_filter ──> pick ──> upstream_request ──> send ──> respond ──> log (when the body ends)
//!  (400,     (the frontend's     (503)    hop-by-hop,           (502,    hop-by-hop,
//!   404)      middleware chain            X-Forwarded-*, Host,   504)    X-Request-Id, 101 tunnels
//!             runs here)                  X-Request-Id, (413)
//!        \________________\______________\____________________\──> fail: count, log, answer
//! ```
//!
//! Every phase that can fail returns a [`ProxyError`], and every failure leaves through the one error exit,
//! [`RequestCtx::fail`], which counts it, logs it with the request id and answers it with a small JSON body
//! that names the frontend. The error says where the fault lies (downstream, upstream, internal), the status
//! follows from it (404 no route, 503 no server, 502 upstream unreachable or reset, 504 upstream timeout), and
//! it says whether sending the request again is safe.
//!
//! The table is loaded once per request and that `Arc` is held until a server is picked (the frontend's split
//! names its backends by their slot in that table; the chosen frontend, backend and server `Arc`s live in the
//! context until the response head is built, the server's until the body ends), so a reload in the middle of
//! a request changes nothing for it.

mod body;
mod error;
mod failover;
pub mod headers;
pub mod limits;
pub mod path;

pub use crate::upstream::{ClientBody, RequestBody, RequestBodyError};
pub use body::{Completion, ProxyBody};
pub use error::{ErrorSource, ProxyError, UpstreamFailure};

use crate::lifecycle::tracker::Tracker;
use crate::middleware::{self, Admitted};
use crate::route::Request as RouteRequest;
use crate::table::{Backend, Frontend, RoutingTable, SharedTable, StickyChoice as Choice};
use crate::telemetry;
use crate::upstream::pool::{Conn, PoolError, UpstreamBody};
use crate::upstream::{Forwarded, InflightGuard, Server};
use headers::{RequestIds, X_REQUEST_ID};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::borrow::Cow;
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

/// What one request carries through the phases: set up before routing, filled in by each phase, and read by
/// the error exit and the access log. It lives on the request's stack and allocates nothing of its own.
pub struct RequestCtx {
    pub start: Instant,
    /// The client's `X-Request-Id` when it sent a usable one, else a fresh id. Sent upstream and back.
    pub request_id: HeaderValue,
    pub method: Method,
    /// What the access log says about the request, taken only when the access log is on (its lines, and
    /// the error exit's, name the path). The host is filled in by `route` once the head is checked. Boxed:
    /// the context moves between the phases by value, and a record held inline made every move larger.
    pub log: Option<Box<RequestLog>>,
    /// Set by `route`.
    pub frontend: Option<Arc<Frontend>>,
    /// Set by `pick`, with their positions in the frontend's split and the backend's servers (metric slots).
    pub backend: Option<(usize, Arc<Backend>)>,
    pub server: Option<(usize, Arc<Server>)>,
    /// Set by `request_filter`: what the middleware chain gave the request (connection slots), held until
    /// the response body ends; dropped on the error exit.
    pub admitted: Admitted,
    /// Set by `pick` when a sticky split assigned this client its cookie; sent with the response.
    pub set_cookie: Option<HeaderValue>,
    /// Set by `upstream_request` when the frontend shadows this request: the response body feeds it.
    /// Boxed for the same reason as `log`: only shadowed requests carry one.
    pub shadow: Option<Box<crate::shadow::Capture>>,
}

impl RequestCtx {
    fn new(req: &Request<ClientBody>, ids: &RequestIds) -> Self {
        let start = Instant::now();
        let request_id = match req.headers().get(&X_REQUEST_ID) {
            Some(id) if !id.is_empty() && id.len() <= 200 => id.clone(),
            _ => ids.next(),
        };
        let log = access_log_enabled().then(|| Box::new(RequestLog::new(req, None)));
        RequestCtx {
            start,
            request_id,
            method: req.method().clone(),
            log,
            frontend: None,
            backend: None,
            server: None,
            admitted: Admitted::default(),
            set_cookie: None,
            shadow: None,
        }
    }

    /// The frontend, backend and server once `pick` ran; an error for a phase that runs too early.
    fn picked(&self) -> Result<(&Frontend, &Backend, &Arc<Server>), ProxyError> {
        match (&self.frontend, &self.backend, &self.server) {
            (Some(f), Some((_, b)), Some((_, s))) => Ok((f, b, s)),
            _ => Err(ProxyError::Internal("a phase ran before a server was picked")),
        }
    }

    /// Counts the answer in the frontend's metrics (or the unrouted ones). `with_server`: the request reached
    /// the picked server, so the server's own slot counts it (otherwise the backend's "no server" slot).
    fn record(&self, status: u16, with_server: bool) {
        let Some(frontend) = &self.frontend else {
            telemetry::count_unrouted(status);
            return;
        };
        let backend = self.backend.as_ref().map(|(i, b)| (*i, &*b.id));
        let server = match (&self.backend, &self.server) {
            (Some((_, b)), Some((i, s))) if with_server => Some(server_at(b, *i, s)),
            _ => None,
        };
        frontend.metrics.record(backend, server, status, self.start.elapsed());
    }

    /// The one error exit: counts the failure, logs it with the request id, and answers it.
    fn fail(self, conn: &ConnInfo, err: ProxyError) -> Response<ProxyBody> {
        let status = err.status().as_u16();
        let frontend = self.frontend.as_ref().map(|f| &*f.id);
        if let ProxyError::Upstream { failure, backend, server } = &err {
            telemetry::upstream_error(backend, server, failure.kind());
            self.record(status, true);
            let (method, request_id) = (&self.method, &self.request_id);
            let frontend = frontend.unwrap_or("-");
            match failure {
                UpstreamFailure::DrainDeadline(_) => tracing::warn!(target: "access", frontend, %backend, %server,
                    %method, status, ?request_id, "cut by the server's drain deadline"),
                UpstreamFailure::Timeout(_) => tracing::warn!(target: "access", frontend, %backend, %server,
                    %method, status, ?request_id, "upstream timed out"),
                _ => tracing::warn!(target: "access", frontend, %backend, %server, %method, status,
                    error = %err, ?request_id, "upstream request failed"),
            }
        } else {
            self.record(status, false);
            tracing::info!(target: "access", frontend = frontend.unwrap_or("-"), method = %self.method,
                path = self.log.as_ref().map_or("-", |l| l.path.as_str()), status, peer = %conn.peer,
                duration_ms = self.start.elapsed().as_secs_f64() * 1e3, request_id = ?self.request_id,
                error = %err, "request");
        }
        err.response(frontend, &self.request_id)
    }
}

/// What `upstream_request` hands to `send`: the request for the server, and what the response phase needs
/// from the client's request.
struct Prepared {
    req: Request<RequestBody>,
    /// X-Forwarded-*, Host and X-Request-Id, set on the request on its way out rather than in its map (the
    /// codec writes them into the head; see `upstream::Forwarded`).
    forwarded: Forwarded,
    client_upgrade: Option<OnUpgrade>,
    client_version: Version,
}

/// What `send` hands to `respond`: the upstream's response head and everything that must live as long as
/// its body.
struct Sent {
    resp: Response<UpstreamBody>,
    conn: Conn<RequestBody>,
    guard: InflightGuard,
    client_upgrade: Option<OnUpgrade>,
    client_version: Version,
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

    pub async fn handle(&self, conn: &ConnInfo, req: Request<ClientBody>) -> Response<ProxyBody> {
        let mut ctx = RequestCtx::new(&req, &self.ids);
        // The phases that wait are awaited here, in the request's own future, with the prepared request kept
        // in it and lent to them: no future of a phase function around them to build and copy per request,
        // and the request not moved into each (docs/PERFORMANCE.md, "Fewer moves").
        let result = match self.prepare(&mut ctx, conn, req) {
            Err(err) => Err(err),
            Ok((mut prepared, shadow_backend)) => {
                let offered = match ctx.frontend.as_ref().is_some_and(|f| f.shadow.is_some()) {
                    true => offer_shadow(&mut ctx, shadow_backend, &mut prepared.req, &prepared.forwarded).await,
                    false => Ok(()),
                };
                match offered {
                    Err(err) => Err(err),
                    // Most frontends have no failover, and skip its loop.
                    Ok(()) if ctx.frontend.as_ref().is_some_and(|f| f.failover.is_some()) => {
                        failover::send(&mut ctx, prepared).await
                    }
                    Ok(()) => send(&ctx, &mut prepared).await,
                }
            }
        };
        match result {
            Ok(sent) => {
                ctx.admitted.observe(sent.resp.status().as_u16(), Some(sent.resp.headers()), ctx.start);
                match ctx.admitted.template() {
                    Some(view) => middleware_template(self.respond(ctx, conn, sent), &view).await,
                    None => self.respond(ctx, conn, sent),
                }
            }
            Err(err) => {
                ctx.admitted.observe(err.status().as_u16(), None, ctx.start);
                ctx.fail(conn, err)
            }
        }
    }

    /// The phases up to the request for the server, none of which waits, each one able to end the request
    /// with an error; with the request, the shadow's backend as the table had it, for a frontend that shadows.
    fn prepare(
        &self,
        ctx: &mut RequestCtx,
        conn: &ConnInfo,
        mut req: Request<ClientBody>,
    ) -> Result<(Prepared, Option<Arc<Backend>>), ProxyError> {
        let table = self.table.load_full();
        let (host, mut normalized_path) = route(ctx, &table, &self.limits, &req)?;
        request_filter(ctx, conn, host.as_ref(), &mut req, &mut normalized_path)?;
        pick(ctx, &table, conn, req.headers())?;
        // The shadow's backend as this table has it, for a frontend that shadows (the table goes before the
        // request body may be read).
        let shadow_backend = ctx
            .frontend
            .as_ref()
            .and_then(|f| f.shadow.as_ref())
            .and_then(|route| table.router.backend(&route.backend).cloned());
        drop(table);
        let prepared = upstream_request(ctx, conn, req, host, normalized_path)?;
        Ok((prepared, shadow_backend))
    }

    /// The response phase: hop-by-hop headers out, the request id in, the client's version, and the body
    /// handed on with what must live as long as it (the in-flight guard, the pooled connection, the log line).
    fn respond(&self, ctx: RequestCtx, conn: &ConnInfo, sent: Sent) -> Response<ProxyBody> {
        let RequestCtx { start, request_id, method, log, frontend, backend, server, admitted, set_cookie, shadow } =
            ctx;
        let (frontend, (bi, backend), (si, server)) = match (frontend, backend, server) {
            (Some(f), Some(b), Some(s)) => (f, b, s),
            (frontend, backend, server) => {
                let ctx = RequestCtx {
                    start,
                    request_id,
                    method,
                    log,
                    frontend,
                    backend,
                    server,
                    admitted,
                    set_cookie,
                    shadow,
                };
                return ctx.fail(conn, ProxyError::Internal("respond ran before a server was picked"));
            }
        };
        let Sent { mut resp, conn: upstream_conn, guard, client_upgrade, client_version } = sent;
        let status = resp.status();
        if status != StatusCode::SWITCHING_PROTOCOLS && !matches!(resp.body(), UpstreamBody::H1(_)) {
            // Ficus's own codec left the hop-by-hop fields out of the map as it built it; hyper's did not.
            headers::strip_hop_by_hop(resp.headers_mut());
        }
        resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
        // The log phase runs when the body ends (see `Completion`): the request is counted and logged then.
        // An upgrade is logged when its tunnel closes, as nginx logs a WebSocket: its time is the tunnel's life.
        let log = log.map(|request| AccessRecord {
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
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_upgrade)) = (status, client_upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            self.tunnel(frontend.id.clone(), client_upgrade, upstream_upgrade, guard, admitted, log);
            let at = server_at(&backend, si, &server);
            frontend.metrics.record(Some((bi, &backend.id)), Some(at), 101, start.elapsed());
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, ProxyBody::empty());
        }
        if let Some(cookie) = set_cookie {
            resp.headers_mut().append(header::SET_COOKIE, cookie);
        }
        // Answer in the client's protocol version, not the upstream's (an HTTP/1.0 upstream must not
        // downgrade a keep-alive HTTP/1.1 client).
        *resp.version_mut() = client_version;
        let shadow = shadow.map(|mut capture| {
            capture.head(status, resp.headers());
            capture
        });
        let (parts, body) = resp.into_parts();
        let done = Box::new(Completion {
            bytes: 0,
            guard: Some(guard),
            log,
            conn: Some(upstream_conn),
            complete: false,
            outcome: body::Outcome {
                frontend,
                backend: bi,
                servers: (backend.version, backend.servers.items().len()),
                server: si,
                status: status.as_u16(),
                start,
            },
            failed: None,
            admitted,
            shadow,
        });
        Response::from_parts(parts, ProxyBody::Upstream { body, done: Some(done) })
    }

    /// A 101 answer: the two upgraded connections are joined in a task of their own, which a drain waits for.
    fn tunnel(
        &self,
        frontend: Arc<str>,
        client: OnUpgrade,
        upstream: OnUpgrade,
        guard: InflightGuard,
        admitted: Admitted,
        log: Option<AccessRecord>,
    ) {
        let tunnel = self.tunnels.enter();
        tokio::spawn(async move {
            // The in-flight guard lives as long as the tunnel, so a drain waits for it too; so do the
            // connection slots the chain gave the request (a connlimit counts an open WebSocket).
            let (guard, _tunnel, _admitted) = (guard, tunnel, admitted);
            // Bytes from the upstream to the client, as a response body's are counted.
            let mut sent = 0;
            match tokio::try_join!(client, upstream) {
                Ok((client, upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    tokio::select! {
                        res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match res {
                            Ok((_, to_client)) => sent = to_client,
                            Err(e) => tracing::debug!(%frontend, error = %e, "upgraded connection ended"),
                        },
                        _ = guard.server().aborted() => {
                            tracing::info!(%frontend, "upgraded connection cut by the drain deadline");
                        }
                    }
                }
                Err(e) => tracing::warn!(%frontend, error = %e, "upgrade failed"),
            }
            if let Some(log) = log {
                log.emit(sent);
            }
        });
    }
}

/// A rewrite's `RewriteBody`: the answer's body, read whole (it stays bounded by `template::MAX_BODY`), is
/// rendered as a template of the request. A body declared larger, or compressed, passes unchanged; one that
/// turns out larger than the bound while read (or fails) is answered 502 with an empty body rather than
/// buffered without end.
async fn middleware_template(
    resp: Response<ProxyBody>,
    view: &middleware::template::RequestView,
) -> Response<ProxyBody> {
    use http_body_util::BodyExt;
    let declared = content_length(resp.headers());
    if declared.is_some_and(|n| n > middleware::template::MAX_BODY as u64)
        || resp.headers().contains_key(header::CONTENT_ENCODING)
        || resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let collected = http_body_util::Limited::new(body, middleware::template::MAX_BODY).collect().await;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::warn!(error = %e, "response body not templated: too large or failed");
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.status = StatusCode::BAD_GATEWAY;
            return Response::from_parts(parts, ProxyBody::empty());
        }
    };
    let rendered = view.render(&bytes);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(rendered.len()));
    Response::from_parts(parts, ProxyBody::full(rendered))
}

/// The route phase: the head checked (sizes, one host, framing), the path normalised, then the frontend whose
/// route matches. Returns the request's host and the normalised path when it differs from the one received
/// (the upstream gets it).
fn route(
    ctx: &mut RequestCtx,
    table: &RoutingTable,
    limits: &limits::Limits,
    req: &Request<ClientBody>,
) -> Result<(Option<HeaderValue>, Option<String>), ProxyError> {
    // A request with both Content-Length and Transfer-Encoding (the request-smuggling shape) never reaches
    // here with both: hyper's parser keeps the chunked framing and drops Content-Length, and the upstream
    // request is re-framed from the body (tests/e2e/proxy.rs covers it).
    let host = headers::check_head(req, limits)?;
    if let Some(log) = ctx.log.as_mut() {
        log.host = host.clone();
    }
    let path =
        path::normalize(req.uri().path(), limits.encoded_slash).map_err(|e| ProxyError::BadRequest(e.reason()))?;
    let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
    let found =
        table.router.find(&RouteRequest { method: req.method(), host: host_str, path: &path, headers: req.headers() });
    ctx.frontend = Some(found.ok_or(ProxyError::NoRoute)?.clone());
    let normalized = match path {
        Cow::Owned(p) => Some(p),
        Cow::Borrowed(_) => None,
    };
    Ok((host, normalized))
}

/// The middleware phase. The frontend's middleware chain (rate and connection limits, rewrites), compiled into
/// the table with the frontend, runs here in Priority order: it may end the request with a 429 or a 302 that the
/// one error exit answers, replace the request target, or admit the request with connection slots the response
/// body holds until it ends. A frontend without middlewares pays one length check.
#[inline]
fn request_filter(
    ctx: &mut RequestCtx,
    conn: &ConnInfo,
    host: Option<&HeaderValue>,
    req: &mut Request<ClientBody>,
    normalized_path: &mut Option<String>,
) -> Result<(), ProxyError> {
    let frontend = ctx.frontend.as_ref().ok_or(ProxyError::Internal("request_filter ran before route"))?;
    if frontend.chain.is_empty() {
        return Ok(());
    }
    let trust = frontend.trust_forward_header || conn.trust_forward_header;
    let https = conn.tls
        || (trust
            && req.headers().get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https")));
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    // Behind a trusted proxy, `client.ip` is the client it reports, not the proxy (every client would share
    // one bucket otherwise).
    let client_ip =
        if trust { headers::forwarded_client(req.headers()).unwrap_or(conn.peer.ip()) } else { conn.peer.ip() };
    let input = middleware::Input { method: req.method(), client_ip, host, headers: req.headers(), https, target };
    let mut admitted = middleware::run(&frontend.chain, &input).map_err(|stop| match stop {
        middleware::Stop::Rejected(r) => ProxyError::Rejected(r),
        middleware::Stop::Redirect(to) => match HeaderValue::try_from(to) {
            Ok(location) => ProxyError::Redirect { location },
            Err(_) => ProxyError::Internal("a rewrite produced a Location that is not a header value"),
        },
        middleware::Stop::Respond { middleware, status, content_type, body } => {
            ProxyError::Fallback { middleware, status, content_type, body }
        }
    })?;
    if let Some(pq) = admitted.rewritten.take() {
        // The rewritten target replaces the client's, normalised path included: the operator's regexp said
        // what the server gets.
        *req.uri_mut() =
            Uri::try_from(pq).map_err(|_| ProxyError::Internal("a rewrite produced an invalid request target"))?;
        *normalized_path = None;
    }
    ctx.admitted = admitted;
    Ok(())
}

/// The pick phase: the backend of the frontend's split (by the client's key when the split is sticky), then a
/// server of that backend.
fn pick(
    ctx: &mut RequestCtx,
    table: &RoutingTable,
    conn: &ConnInfo,
    headers: &http::HeaderMap,
) -> Result<(), ProxyError> {
    let frontend = ctx.frontend.as_ref().ok_or(ProxyError::Internal("pick ran before route"))?;
    let (bi, at) = match frontend
        .sticky
        .as_ref()
        .and_then(|s| s.choose(headers, conn.peer.ip(), https(conn, frontend, headers)))
    {
        Some(Choice::Item(i)) => frontend.split.get(i).map(|b| (i, b)),
        Some(Choice::Assigned(i, cookie)) => {
            ctx.set_cookie = Some(cookie);
            frontend.split.get(i).map(|b| (i, b))
        }
        Some(Choice::Unkeyed) | None => frontend.split.pick_indexed(),
    }
    .ok_or(ProxyError::NoBackend)?;
    // The backend as this table has it: a server put replaces it there, not in the frontend.
    let backend = table.router.backend(at).ok_or(ProxyError::NoBackend)?.clone();
    let picked = failover::pick_server(&backend, ctx.start, &[]).map(|(si, server)| (si, server.clone()));
    let (si, server) = match picked {
        Some(picked) => picked,
        None => {
            let err = ProxyError::NoServer { backend: backend.id.clone() };
            ctx.backend = Some((bi, backend));
            return Err(err);
        }
    };
    ctx.backend = Some((bi, backend));
    ctx.server = Some((si, server));
    Ok(())
}

/// Where a request went in `backend`, for the frontend's per-server counters.
#[inline]
fn server_at<'a>(backend: &Backend, index: usize, server: &'a Server) -> telemetry::ServerAt<'a> {
    telemetry::ServerAt { list: backend.version, len: backend.servers.items().len(), index, id: &server.id }
}

/// The upstream request phase: the client's request turned into the one sent to the server. Hop-by-hop
/// headers out; X-Forwarded-*, Host and X-Request-Id worked out (and set as the request leaves); origin-form
/// target; HTTP/1.1; the body wrapped in the frontend's size limit.
fn upstream_request(
    ctx: &RequestCtx,
    conn: &ConnInfo,
    mut req: Request<ClientBody>,
    host: Option<HeaderValue>,
    normalized_path: Option<String>,
) -> Result<Prepared, ProxyError> {
    let (frontend, _, server) = ctx.picked()?;
    if let Some(limit) = frontend.max_body_bytes {
        // Looked up only under a limit: a header lookup hashes and probes the map.
        if content_length(req.headers()).is_some_and(|len| len > limit) {
            return Err(ProxyError::BodyTooLarge { limit });
        }
    }
    let upgrade = headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let upgrade_value = if upgrade { req.headers().get(header::UPGRADE).cloned() } else { None };
    let client_version = req.version();
    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(proto) = upgrade_value {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
    }
    let trust = frontend.trust_forward_header || conn.trust_forward_header;
    let upstream_host = match (&frontend.hostname, frontend.pass_host_header, &host) {
        (Some(h), _, _) => h.clone(),
        (None, true, Some(h)) => h.clone(),
        _ => server.host_header.clone(),
    };
    let forwarded = headers::forwarded(
        &parts.headers,
        trust,
        &conn.client_ip,
        &conn.proto,
        host.as_ref(),
        upstream_host,
        ctx.request_id.clone(),
    );
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
        None if parts.uri.scheme().is_none() && parts.uri.authority().is_none() => Some(std::mem::take(&mut parts.uri)),
        None => Some(parts.uri.path_and_query().cloned().map_or_else(|| Uri::from_static("/"), Uri::from)),
    };
    parts.uri = match origin_form {
        Some(u) if !u.path().is_empty() => u,
        Some(_) => Uri::from_static("/"),
        None => return Err(ProxyError::BadRequest("request target cannot be forwarded")),
    };
    // Upstreams speak HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;
    let req = Request::from_parts(parts, RequestBody::new(body, frontend.max_body_bytes));
    Ok(Prepared { req, forwarded, client_upgrade, client_version })
}

/// Offers the request, as it goes upstream, to the frontend's shadow (if any): a copy goes to the shadow
/// backend off the client's path, and the response body will hand the primary's answer to the comparison. A
/// copied request's body (a declared length up to `shadow::REQUEST_BODY_LIMIT`) is read whole first, so both
/// sides get the same bytes.
#[inline]
async fn offer_shadow(
    ctx: &mut RequestCtx,
    shadow_backend: Option<Arc<Backend>>,
    req: &mut Request<crate::upstream::RequestBody>,
    forwarded: &Forwarded,
) -> Result<(), ProxyError> {
    let (Some(frontend), Some((_, server))) = (&ctx.frontend, &ctx.server) else { return Ok(()) };
    let Some(route) = &frontend.shadow else { return Ok(()) };
    let Some(with_body) = route.state.select(req) else { return Ok(()) };
    let body = if with_body {
        let (_, backend, server) = ctx.picked()?;
        failover::read_whole(req).await.map_err(|failure| ProxyError::Upstream {
            failure,
            server: server.id.clone(),
            backend: backend.id.clone(),
        })?
    } else {
        bytes::Bytes::new()
    };
    ctx.shadow = route
        .state
        .offer(req, forwarded, body, server, shadow_backend.as_ref().and_then(|b| b.servers.pick()))
        .map(Box::new);
    Ok(())
}

/// The send phase: the request to the picked server, bounded by the backend's Read timeout (time to the
/// response head) and cut when the server's drain deadline passes.
/// The prepared request is lent, not moved in: the upstream codec only reads it, so it stays where it is.
async fn send(ctx: &RequestCtx, prepared: &mut Prepared) -> Result<Sent, ProxyError> {
    let Prepared { req: upstream_req, forwarded, client_upgrade, client_version } = prepared;
    let (_, backend, server) = ctx.picked()?;
    let upstream_error =
        |failure| ProxyError::Upstream { failure, server: server.id.clone(), backend: backend.id.clone() };
    let guard = server.begin();
    // Counted from the request's start, read once already, rather than from another clock read.
    let deadline = tokio::time::Instant::from_std(ctx.start) + backend.settings.read_timeout;
    // The codec's exchange awaited here rather than inside `Pool::send`: one future level fewer to build and
    // copy per request (docs/PERFORMANCE.md, "Fewer moves").
    let sent = if server.pool.takes_codec(upstream_req) {
        server.pool.send_h1(upstream_req, Some(forwarded), ctx.start, Some(deadline)).await
    } else {
        // hyper's client takes the request whole; an empty one is left in its place.
        let req = std::mem::replace(upstream_req, Request::new(RequestBody::kept(bytes::Bytes::new())));
        server.pool.send(req, Some(forwarded), ctx.start, Some(deadline)).await
    };
    let failure = match sent {
        Ok((resp, conn)) => {
            failover::observe(backend, server, ctx.start, Ok(resp.status().as_u16()));
            return Ok(Sent {
                resp,
                conn,
                guard,
                client_upgrade: client_upgrade.take(),
                client_version: *client_version,
            });
        }
        Err(PoolError::ReadTimeout) => UpstreamFailure::Timeout(backend.settings.read_timeout),
        // The drain deadline shut the server's sockets (`upstream::pool::Pool::cut`), which is how the
        // exchange failed: a cut, not the server's fault, so passive health does not hear of it.
        Err(_) if server.is_aborted() => {
            return Err(upstream_error(UpstreamFailure::DrainDeadline(backend.settings.drain_timeout)))
        }
        Err(e) => UpstreamFailure::classify(&e),
    };
    failover::observe(backend, server, ctx.start, Err(&failure));
    Err(upstream_error(failure))
}

/// The client reached Ficus over TLS, or a trusted proxy in front says it did.
fn https(conn: &ConnInfo, frontend: &Frontend, headers: &http::HeaderMap) -> bool {
    conn.tls
        || ((frontend.trust_forward_header || conn.trust_forward_header)
            && headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https")))
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn access_log_enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// What the access log says about the request itself, taken before the request is forwarded. Header values
/// are reference-counted, so keeping them costs no copy of their bytes.
pub struct RequestLog {
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
    request: Box<RequestLog>,
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
