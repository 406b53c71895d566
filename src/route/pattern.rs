//! Segment patterns for `Path`, `Host` and `Header` values (`/stores/<store>/gtins/<int:gtin>`,
//! `<tenant>.example.com`, `application/<subtype>`, `/v<int:version>/users`). Part of route/: the
//! parser turns a pattern string into [`Pattern`] at reload time; the index walks a path pattern's
//! whole-segment parts into the path trie, and host and header patterns (and the path segments the
//! trie cannot index, like `v<int:version>`) are matched per request by [`Pattern`] itself.
//!
//! The grammar is Vulcand's: a `<` starts a pattern only when a `>` follows it (`<name>`,
//! `<string:name>`, `<int:name>`, `<path:name>`); any other `<` or `>` is a literal character. A
//! pattern takes the rest of its segment, so it may follow literal text in a segment but nothing
//! may follow it (in Vulcand such a route never matches; here it is refused).

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
    /// Literal text, then `<name>` (`int: false`) or `<int:name>` (`int: true`) taking the
    /// non-empty rest of the segment: `v<int:version>` matches `v2`, not `v` or `v2b`.
    Prefixed { prefix: Box<str>, int: bool, name: Box<str> },
}

impl Segment {
    /// Whether one request segment fits. `Rest` fits anything; callers stop walking at it.
    pub(super) fn matches(&self, segment: &str) -> bool {
        match self {
            Segment::Literal(literal) => **literal == *segment,
            Segment::Param(_) => !segment.is_empty(),
            Segment::Int(_) => is_digits(segment),
            Segment::Rest(_) => true,
            Segment::Prefixed { prefix, int, .. } => match segment.strip_prefix(&**prefix) {
                Some(rest) if *int => is_digits(rest),
                Some(rest) => !rest.is_empty(),
                None => false,
            },
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
    /// A `Header` value: segments are split by `/`, as in Vulcand (`application/<subtype>`).
    Header,
}

impl Kind {
    fn separator(self) -> char {
        match self {
            Kind::Path | Kind::Header => '/',
            Kind::Host => '.',
        }
    }

    fn matcher(self) -> &'static str {
        match self {
            Kind::Path => "Path",
            Kind::Host => "Host",
            Kind::Header => "Header",
        }
    }
}

/// A `Path`, `Host` or `Header` argument with at least one `<...>` pattern (all-literal ones are
/// kept as plain strings by the parser, since they can be matched by equality).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    kind: Kind,
    segments: Box<[Segment]>,
    /// Some segment is [`Segment::Prefixed`]: the path trie cannot index it, so the route is
    /// filed at the trie node before that segment and its whole path checked per candidate.
    prefixed: bool,
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
                Segment::Literal(l) | Segment::Prefixed { prefix: l, .. } => l.len(),
                _ => 0,
            })
            .sum();
        let separators = match self.kind {
            // Every path segment follows a `/`.
            Kind::Path => self.segments.len(),
            Kind::Host | Kind::Header => self.segments.len().saturating_sub(1),
        };
        literals + separators
    }

    pub(super) fn has_rest(&self) -> bool {
        matches!(self.segments.last(), Some(Segment::Rest(_)))
    }

    /// Whether the path trie leaves part of this pattern to [`matches_path`](Self::matches_path).
    pub(super) fn prefixed(&self) -> bool {
        self.prefixed
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

    /// Matches a host that is already lower-cased and stripped of its port, or a header value:
    /// the same number of segments, each one matching.
    pub(super) fn matches_split(&self, value: &str) -> bool {
        let mut labels = value.split(self.kind.separator());
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
                Segment::Prefixed { prefix, int: false, name } => write!(f, "{prefix}<{name}>")?,
                Segment::Prefixed { prefix, int: true, name } => write!(f, "{prefix}<int:{name}>")?,
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
    Ok(finish(src.to_owned(), parse_segments(body, Kind::Path, pos)?, Kind::Path))
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
    Ok(finish(lower, segments, Kind::Host))
}

/// Parses a `Header` value. `pos` is the argument's position, for errors.
pub(super) fn parse_header(src: &str, pos: usize) -> Result<Parsed, ParseError> {
    Ok(finish(src.to_owned(), parse_segments(src, Kind::Header, pos)?, Kind::Header))
}

fn finish(src: String, segments: Box<[Segment]>, kind: Kind) -> Parsed {
    if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
        return Parsed::Literal(src);
    }
    let prefixed = segments.iter().any(|s| matches!(s, Segment::Prefixed { .. }));
    Parsed::Pattern(Pattern { kind, segments, prefixed })
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

/// One piece of a pattern string, before it is cut into segments.
enum Piece<'a> {
    Text(&'a str),
    /// The inside of a `<...>`.
    Pattern(&'a str),
}

/// Cuts a pattern string into literal text and `<...>` patterns the way Vulcand reads it: a `<`
/// opens a pattern when a `>` follows with at least one character between them; otherwise it is
/// text.
fn pieces(src: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut at = 0;
    while let Some(open) = src[at..].find('<').map(|i| at + i) {
        match src[open + 1..].find('>') {
            // No `>` anywhere after: the rest is text (and stopping here keeps a long run of
            // `<`s from costing a scan each).
            None => break,
            // `<>` is text.
            Some(0) => at = open + 1,
            Some(len) => {
                if open > text_start {
                    pieces.push(Piece::Text(&src[text_start..open]));
                }
                pieces.push(Piece::Pattern(&src[open + 1..open + 1 + len]));
                at = open + len + 2;
                text_start = at;
            }
        }
    }
    if text_start < src.len() {
        pieces.push(Piece::Text(&src[text_start..]));
    }
    pieces
}

/// Why a segment with text after its pattern is refused.
const TRAILING_REASON: &str =
    "a `<...>` pattern takes the rest of its segment, so nothing may follow it there (Vulcand never matches such a route)";

fn parse_segments(body: &str, kind: Kind, pos: usize) -> Result<Box<[Segment]>, ParseError> {
    let sep = kind.separator();
    // The pieces of each segment, cut at the separators in the text pieces.
    let mut cut: Vec<Vec<Piece<'_>>> = vec![Vec::new()];
    for piece in pieces(body) {
        match piece {
            Piece::Text(text) => {
                for (i, part) in text.split(sep).enumerate() {
                    if i > 0 {
                        cut.push(Vec::new());
                    }
                    if !part.is_empty() {
                        cut.last_mut().expect("starts non-empty, only grows").push(Piece::Text(part));
                    }
                }
            }
            pattern => cut.last_mut().expect("starts non-empty, only grows").push(pattern),
        }
        if cut.len() > MAX_SEGMENTS {
            return Err(ParseError::BadArgument { matcher: kind.matcher(), reason: "has more than 255 segments", pos });
        }
    }
    let last = cut.len() - 1;
    let mut segments = Vec::with_capacity(cut.len());
    for (i, pieces) in cut.into_iter().enumerate() {
        let written = || {
            pieces
                .iter()
                .map(|p| match p {
                    Piece::Text(t) => (*t).to_owned(),
                    Piece::Pattern(inner) => format!("<{inner}>"),
                })
                .collect::<String>()
        };
        let segment = match pieces.as_slice() {
            [] => Segment::Literal("".into()),
            [Piece::Text(text)] => Segment::Literal((*text).into()),
            [Piece::Pattern(inner)] => pattern_segment(inner, pos, &written())?,
            [Piece::Text(prefix), Piece::Pattern(inner)] => match pattern_segment(inner, pos, &written())? {
                Segment::Param(name) => Segment::Prefixed { prefix: (*prefix).into(), int: false, name },
                Segment::Int(name) => Segment::Prefixed { prefix: (*prefix).into(), int: true, name },
                _ => return Err(bad_segment(&written(), pos, "`<path:>` must fill a whole segment")),
            },
            _ => return Err(bad_segment(&written(), pos, TRAILING_REASON)),
        };
        if let Segment::Rest(_) = segment {
            if kind != Kind::Path {
                return Err(bad_segment(&written(), pos, "`<path:>` is only allowed in Path"));
            }
            if i != last {
                return Err(bad_segment(&written(), pos, "`<path:>` must be the last segment"));
            }
        }
        segments.push(segment);
    }
    Ok(segments.into_boxed_slice())
}

fn bad_segment(segment: &str, pos: usize, reason: &'static str) -> ParseError {
    ParseError::BadSegment { segment: segment.to_owned(), reason, pos }
}

/// Reads the inside of one `<...>`: `name`, `string:name`, `int:name` or `path:name`.
fn pattern_segment(inner: &str, pos: usize, segment: &str) -> Result<Segment, ParseError> {
    let (ty, name) = inner.split_once(':').unwrap_or(("string", inner));
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(bad_segment(segment, pos, "the name must be letters, digits, `_` or `-`"));
    }
    let name: Box<str> = name.into();
    match ty {
        "string" => Ok(Segment::Param(name)),
        "int" => Ok(Segment::Int(name)),
        "path" => Ok(Segment::Rest(name)),
        _ => Err(ParseError::UnknownSegmentType { ty: ty.to_owned(), segment: segment.to_owned(), pos }),
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
        assert!(h.matches_split("acme.example.com"));
        assert!(!h.matches_split("example.com"));
        assert!(!h.matches_split("a.b.example.com"));
        assert!(!h.matches_split(".example.com"));
        assert_eq!(h.to_string(), "<tenant>.example.com");
        assert_eq!(h.literal_len(), ".example.com".len());
        let h = host("<int:n>.<string:s>.com");
        assert!(h.matches_split("1.x.com"));
        assert!(!h.matches_split("x.x.com"));
    }

    #[test]
    fn patterns_may_follow_text_in_a_segment() {
        let p = path("/v<int:version>/domains/<string:name>");
        assert!(p.prefixed());
        assert!(p.matches_path("/v42/domains/domain1"));
        assert!(!p.matches_path("/v42abc/domains/domain1"));
        assert!(!p.matches_path("/v/domains/domain1"), "the pattern part is non-empty");
        assert!(!p.matches_path("/x42/domains/domain1"));
        assert_eq!(p.to_string(), "/v<int:version>/domains/<name>");
        assert_eq!(p.literal_len(), "/v/domains/".len());
        let h = host("api-<int:n>.Example.com");
        assert!(h.matches_split("api-7.example.com"));
        assert!(!h.matches_split("api-x.example.com"));
        assert!(!path("/<a>/<b>").prefixed());
    }

    #[test]
    fn a_lone_angle_bracket_is_text() {
        assert!(matches!(parse_path("/v1/<hello", 0), Ok(Parsed::Literal(s)) if s == "/v1/<hello"));
        assert!(matches!(parse_path("/a>b/<>", 0), Ok(Parsed::Literal(s)) if s == "/a>b/<>"));
        // A long run of `<` with no `>` is text, read in one pass.
        let many = format!("/{}", "<".repeat(100_000));
        assert!(matches!(parse_path(&many, 0), Ok(Parsed::Literal(s)) if s == many));
        // Vulcand reads `<<a>` as a pattern named `<a`; names here are stricter.
        assert!(path_err("/<<a>").contains("name must be"));
    }

    #[test]
    fn header_values_are_split_by_slashes() {
        let h = match parse_header("application/<subtype>", 0) {
            Ok(Parsed::Pattern(p)) => p,
            _ => panic!("not a pattern"),
        };
        assert!(h.matches_split("application/json"));
        assert!(h.matches_split("application/json; charset=utf-8"));
        assert!(!h.matches_split("application/"));
        assert!(!h.matches_split("text/json"));
        assert!(!h.matches_split("application/vnd/json"));
        assert_eq!(h.to_string(), "application/<subtype>");
        assert!(matches!(parse_header("<string>/<string>", 0), Ok(Parsed::Pattern(_))), "names may repeat");
        assert!(matches!(parse_header("text/plain", 0), Ok(Parsed::Literal(s)) if s == "text/plain"));
        assert!(parse_header("<path:p>", 0).is_err());
    }

    #[test]
    fn segment_errors() {
        assert_eq!(path_err("/a/<float:x>"), "unknown segment type `float` in `<float:x>` at 5");
        assert!(path_err("/<b>a").contains("nothing may follow it"));
        assert!(path_err("/<a><b>").contains("nothing may follow it"));
        assert!(path_err("/a<path:p>").contains("must fill a whole segment"));
        assert!(path_err("/<a b>").contains("name must be"));
        assert!(path_err("/<string:hi:omg>").contains("name must be"));
        assert!(path_err("/<path:p>/x").contains("must be the last segment"));
        assert!(path_err("a").contains("must start with `/`"));
        assert!(path_err(&"/a".repeat(300)).contains("more than 255"));
        assert!(matches!(parse_host("<path:p>.com", 0), Err(e) if e.to_string().contains("only allowed in Path")));
        assert!(matches!(parse_host("a.com:80", 0), Err(e) if e.to_string().contains("port")));
        assert!(matches!(parse_host("[::1]:80", 0), Err(e) if e.to_string().contains("port")));
        assert!(matches!(parse_host("*.a.com", 0), Err(e) if e.to_string().contains("wildcard")));
        assert!(matches!(parse_host("", 0), Err(e) if e.to_string().contains("empty host")));
    }
}
