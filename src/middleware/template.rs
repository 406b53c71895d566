//! The response-body templates of Vulcand's `rewrite` with `RewriteBody`: the backend answers a body such as
//! `{"foo": "{{.Request.Header.Get "X-Var"}}"}` and the client gets it with the action replaced by the
//! request's value. The chain captures what the template may read ([`RequestView`]) in `request_filter`; the
//! proxy's response phase renders the body once it has it whole (bounded by [`MAX_BODY`]).
//!
//! Vulcand hands the body to Go's `text/template` with the request as `.Request`. Ficus understands the
//! actions a template of a request can usefully contain: `.Request.Header.Get "Name"`, `.Request.Host`,
//! `.Request.Method`, `.Request.RequestURI`, `.Request.URL.Path`, `.Request.URL.RawQuery`,
//! `.Request.RemoteAddr`. Any other `{{...}}` is left in the body as it was, so a body that merely contains
//! braces passes unchanged. The same actions fill a rewrite's `Replacement` (`/users/{{.Request.Header.Get
//! "X-User"}}`), read straight from the request in `request_filter` ([`render_replacement`]).

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

/// What a template reads of a request: a captured [`RequestView`], or the request itself while the chain runs.
trait Facts {
    fn header(&self, name: &str) -> Option<&[u8]>;
    fn host(&self) -> &str;
    fn method(&self) -> &str;
    fn target(&self) -> &str;
    fn remote_addr(&self) -> String;
}

impl Facts for RequestView {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(|v| v.as_bytes())
    }
    fn host(&self) -> &str {
        &self.host
    }
    fn method(&self) -> &str {
        self.method.as_str()
    }
    fn target(&self) -> &str {
        &self.target
    }
    fn remote_addr(&self) -> String {
        self.remote_addr.clone()
    }
}

impl Facts for super::Input<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(|v| v.as_bytes())
    }
    fn host(&self) -> &str {
        self.host.and_then(|h| h.to_str().ok()).unwrap_or("")
    }
    fn method(&self) -> &str {
        self.method.as_str()
    }
    fn target(&self) -> &str {
        self.target
    }
    fn remote_addr(&self) -> String {
        self.client_ip.to_string()
    }
}

/// The value of one action, or `None` when Ficus does not know it (the action is left as written).
fn value(f: &impl Facts, action: &str) -> Option<String> {
    let action = action.trim();
    if let Some(arg) = action.strip_prefix(".Request.Header.Get") {
        let name = arg.trim();
        let name = name.strip_prefix('"').and_then(|n| n.strip_suffix('"'))?;
        return Some(f.header(name).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default());
    }
    let target = f.target();
    Some(match action {
        ".Request.Host" => f.host().to_string(),
        ".Request.Method" => f.method().to_string(),
        ".Request.RequestURI" => target.to_string(),
        ".Request.URL.Path" => target.split_once('?').map_or(target, |(p, _)| p).to_string(),
        ".Request.URL.RawQuery" => target.split_once('?').map_or("", |(_, q)| q).to_string(),
        ".Request.RemoteAddr" => f.remote_addr(),
        _ => return None,
    })
}

/// Renders `text` against `f`; with `for_url` (a rewrite's `Replacement`), a filled-in value has the bytes
/// a URL cannot hold percent-encoded (a header value with a space would otherwise make the rewritten target
/// invalid, and the request a 500 caused by the client), and each `$` doubled so a regexp replacement takes
/// it literally rather than as a group.
fn render(f: &impl Facts, text: &[u8], for_url: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = find(rest, b"{{") {
        let Some(close) = find(&rest[open + 2..], b"}}") else { break };
        let inner = &rest[open + 2..open + 2 + close];
        out.extend_from_slice(&rest[..open]);
        match std::str::from_utf8(inner).ok().and_then(|a| value(f, a)) {
            Some(v) if for_url => {
                brace_group_name(&mut out);
                let v = url_safe(&v);
                match v.contains('$') {
                    true => out.extend_from_slice(v.replace('$', "$$").as_bytes()),
                    false => out.extend_from_slice(v.as_bytes()),
                }
            }
            Some(v) => out.extend_from_slice(v.as_bytes()),
            None => out.extend_from_slice(&rest[open..open + 2 + close + 2]),
        }
        rest = &rest[open + 2 + close + 2..];
    }
    out.extend_from_slice(rest);
    out
}

impl RequestView {
    /// Renders `body` with this request. Never fails: unknown actions stay as they were.
    pub fn render(&self, body: &[u8]) -> Vec<u8> {
        render(self, body, false)
    }
}

/// A rewrite's `Replacement` with its actions filled in from the request, ready for `Regex::replace_all`.
pub fn render_replacement(replacement: &str, input: &super::Input<'_>) -> String {
    String::from_utf8_lossy(&render(input, replacement.as_bytes(), true)).into_owned()
}

/// `value` with every byte that may not appear in a URL (controls, space, DEL, non-ASCII, and the double
/// quote, `#`, angle brackets, backslash, caret, backquote, braces and bar) percent-encoded; the rest, `%`
/// included, as it was. `#` because `http::Uri` cuts a target at it: a client's value must not shorten the
/// path. `/` and `?` stay, as Vulcand leaves them: a filled value may add segments or a query.
fn url_safe(value: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_byte = |b: u8| b <= b' ' || b >= 0x7f || b"\"#<>\\^`{|}".contains(&b);
    if !value.bytes().any(unsafe_byte) {
        return value.into();
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if unsafe_byte(b) {
            out.extend(['%', HEX[usize::from(b >> 4)] as char, HEX[usize::from(b & 15)] as char]);
        } else {
            out.push(b as char);
        }
    }
    out.into()
}

/// A `$name` right before a filled value would take the value's first letters into the group's name
/// (`$1GET`, a group that does not exist, expands to nothing): it is written `${name}`, so the group ends
/// where the action was, as Vulcand (which expands the groups before it fills the template) reads it.
fn brace_group_name(out: &mut Vec<u8>) {
    let name = out.iter().rev().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
    if name == 0 || out.len() <= name {
        return;
    }
    let dollar = out.len() - name - 1;
    // After an even run of `$` the name is text (`$$` is a literal `$`), not a group.
    let run = out[..=dollar].iter().rev().take_while(|b| **b == b'$').count();
    if run % 2 == 1 {
        out.insert(dollar + 1, b'{');
        out.push(b'}');
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

    #[test]
    fn a_replacement_is_filled_from_the_request_with_dollars_kept_literal() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "a$1".parse().unwrap());
        let input = crate::middleware::Input::get(&headers, std::net::Ipv4Addr::LOCALHOST.into(), "/me");
        assert_eq!(render_replacement(r#"/users/{{.Request.Header.Get "X-User"}}$1"#, &input), "/users/a$$1$1");
    }

    #[test]
    fn a_value_filled_into_a_replacement_is_made_fit_for_a_url() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", http::HeaderValue::from_bytes(b"a b\"<x>\t%41\xc3\xa9").unwrap());
        let input = crate::middleware::Input::get(&headers, std::net::Ipv4Addr::LOCALHOST.into(), "/me");
        let url = render_replacement(r#"/u/{{.Request.Header.Get "X-User"}}"#, &input);
        assert_eq!(url, "/u/a%20b%22%3Cx%3E%09%41%C3%A9");
        assert!(url.parse::<http::Uri>().is_ok());
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "x#y".parse().unwrap());
        let input = crate::middleware::Input::get(&headers, std::net::Ipv4Addr::LOCALHOST.into(), "/");
        assert_eq!(render_replacement(r#"/u/{{.Request.Header.Get "X-User"}}/p"#, &input), "/u/x%23y/p");
    }

    #[test]
    fn a_group_right_before_an_action_ends_there() {
        let headers = HeaderMap::new();
        let input = crate::middleware::Input::get(&headers, std::net::Ipv4Addr::LOCALHOST.into(), "/");
        assert_eq!(render_replacement("/v/$1{{.Request.Method}}", &input), "/v/${1}GET");
        assert_eq!(render_replacement("/v/$name{{.Request.Method}}", &input), "/v/${name}GET");
        // `$$1` is the text `$1`, and a braced group is left alone.
        assert_eq!(render_replacement("/v/$$1{{.Request.Method}}", &input), "/v/$$1GET");
        assert_eq!(render_replacement("/v/${1}{{.Request.Method}}", &input), "/v/${1}GET");
        let re = regex::Regex::new("^/u/(.*)$").unwrap();
        assert_eq!(
            re.replace_all("/u/abc", render_replacement("/v/$1{{.Request.Method}}", &input).as_str()),
            "/v/abcGET"
        );
    }
}
