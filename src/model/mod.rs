//! The configuration model: what the sources deliver (key, JSON value), decoded and validated.
//!
//! Data flow: `source/` hands raw `(key, value)` changes to [`ConfigState::apply`], which decodes each value on
//! its own ([`decode`], with the per-key checks of `check`) and keeps the last value that decoded.
//! [`ConfigState::validate`] then runs the incremental cross-key engine (`validate`: a frontend's backends
//! exist, servers and middlewares have their parent) and produces a [`ValidatedConfig`] (the types of
//! `validated`) that `table/` compiles. Every problem is a [`ConfigError`] naming the key and field; a bad value
//! never removes a good one.

mod canary;
mod cbreaker;
mod check;
mod duration;
pub mod failover;
mod health;
mod key;
mod middleware;
mod spec;
mod state;
mod trace;
mod upstream_tls;
mod validate;
mod validated;

pub use canary::{ShadowSpec, StickyKey, StickySpec, ValidatedShadow};
pub use cbreaker::{BreakerFn, CircuitBreakerConfig, Fallback, Webhook, BREAKER_VOCABULARY};
pub use duration::{de_duration, format_duration, parse_duration, DurationError, GoDuration};
pub use failover::{FailoverConfig, FailoverFn, RetryBudgetSpec, FAILOVER_VOCABULARY};
pub use health::{BackendHealth, HealthCheck, HealthCheckSpec, Outlier, OutlierSpec};
pub use key::{is_own_state, Key, KeyError, OWN_STATE_DIR};
pub use middleware::{
    ConnLimitConfig, MiddlewareConfig, RateLimitConfig, RewriteConfig, ValidatedMiddleware, Variable,
};
pub use spec::*;
pub use state::{Change, ConfigState, Rejection};
pub use trace::{SyslogTarget, TraceConfig};
pub use upstream_tls::{system_client_config, Http2, UpstreamTls};
pub use validated::{
    Delta, Protocol, UpstreamSettings, ValidatedBackend, ValidatedConfig, ValidatedFrontend, ValidatedHost,
    ValidatedListener, ValidatedServer, Validation,
};

use serde::de::DeserializeOwned;
use std::fmt;

/// One decoded value, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    Backend(BackendSpec),
    Server(ServerSpec),
    Frontend(FrontendSpec),
    Middleware(MiddlewareSpec),
    Host(HostSpec),
    Listener(ListenerSpec),
}

/// A problem with one key, as shown in the log, `/status` and `ficus check`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    pub key: String,
    /// The JSON field (`Settings.Timeouts.Read`, `Route`), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl fmt::Display, field: Option<&str>, message: impl fmt::Display) -> Self {
        ConfigError { key: key.to_string(), field: field.map(str::to_string), message: message.to_string() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {}: {}", self.key, field, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Decodes one value for its key: JSON syntax, field names and types, and the checks that need no other key.
pub fn decode(key: &Key, value: &[u8]) -> Result<Spec, ConfigError> {
    let spec = match key {
        Key::Backend { .. } => Spec::Backend(json(key, value)?),
        Key::Server { .. } => Spec::Server(json(key, value)?),
        Key::Frontend { .. } => Spec::Frontend(json(key, value)?),
        Key::Middleware { .. } => Spec::Middleware(json(key, value)?),
        Key::Host { .. } => Spec::Host(json(key, value)?),
        Key::Listener { .. } => Spec::Listener(json(key, value)?),
    };
    check::check_one(key, &spec)?;
    Ok(spec)
}

fn json<T: DeserializeOwned>(key: &Key, value: &[u8]) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(value);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = parsed.map_err(|e| {
        let path = e.path().to_string();
        let field = (path != "." && !path.is_empty()).then_some(path);
        ConfigError::new(key, field.as_deref(), e.into_inner())
    })?;
    // Trailing bytes after the document are as wrong as a syntax error inside it.
    de.end().map_err(|e| ConfigError::new(key, None, e))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Key::parse(s).unwrap()
    }

    #[test]
    fn decodes_vulcand_documents_verbatim() {
        let b = br#"{"Type": "http", "Settings": {"Timeouts": {"Read":"5s","Dial":"1s","TLSHandshake":"2s"}, "KeepAlive": {"Period":"30s","MaxIdleConnsPerHost":32}}}"#;
        assert!(matches!(decode(&key("backends/b1/backend"), b), Ok(Spec::Backend(_))));
        let s = br#"{"URL": "http://localhost:5000"}"#;
        assert!(matches!(decode(&key("backends/b1/servers/srv1"), s), Ok(Spec::Server(_))));
        let f = br#"{"Type": "http", "BackendId": "b1", "Route": "Path(\"/\")"}"#;
        assert!(matches!(decode(&key("frontends/f1/frontend"), f), Ok(Spec::Frontend(_))));
        let m = br#"{"Id":"rl1", "Priority":1, "Type":"ratelimit", "Middleware":{"Requests":100, "PeriodSeconds":1, "Burst":3, "Variable": "client.ip"}}"#;
        assert!(matches!(decode(&key("frontends/f1/middlewares/rl1"), m), Ok(Spec::Middleware(_))));
        let l = br#"{"Protocol":"http", "Address":{"Network":"tcp", "Address":"127.0.0.1:8080"}}"#;
        assert!(matches!(decode(&key("listeners/l1"), l), Ok(Spec::Listener(_))));
    }

    #[test]
    fn errors_name_key_and_field() {
        let e = decode(&key("backends/b1/backend"), br#"{"Type":"http","Settings":{"Timeouts":{"Read":"5 parsecs"}}}"#)
            .unwrap_err();
        assert_eq!(e.key, "backends/b1/backend");
        assert_eq!(e.field.as_deref(), Some("Settings.Timeouts.Read"));
        let e = decode(&key("backends/b1/servers/s1"), br#"{"URL":"http://a:1","Wieght":3}"#).unwrap_err();
        assert!(e.message.contains("unknown field `Wieght`"), "{e}");
        let e = decode(&key("frontends/gtin/frontend"), br#"{"Type":"http","BackendId":"b","Route":"Paht(`/`)"}"#)
            .unwrap_err();
        assert_eq!(e.to_string(), "frontends/gtin/frontend: Route: unknown matcher `Paht` at 0");
        let e = decode(&key("backends/b1/servers/s1"), b"{not json").unwrap_err();
        assert!(e.to_string().starts_with("backends/b1/servers/s1: "), "{e}");
        let e = decode(&key("backends/b1/servers/s1"), br#"{"URL":"http://a:1"} trailing"#).unwrap_err();
        assert!(e.to_string().starts_with("backends/b1/servers/s1: "), "{e}");
    }
}
