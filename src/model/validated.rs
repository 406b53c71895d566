//! The validated config types: what the cross-key pass (`validate`) produces and `table/` compiles. Each
//! value here passed its per-key checks (`check`) and the cross-key rules; the compiler can rely on that and
//! never re-checks. Stored types are `*Spec` (`spec.rs`); these are their checked forms.

use super::{ConfigError, FrontendSettings, ValidatedMiddleware};
use crate::route::RouteExpr;
use http::uri::{Authority, Scheme};
use imbl::OrdMap;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The config as the table is compiled from it. The maps are persistent (copies share structure), so every
/// generation can keep its own copy for `/config` without copying 10,000 frontends per change.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ValidatedConfig {
    pub backends: OrdMap<String, ValidatedBackend>,
    /// Shared with the model's per-key cache: an unchanged frontend is the same `Arc` in every generation, which
    /// is how the table compiler knows it can keep what it compiled before.
    pub frontends: OrdMap<String, Arc<ValidatedFrontend>>,
    pub hosts: OrdMap<String, ValidatedHost>,
    pub listeners: OrdMap<String, ValidatedListener>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidatedBackend {
    pub id: String,
    pub settings: UpstreamSettings,
    /// How `https://` servers are reached; `None` when the backend has none and no `TLS` block.
    pub tls: Option<super::UpstreamTls>,
    /// Active checks and passive ejection (Ficus extensions); kept out of `settings` so changing them keeps
    /// the servers' pools.
    pub health: super::BackendHealth,
    pub servers: Vec<ValidatedServer>,
    /// `Role`, when the backend says which side of the migration it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<super::Role>,
}

/// Backend settings with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct UpstreamSettings {
    #[serde(serialize_with = "ser_duration")]
    pub dial_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub read_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub tls_handshake_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub keep_alive_period: Duration,
    pub max_idle_per_host: u32,
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    pub http2: super::Http2,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        // Vulcand's defaults, except Read: a proxy that never times out a hung upstream holds its slot forever.
        UpstreamSettings {
            dial_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            keep_alive_period: Duration::from_secs(30),
            max_idle_per_host: 256,
            drain_timeout: Duration::from_secs(30),
            http2: super::Http2::Alpn,
        }
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::format_duration(*d))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatedServer {
    pub id: String,
    pub url: String,
    #[serde(skip)]
    pub scheme: Scheme,
    #[serde(skip)]
    pub authority: Authority,
    pub weight: u32,
    pub draining: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidatedFrontend {
    pub id: String,
    pub route: String,
    #[serde(skip)]
    pub expr: RouteExpr,
    pub priority: i32,
    /// `(backend id, weight)`; one entry with weight 1 for a plain `BackendId`.
    pub backends: Vec<(String, u32)>,
    pub settings: FrontendSettings,
    /// `Settings.FailoverPredicate` bound, with the retry budget; `None` without a predicate.
    #[serde(skip)]
    pub failover: Option<Arc<super::FailoverConfig>>,
    pub middlewares: Vec<ValidatedMiddleware>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<super::StickyKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<super::ValidatedShadow>,
}

#[derive(Clone, Serialize)]
pub struct ValidatedHost {
    pub name: String,
    pub default: bool,
    #[serde(skip)]
    pub certified_key: Arc<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for ValidatedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatedHost").field("name", &self.name).field("default", &self.default).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatedListener {
    pub id: String,
    pub protocol: Protocol,
    pub address: SocketAddr,
}

/// The outcome of the cross-key pass.
#[derive(Debug, Default)]
pub struct Validation {
    pub config: ValidatedConfig,
    /// What changed since the previous pass.
    pub delta: Delta,
    /// Values left out (or replaced by their last good value).
    pub errors: Vec<ConfigError>,
    /// Values in force but with a part that Ficus does not act on yet.
    pub unsupported: Vec<ConfigError>,
}

/// What one validation pass changed, so the table compiler touches only that.
#[derive(Debug, Default, Clone)]
pub struct Delta {
    /// Backends whose validated value may differ (added, changed or removed).
    pub backends: Vec<String>,
    /// Frontends whose validated value may differ (added, changed, removed, or a named backend came or went).
    pub frontends: Vec<String>,
    pub hosts: bool,
    pub listeners: bool,
}
