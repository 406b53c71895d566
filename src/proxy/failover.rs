//! Health and failover in the pick and send phases. The pick skips servers that failed their checks or were
//! ejected (failing open when none is left); the send phase reports each exchange's outcome to passive
//! health and, for a frontend with a `FailoverPredicate`, asks after every attempt whether to send the
//! request again, to another server of the backend when there is one.
//!
//! Only a request that can be sent again is retried: one without a body, or with a body of a declared
//! length up to `REPLAY_BODY_LIMIT`, which is then read whole before the first attempt and kept. A larger or
//! streamed (chunked) body goes out once, as without failover, and a failed attempt with it is answered as it
//! is (counted as `not_replayable`).

use super::{Prepared, ProxyError, RequestBody, RequestCtx, Sent, UpstreamFailure};
use crate::model::failover::MAX_ATTEMPTS;
use crate::table::Backend;
use crate::upstream::failover::{Attempt, Decision, REPLAY_BODY_LIMIT};
use crate::upstream::health::{millis, Outcome};
use crate::upstream::{Forwarded, Server};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;

/// A server of `backend` for a request that started at `start`, other than those at the positions in
/// `tried` when there is one: a usable one if any, else (fail open) any.
#[inline]
pub(super) fn pick_server<'b>(
    backend: &'b Backend,
    start: Instant,
    tried: &[usize],
) -> Option<(usize, &'b Arc<Server>)> {
    if !backend.health.active() && tried.is_empty() {
        return backend.servers.pick_indexed();
    }
    let now = millis(start);
    if let Some(picked) = backend.servers.pick_indexed_where(|i, s| s.health.usable(now) && !tried.contains(&i)) {
        backend.health.picked_healthy(&backend.id);
        return Some(picked);
    }
    if !tried.is_empty() {
        // A retry that finds no other usable server: any server not tried yet, then any at all.
        if let Some(picked) = backend.servers.pick_indexed_where(|i, _| !tried.contains(&i)) {
            return Some(picked);
        }
        return backend.servers.pick_indexed();
    }
    backend.health.failed_open(&backend.id);
    backend.servers.pick_indexed()
}

/// Reports one exchange to passive health: `status` of the answer, or the failure.
#[inline]
pub(super) fn observe(backend: &Backend, server: &Server, start: Instant, result: Result<u16, &UpstreamFailure>) {
    if backend.health.outlier.is_none() {
        return;
    }
    let outcome = match result {
        Ok(status) if status >= 500 => Outcome::Failed,
        Ok(_) => Outcome::Answered,
        Err(UpstreamFailure::Connect(_) | UpstreamFailure::DialTimeout | UpstreamFailure::Reset(_)) => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    };
    backend.health.observe(backend.servers.items(), server, outcome, millis(start));
}

/// What is kept of a request so it can go to another server.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    forwarded: Forwarded,
    /// The request's Host named the first server: a retry names its own server instead.
    host_is_server: bool,
}

impl Replay {
    /// The request for `server`, and the fields it gets on its way out.
    fn request(&self, server: &Server) -> (Request<RequestBody>, Forwarded) {
        let mut req = Request::new(RequestBody::kept(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        let mut forwarded = self.forwarded.clone();
        if self.host_is_server {
            forwarded.host = server.host_header.clone();
        }
        (req, forwarded)
    }
}

/// Keeps what is needed to send `req` again, reading a small body whole; `None` when the body is too large or
/// of unknown length.
async fn keep(
    req: &mut Request<RequestBody>,
    forwarded: &Forwarded,
    server: &Server,
) -> Result<Option<Replay>, UpstreamFailure> {
    let body = if req.body().is_end_stream() {
        Bytes::new()
    } else {
        match req.body().size_hint().exact() {
            Some(n) if n <= REPLAY_BODY_LIMIT => {}
            _ => return Ok(None),
        }
        read_whole(req).await?
    };
    Ok(Some(Replay {
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: req.headers().clone(),
        body,
        forwarded: forwarded.clone(),
        host_is_server: forwarded.host == server.host_header,
    }))
}

/// Reads the request's body whole and leaves it in the request as one kept frame (sent as often as needed);
/// returns it too (a reference count, no copy). The caller checked the declared length.
pub(super) async fn read_whole(req: &mut Request<RequestBody>) -> Result<Bytes, UpstreamFailure> {
    if let Some(whole) = req.body().whole() {
        return Ok(whole);
    }
    let streamed = std::mem::replace(req.body_mut(), RequestBody::kept(Bytes::new()));
    let whole = streamed.collect().await.map_err(|e| {
        let too_large = matches!(e, crate::upstream::RequestBodyError::TooLarge { .. });
        UpstreamFailure::ClientBody { message: e.to_string(), too_large }
    })?;
    let whole = whole.to_bytes();
    *req.body_mut() = RequestBody::kept(whole.clone());
    Ok(whole)
}

/// The send phase: one attempt, or, for a frontend with a failover predicate, as many as the predicate, the
/// attempt bound and the retry budget allow.
pub(super) async fn send(ctx: &mut RequestCtx, mut prepared: Prepared) -> Result<Sent, ProxyError> {
    let frontend = match &ctx.frontend {
        Some(f) if f.failover.is_some() => f.clone(),
        _ => return super::send(ctx, &mut prepared).await,
    };
    let Some(policy) = frontend.failover.as_ref() else { return super::send(ctx, &mut prepared).await };
    let (backend, server) = match (&ctx.backend, &ctx.server) {
        (Some((_, b)), Some((_, s))) => (b.clone(), s.clone()),
        _ => return Err(ProxyError::Internal("send ran before a server was picked")),
    };
    policy.deposit();
    let replay = keep(&mut prepared.req, &prepared.forwarded, &server)
        .await
        .map_err(|failure| ProxyError::Upstream { failure, backend: backend.id.clone(), server: server.id.clone() })?;
    let client_upgrade = prepared.client_upgrade.take();
    let client_version = prepared.client_version;
    // Positions of the servers tried, so a retry goes elsewhere when it can.
    let mut tried = [usize::MAX; MAX_ATTEMPTS as usize];
    let mut attempts = 0u32;
    let result = loop {
        if let Some((si, _)) = &ctx.server {
            tried[(attempts as usize).min(tried.len() - 1)] = *si;
        }
        attempts += 1;
        let result = super::send(ctx, &mut prepared).await;
        let (network_error, code) = match &result {
            Ok(sent) => (false, sent.resp.status().as_u16()),
            Err(ProxyError::Upstream {
                failure: UpstreamFailure::Connect(_) | UpstreamFailure::DialTimeout | UpstreamFailure::Reset(_),
                ..
            }) => (true, 0),
            // A timeout, a cut, a client body that failed: answered as they are.
            Err(_) => break result,
        };
        let attempt = Attempt { attempts, network_error, method: ctx.method.as_str(), code };
        let decision = match &replay {
            Some(_) => policy.decide(&attempt, true, millis(Instant::now())),
            None => policy.decide(&attempt, false, 0),
        };
        let replay = match (decision, &replay) {
            (Decision::Retry, Some(replay)) => replay,
            (Decision::Done, _) => break result,
            (refused, _) => {
                // The answer about to go out is an upstream failure that a retry would have hidden: say why
                // none was made, beside that request's own error line.
                let why = if refused == Decision::BudgetExhausted { "retry budget exhausted" } else { "body not kept" };
                tracing::info!(target: "access", frontend = %frontend.id, backend = %backend.id, attempts, code,
                    request_id = ?ctx.request_id, "no failover: {why}");
                break result;
            }
        };
        let tried_now = &tried[..(attempts as usize).min(tried.len())];
        let Some((si, next)) = pick_server(&backend, ctx.start, tried_now).map(|(i, s)| (i, s.clone())) else {
            break result;
        };
        if let Err(ProxyError::Upstream { failure, server, .. }) = &result {
            crate::telemetry::upstream_error(&backend.id, server, failure.kind());
        }
        let failed = ctx.server.as_ref().map(|(_, s)| s.id.clone());
        tracing::info!(target: "access", frontend = %frontend.id, backend = %backend.id, failed = ?failed,
            next = %next.id, attempts, code, request_id = ?ctx.request_id, "failing over to another server");
        drop(result);
        let (req, forwarded) = replay.request(&next);
        prepared = Prepared { req, forwarded, client_upgrade: None, client_version };
        ctx.server = Some((si, next));
    };
    result.map(|mut sent| {
        sent.client_upgrade = client_upgrade;
        sent
    })
}
