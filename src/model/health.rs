//! Backend health settings, Ficus extensions of Vulcand's backend `Settings`: `HealthCheck` (active checks)
//! and `Outlier` (passive ejection). Checked per key when the backend's value arrives, so a bad value is
//! refused naming its field and the last good one keeps serving; `upstream::health` acts on the result.

use super::{ConfigError, GoDuration, Key};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// `Settings.HealthCheck` as stored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct HealthCheckSpec {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// `Settings.Outlier` as stored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct OutlierSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejection: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejected_percent: Option<u32>,
}

/// Active checks with defaults filled in: `GET Path` every `Interval` (spread by jitter), a pass is a 2xx
/// answer within `Timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct HealthCheck {
    pub path: String,
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Consecutive passes that bring a failing server back.
    pub healthy: u32,
    /// Consecutive failures that take a server out.
    pub unhealthy: u32,
    /// The `Host` of the check request; the server's own `host:port` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// Passive ejection with defaults filled in (Envoy's consecutive-errors detector, with its growing ejection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Outlier {
    /// Consecutive connect errors or 5xx answers that eject a server.
    pub consecutive: u32,
    /// The first ejection's length; the n-th lasts n times as long, up to `max_ejection`.
    #[serde(serialize_with = "ser_duration")]
    pub ejection: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub max_ejection: Duration,
    /// At most this share of a backend's servers is ejected at once (always at least one server).
    pub max_ejected_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive: 5,
            ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// A backend's health settings, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct BackendHealth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Arc<HealthCheck>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier: Option<Outlier>,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::format_duration(*d))
}

/// Checks are at least this far apart: a check loop tighter than this is a load test, not a health check.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Pass and failure streaks longer than this only delay a decision by minutes.
pub const MAX_STREAK: u32 = 100;

pub(super) fn health(
    key: &Key,
    check: Option<&HealthCheckSpec>,
    outlier: Option<&OutlierSpec>,
) -> Result<BackendHealth, ConfigError> {
    let err = |field: &str, msg: String| ConfigError::new(key, Some(&format!("Settings.{field}")), msg);
    let check = match check {
        None => None,
        Some(c) => {
            if !c.path.starts_with('/') || c.path.parse::<http::uri::PathAndQuery>().is_err() {
                return Err(err("HealthCheck.Path", format!("`{}` is not an absolute path (`/health`)", c.path)));
            }
            let interval = c.interval.map_or(Duration::from_secs(5), |d| d.0);
            if interval < MIN_INTERVAL {
                let min = super::format_duration(MIN_INTERVAL);
                return Err(err("HealthCheck.Interval", format!("{} is below the minimum {min}", fmt(interval))));
            }
            let timeout = c.timeout.map_or(Duration::from_secs(1).min(interval), |d| d.0);
            if timeout.is_zero() || timeout > interval {
                return Err(err(
                    "HealthCheck.Timeout",
                    format!("{} must be above 0 and at most the Interval {}", fmt(timeout), fmt(interval)),
                ));
            }
            let streak = |field: &str, v: Option<u32>, dflt: u32| match v.unwrap_or(dflt) {
                n @ 1..=MAX_STREAK => Ok(n),
                n => Err(err(&format!("HealthCheck.{field}"), format!("{n} is not within 1..={MAX_STREAK}"))),
            };
            let healthy = streak("Healthy", c.healthy, 2)?;
            let unhealthy = streak("Unhealthy", c.unhealthy, 3)?;
            if let Some(h) = &c.hostname {
                if let Err(why) = super::check::upstream_host(h) {
                    return Err(err("HealthCheck.Hostname", format!("`{h}`: {why}")));
                }
            }
            Some(Arc::new(HealthCheck {
                path: c.path.clone(),
                interval,
                timeout,
                healthy,
                unhealthy,
                hostname: c.hostname.clone(),
            }))
        }
    };
    let outlier = match outlier {
        None => None,
        Some(o) => {
            let d = Outlier::default();
            let consecutive = match o.consecutive.unwrap_or(d.consecutive) {
                n @ 1..=1000 => n,
                n => return Err(err("Outlier.Consecutive", format!("{n} is not within 1..=1000"))),
            };
            let ejection = o.ejection.map_or(d.ejection, |g| g.0);
            if ejection.is_zero() {
                return Err(err("Outlier.Ejection", "must be above 0".to_string()));
            }
            let max_ejection = o.max_ejection.map_or(d.max_ejection.max(ejection), |g| g.0);
            if max_ejection < ejection {
                return Err(err(
                    "Outlier.MaxEjection",
                    format!("{} is below the Ejection {}", fmt(max_ejection), fmt(ejection)),
                ));
            }
            let max_ejected_percent = match o.max_ejected_percent.unwrap_or(d.max_ejected_percent) {
                n @ 0..=100 => n,
                n => return Err(err("Outlier.MaxEjectedPercent", format!("{n} is not within 0..=100"))),
            };
            Some(Outlier { consecutive, ejection, max_ejection, max_ejected_percent })
        }
    };
    Ok(BackendHealth { check, outlier })
}

fn fmt(d: Duration) -> String {
    super::format_duration(d)
}

#[cfg(test)]
mod tests {
    use crate::model::{Change, ConfigState};

    #[test]
    fn bad_health_settings_are_refused_naming_the_field() {
        let mut s = ConfigState::new();
        let bad = [
            (r#"{"HealthCheck":{"Path":"health"}}"#, "Settings.HealthCheck.Path"),
            (r#"{"HealthCheck":{"Path":"/h","Interval":"10ms"}}"#, "Settings.HealthCheck.Interval"),
            (r#"{"HealthCheck":{"Path":"/h","Interval":"1s","Timeout":"2s"}}"#, "Settings.HealthCheck.Timeout"),
            (r#"{"HealthCheck":{"Path":"/h","Healthy":0}}"#, "Settings.HealthCheck.Healthy"),
            (r#"{"HealthCheck":{"Path":"/h","Unhealthy":1000}}"#, "Settings.HealthCheck.Unhealthy"),
            (r#"{"HealthCheck":{"Path":"/h","Hostname":"a b"}}"#, "Settings.HealthCheck.Hostname"),
            (r#"{"HealthCheck":{"Path":"/h","Interval":"soon"}}"#, "Settings.HealthCheck.Interval"),
            (r#"{"HealthCheck":{"Path":"/h","Every":"1s"}}"#, "Settings.HealthCheck.Every"),
            (r#"{"Outlier":{"Consecutive":0}}"#, "Settings.Outlier.Consecutive"),
            (r#"{"Outlier":{"Ejection":"0s"}}"#, "Settings.Outlier.Ejection"),
            (r#"{"Outlier":{"Ejection":"10s","MaxEjection":"5s"}}"#, "Settings.Outlier.MaxEjection"),
            (r#"{"Outlier":{"MaxEjectedPercent":101}}"#, "Settings.Outlier.MaxEjectedPercent"),
        ];
        for (settings, field) in bad {
            let value = format!(r#"{{"Type":"http","Settings":{settings}}}"#);
            let e = s.apply(Change::Put { key: "backends/b/backend".into(), value: value.into_bytes() }).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{settings}: {e}");
        }
        let good = r#"{"Type":"http","Settings":{"HealthCheck":{"Path":"/health/ready","Interval":"2s","Timeout":"1s","Healthy":2,"Unhealthy":3,"Hostname":"svc.local"},"Outlier":{"Consecutive":3}}}"#;
        assert!(s.apply(Change::Put { key: "backends/b/backend".into(), value: good.as_bytes().to_vec() }).is_ok());
    }
}
