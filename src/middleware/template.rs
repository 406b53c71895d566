//! The response-body templates of Vulcand's `rewrite` with `RewriteBody`: the backend answers a body such as
//! `{"foo": "{{.Request.Header.Get "X-Var"}}"}` and the client gets it with the action replaced by the
//! request's value. The chain captures what the template may read ([`RequestView`]) in `request_filter`; the
//! proxy's response phase renders the body once it has it whole (bounded by [`MAX_BODY`]).
//!
//! Vulcand hands the body to Go's `text/template` with the request as `.Request`. Ficus understands the
//! actions a template of a request can usefully contain: `.Request.Header.Get "Name"`, `.Request.Host`,
//! `.Request.Method`, `.Request.RequestURI`, `.Request.URL.Path`, `.Request.URL.RawQuery`,
//! `.Request.RemoteAddr`. Any other `{{...}}` is left in the body as it was, so a body that merely contains
//! braces passes unchanged.

use http::{HeaderMap, Method};

/// The largest body a template is applied to; a larger one passes unchanged.
pub const MAX_BODY: usize = 1 << 20;

/// What a body template may read of the request.
pub struct RequestView {
    pub method: Method,
    pub host: String,
    pub target: String,
    pub remote_addr: String,
    pub headers: HeaderMap,
}

impl RequestView {
    fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    /// The value of one action, or `None` when Ficus does not know it (the action is left as written).
    fn value(&self, action: &str) -> Option<String> {
        let action = action.trim();
        if let Some(arg) = action.strip_prefix(".Request.Header.Get") {
            let name = arg.trim();
            let name = name.strip_prefix('"').and_then(|n| n.strip_suffix('"'))?;
            return Some(
                self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default(),
            );
        }
        Some(match action {
            ".Request.Host" => self.host.clone(),
            ".Request.Method" => self.method.to_string(),
            ".Request.RequestURI" => self.target.clone(),
            ".Request.URL.Path" => self.path().to_string(),
            ".Request.URL.RawQuery" => self.query().to_string(),
            ".Request.RemoteAddr" => self.remote_addr.clone(),
            _ => return None,
        })
    }

    /// Renders `body` with this request. Never fails: unknown actions stay as they were.
    pub fn render(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len());
        let mut rest = body;
        while let Some(open) = find(rest, b"{{") {
            let Some(close) = find(&rest[open + 2..], b"}}") else { break };
            let inner = &rest[open + 2..open + 2 + close];
            out.extend_from_slice(&rest[..open]);
            match std::str::from_utf8(inner).ok().and_then(|a| self.value(a)) {
                Some(v) => out.extend_from_slice(v.as_bytes()),
                None => out.extend_from_slice(&rest[open..open + 2 + close + 2]),
            }
            rest = &rest[open + 2 + close + 2..];
        }
        out.extend_from_slice(rest);
        out
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vulcands_example_renders_and_unknown_actions_stay() {
        let mut headers = HeaderMap::new();
        headers.insert("variable", "variable-value".parse().unwrap());
        let view = RequestView {
            method: Method::GET,
            host: "h.example".into(),
            target: "/a/b?x=1".into(),
            remote_addr: "127.0.0.1:5".into(),
            headers,
        };
        let body = br#"{"foo": "{{.Request.Header.Get "variable"}}", "p": "{{ .Request.URL.Path }}", "q": "{{.Request.URL.RawQuery}}", "keep": "{{.Other}}", "open": "{{"#;
        assert_eq!(
            String::from_utf8(view.render(body)).unwrap(),
            r#"{"foo": "variable-value", "p": "/a/b", "q": "x=1", "keep": "{{.Other}}", "open": "{{"#
        );
        assert_eq!(view.render(br#"{{.Request.Header.Get "missing"}}|{{.Request.Host}}"#), b"|h.example");
    }
}
