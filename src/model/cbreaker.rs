//! Vulcand's `cbreaker` middleware value, decoded and checked per key: the condition bound to the breaker's
//! vocabulary (so `LatencyAtQuantileMS("x")` is refused when the value arrives, naming `Middleware.Condition`
//! and the position), the fallback, the three durations (Go strings such as `"10s"` or Vulcand's integer
//! nanoseconds) and the `OnTripped`/`OnStandby` webhooks. Part of model/, called by `middleware::check`; the
//! compiled breaker (`middleware::cbreaker`) only ever sees the checked [`CircuitBreakerConfig`].

use super::{format_duration, parse_duration, ConfigError, Key};
use crate::predicate::{self, Predicate, Signature, Type};
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::time::Duration;

/// The functions a breaker's condition may call, over its frontend's sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerFn {
    /// Requests answered 502 or 504 (the server could not be reached or did not answer) over all requests.
    NetworkErrorRatio,
    /// The latency at a quantile (percent, `50.0`), in milliseconds.
    LatencyAtQuantileMs,
    /// Requests with a status in `[a, b)` over those with a status in `[c, d)`.
    ResponseCodeRatio,
}

pub const BREAKER_VOCABULARY: &[Signature<BreakerFn>] = &[
    Signature { name: "NetworkErrorRatio", args: &[], result: Type::Float, func: BreakerFn::NetworkErrorRatio },
    Signature {
        name: "LatencyAtQuantileMS",
        args: &[Type::Float],
        result: Type::Float,
        func: BreakerFn::LatencyAtQuantileMs,
    },
    Signature {
        name: "ResponseCodeRatio",
        args: &[Type::Int, Type::Int, Type::Int, Type::Int],
        result: Type::Float,
        func: BreakerFn::ResponseCodeRatio,
    },
];

/// A checked `cbreaker`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CircuitBreakerConfig {
    #[serde(serialize_with = "ser_predicate")]
    pub condition: Predicate<BreakerFn>,
    pub fallback: Fallback,
    #[serde(serialize_with = "ser_duration")]
    pub fallback_duration: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub recovery_duration: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub check_period: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_tripped: Option<Webhook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_standby: Option<Webhook>,
}

impl PartialEq for CircuitBreakerConfig {
    fn eq(&self, o: &Self) -> bool {
        self.condition.text() == o.condition.text()
            && (&self.fallback, self.fallback_duration, self.recovery_duration, self.check_period)
                == (&o.fallback, o.fallback_duration, o.recovery_duration, o.check_period)
            && (&self.on_tripped, &self.on_standby) == (&o.on_tripped, &o.on_standby)
    }
}

/// What a tripped breaker answers instead of the backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "Type", rename_all = "lowercase")]
pub enum Fallback {
    Response {
        #[serde(rename = "StatusCode", serialize_with = "ser_status")]
        status: StatusCode,
        #[serde(rename = "ContentType", serialize_with = "ser_header_value")]
        content_type: HeaderValue,
        #[serde(rename = "Body")]
        body: String,
    },
    /// 302 to `url`; with `preserve_path`, the request's path and query are appended to it.
    Redirect {
        #[serde(rename = "URL")]
        url: String,
        #[serde(rename = "PreservePath")]
        preserve_path: bool,
    },
}

/// A request sent when the breaker changes state (Vulcand's side effect): method, URL, headers and a body
/// (`Form` encoded as `application/x-www-form-urlencoded`, or `Body` as given); `https://` ones verified
/// against the system's roots when sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    #[serde(rename = "URL", serialize_with = "ser_display")]
    pub url: Uri,
    #[serde(rename = "Method", serialize_with = "ser_display")]
    pub method: Method,
    #[serde(skip)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    #[serde(skip)]
    pub body: Vec<u8>,
}

fn ser_predicate<S: Serializer>(p: &Predicate<BreakerFn>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.text())
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn ser_status<S: Serializer>(c: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(c.as_u16())
}

fn ser_header_value<S: Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.to_str().unwrap_or(""))
}

fn ser_display<S: Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A duration as Vulcand stores it: integer nanoseconds (Go's `time.Duration` marshalled), or a Go string.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum DurationSpec {
    Nanos(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct CbreakerSpec {
    condition: String,
    #[serde(default)]
    fallback: Option<FallbackSpec>,
    #[serde(default)]
    fallback_duration: Option<DurationSpec>,
    #[serde(default)]
    recovery_duration: Option<DurationSpec>,
    #[serde(default)]
    check_period: Option<DurationSpec>,
    #[serde(default)]
    on_tripped: Option<WebhookSpec>,
    #[serde(default)]
    on_standby: Option<WebhookSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct FallbackSpec {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(default)]
    action: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ResponseAction {
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    status_code: Option<u16>,
    #[serde(default)]
    body: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedirectAction {
    #[serde(rename = "URL")]
    url: String,
    #[serde(rename = "PreservePath", default)]
    preserve_path: bool,
}

/// One header or form value, or several (Go's `http.Header` and `url.Values` are maps to lists).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WebhookSpec {
    #[serde(rename = "URL")]
    url: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    form: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    body: Option<serde_json::Value>,
}

/// Vulcand's defaults (oxy's): a breaker written without durations still recovers.
const FALLBACK_DURATION: Duration = Duration::from_secs(10);
const RECOVERY_DURATION: Duration = Duration::from_secs(10);
const CHECK_PERIOD: Duration = Duration::from_millis(100);

pub(super) fn check(key: &Key, s: CbreakerSpec) -> Result<CircuitBreakerConfig, ConfigError> {
    let field = |f: &str| format!("Middleware.{f}");
    let condition = predicate::compile(&s.condition, BREAKER_VOCABULARY)
        .map_err(|e| ConfigError::new(key, Some(&field("Condition")), e))?;
    for (func, args) in condition.calls() {
        let q = args.first().map(|a| a.as_float()).unwrap_or(0.0);
        if func == BreakerFn::LatencyAtQuantileMs && !(0.0..=100.0).contains(&q) {
            let why = format!("LatencyAtQuantileMS({q}): the quantile is a percent, 0 to 100");
            return Err(ConfigError::new(key, Some(&field("Condition")), why));
        }
    }
    let duration = |name: &str, d: Option<DurationSpec>, default: Duration| -> Result<Duration, ConfigError> {
        let d = match d {
            None | Some(DurationSpec::Nanos(0)) => return Ok(default),
            Some(DurationSpec::Nanos(n)) => Duration::from_nanos(n),
            Some(DurationSpec::Text(t)) => {
                parse_duration(&t).map_err(|e| ConfigError::new(key, Some(&field(name)), e))?
            }
        };
        if d.is_zero() {
            return Ok(default);
        }
        Ok(d)
    };
    let fallback = match s.fallback {
        None => Fallback::Response {
            status: StatusCode::SERVICE_UNAVAILABLE,
            content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
            body: "Service Unavailable".into(),
        },
        Some(f) => fallback(key, f)?,
    };
    Ok(CircuitBreakerConfig {
        condition,
        fallback,
        fallback_duration: duration("FallbackDuration", s.fallback_duration, FALLBACK_DURATION)?,
        recovery_duration: duration("RecoveryDuration", s.recovery_duration, RECOVERY_DURATION)?,
        check_period: duration("CheckPeriod", s.check_period, CHECK_PERIOD)?,
        on_tripped: s.on_tripped.map(|w| webhook(key, "OnTripped", w)).transpose()?,
        on_standby: s.on_standby.map(|w| webhook(key, "OnStandby", w)).transpose()?,
    })
}

fn fallback(key: &Key, f: FallbackSpec) -> Result<Fallback, ConfigError> {
    let action_err = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        let field = if path == "." {
            "Middleware.Fallback.Action".into()
        } else {
            format!("Middleware.Fallback.Action.{path}")
        };
        ConfigError::new(key, Some(&field), e.into_inner())
    };
    match f.kind.as_str() {
        "response" => {
            let a: ResponseAction = serde_path_to_error::deserialize(&f.action).map_err(action_err)?;
            let status =
                StatusCode::from_u16(a.status_code.unwrap_or(503)).ok().filter(|s| s.as_u16() >= 200).ok_or_else(
                    || ConfigError::new(key, Some("Middleware.Fallback.Action.StatusCode"), "not a final HTTP status"),
                )?;
            let content_type = if a.content_type.is_empty() { "text/plain; charset=utf-8" } else { &a.content_type };
            let content_type = HeaderValue::from_str(content_type).map_err(|_| {
                ConfigError::new(key, Some("Middleware.Fallback.Action.ContentType"), "not a header value")
            })?;
            Ok(Fallback::Response { status, content_type, body: a.body })
        }
        "redirect" => {
            let a: RedirectAction = serde_path_to_error::deserialize(&f.action).map_err(action_err)?;
            if HeaderValue::from_str(&a.url).is_err() || a.url.parse::<Uri>().is_err() || a.url.is_empty() {
                return Err(ConfigError::new(key, Some("Middleware.Fallback.Action.URL"), "not a URL"));
            }
            Ok(Fallback::Redirect { url: a.url, preserve_path: a.preserve_path })
        }
        other => Err(ConfigError::new(
            key,
            Some("Middleware.Fallback.Type"),
            format!("unknown fallback type `{other}` (response or redirect)"),
        )),
    }
}

fn webhook(key: &Key, name: &str, w: WebhookSpec) -> Result<Webhook, ConfigError> {
    let err = |f: &str, msg: String| ConfigError::new(key, Some(&format!("Middleware.{name}.{f}")), msg);
    let url: Uri = w.url.parse().map_err(|e| err("URL", format!("not a URL: {e}")))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
        return Err(err("URL", "must be an absolute http:// or https:// URL".into()));
    }
    let method = if w.method.is_empty() { "POST" } else { &w.method };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| err("Method", "not an HTTP method".into()))?;
    let mut headers = Vec::new();
    for (name, values) in &w.headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| err("Headers", format!("`{name}` is not a header name")))?;
        for v in values.values() {
            let v = HeaderValue::from_str(v)
                .map_err(|_| err("Headers", format!("`{name}` has a value that is not a header value")))?;
            headers.push((n.clone(), v));
        }
    }
    let body = match (&w.body, w.form.is_empty()) {
        (Some(_), false) => return Err(err("Form", "give Form or Body, not both".into())),
        (Some(serde_json::Value::String(s)), _) => s.clone().into_bytes(),
        (Some(other), _) => other.to_string().into_bytes(),
        (None, false) => {
            let mut out = String::new();
            for (k, values) in &w.form {
                for v in values.values() {
                    if !out.is_empty() {
                        out.push('&');
                    }
                    form_encode(k, &mut out);
                    out.push('=');
                    form_encode(v, &mut out);
                }
            }
            if !headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE) {
                headers
                    .push((http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded")));
            }
            out.into_bytes()
        }
        (None, true) => Vec::new(),
    };
    Ok(Webhook { url, method, headers, body })
}

/// `application/x-www-form-urlencoded`, as Go's `url.Values.Encode` writes it.
fn form_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_json(json: &str) -> Result<CircuitBreakerConfig, ConfigError> {
        let key = Key::parse("frontends/f/middlewares/cb").unwrap();
        let spec: CbreakerSpec = serde_json::from_str(json).unwrap();
        check(&key, spec)
    }

    #[test]
    fn vulcands_documented_breaker_is_accepted_with_nanosecond_durations() {
        let c = check_json(
            r#"{"Condition":"NetworkErrorRatio() > 0.5",
                "Fallback":{"Type": "response", "Action": {"StatusCode": 400, "Body": "Come back later"}},
                "FallbackDuration": 10000000000, "RecoveryDuration": 10000000000, "CheckPeriod": 100000000}"#,
        )
        .unwrap();
        assert_eq!(c.fallback_duration, Duration::from_secs(10));
        assert_eq!(c.check_period, Duration::from_millis(100));
        assert!(matches!(c.fallback, Fallback::Response { status: StatusCode::BAD_REQUEST, .. }));
        let c = check_json(
            r#"{"Condition":"LatencyAtQuantileMS(50.0) > 50 || ResponseCodeRatio(500, 600, 0, 600) > 0.5",
                "Fallback":{"Type":"redirect","Action":{"URL":"https://example.com/fallback"}},
                "FallbackDuration":"3s","CheckPeriod":"50ms",
                "OnTripped":{"URL":"http://127.0.0.1:9/hook","Method":"POST","Form":{"state":["tripped"],"a b":"c&d"}},
                "OnStandby":{"URL":"https://events.example.com/x","Body":{"event_type":"resolve"},
                             "Headers":{"Content-Type":["application/json"]}}}"#,
        )
        .unwrap();
        assert_eq!((c.fallback_duration, c.recovery_duration), (Duration::from_secs(3), RECOVERY_DURATION));
        let tripped = c.on_tripped.unwrap();
        assert_eq!(String::from_utf8(tripped.body).unwrap(), "a+b=c%26d&state=tripped");
        assert_eq!(String::from_utf8(c.on_standby.unwrap().body).unwrap(), r#"{"event_type":"resolve"}"#);
    }

    #[test]
    fn bad_breakers_name_their_field() {
        for (json, field) in [
            (r#"{"Condition":"Nope() > 1"}"#, "Middleware.Condition"),
            (r#"{"Condition":"NetworkErrorRatio() >"}"#, "Middleware.Condition"),
            (r#"{"Condition":"NetworkErrorRatio() > 1","FallbackDuration":"10 s"}"#, "Middleware.FallbackDuration"),
            (r#"{"Condition":"NetworkErrorRatio() > 1","Fallback":{"Type":"teapot"}}"#, "Middleware.Fallback.Type"),
            (
                r#"{"Condition":"NetworkErrorRatio() > 1","Fallback":{"Type":"response","Action":{"StatusCode":99}}}"#,
                "Middleware.Fallback.Action.StatusCode",
            ),
            (
                r#"{"Condition":"NetworkErrorRatio() > 1","Fallback":{"Type":"redirect","Action":{}}}"#,
                "Middleware.Fallback.Action",
            ),
            (r#"{"Condition":"NetworkErrorRatio() > 1","OnTripped":{"URL":"/relative"}}"#, "Middleware.OnTripped.URL"),
            (
                r#"{"Condition":"NetworkErrorRatio() > 1","OnStandby":{"URL":"http://h/","Method":"G T"}}"#,
                "Middleware.OnStandby.Method",
            ),
            (r#"{"Condition":"NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(500.0) > 10"}"#, "Middleware.Condition"),
            (r#"{"Condition":"LatencyAtQuantileMS(-1.0) > 10"}"#, "Middleware.Condition"),
        ] {
            let e = check_json(json).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{json}: {e}");
        }
        let e = check_json(r#"{"Condition":"LatencyAtQuantileMS(\"x\") > 1"}"#).unwrap_err();
        assert!(e.message.contains("at position 20"), "{e}");
    }
}
