//! [`RouteExpr`], the parsed and validated form of a route string, and the per-matcher checks.
//! Part of route/: built by the parser at reload time, held by the index, and consulted per
//! request for whatever the index does not decide structurally (method, headers, regexps).
//! Everything a check needs (lower-cased hosts, header names, compiled regexps) is prepared here
//! once so the per-request side only compares.

use std::fmt;

use http::{HeaderName, HeaderValue, Method};

use super::pattern::Pattern;
use super::Request;

/// A parsed, validated route: at most one host, path and method matcher plus any number of
/// header matchers, all of which must match. Build one with [`parse`](super::parse()).
///
/// `Display` prints a canonical form (host, path, method, then headers sorted, double-quoted
/// arguments), so two routes that mean the same thing print the same and compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteExpr {
    pub(super) host: Option<HostMatch>,
    pub(super) path: Option<PathMatch>,
    pub(super) method: Option<MethodMatch>,
    /// Sorted and deduplicated, so the canonical form and the matcher count are stable.
    pub(super) headers: Box<[HeaderMatch]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostMatch {
    /// Lower-cased.
    Exact(Box<str>),
    Pattern(Pattern),
    /// Unanchored, case-insensitive, against the lower-cased host without its port.
    Regexp(Rx),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PathMatch {
    Exact(Box<str>),
    Pattern(Pattern),
    Prefix(Box<str>),
    /// Unanchored: `/r1` matches `/x/r1` unless the regexp says `^`.
    Regexp(Rx),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MethodMatch {
    Exact(Method),
    /// Unanchored.
    Regexp(Rx),
}

/// Every header matcher looks at the header's first value only, as Vulcand does (Go's
/// `Header.Get`): a client cannot reach a gated route by adding a second line of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HeaderMatch {
    Exact {
        name: HeaderName,
        value: HeaderValue,
    },
    /// `application/<subtype>`: the value split by `/`, as a path pattern is. `src` is the
    /// pattern's canonical form, for ordering.
    Pattern {
        name: HeaderName,
        pattern: Pattern,
        src: Box<str>,
    },
    /// Unanchored search over the raw bytes, since header values need not be UTF-8.
    Regexp {
        name: HeaderName,
        re: BytesRx,
    },
}

/// A compiled regexp that remembers what the user wrote, for display and equality (compiled
/// regexps have neither).
#[derive(Debug, Clone)]
pub(super) struct Rx {
    pub(super) src: Box<str>,
    pub(super) re: regex::Regex,
    /// How specific the regexp is, for precedence: the bytes of the literal prefix every match
    /// starts with, then the literal bytes every match contains.
    pub(super) prefix_len: usize,
    pub(super) literal_len: usize,
}

/// [`Rx`] over bytes, for header values.
#[derive(Debug, Clone)]
pub(super) struct BytesRx {
    pub(super) src: Box<str>,
    pub(super) re: regex::bytes::Regex,
}

impl PartialEq for Rx {
    fn eq(&self, other: &Self) -> bool {
        self.src == other.src
    }
}
impl Eq for Rx {}
impl PartialEq for BytesRx {
    fn eq(&self, other: &Self) -> bool {
        self.src == other.src
    }
}
impl Eq for BytesRx {}

impl HostMatch {
    /// `host` must already be lower-cased and stripped of its port.
    pub(super) fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => **h == *host,
            HostMatch::Pattern(p) => p.matches_split(host),
            HostMatch::Regexp(rx) => rx.re.is_match(host),
        }
    }
}

impl PathMatch {
    pub(super) fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => **p == *path,
            PathMatch::Pattern(p) => p.matches_path(path),
            PathMatch::Prefix(p) => path.starts_with(&**p),
            PathMatch::Regexp(rx) => rx.re.is_match(path),
        }
    }
}

impl HeaderMatch {
    pub(super) fn name(&self) -> &HeaderName {
        match self {
            HeaderMatch::Exact { name, .. } | HeaderMatch::Pattern { name, .. } | HeaderMatch::Regexp { name, .. } => {
                name
            }
        }
    }

    /// Sort key for the canonical order: by name, exact before pattern before regexp, then by
    /// argument.
    pub(super) fn sort_key(&self) -> (&str, u8, &[u8]) {
        match self {
            HeaderMatch::Exact { name, value } => (name.as_str(), 0, value.as_bytes()),
            HeaderMatch::Pattern { name, src, .. } => (name.as_str(), 1, src.as_bytes()),
            HeaderMatch::Regexp { name, re } => (name.as_str(), 2, re.src.as_bytes()),
        }
    }

    fn matches(&self, headers: &http::HeaderMap) -> bool {
        // `get` is the first value; a missing header matches nothing.
        let Some(first) = headers.get(self.name()) else {
            return false;
        };
        match self {
            HeaderMatch::Exact { value, .. } => first == value,
            // Patterns compare text; a value that is not UTF-8 cannot match one.
            HeaderMatch::Pattern { pattern, .. } => {
                std::str::from_utf8(first.as_bytes()).is_ok_and(|v| pattern.matches_split(v))
            }
            HeaderMatch::Regexp { re, .. } => re.re.is_match(first.as_bytes()),
        }
    }
}

impl RouteExpr {
    /// Whether every matcher matches `req`. This is the reference semantics, one route at a
    /// time; [`Router`](super::Router) gives the same answers without trying every route.
    pub fn matches(&self, req: &Request<'_>) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(h) => h.matches(&host_without_port(req.host).to_ascii_lowercase()),
        };
        let path_ok = match &self.path {
            None => true,
            Some(p) => p.matches(path_without_query(req.path)),
        };
        host_ok && path_ok && self.method_and_headers_match(req)
    }

    /// How many matchers the route has (precedence rule 4).
    pub fn matcher_count(&self) -> usize {
        usize::from(self.host.is_some())
            + usize::from(self.path.is_some())
            + usize::from(self.method.is_some())
            + self.headers.len()
    }

    /// Whether the index leaves checks to each candidate: a method, headers, or path segments
    /// the trie cannot index (`v<int:n>`).
    pub(super) fn checked_per_candidate(&self) -> bool {
        self.method.is_some() || !self.headers.is_empty() || self.has_prefixed_path()
    }

    fn has_prefixed_path(&self) -> bool {
        matches!(&self.path, Some(PathMatch::Pattern(p)) if p.prefixed())
    }

    /// The checks the index leaves to each candidate route (see
    /// [`checked_per_candidate`](Self::checked_per_candidate)); host and path otherwise passed.
    pub(super) fn matches_unindexed(&self, req: &Request<'_>) -> bool {
        if self.has_prefixed_path() && !self.path.as_ref().is_some_and(|p| p.matches(path_without_query(req.path))) {
            return false;
        }
        self.method_and_headers_match(req)
    }

    fn method_and_headers_match(&self, req: &Request<'_>) -> bool {
        let method_ok = match &self.method {
            None => true,
            Some(MethodMatch::Exact(m)) => m == req.method,
            Some(MethodMatch::Regexp(rx)) => rx.re.is_match(req.method.as_str()),
        };
        method_ok && self.headers.iter().all(|h| h.matches(req.headers))
    }

    /// For routes kept in the index's regexp list: the path regexp, if any.
    pub(super) fn matches_path_regexp(&self, path: &str) -> bool {
        match &self.path {
            Some(PathMatch::Regexp(rx)) => rx.re.is_match(path),
            _ => true,
        }
    }
}

/// The host without a trailing `:port`; `[v6]:port` keeps its brackets. Anything malformed is
/// returned whole: it will simply not match.
pub(super) fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.find(':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

pub(super) fn path_without_query(path: &str) -> &str {
    match path.find('?') {
        Some(q) => &path[..q],
        None => path,
    }
}

impl fmt::Display for RouteExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut matcher = |f: &mut fmt::Formatter<'_>, name: &str, args: &[&str]| {
            write!(f, "{sep}{name}(")?;
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_quoted(f, arg)?;
            }
            sep = " && ";
            f.write_str(")")
        };
        match &self.host {
            Some(HostMatch::Exact(h)) => matcher(f, "Host", &[h])?,
            Some(HostMatch::Pattern(p)) => matcher(f, "Host", &[&p.to_string()])?,
            Some(HostMatch::Regexp(rx)) => matcher(f, "HostRegexp", &[&rx.src])?,
            None => {}
        }
        match &self.path {
            Some(PathMatch::Exact(p)) => matcher(f, "Path", &[p])?,
            Some(PathMatch::Pattern(p)) => matcher(f, "Path", &[&p.to_string()])?,
            Some(PathMatch::Prefix(p)) => matcher(f, "PathPrefix", &[p])?,
            Some(PathMatch::Regexp(rx)) => matcher(f, "PathRegexp", &[&rx.src])?,
            None => {}
        }
        match &self.method {
            Some(MethodMatch::Exact(m)) => matcher(f, "Method", &[m.as_str()])?,
            Some(MethodMatch::Regexp(rx)) => matcher(f, "MethodRegexp", &[&rx.src])?,
            None => {}
        }
        for header in self.headers.iter() {
            match header {
                HeaderMatch::Exact { name, value } => {
                    // Values were given as strings, so they are UTF-8; the lossy path never runs.
                    let value = String::from_utf8_lossy(value.as_bytes());
                    matcher(f, "Header", &[name.as_str(), &value])?
                }
                HeaderMatch::Pattern { name, src, .. } => matcher(f, "Header", &[name.as_str(), src])?,
                HeaderMatch::Regexp { name, re } => matcher(f, "HeaderRegexp", &[name.as_str(), &re.src])?,
            }
        }
        Ok(())
    }
}

/// Double-quotes an argument, escaping exactly what the parser unescapes.
fn write_quoted(f: &mut fmt::Formatter<'_>, arg: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in arg.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use http::HeaderMap;

    fn req_matches(route: &str, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> bool {
        let expr = parse(route).unwrap_or_else(|e| panic!("{route}: {e}"));
        let method = Method::from_bytes(method.as_bytes()).expect("test method");
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        expr.matches(&Request { method: &method, host, path, headers: &map })
    }

    fn get(route: &str, host: &str, path: &str) -> bool {
        req_matches(route, "GET", host, path, &[])
    }

    #[test]
    fn host_is_case_insensitive_and_ignores_port() {
        let r = r#"Host("API.example.com")"#;
        assert!(get(r, "api.example.com", "/"));
        assert!(get(r, "Api.Example.COM:8443", "/"));
        assert!(!get(r, "api.example.com.evil", "/"));
        assert!(!get(r, "xapi.example.com", "/"));
        assert!(get(r#"Host("[::1]")"#, "[::1]:8080", "/"));
        assert!(get(r#"HostRegexp("API\.example\.(com|net)")"#, "api.EXAMPLE.net:80", "/"));
        // Unanchored, as in Vulcand: anchor with `^` and `$` to mean the whole host.
        assert!(get(r#"HostRegexp("api\.example\.com")"#, "api.example.com.evil", "/"));
        assert!(get(r#"HostRegexp("example\.com")"#, "xexample.com", "/"));
        assert!(!get(r#"HostRegexp("^example\.com$")"#, "xexample.com", "/"));
    }

    #[test]
    fn path_exact_prefix_and_regexp() {
        assert!(get(r#"Path("/a")"#, "h", "/a"));
        assert!(!get(r#"Path("/a")"#, "h", "/a/"));
        assert!(get(r#"Path("/a")"#, "h", "/a?x=1"), "query is ignored");
        let prefix = r#"PathPrefix("/api")"#;
        for p in ["/api", "/api/x", "/apix"] {
            assert!(get(prefix, "h", p), "{p}");
        }
        assert!(!get(prefix, "h", "/ap"));
        assert!(!get(r#"PathPrefix("/api/")"#, "h", "/api"));
        assert!(get(r#"PathRegexp("/.*")"#, "h", "/"));
        assert!(get(r#"PathRegexp("/.*")"#, "h", "/any/thing"));
        assert!(get(r#"PathRegexp("/api/.*")"#, "h", "/api/x"));
        assert!(!get(r#"PathRegexp("/api/.*")"#, "h", "/xapi/x"));
        assert!(get(r#"PathRegexp("/api")"#, "h", "/api/more"), "end left open");
        assert!(!get(r#"PathRegexp("/api$")"#, "h", "/api/more"));
        // Unanchored, as in Vulcand.
        assert!(get(r#"PathRegexp("/r1")"#, "h", "/x/r1"));
        assert!(get(r#"PathRegexp("/a|/b")"#, "h", "/x/b"));
        assert!(!get(r#"PathRegexp("^/r1")"#, "h", "/x/r1"));
        assert!(!get(r#"PathRegexp("/r1")"#, "h", "/x?/r1"), "the query is not part of the path");
    }

    #[test]
    fn method_is_exact_and_case_sensitive() {
        assert!(req_matches(r#"Method("GET")"#, "GET", "h", "/", &[]));
        assert!(!req_matches(r#"Method("GET")"#, "get", "h", "/", &[]));
        assert!(!req_matches(r#"Method("GET")"#, "POST", "h", "/", &[]));
        assert!(req_matches(r#"MethodRegexp("GET|HEAD")"#, "HEAD", "h", "/", &[]));
        assert!(req_matches(r#"MethodRegexp("GET")"#, "GETX", "h", "/", &[]), "unanchored");
        assert!(!req_matches(r#"MethodRegexp("^GET$")"#, "GETX", "h", "/", &[]));
    }

    #[test]
    fn headers_match_the_first_value_with_case_insensitive_names() {
        let r = r#"Header("X-Canary", "1")"#;
        assert!(req_matches(r, "GET", "h", "/", &[("x-canary", "1")]));
        assert!(req_matches(r, "GET", "h", "/", &[("X-CANARY", "1"), ("x-canary", "0")]));
        assert!(!req_matches(r, "GET", "h", "/", &[("X-CANARY", "0"), ("x-canary", "1")]));
        assert!(!req_matches(r, "GET", "h", "/", &[("x-canary", "10")]));
        assert!(!req_matches(r, "GET", "h", "/", &[]));
        let r = r#"HeaderRegexp("User-Agent", "Mobile")"#;
        assert!(req_matches(r, "GET", "h", "/", &[("user-agent", "Foo Mobile/1.0")]));
        assert!(!req_matches(r, "GET", "h", "/", &[("user-agent", "Desktop")]));
        assert!(!req_matches(r, "GET", "h", "/", &[("user-agent", "Desktop"), ("user-agent", "Mobile")]));
        let r = r#"Header("Content-Type", "application/<subtype>")"#;
        assert!(req_matches(r, "GET", "h", "/", &[("content-type", "application/json")]));
        assert!(!req_matches(r, "GET", "h", "/", &[("content-type", "text/html")]));
        assert!(!req_matches(
            r,
            "GET",
            "h",
            "/",
            &[("content-type", "text/html"), ("content-type", "application/json")]
        ));
        assert!(!req_matches(r, "GET", "h", "/", &[]));
    }

    #[test]
    fn every_matcher_must_match() {
        let r = r#"Host("a.com") && Path("/x") && Method("POST") && Header("X-A", "1")"#;
        assert!(req_matches(r, "POST", "a.com", "/x", &[("x-a", "1")]));
        assert!(!req_matches(r, "GET", "a.com", "/x", &[("x-a", "1")]));
        assert!(!req_matches(r, "POST", "b.com", "/x", &[("x-a", "1")]));
        assert!(!req_matches(r, "POST", "a.com", "/y", &[("x-a", "1")]));
        assert!(!req_matches(r, "POST", "a.com", "/x", &[]));
    }

    #[test]
    fn host_port_stripping() {
        assert_eq!(host_without_port("a.com:80"), "a.com");
        assert_eq!(host_without_port("a.com"), "a.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1"), "[::1");
        assert_eq!(host_without_port(":80"), "");
        assert_eq!(host_without_port("é.com:1"), "é.com");
    }
}
