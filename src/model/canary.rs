//! The progressive-delivery extensions of a frontend, as stored and as checked: `Sticky` (keep one client on
//! one side of a split) and `Shadow` (copy requests to another backend and compare its answers). Decoded with
//! the frontend (`spec.rs` holds the fields), checked per key here, so a bad value is refused naming its
//! field and the frontend keeps its last good value; the shadow backend's existence is a cross-key rule and
//! lives in `validate`.

use super::{ConfigError, Key};
use serde::{Deserialize, Serialize};

/// `"Sticky":{"Cookie":"ficus_canary"}`, `{"Header":"X-User"}` or `{"ClientIp":true}`: exactly one.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct StickySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_ip: bool,
}

/// What a sticky split is keyed by, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StickyKey {
    /// A cookie of this name; Ficus sets it when the client has none.
    Cookie(String),
    /// A request header (lower case); a request without it takes the plain split.
    Header(String),
    ClientIp,
}

/// `"Shadow":{"BackendId":"gtin","Percent":100,"Methods":["GET","HEAD"]}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct ShadowSpec {
    pub backend_id: String,
    /// Share of the selected requests copied, 0 to 100, exact over every 100. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Methods copied. Default GET and HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Response headers compared. Default `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_headers: Option<Vec<String>>,
    /// JSON pointers (`/meta/generated_at`) whose values are never compared; a pointer covers its subtree.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_paths: Vec<String>,
    /// Learn noise the way Diffy does: for GET and HEAD, ask the primary a second time and ignore the fields
    /// where its two answers differ. Costs the primary one more request per compared copy. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub learn_noise: bool,
    /// Response bodies compared up to this size; a longer one is counted as skipped. Default 256 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Copies waiting for the shadow backend; when full a copy is dropped and counted. Default 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
}

/// A checked `Shadow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatedShadow {
    pub backend: String,
    pub percent: u32,
    pub methods: Vec<String>,
    /// Lower case.
    pub compare_headers: Vec<String>,
    pub ignore_paths: Vec<String>,
    pub learn_noise: bool,
    pub max_body_bytes: u64,
    pub queue: u32,
}

pub const SHADOW_MAX_BODY_LIMIT: u64 = 16 << 20;
pub const SHADOW_MAX_QUEUE: u32 = 65_536;

/// An RFC 6265 cookie name: an HTTP token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn sticky(key: &Key, s: &StickySpec) -> Result<StickyKey, ConfigError> {
    let err = |field: &str, msg: String| ConfigError::new(key, Some(&format!("Sticky.{field}")), msg);
    match (&s.cookie, &s.header, s.client_ip) {
        (Some(c), None, false) if is_token(c) => Ok(StickyKey::Cookie(c.clone())),
        (Some(c), None, false) => Err(err("Cookie", format!("`{c}` is not a cookie name (an HTTP token)"))),
        (None, Some(h), false) => match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Ok(StickyKey::Header(name.as_str().to_string())),
            Err(_) => Err(err("Header", format!("`{h}` is not a header name"))),
        },
        (None, None, true) => Ok(StickyKey::ClientIp),
        (None, None, false) => Err(ConfigError::new(key, Some("Sticky"), "set one of Cookie, Header or ClientIp")),
        _ => Err(ConfigError::new(key, Some("Sticky"), "set only one of Cookie, Header or ClientIp")),
    }
}

pub(super) fn shadow(key: &Key, s: &ShadowSpec) -> Result<ValidatedShadow, ConfigError> {
    let err = |field: &str, msg: String| ConfigError::new(key, Some(&format!("Shadow.{field}")), msg);
    if s.backend_id.is_empty() {
        return Err(err("BackendId", "empty".to_string()));
    }
    let percent = s.percent.unwrap_or(100);
    if percent > 100 {
        return Err(err("Percent", format!("{percent} is not a percentage (0 to 100)")));
    }
    let methods = match &s.methods {
        None => vec!["GET".to_string(), "HEAD".to_string()],
        Some(list) if list.is_empty() => return Err(err("Methods", "empty list".to_string())),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, m) in list.iter().enumerate() {
                let upper = m.to_ascii_uppercase();
                if !is_token(&upper) || http::Method::from_bytes(upper.as_bytes()).is_err() {
                    return Err(err(&format!("Methods[{i}]"), format!("`{m}` is not an HTTP method")));
                }
                if upper == "CONNECT" {
                    return Err(err(&format!("Methods[{i}]"), "CONNECT cannot be copied".to_string()));
                }
                out.push(upper);
            }
            out
        }
    };
    let compare_headers = match &s.compare_headers {
        None => vec!["content-type".to_string()],
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, h) in list.iter().enumerate() {
                match http::HeaderName::from_bytes(h.as_bytes()) {
                    Ok(name) => out.push(name.as_str().to_string()),
                    Err(_) => return Err(err(&format!("CompareHeaders[{i}]"), format!("`{h}` is not a header name"))),
                }
            }
            out
        }
    };
    for (i, p) in s.ignore_paths.iter().enumerate() {
        if !p.starts_with('/') {
            return Err(err(&format!("IgnorePaths[{i}]"), format!("`{p}` is not a JSON pointer (starts with /)")));
        }
    }
    let max_body_bytes = s.max_body_bytes.unwrap_or(256 << 10);
    if max_body_bytes > SHADOW_MAX_BODY_LIMIT {
        return Err(err("MaxBodyBytes", format!("{max_body_bytes} is above the maximum {SHADOW_MAX_BODY_LIMIT}")));
    }
    let queue = s.queue.unwrap_or(256);
    if queue == 0 || queue > SHADOW_MAX_QUEUE {
        return Err(err("Queue", format!("{queue} is not between 1 and {SHADOW_MAX_QUEUE}")));
    }
    Ok(ValidatedShadow {
        backend: s.backend_id.clone(),
        percent,
        methods,
        compare_headers,
        ignore_paths: s.ignore_paths.clone(),
        learn_noise: s.learn_noise,
        max_body_bytes,
        queue,
    })
}

#[cfg(test)]
mod tests {
    use crate::model::{Change, ConfigState};

    fn put(s: &mut ConfigState, key: &str, value: &str) -> Result<(), crate::model::ConfigError> {
        s.apply(Change::Put { key: key.into(), value: value.as_bytes().to_vec() }).map(|_| ())
    }

    #[test]
    fn bad_sticky_and_shadow_values_are_refused_naming_their_field() {
        let mut s = ConfigState::new();
        let f = |ext: &str| format!(r#"{{"Type":"http","BackendId":"a","Route":"Path(`/`)",{ext}}}"#);
        let bad = [
            (r#""Sticky":{}"#, "Sticky"),
            (r#""Sticky":{"Cookie":"a","ClientIp":true}"#, "Sticky"),
            (r#""Sticky":{"Cookie":"bad name"}"#, "Sticky.Cookie"),
            (r#""Sticky":{"Header":"X User"}"#, "Sticky.Header"),
            (r#""Shadow":{"BackendId":"b","Percent":101}"#, "Shadow.Percent"),
            (r#""Shadow":{"BackendId":"b","Methods":["GET","G ET"]}"#, "Shadow.Methods[1]"),
            (r#""Shadow":{"BackendId":"b","Methods":[]}"#, "Shadow.Methods"),
            (r#""Shadow":{"BackendId":""}"#, "Shadow.BackendId"),
            (r#""Shadow":{"BackendId":"b","IgnorePaths":["x"]}"#, "Shadow.IgnorePaths[0]"),
            (r#""Shadow":{"BackendId":"b","Queue":0}"#, "Shadow.Queue"),
        ];
        for (ext, field) in bad {
            let e = put(&mut s, "frontends/f/frontend", &f(ext)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{ext}: {e}");
        }
        put(&mut s, "frontends/f/frontend", &f(r#""Sticky":{"Header":"X-User"},"Shadow":{"BackendId":"b"}"#)).unwrap();
    }

    /// The README's progressive-delivery examples are values Ficus takes as they are written.
    #[test]
    fn the_readme_examples_decode() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let section = readme.split("## Progressive delivery").nth(1).unwrap().split("\n## ").next().unwrap();
        let examples: Vec<&str> =
            section.split("```json\n").skip(1).map(|b| b.split("\n```").next().unwrap()).collect();
        assert_eq!(examples.len(), 2);
        let mut s = ConfigState::new();
        for e in examples {
            put(&mut s, "frontends/f/frontend", e).unwrap_or_else(|err| panic!("{e}: {err}"));
        }
    }
}
