//! What can go wrong on the request path, where the fault lies, whether sending the request again is safe,
//! and the status code that follows. Every phase of the proxy returns a [`ProxyError`]; the one error exit
//! counts, logs and answers it.

use super::ProxyBody;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// How an upstream exchange failed.
#[derive(Debug)]
pub enum UpstreamFailure {
    /// The TCP connect was refused or the host unreachable.
    Connect(String),
    /// The connect did not finish within the backend's Dial timeout.
    DialTimeout,
    /// No response head within the backend's Read timeout.
    Timeout(Duration),
    /// The connection broke mid-exchange.
    Reset(String),
    /// The client's body failed (it went away, or sent more than the limit).
    ClientBody { message: String, too_large: bool },
    /// The server left its backend and its drain deadline passed with this request still waiting.
    DrainDeadline(Duration),
}

impl UpstreamFailure {
    pub fn classify(e: &crate::upstream::pool::PoolError) -> Self {
        use crate::upstream::pool::PoolError;
        use std::error::Error as _;
        let http = match e {
            PoolError::Connect { .. } => return UpstreamFailure::Connect(e.to_string()),
            PoolError::DialTimeout { .. } => return UpstreamFailure::DialTimeout,
            // A server that cannot be spoken to safely is as unreachable as one that refuses the connection.
            PoolError::Tls { .. } | PoolError::TlsTimeout { .. } => return UpstreamFailure::Connect(e.to_string()),
            PoolError::Http(http) => http,
            // The codec's own failures are the server's side of the exchange (the client's body is read whole
            // before anything is sent, and fails as `RequestBody`).
            PoolError::H1(_) => return UpstreamFailure::Reset(e.to_string()),
            PoolError::RequestBody(source) => {
                let too_large = source
                    .downcast_ref::<super::RequestBodyError>()
                    .is_some_and(|b| matches!(b, super::RequestBodyError::TooLarge { .. }));
                return UpstreamFailure::ClientBody { message: e.to_string(), too_large };
            }
            // The send phase names a cut a drain deadline before it gets here; a cut is a broken exchange.
            PoolError::Cut => return UpstreamFailure::Reset(e.to_string()),
            // The send phase names a timeout with the backend's duration before it gets here.
            PoolError::ReadTimeout => return UpstreamFailure::Reset(e.to_string()),
        };
        let mut chain = http.to_string();
        let mut body_error = false;
        let mut too_large = false;
        let mut src: Option<&(dyn std::error::Error + 'static)> = http.source();
        while let Some(s) = src {
            if let Some(b) = s.downcast_ref::<super::RequestBodyError>() {
                body_error = true;
                too_large |= matches!(b, super::RequestBodyError::TooLarge { .. });
            }
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            src = s.source();
        }
        if body_error {
            UpstreamFailure::ClientBody { message: chain, too_large }
        } else {
            UpstreamFailure::Reset(chain)
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamFailure::Connect(_) => "connect",
            UpstreamFailure::DialTimeout => "dial_timeout",
            UpstreamFailure::Timeout(_) => "timeout",
            UpstreamFailure::Reset(_) => "reset",
            UpstreamFailure::ClientBody { .. } => "client_body",
            UpstreamFailure::DrainDeadline(_) => "drain_deadline",
        }
    }
}

/// Where the fault lies (the side of the proxy that caused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client: a request that cannot be routed or forwarded as sent, or a body that failed or is too large.
    Downstream,
    /// The upstream server: unreachable, too slow, reset, or cut by its drain deadline.
    Upstream,
    /// Ficus itself: the config leaves no server to send to, or a phase ran out of order.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no frontend matches this request")]
    NoRoute,
    #[error("the frontend's backends all have weight 0")]
    NoBackend,
    #[error("backend `{backend}` has no server that takes requests")]
    NoServer { backend: Arc<str> },
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request head too large: {0}")]
    HeadTooLarge(&'static str),
    #[error("the request line is longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("transfer coding not implemented: only `chunked`, alone, is accepted")]
    UnsupportedCoding,
    #[error("upstream {backend}/{server}: {}", describe(.failure))]
    Upstream { failure: UpstreamFailure, backend: Arc<str>, server: Arc<str> },
    /// A middleware of the frontend's chain refused the request (a rate or connection limit).
    #[error("refused by middleware `{}` ({})", .0.middleware, .0.reason)]
    Rejected(crate::middleware::Rejected),
    /// Not a failure: a rewrite middleware with `Redirect` answers 302 itself. It leaves through the same exit
    /// as every answer the proxy makes without a server, so it is counted and logged the same way.
    #[error("redirected to {}", String::from_utf8_lossy(.location.as_bytes()))]
    Redirect { location: HeaderValue },
    /// A tripped circuit breaker's fallback answer (status, content type and body from its config).
    #[error("circuit breaker `{middleware}` is open: answered {status} by its fallback")]
    Fallback { middleware: Arc<str>, status: StatusCode, content_type: HeaderValue, body: bytes::Bytes },
    /// A bug in the proxy: a state the phases should make impossible.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

fn describe(f: &UpstreamFailure) -> String {
    match f {
        UpstreamFailure::Connect(e) => format!("connect failed: {e}"),
        UpstreamFailure::DialTimeout => "connect timed out".to_string(),
        UpstreamFailure::Timeout(d) => format!("no response within {}", crate::model::format_duration(*d)),
        UpstreamFailure::Reset(e) => format!("connection failed: {e}"),
        UpstreamFailure::ClientBody { message, .. } => format!("client body failed: {message}"),
        UpstreamFailure::DrainDeadline(d) => {
            format!("cut after the drain deadline of {}", crate::model::format_duration(*d))
        }
    }
}

impl ProxyError {
    /// Which side caused the failure.
    pub fn error_source(&self) -> ErrorSource {
        match self {
            ProxyError::NoRoute
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::HeadTooLarge(_)
            | ProxyError::UriTooLong { .. }
            | ProxyError::UnsupportedCoding
            | ProxyError::Rejected(_)
            | ProxyError::Redirect { .. } => ErrorSource::Downstream,
            // The breaker answers for a backend that was failing.
            ProxyError::Fallback { .. } => ErrorSource::Upstream,
            ProxyError::Upstream { failure: UpstreamFailure::ClientBody { .. }, .. } => ErrorSource::Downstream,
            ProxyError::Upstream { .. } => ErrorSource::Upstream,
            ProxyError::NoBackend | ProxyError::NoServer { .. } | ProxyError::Internal(_) => ErrorSource::Internal,
        }
    }

    /// True when no server can have seen any of the request, so sending it again (to another server) cannot
    /// do anything twice, whatever its method: nothing was sent yet, or the connection to the server failed.
    /// A request that may have reached a server (a reset, a timeout waiting for the response) is not safe
    /// here; whether its method makes it safe anyway is for the caller to decide.
    pub fn retry_safe(&self) -> bool {
        match self {
            ProxyError::NoBackend | ProxyError::NoServer { .. } => true,
            ProxyError::Upstream { failure, .. } => {
                matches!(failure, UpstreamFailure::Connect(_) | UpstreamFailure::DialTimeout)
            }
            ProxyError::NoRoute
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::HeadTooLarge(_)
            | ProxyError::UriTooLong { .. }
            | ProxyError::UnsupportedCoding
            | ProxyError::Rejected(_)
            | ProxyError::Redirect { .. }
            | ProxyError::Fallback { .. }
            | ProxyError::Internal(_) => false,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoBackend | ProxyError::NoServer { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            // Vulcand answers 429 for both its rate and its connection limits.
            ProxyError::Rejected(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Redirect { .. } => StatusCode::FOUND,
            ProxyError::Fallback { status, .. } => *status,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Upstream { failure, .. } => match failure {
                UpstreamFailure::Connect(_) | UpstreamFailure::Reset(_) | UpstreamFailure::DrainDeadline(_) => {
                    StatusCode::BAD_GATEWAY
                }
                UpstreamFailure::DialTimeout | UpstreamFailure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                UpstreamFailure::ClientBody { too_large: true, .. } => StatusCode::PAYLOAD_TOO_LARGE,
                UpstreamFailure::ClientBody { .. } => StatusCode::BAD_REQUEST,
            },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoBackend => "no_backend",
            ProxyError::NoServer { .. } => "no_server",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::HeadTooLarge(_) => "header_too_large",
            ProxyError::UriTooLong { .. } => "uri_too_long",
            ProxyError::UnsupportedCoding => "transfer_coding_not_implemented",
            ProxyError::Rejected(r) if r.reason == "connections" => "too_many_connections",
            ProxyError::Rejected(_) => "rate_limited",
            ProxyError::Redirect { .. } => "redirect",
            ProxyError::Fallback { .. } => "circuit_open",
            ProxyError::Internal(_) => "internal",
            ProxyError::Upstream { failure, .. } => match failure {
                UpstreamFailure::Connect(_) => "upstream_unreachable",
                UpstreamFailure::DialTimeout => "upstream_connect_timeout",
                UpstreamFailure::Timeout(_) => "upstream_timeout",
                UpstreamFailure::Reset(_) => "upstream_reset",
                UpstreamFailure::ClientBody { .. } => "client_body",
                UpstreamFailure::DrainDeadline(_) => "upstream_drain_deadline",
            },
        }
    }

    /// The JSON error answer. Upstream details (addresses, OS errors) stay in the log, not in the body.
    pub fn response(&self, frontend: Option<&str>, request_id: &HeaderValue) -> Response<ProxyBody> {
        if let ProxyError::Redirect { location } = self {
            // What Vulcand sends: the status text as the body.
            let mut resp = Response::new(ProxyBody::full(Bytes::from_static(b"Found")));
            *resp.status_mut() = StatusCode::FOUND;
            resp.headers_mut().insert(header::LOCATION, location.clone());
            resp.headers_mut().insert(super::headers::X_REQUEST_ID.clone(), request_id.clone());
            return resp;
        }
        if let ProxyError::Fallback { status, content_type, body, .. } = self {
            let mut resp = Response::new(ProxyBody::full(body.clone()));
            *resp.status_mut() = *status;
            resp.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
            resp.headers_mut().insert(super::headers::X_REQUEST_ID.clone(), request_id.clone());
            return resp;
        }
        let mut body = serde_json::json!({
            "error": self.code(),
            "status": self.status().as_u16(),
            "request_id": request_id.to_str().unwrap_or(""),
        });
        if let Some(f) = frontend {
            body["frontend"] = f.into();
        }
        match self {
            ProxyError::NoServer { backend } => body["backend"] = backend.as_ref().into(),
            ProxyError::Upstream { backend, server, failure } => {
                body["backend"] = backend.as_ref().into();
                body["server"] = server.as_ref().into();
                if let UpstreamFailure::Timeout(d) = failure {
                    body["timeout"] = crate::model::format_duration(*d).into();
                }
            }
            ProxyError::BodyTooLarge { limit } => body["limit"] = (*limit).into(),
            ProxyError::Rejected(r) => body["middleware"] = r.middleware.as_ref().into(),
            _ => {}
        }
        let mut bytes = body.to_string().into_bytes();
        bytes.push(b'\n');
        let mut resp = Response::new(ProxyBody::full(bytes));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut().insert(super::headers::X_REQUEST_ID.clone(), request_id.clone());
        if let ProxyError::Rejected(crate::middleware::Rejected { retry_after: Some(secs), .. }) = self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(failure: UpstreamFailure) -> ProxyError {
        ProxyError::Upstream { failure, backend: "b".into(), server: "s".into() }
    }

    #[test]
    fn the_status_follows_from_where_the_fault_lies() {
        let cases = [
            (ProxyError::NoRoute, ErrorSource::Downstream, 404),
            (ProxyError::BadRequest("x"), ErrorSource::Downstream, 400),
            (ProxyError::BodyTooLarge { limit: 1 }, ErrorSource::Downstream, 413),
            (ProxyError::HeadTooLarge("x"), ErrorSource::Downstream, 431),
            (ProxyError::UriTooLong { limit: 1 }, ErrorSource::Downstream, 414),
            (ProxyError::UnsupportedCoding, ErrorSource::Downstream, 501),
            (
                ProxyError::Rejected(crate::middleware::Rejected {
                    middleware: "rl".into(),
                    reason: "rate",
                    retry_after: Some(1),
                }),
                ErrorSource::Downstream,
                429,
            ),
            (
                upstream(UpstreamFailure::ClientBody { message: "gone".into(), too_large: false }),
                ErrorSource::Downstream,
                400,
            ),
            (ProxyError::NoBackend, ErrorSource::Internal, 503),
            (ProxyError::NoServer { backend: "b".into() }, ErrorSource::Internal, 503),
            (ProxyError::Internal("x"), ErrorSource::Internal, 500),
            (upstream(UpstreamFailure::Connect("refused".into())), ErrorSource::Upstream, 502),
            (upstream(UpstreamFailure::Reset("reset".into())), ErrorSource::Upstream, 502),
            (upstream(UpstreamFailure::DialTimeout), ErrorSource::Upstream, 504),
            (upstream(UpstreamFailure::Timeout(Duration::from_secs(1))), ErrorSource::Upstream, 504),
        ];
        for (err, source, status) in cases {
            assert_eq!((err.error_source(), err.status().as_u16()), (source, status), "{err}");
        }
    }

    #[test]
    fn only_a_request_no_server_can_have_seen_is_safe_to_send_again() {
        assert!(ProxyError::NoServer { backend: "b".into() }.retry_safe());
        assert!(upstream(UpstreamFailure::Connect("refused".into())).retry_safe());
        assert!(upstream(UpstreamFailure::DialTimeout).retry_safe());
        assert!(!upstream(UpstreamFailure::Reset("reset".into())).retry_safe());
        assert!(!upstream(UpstreamFailure::Timeout(Duration::from_secs(1))).retry_safe());
        assert!(!upstream(UpstreamFailure::DrainDeadline(Duration::from_secs(1))).retry_safe());
        assert!(!ProxyError::BodyTooLarge { limit: 1 }.retry_safe());
        assert!(!ProxyError::NoRoute.retry_safe());
    }
}
