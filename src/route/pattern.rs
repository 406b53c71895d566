//! Segment patterns for `Path` and `Host` (`/stores/<store>/gtins/<int:gtin>`, `<tenant>.example.com`).
//! Part of route/: the parser turns a pattern string into [`Pattern`] at reload time, and the
//! index walks its segments into the path trie or matches host labels per request. Patterns fill
//! whole segments only, which is what lets the trie index them segment by segment.

use std::collections::HashSet;
use std::fmt;

use super::ParseError;

/// Longest pattern or prefix accepted, in segments. Trie walks and drops recurse once per
/// segment, so an unbounded depth from a config value could exhaust the stack.
pub(super) const MAX_SEGMENTS: usize = 255;

/// Why `?` is refused in `Path` and `PathPrefix`: such a route could never match.
pub(super) const QUERY_REASON: &str = "must not contain `?` (paths are matched without the query string)";

/// One `/`-separated path segment or `.`-separated host label of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    /// Matched exactly (host labels are stored lower-cased).
    Literal(Box<str>),
    /// `<name>` or `<string:name>`: any non-empty segment.
    Param(Box<str>),
    /// `<int:name>`: one or more ASCII digits.
    Int(Box<str>),
    /// `<path:name>`: the rest of the path, slashes included, possibly empty. Path only, last.
    Rest(Box<str>),
}

impl Segment {
    /// Whether one request segment fits. `Rest` fits anything; callers stop walking at it.
    pub(super) fn matches(&self, segment: &str) -> bool {
        match self {
            Segment::Literal(literal) => **literal == *segment,
            Segment::Param(_) => !segment.is_empty(),
            Segment::Int(_) => is_digits(segment),
            Segment::Rest(_) => true,
        }
    }
}

/// Whether a segment is a non-empty run of ASCII digits (what `<int:>` accepts).
pub(super) fn is_digits(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Path,
    Host,
}

impl Kind {
    fn separator(self) -> char {
        match self {
            Kind::Path => '/',
            Kind::Host => '.',
        }
    }
}

/// A `Path` or `Host` argument with at least one `<...>` segment (all-literal ones are kept as
/// plain strings by the parser, since they can be matched by equality).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    kind: Kind,
    segments: Box<[Segment]>,
}

impl Pattern {
    pub(super) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Literal characters, separators included: the "more specific pattern" measure.
    pub(super) fn literal_len(&self) -> usize {
        let literals: usize = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.len(),
                _ => 0,
            })
            .sum();
        let separators = match self.kind {
            // Every path segment follows a `/`.
            Kind::Path => self.segments.len(),
            Kind::Host => self.segments.len().saturating_sub(1),
        };
        literals + separators
    }

    pub(super) fn has_rest(&self) -> bool {
        matches!(self.segments.last(), Some(Segment::Rest(_)))
    }

    /// Matches a whole path (starting with `/`). The index uses the trie instead; this is the
    /// reference behaviour the trie must agree with.
    pub(super) fn matches_path(&self, path: &str) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        let last = self.segments.len().saturating_sub(1);
        for (i, segment) in self.segments.iter().enumerate() {
            if let Segment::Rest(_) = segment {
                return true;
            }
            let (part, next) = match rest.split_once('/') {
                Some((part, next)) => (part, Some(next)),
                None => (rest, None),
            };
            if !segment.matches(part) {
                return false;
            }
            match next {
                Some(next) if i < last => rest = next,
                Some(_) => return false,
                None => return i == last,
            }
        }
        false
    }

    /// Matches a host that is already lower-cased and stripped of its port.
    pub(super) fn matches_host(&self, host: &str) -> bool {
        let mut labels = host.split('.');
        for segment in self.segments.iter() {
            match labels.next() {
                Some(label) if segment.matches(label) => {}
                _ => return false,
            }
        }
        labels.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = self.kind.separator();
        for (i, segment) in self.segments.iter().enumerate() {
            if self.kind == Kind::Path || i > 0 {
                write!(f, "{sep}")?;
            }
            match segment {
                Segment::Literal(l) => f.write_str(l)?,
                Segment::Param(n) => write!(f, "<{n}>")?,
                Segment::Int(n) => write!(f, "<int:{n}>")?,
                Segment::Rest(n) => write!(f, "<path:{n}>")?,
            }
        }
        Ok(())
    }
}

/// What a pattern argument parsed into.
pub(super) enum Parsed {
    /// No `<...>` anywhere: match by string equality (hosts come back lower-cased).
    Literal(String),
    Pattern(Pattern),
}

/// Parses a `Path` argument. `pos` is the argument's position, for errors.
pub(super) fn parse_path(src: &str, pos: usize) -> Result<Parsed, ParseError> {
    let Some(body) = src.strip_prefix('/') else {
        return Err(ParseError::BadArgument { matcher: "Path", reason: "must start with `/`", pos });
    };
    if src.contains('?') {
        return Err(ParseError::BadArgument { matcher: "Path", reason: QUERY_REASON, pos });
    }
    let segments = parse_segments(body, Kind::Path, pos)?;
    if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
        return Ok(Parsed::Literal(src.to_owned()));
    }
    Ok(Parsed::Pattern(Pattern { kind: Kind::Path, segments }))
}

/// Parses a `Host` argument. `pos` is the argument's position, for errors.
pub(super) fn parse_host(src: &str, pos: usize) -> Result<Parsed, ParseError> {
    let bad = |reason| ParseError::BadArgument { matcher: "Host", reason, pos };
    if src.is_empty() {
        return Err(bad("empty host"));
    }
    if has_port(src) {
        return Err(bad("must not include a port (the request's port is ignored)"));
    }
    if src.contains('*') {
        return Err(bad("`*` is not a wildcard here; use a `<name>` label or HostRegexp"));
    }
    let lower = src.to_ascii_lowercase();
    let segments = parse_segments(&lower, Kind::Host, pos)?;
    if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
        return Ok(Parsed::Literal(lower));
    }
    Ok(Parsed::Pattern(Pattern { kind: Kind::Host, segments }))
}

/// Whether a host argument carries a port: a `:` outside IPv6 brackets and `<type:name>`.
fn has_port(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((_, after)) => !after.is_empty(),
            None => true,
        };
    }
    let mut in_pattern = false;
    host.chars().any(|c| {
        match c {
            '<' => in_pattern = true,
            '>' => in_pattern = false,
            _ => {}
        }
        c == ':' && !in_pattern
    })
}

fn parse_segments(body: &str, kind: Kind, pos: usize) -> Result<Box<[Segment]>, ParseError> {
    let parts: Vec<&str> = body.split(kind.separator()).collect();
    if parts.len() > MAX_SEGMENTS {
        return Err(ParseError::BadArgument { matcher: kind_matcher(kind), reason: "has more than 255 segments", pos });
    }
    let mut names = HashSet::new();
    let last = parts.len() - 1;
    let mut segments = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        let segment = parse_segment(part, pos)?;
        let bad = |reason| ParseError::BadSegment { segment: part.to_owned(), reason, pos };
        match (&segment, kind) {
            (Segment::Rest(_), Kind::Host) => return Err(bad("`<path:>` is only allowed in Path")),
            (Segment::Rest(_), Kind::Path) if i != last => return Err(bad("`<path:>` must be the last segment")),
            _ => {}
        }
        if let Segment::Param(n) | Segment::Int(n) | Segment::Rest(n) = &segment {
            if !names.insert(n.clone()) {
                return Err(bad("the name is used twice in one pattern"));
            }
        }
        segments.push(segment);
    }
    Ok(segments.into_boxed_slice())
}

fn kind_matcher(kind: Kind) -> &'static str {
    match kind {
        Kind::Path => "Path",
        Kind::Host => "Host",
    }
}

fn parse_segment(part: &str, pos: usize) -> Result<Segment, ParseError> {
    if !part.contains(['<', '>']) {
        return Ok(Segment::Literal(part.into()));
    }
    let bad = |reason| ParseError::BadSegment { segment: part.to_owned(), reason, pos };
    let inner = part.strip_prefix('<').and_then(|p| p.strip_suffix('>')).filter(|inner| !inner.contains(['<', '>']));
    let Some(inner) = inner else {
        return Err(if part.contains('<') && !part.contains('>') {
            bad("unterminated `<`")
        } else {
            bad("a `<...>` pattern must fill a whole segment")
        });
    };
    let (ty, name) = inner.split_once(':').unwrap_or(("string", inner));
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(bad("the name must be letters, digits, `_` or `-`"));
    }
    let name: Box<str> = name.into();
    match ty {
        "string" => Ok(Segment::Param(name)),
        "int" => Ok(Segment::Int(name)),
        "path" => Ok(Segment::Rest(name)),
        _ => Err(ParseError::UnknownSegmentType { ty: ty.to_owned(), segment: part.to_owned(), pos }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(src: &str) -> Pattern {
        match parse_path(src, 0) {
            Ok(Parsed::Pattern(p)) => p,
            Ok(Parsed::Literal(_)) => panic!("{src} parsed as a literal"),
            Err(e) => panic!("{src}: {e}"),
        }
    }

    fn host(src: &str) -> Pattern {
        match parse_host(src, 0) {
            Ok(Parsed::Pattern(p)) => p,
            Ok(Parsed::Literal(_)) => panic!("{src} parsed as a literal"),
            Err(e) => panic!("{src}: {e}"),
        }
    }

    fn path_err(src: &str) -> String {
        match parse_path(src, 5) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{src} parsed"),
        }
    }

    #[test]
    fn literal_paths_and_hosts_stay_strings() {
        assert!(matches!(parse_path("/a/b/", 0), Ok(Parsed::Literal(s)) if s == "/a/b/"));
        assert!(matches!(parse_host("API.Example.com", 0), Ok(Parsed::Literal(s)) if s == "api.example.com"));
        assert!(matches!(parse_host("[::1]", 0), Ok(Parsed::Literal(_))));
    }

    #[test]
    fn param_segments() {
        let p = path("/stores/<store>/gtins/<string:gtin>");
        assert!(p.matches_path("/stores/7/gtins/0123"));
        assert!(!p.matches_path("/stores//gtins/0123"), "params are non-empty");
        assert!(!p.matches_path("/stores/7/gtins/0123/"));
        assert!(!p.matches_path("/stores/7/gtins"));
        assert!(!p.matches_path("stores/7/gtins/1"));
        assert_eq!(p.to_string(), "/stores/<store>/gtins/<gtin>");
        assert_eq!(p.literal_len(), "/stores//gtins/".len());
    }

    #[test]
    fn int_segments() {
        let p = path("/items/<int:id>");
        assert!(p.matches_path("/items/42"));
        assert!(!p.matches_path("/items/4x2"));
        assert!(!p.matches_path("/items/"));
        assert!(!p.matches_path("/items/-1"));
    }

    #[test]
    fn rest_segment_takes_the_rest_including_empty() {
        let p = path("/static/<path:file>");
        assert!(p.matches_path("/static/"));
        assert!(p.matches_path("/static/a"));
        assert!(p.matches_path("/static/a/b/c/"));
        assert!(!p.matches_path("/static"));
        assert!(!p.matches_path("/staticx/a"));
        assert!(p.has_rest());
        assert_eq!(p.literal_len(), "/static/".len());
    }

    #[test]
    fn host_labels() {
        let h = host("<tenant>.Example.com");
        assert!(h.matches_host("acme.example.com"));
        assert!(!h.matches_host("example.com"));
        assert!(!h.matches_host("a.b.example.com"));
        assert!(!h.matches_host(".example.com"));
        assert_eq!(h.to_string(), "<tenant>.example.com");
        assert_eq!(h.literal_len(), ".example.com".len());
        assert!(parse_host("api-<int:n>.example.com", 0).is_err());
        let h = host("<int:n>.<string:s>.com");
        assert!(h.matches_host("1.x.com"));
        assert!(!h.matches_host("x.x.com"));
    }

    #[test]
    fn segment_errors() {
        assert_eq!(path_err("/a/<float:x>"), "unknown segment type `float` in `<float:x>` at 5");
        assert!(path_err("/a<b>").contains("must fill a whole segment"));
        assert!(path_err("/<b").contains("unterminated `<`"));
        assert!(path_err("/<>").contains("name must be"));
        assert!(path_err("/<path:p>/x").contains("must be the last segment"));
        assert!(path_err("/<a>/<int:a>").contains("used twice"));
        assert!(path_err("a").contains("must start with `/`"));
        assert!(path_err(&"/a".repeat(300)).contains("more than 255"));
        assert!(matches!(parse_host("<path:p>.com", 0), Err(e) if e.to_string().contains("only allowed in Path")));
        assert!(matches!(parse_host("a.com:80", 0), Err(e) if e.to_string().contains("port")));
        assert!(matches!(parse_host("[::1]:80", 0), Err(e) if e.to_string().contains("port")));
        assert!(matches!(parse_host("*.a.com", 0), Err(e) if e.to_string().contains("wildcard")));
        assert!(matches!(parse_host("", 0), Err(e) if e.to_string().contains("empty host")));
    }
}
