//! Vulcand's middleware values (`frontends/<f>/middlewares/<m>`), decoded and checked per key.
//!
//! `check` runs this when a value arrives, so a value with a missing or wrong field is refused naming the key
//! and field (`Middleware.Burst`) and the middleware's last good value keeps enforcing. The cross-key pass
//! turns each value into a [`ValidatedMiddleware`] that `table/` compiles into the frontend's chain. The JSON is
//! Vulcand's, field for field (its docs/proxy.rst).

use super::cbreaker::{self, CbreakerSpec, CircuitBreakerConfig};
use super::trace::{self, TraceConfig, TraceSpec};
use super::{ConfigError, Key, MiddlewareSpec};
use http::HeaderName;
use serde::{Deserialize, Serialize, Serializer};

/// A checked middleware of one frontend, in the order of its chain: `(priority, id)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidatedMiddleware {
    pub id: String,
    pub kind: String,
    pub priority: i32,
    pub config: MiddlewareConfig,
    /// The value that identifies the middleware's state (type and settings, not priority): state such as token
    /// buckets is kept across reloads while this and the key are unchanged.
    #[serde(skip)]
    pub value: String,
}

/// What a middleware does, as Ficus acts on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MiddlewareConfig {
    RateLimit(RateLimitConfig),
    ConnLimit(ConnLimitConfig),
    Rewrite(RewriteConfig),
    #[serde(rename = "cbreaker")]
    CircuitBreaker(Box<CircuitBreakerConfig>),
    Trace(TraceConfig),
    /// A Vulcand type Ficus decodes but does not act on: reported as unsupported, never silently dropped.
    /// (Every type Vulcand documents is acted on today.)
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimitConfig {
    pub requests: u64,
    pub period_seconds: u64,
    pub burst: u64,
    pub variable: Variable,
    /// Vulcand's `RateVar` (`request.header.<Name>`): the header whose JSON value (`[{"PeriodSec":1,
    /// "Average":10,"Burst":20}]`) gives the request's rates; without it (or when it does not parse) the
    /// configured rates apply.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_rate_var")]
    pub rate_var: Option<HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnLimitConfig {
    pub connections: u64,
    pub variable: Variable,
}

/// Vulcand's `rewrite`: the request's URL (`scheme://host/path?query`, as received) is matched against
/// `Regexp`; on a match every match is replaced by `Replacement` (`$1`, `${name}` expand groups; `{{...}}` actions
/// are filled from the request, see `middleware::template`) and the
/// request goes on with the new path and query, or, with `Redirect`, is answered 302 to the new URL.
#[derive(Debug, Clone, Serialize)]
pub struct RewriteConfig {
    /// `None` when the value gives no `Regexp` (a body-only rewrite): the URL is left alone.
    #[serde(serialize_with = "ser_regex")]
    pub regexp: Option<regex::Regex>,
    pub replacement: String,
    /// The response body is a template of the request (`{{.Request.Header.Get "X"}}`), filled in by the
    /// proxy's response phase (bounded; see `middleware::template`).
    pub rewrite_body: bool,
    pub redirect: bool,
}

impl PartialEq for RewriteConfig {
    fn eq(&self, o: &Self) -> bool {
        self.regexp.as_ref().map(regex::Regex::as_str) == o.regexp.as_ref().map(regex::Regex::as_str)
            && (&self.replacement, self.rewrite_body, self.redirect) == (&o.replacement, o.rewrite_body, o.redirect)
    }
}

fn ser_regex<S: Serializer>(r: &Option<regex::Regex>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_ref().map_or("", regex::Regex::as_str))
}

fn ser_rate_var<S: Serializer>(h: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("request.header.{}", h.as_ref().map_or("", HeaderName::as_str)))
}

/// Vulcand's request variables: what a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    ClientIp,
    RequestHost,
    Header(HeaderName),
}

impl Variable {
    fn parse(s: &str) -> Result<Variable, String> {
        match s {
            "client.ip" => Ok(Variable::ClientIp),
            "request.host" => Ok(Variable::RequestHost),
            _ => match s.strip_prefix("request.header.") {
                Some(name) => HeaderName::from_bytes(name.as_bytes())
                    .map(Variable::Header)
                    .map_err(|_| format!("`{name}` is not a header name")),
                None => Err(format!("unknown variable `{s}` (client.ip, request.host or request.header.<Name>)")),
            },
        }
    }
}

impl std::fmt::Display for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Variable::ClientIp => f.write_str("client.ip"),
            Variable::RequestHost => f.write_str("request.host"),
            Variable::Header(h) => write!(f, "request.header.{h}"),
        }
    }
}

impl Serialize for Variable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RateLimitSpec {
    requests: u64,
    period_seconds: u64,
    burst: u64,
    variable: String,
    #[serde(default)]
    rate_var: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RewriteSpec {
    #[serde(default)]
    regexp: String,
    #[serde(default)]
    replacement: String,
    #[serde(default)]
    rewrite_body: bool,
    #[serde(default)]
    redirect: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ConnLimitSpec {
    connections: u64,
    variable: String,
}

const KNOWN: &[&str] = &["ratelimit", "connlimit", "rewrite", "cbreaker", "trace"];

/// Checks one middleware value and works out its config. Errors name the key and the field.
pub(super) fn check(key: &Key, id: &str, m: &MiddlewareSpec) -> Result<ValidatedMiddleware, ConfigError> {
    let config = match m.kind.as_str() {
        "ratelimit" => {
            let s: RateLimitSpec = settings(key, &m.middleware)?;
            for (field, v) in [("Requests", s.requests), ("PeriodSeconds", s.period_seconds), ("Burst", s.burst)] {
                if v == 0 {
                    return Err(ConfigError::new(key, Some(&format!("Middleware.{field}")), "must be above 0"));
                }
            }
            MiddlewareConfig::RateLimit(RateLimitConfig {
                requests: s.requests,
                period_seconds: s.period_seconds,
                burst: s.burst,
                variable: variable(key, &s.variable)?,
                rate_var: match s.rate_var.as_str() {
                    "" => None,
                    v => match Variable::parse(v) {
                        Ok(Variable::Header(h)) => Some(h),
                        _ => {
                            return Err(ConfigError::new(
                                key,
                                Some("Middleware.RateVar"),
                                format!("`{v}` is not request.header.<Name> (rates come from a header)"),
                            ))
                        }
                    },
                },
            })
        }
        "connlimit" => {
            let s: ConnLimitSpec = settings(key, &m.middleware)?;
            if s.connections == 0 {
                return Err(ConfigError::new(key, Some("Middleware.Connections"), "must be above 0"));
            }
            MiddlewareConfig::ConnLimit(ConnLimitConfig {
                connections: s.connections,
                variable: variable(key, &s.variable)?,
            })
        }
        "rewrite" => {
            let s: RewriteSpec = settings(key, &m.middleware)?;
            let regexp = match s.regexp.as_str() {
                "" if s.rewrite_body => None,
                "" => return Err(ConfigError::new(key, Some("Middleware.Regexp"), "missing (or set RewriteBody)")),
                r => Some(
                    regex::Regex::new(r)
                        .map_err(|e| ConfigError::new(key, Some("Middleware.Regexp"), format!("bad regexp: {e}")))?,
                ),
            };
            if let Some(re) = &regexp {
                replacement(re, &s.replacement)
                    .map_err(|why| ConfigError::new(key, Some("Middleware.Replacement"), why))?;
            }
            MiddlewareConfig::Rewrite(RewriteConfig {
                regexp,
                replacement: s.replacement,
                rewrite_body: s.rewrite_body,
                redirect: s.redirect,
            })
        }
        "cbreaker" => {
            let s: CbreakerSpec = settings(key, &m.middleware)?;
            MiddlewareConfig::CircuitBreaker(Box::new(cbreaker::check(key, s)?))
        }
        "trace" => {
            let s: TraceSpec = settings(key, &m.middleware)?;
            MiddlewareConfig::Trace(trace::check(key, s)?)
        }
        k if KNOWN.contains(&k) => MiddlewareConfig::Unsupported,
        other => {
            return Err(ConfigError::new(
                key,
                Some("Type"),
                format!("unknown middleware type `{other}` (known: {})", KNOWN.join(", ")),
            ))
        }
    };
    let value = format!("{}:{}", m.kind, m.middleware);
    Ok(ValidatedMiddleware { id: id.to_string(), kind: m.kind.clone(), priority: m.priority, config, value })
}

/// Checks what a rewrite's `Replacement` can be checked for before a request comes: every group it names
/// (`$1`, `$name`, `${name}`) is one of the regexp's, and its own text (outside `{{...}}` actions, which are
/// filled from the request and encoded) holds no byte a request target never may. Either mistake would
/// otherwise answer every matching request with a 500: a group the regexp lacks expands to nothing (so
/// `$1x`, read as the group `1x`, quietly drops text), and a space or `<` makes the target invalid.
fn replacement(re: &regex::Regex, replacement: &str) -> Result<(), String> {
    // `literal`: the replacement's own text. `scan`: the same with each action as a `/`, which ends a group
    // name there as the filled value does at run time (`template::render_replacement` braces a `$name` that
    // an action follows).
    let (mut literal, mut scan) = (String::new(), String::new());
    let mut rest = replacement;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else { break };
        literal.push_str(&rest[..open]);
        scan.push_str(&rest[..open]);
        scan.push('/');
        rest = &rest[open + 2 + close + 2..];
    }
    literal.push_str(rest);
    scan.push_str(rest);
    if let Some(c) = literal.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '<' | '>' | '`')) {
        return Err(format!("holds {c:?}, which no URL may hold (only what `{{{{...}}}}` fills in is encoded)"));
    }
    let bytes = scan.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let name_char = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
        let (name, next) = match bytes.get(i + 1) {
            Some(b'$') => {
                i += 2;
                continue;
            }
            Some(b'{') => match scan[i + 2..].find('}') {
                Some(len) => (&scan[i + 2..i + 2 + len], i + 3 + len),
                // The regex crate writes an unclosed `${` as it is and reads on.
                None => ("", i + 1),
            },
            _ => {
                let len = bytes[i + 1..].iter().take_while(|b| name_char(b)).count();
                (&scan[i + 1..i + 1 + len], i + 1 + len)
            }
        };
        i = next;
        if name.is_empty() {
            continue;
        }
        let known = match name.parse::<usize>() {
            Ok(n) => n < re.captures_len(),
            Err(_) => re.capture_names().flatten().any(|n| n == name),
        };
        if !known {
            return Err(format!(
                "`${name}` names no group of the regexp (it has {} numbered{}; write `${{1}}x` for group 1 followed by `x`)",
                re.captures_len() - 1,
                match re.capture_names().flatten().collect::<Vec<_>>() {
                    names if names.is_empty() => String::new(),
                    names => format!(" and {}", names.join(", ")),
                }
            ));
        }
    }
    Ok(())
}

fn variable(key: &Key, s: &str) -> Result<Variable, ConfigError> {
    Variable::parse(s).map_err(|e| ConfigError::new(key, Some("Middleware.Variable"), e))
}

fn settings<T: serde::de::DeserializeOwned>(key: &Key, v: &serde_json::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field =
            if path == "." || path.is_empty() { "Middleware".to_string() } else { format!("Middleware.{path}") };
        ConfigError::new(key, Some(&field), e.into_inner())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_json(json: &str) -> Result<ValidatedMiddleware, ConfigError> {
        let key = Key::parse("frontends/f/middlewares/m").unwrap();
        let spec: MiddlewareSpec = serde_json::from_str(json).unwrap();
        check(&key, "m", &spec)
    }

    #[test]
    fn vulcands_documented_values_are_accepted() {
        let rl = check_json(
            r#"{"Id":"rl1","Priority":1,"Type":"ratelimit","Middleware":{"Requests":100,"PeriodSeconds":1,"Burst":3,"Variable":"client.ip"}}"#,
        )
        .unwrap();
        assert!(matches!(rl.config, MiddlewareConfig::RateLimit(RateLimitConfig { requests: 100, burst: 3, .. })));
        let cl =
            check_json(r#"{"Type":"connlimit","Middleware":{"Connections":16,"Variable":"request.header.X-User"}}"#)
                .unwrap();
        let MiddlewareConfig::ConnLimit(c) = cl.config else { panic!("connlimit") };
        assert_eq!(c.variable.to_string(), "request.header.x-user");
        let rw = check_json(r#"{"Type":"rewrite","Middleware":{"Regexp":"/foo(.*)","Replacement":"$1","RewriteBody":false,"Redirect":false}}"#).unwrap();
        for (re, replacement) in [
            ("^/a(.*)/(?P<rest>.*)$", "/b${1}x/$rest/$$/$2?q={{.Request.Header.Get \"X Y\"}}"),
            ("^(.*)$", "https://example.com$1"),
            ("x", "$"),
            // An action ends a group's name, as Vulcand (groups first, then the template) reads it.
            ("^/u/(.*)$", "/v/$1{{.Request.Method}}"),
        ] {
            let json = serde_json::json!({"Type":"rewrite","Middleware":{"Regexp":re,"Replacement":replacement}});
            check_json(&json.to_string()).expect(replacement);
        }
        assert!(matches!(rw.config, MiddlewareConfig::Rewrite(RewriteConfig { redirect: false, .. })));
        let cb = check_json(r#"{"Type":"cbreaker","Middleware":{"Condition":"NetworkErrorRatio() > 0.5"}}"#).unwrap();
        assert!(matches!(cb.config, MiddlewareConfig::CircuitBreaker(_)));
        let body =
            check_json(r#"{"Id":"r1","Priority":1,"Type":"rewrite","Middleware":{"RewriteBody":true}}"#).unwrap();
        assert!(matches!(
            body.config,
            MiddlewareConfig::Rewrite(RewriteConfig { regexp: None, rewrite_body: true, .. })
        ));
        let rv = check_json(r#"{"Type":"ratelimit","Middleware":{"PeriodSeconds":1,"Requests":1,"Burst":3,"Variable":"client.ip","RateVar":"request.header.X-Custom-Rates"}}"#).unwrap();
        let MiddlewareConfig::RateLimit(r) = rv.config else { panic!("ratelimit") };
        assert_eq!(r.rate_var.unwrap().as_str(), "x-custom-rates");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                r#"{"Type":"ratelimit","Middleware":{"Requests":1,"PeriodSeconds":1,"Variable":"client.ip"}}"#,
                "Middleware",
            ),
            (
                r#"{"Type":"ratelimit","Middleware":{"Requests":1,"PeriodSeconds":0,"Burst":1,"Variable":"client.ip"}}"#,
                "Middleware.PeriodSeconds",
            ),
            (
                r#"{"Type":"ratelimit","Middleware":{"Requests":"x","PeriodSeconds":1,"Burst":1,"Variable":"client.ip"}}"#,
                "Middleware.Requests",
            ),
            (
                r#"{"Type":"ratelimit","Middleware":{"Requests":1,"PeriodSeconds":1,"Burst":1,"Variable":"client.port"}}"#,
                "Middleware.Variable",
            ),
            (r#"{"Type":"connlimit","Middleware":{"Connections":0,"Variable":"client.ip"}}"#, "Middleware.Connections"),
            (
                r#"{"Type":"connlimit","Middleware":{"Connections":1,"Variable":"client.ip","Extra":1}}"#,
                "Middleware.Extra",
            ),
            (r#"{"Type":"magic","Middleware":{}}"#, "Type"),
            (r#"{"Type":"rewrite","Middleware":{"Regexp":"(","Replacement":"x"}}"#, "Middleware.Regexp"),
            (r#"{"Type":"rewrite","Middleware":{"Replacement":"x"}}"#, "Middleware.Regexp"),
            (
                r#"{"Type":"rewrite","Middleware":{"Regexp":"^(.*)$","Replacement":"$9999999999999999"}}"#,
                "Middleware.Replacement",
            ),
            (
                r#"{"Type":"rewrite","Middleware":{"Regexp":"^/a(.*)$","Replacement":"/b/$1x"}}"#,
                "Middleware.Replacement",
            ),
            (
                r#"{"Type":"rewrite","Middleware":{"Regexp":"^(?P<p>.*)$","Replacement":"${q}"}}"#,
                "Middleware.Replacement",
            ),
            (
                r#"{"Type":"rewrite","Middleware":{"Regexp":"^(.*)$","Replacement":"not a url"}}"#,
                "Middleware.Replacement",
            ),
            (
                r#"{"Type":"rewrite","Middleware":{"Regexp":"^/a(.*)$","Replacement":"/a<b>/$1"}}"#,
                "Middleware.Replacement",
            ),
            (
                r#"{"Type":"rewrite","Middleware":{"Regexp":"^/a(.*)$","Replacement":"/b${x/$2"}}"#,
                "Middleware.Replacement",
            ),
            (
                r#"{"Type":"rewrite","Middleware":{"Regexp":"^(.*)$","Replacement":"/x\r\nSet-Cookie: a","Redirect":true}}"#,
                "Middleware.Replacement",
            ),
            (
                r#"{"Type":"ratelimit","Middleware":{"Requests":1,"PeriodSeconds":1,"Burst":1,"Variable":"client.ip","RateVar":"client.ip"}}"#,
                "Middleware.RateVar",
            ),
            (r#"{"Type":"cbreaker","Middleware":{"Condition":"Nope()"}}"#, "Middleware.Condition"),
            (r#"{"Type":"cbreaker","Middleware":{}}"#, "Middleware"),
            (r#"{"Type":"trace","Middleware":{"Addr":"tcp://x"}}"#, "Middleware.Addr"),
        ];
        for (json, field) in cases {
            let e = check_json(json).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{json}: {e}");
            assert_eq!(e.key, "frontends/f/middlewares/m");
        }
    }
}
