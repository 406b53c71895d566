//! What can go wrong on the request path, where the fault lies, and the status code that follows from it.

use super::ProxyBody;
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
            PoolError::Http(http) => http,
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
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoBackend | ProxyError::NoServer { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
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
            _ => {}
        }
        let mut bytes = body.to_string().into_bytes();
        bytes.push(b'\n');
        let mut resp = Response::new(ProxyBody::full(bytes));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut().insert(super::headers::X_REQUEST_ID.clone(), request_id.clone());
        resp
    }
}
