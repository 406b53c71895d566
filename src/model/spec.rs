//! The objects as they are stored: Vulcand's JSON, field for field, plus the Ficus extensions.
//!
//! A value is decoded here, per key, with unknown fields refused so a typo (`"Wieght"`) is an error naming the
//! field instead of a silently ignored setting. Nothing here looks at other keys; cross-key checks live in
//! `validate`.

use super::duration::GoDuration;
use serde::{Deserialize, Serialize};

/// `backends/<b>/backend`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct BackendSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default)]
    pub settings: BackendSettings,
    /// Ficus: which side of the strangling this backend is on (`"legacy"` or `"new"`). Only the dashboard
    /// reads it, to show how much traffic has moved off the legacy app; routing ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// A backend's side in a strangler migration (`"Role"` on the backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The application being strangled.
    Legacy,
    /// A service that took routes over from it.
    New,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct BackendSettings {
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub keep_alive: KeepAlive,
    /// Ficus: how long a server that left the backend (removed, expired or `Draining`) may keep its in-flight
    /// requests; then they are cut and its connections closed. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<GoDuration>,
    /// How `https://` servers are reached: Vulcand's upstream TLS block plus Ficus's CA, client certificate and
    /// server name. Without it, `https://` servers are verified against the system's roots.
    #[serde(default, rename = "TLS", skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<BackendTls>>,
    /// Ficus: active health checks of every server of the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<super::HealthCheckSpec>,
    /// Ficus: passive health, ejecting a server after consecutive connect errors or 5xx answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<super::OutlierSpec>,
    /// Ficus: HTTP/2 to the servers. `alpn` (default): over TLS when the server picks h2, else HTTP/1.1;
    /// `prior-knowledge`: always HTTP/2 (h2c on `http://` servers, gRPC's usual setup); `off`: HTTP/1.1 only.
    #[serde(default, rename = "HTTP2", skip_serializing_if = "Option::is_none")]
    pub http2: Option<String>,
}

/// Vulcand's TLS options for a backend (Go's `tls.Config` names), and Ficus's additions.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct BackendTls {
    /// Do not verify the server's certificate (as Go's `InsecureSkipVerify`); logged as a warning at load.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// `VersionTLS12` or `VersionTLS13` (TLS 1.0 and 1.1 are refused: the TLS library has neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
    /// Go's names (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`, ...); TLS 1.2 suites only, as in Go. Empty: defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// No session resumption with the servers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session_tickets_disabled: bool,
    /// A server-side preference in Go; a client has none to state. Accepted so Vulcand trees decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_server_cipher_suites: Option<bool>,
    /// Vulcand's listener session cache; accepted for the same reason (resumption is on unless disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_cache: Option<serde_json::Value>,
    /// Ficus: PEM certificates the servers' chains must lead to, instead of the system's roots.
    #[serde(default, rename = "CA", skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Ficus: the name sent by SNI and checked in the certificate, instead of the server URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Ficus: a client certificate chain (PEM) for servers that ask for one, with its `Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Timeouts {
    /// Time to wait for the response headers after the request was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<GoDuration>,
    /// Time to establish the TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial: Option<GoDuration>,
    #[serde(default, rename = "TLSHandshake", skip_serializing_if = "Option::is_none")]
    pub tls_handshake: Option<GoDuration>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct KeepAlive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_idle_conns_per_host: Option<u32>,
}

/// `backends/<b>/servers/<s>`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ServerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "URL")]
    pub url: String,
    /// Ficus: relative share of the backend's traffic. Absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Ficus: no new requests; in-flight ones finish.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// `frontends/<f>/frontend`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct FrontendSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "Type")]
    pub kind: String,
    /// One backend for all the traffic (Vulcand). Either this or `Backends`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<String>,
    /// Ficus: the traffic split across backends by weight, e.g. 95/5 for a canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<WeightedBackend>>,
    pub route: String,
    /// Ficus: higher wins over every other precedence rule.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub settings: FrontendSettings,
    /// Ficus: keep each client on one side of the split (a cookie, a header or the client IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Box<super::canary::StickySpec>>,
    /// Ficus: copy requests to another backend and compare its answers with the primary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Box<super::canary::ShadowSpec>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct WeightedBackend {
    pub id: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct FrontendSettings {
    #[serde(default)]
    pub limits: Limits,
    /// Vulcand's retry predicate: when an attempt ends this way, the request goes to another server.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failover_predicate: String,
    /// Ficus: the share of requests that may be retries (default 20%, at least 3 a second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<super::RetryBudgetSpec>,
    /// Overrides the Host header sent upstream.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Keep X-Forwarded-* from the client instead of replacing them.
    #[serde(default)]
    pub trust_forward_header: bool,
    /// Send the client's Host upstream instead of the server's.
    #[serde(default)]
    pub pass_host_header: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Limits {
    /// Vulcand buffered bodies up to this size in memory; Ficus streams every body, so it only checks the type.
    #[serde(default)]
    pub max_mem_body_bytes: u64,
    /// Requests with a larger body are refused with 413. 0 means no limit.
    #[serde(default)]
    pub max_body_bytes: u64,
}

/// `frontends/<f>/middlewares/<m>`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct MiddlewareSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub middleware: serde_json::Value,
}

/// `hosts/<h>/host`: a certificate for SNI.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct HostSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub settings: HostSettings,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct HostSettings {
    /// Served when the client sends no SNI or an unknown name.
    #[serde(default)]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pair: Option<KeyPair>,
    /// Vulcand's OCSP stapling block: decoded, not acted on.
    #[serde(default, rename = "OCSP", skip_serializing_if = "Option::is_none")]
    pub ocsp: Option<serde_json::Value>,
}

#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct KeyPair {
    pub cert: String,
    #[serde(serialize_with = "redact")]
    pub key: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("cert", &format_args!("{} bytes", self.cert.len())).finish_non_exhaustive()
    }
}

/// Private keys never leave the process through `/config` or logs.
fn redact<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("(redacted)")
}

/// `listeners/<l>`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ListenerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub protocol: String,
    pub address: ListenerAddress,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ListenerAddress {
    pub network: String,
    pub address: String,
}
