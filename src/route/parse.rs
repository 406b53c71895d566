//! The route-language parser: turns a frontend's `Route` string into a [`RouteExpr`], or a
//! [`ParseError`] that names the byte position and what was wrong. Part of route/, called by
//! the reload step once per frontend, so it validates everything a request-time check would
//! otherwise trip over (regexp sizes, header names, methods, one matcher per kind) and never
//! panics on any input.

use http::{HeaderName, HeaderValue, Method};

use super::expr::{BytesRx, HeaderMatch, HostMatch, MethodMatch, PathMatch, RouteExpr, Rx};
use super::pattern::{self, Parsed, MAX_SEGMENTS};
use super::specificity;

/// Compiled-size cap for every regexp, so a hostile or careless route cannot make the reload
/// step (or matching) slow or huge.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// Why a route string was rejected. Positions are byte offsets into the route string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("empty route")]
    Empty,
    #[error("expected {expected} at {pos}")]
    Expected { expected: &'static str, pos: usize },
    #[error("unexpected character `{ch}` at {pos}")]
    UnexpectedChar { ch: char, pos: usize },
    #[error("unterminated string at {pos}")]
    UnterminatedString { pos: usize },
    #[error("{what} is not supported (Vulcand routes only join matchers with &&) at {pos}")]
    Unsupported { what: &'static str, pos: usize },
    #[error("unknown matcher `{name}` at {pos}")]
    UnknownMatcher { name: String, pos: usize },
    #[error("{matcher} expects {expected} argument{}, got {got} at {pos}", if *.expected == 1 { "" } else { "s" })]
    Arity { matcher: &'static str, expected: usize, got: usize, pos: usize },
    #[error("only one {kind} matcher per route, got {first} and {second} at {pos}")]
    Duplicate { kind: &'static str, first: &'static str, second: &'static str, pos: usize },
    #[error("bad regexp in {matcher} at {pos}: {error}")]
    BadRegexp { matcher: &'static str, error: String, pos: usize },
    #[error("unknown segment type `{ty}` in `{segment}` at {pos}")]
    UnknownSegmentType { ty: String, segment: String, pos: usize },
    #[error("bad segment `{segment}` at {pos}: {reason}")]
    BadSegment { segment: String, reason: &'static str, pos: usize },
    #[error("bad {matcher} argument at {pos}: {reason}")]
    BadArgument { matcher: &'static str, reason: &'static str, pos: usize },
}

impl ParseError {
    /// Byte offset of the problem in the route string (`None` for an empty route).
    pub fn position(&self) -> Option<usize> {
        match self {
            ParseError::Empty => None,
            ParseError::Expected { pos, .. }
            | ParseError::UnexpectedChar { pos, .. }
            | ParseError::UnterminatedString { pos }
            | ParseError::Unsupported { pos, .. }
            | ParseError::UnknownMatcher { pos, .. }
            | ParseError::Arity { pos, .. }
            | ParseError::Duplicate { pos, .. }
            | ParseError::BadRegexp { pos, .. }
            | ParseError::UnknownSegmentType { pos, .. }
            | ParseError::BadSegment { pos, .. }
            | ParseError::BadArgument { pos, .. } => Some(*pos),
        }
    }
}

/// Parses and validates a route such as `Host("a.com") && PathPrefix("/v1") && Method("GET")`.
/// See the [module docs](super) for the language.
pub fn parse(src: &str) -> Result<RouteExpr, ParseError> {
    let mut lexer = Lexer { src, pos: 0 };
    let mut route = Builder::default();
    let mut token = lexer.next()?;
    if token.tok == Tok::Eof {
        return Err(ParseError::Empty);
    }
    loop {
        let (matcher, pos) = match token.tok {
            Tok::Ident(name) => match Matcher::from_name(name) {
                Some(m) => (m, token.pos),
                None => return Err(ParseError::UnknownMatcher { name: name.to_owned(), pos: token.pos }),
            },
            other => return Err(not_a_matcher(other, token.pos)),
        };
        let args = parse_args(&mut lexer)?;
        route.add(matcher, pos, args)?;
        let after = lexer.next()?;
        match after.tok {
            Tok::Eof => return Ok(route.finish()),
            Tok::AndAnd => {}
            Tok::OrOr => return Err(unsupported("||", after.pos)),
            _ => return Err(expected("`&&`", after.pos)),
        }
        token = lexer.next()?;
    }
}

fn not_a_matcher(tok: Tok<'_>, pos: usize) -> ParseError {
    match tok {
        Tok::LParen => unsupported("grouping with parentheses", pos),
        Tok::Bang => unsupported("!", pos),
        Tok::OrOr => unsupported("||", pos),
        _ => expected("a matcher such as `Path(\"/\")`", pos),
    }
}

fn unsupported(what: &'static str, pos: usize) -> ParseError {
    ParseError::Unsupported { what, pos }
}

fn expected(what: &'static str, pos: usize) -> ParseError {
    ParseError::Expected { expected: what, pos }
}

/// A string argument and where it starts (its opening quote).
struct Arg {
    value: String,
    pos: usize,
}

/// Parses `( "a", "b" )` right after a matcher name.
fn parse_args(lexer: &mut Lexer<'_>) -> Result<Vec<Arg>, ParseError> {
    let open = lexer.next()?;
    if open.tok != Tok::LParen {
        return Err(expected("`(`", open.pos));
    }
    let mut args = Vec::new();
    let first = lexer.next()?;
    let mut token = match first.tok {
        Tok::RParen => return Ok(args),
        _ => first,
    };
    loop {
        match token.tok {
            Tok::Str(value) => args.push(Arg { value, pos: token.pos }),
            _ => return Err(expected("a quoted argument", token.pos)),
        }
        let sep = lexer.next()?;
        match sep.tok {
            Tok::RParen => return Ok(args),
            Tok::Comma => token = lexer.next()?,
            _ => return Err(expected("`,` or `)`", sep.pos)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matcher {
    Host,
    HostRegexp,
    Path,
    PathPrefix,
    PathRegexp,
    Method,
    MethodRegexp,
    Header,
    HeaderRegexp,
}

impl Matcher {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "Host" => Matcher::Host,
            "HostRegexp" => Matcher::HostRegexp,
            "Path" => Matcher::Path,
            "PathPrefix" => Matcher::PathPrefix,
            "PathRegexp" => Matcher::PathRegexp,
            "Method" => Matcher::Method,
            "MethodRegexp" => Matcher::MethodRegexp,
            "Header" => Matcher::Header,
            "HeaderRegexp" => Matcher::HeaderRegexp,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Matcher::Host => "Host",
            Matcher::HostRegexp => "HostRegexp",
            Matcher::Path => "Path",
            Matcher::PathPrefix => "PathPrefix",
            Matcher::PathRegexp => "PathRegexp",
            Matcher::Method => "Method",
            Matcher::MethodRegexp => "MethodRegexp",
            Matcher::Header => "Header",
            Matcher::HeaderRegexp => "HeaderRegexp",
        }
    }

    fn arity(self) -> usize {
        match self {
            Matcher::Header | Matcher::HeaderRegexp => 2,
            _ => 1,
        }
    }
}

/// Collects matchers, enforcing one per kind, and compiles their arguments.
#[derive(Default)]
struct Builder {
    host: Option<(Matcher, HostMatch)>,
    path: Option<(Matcher, PathMatch)>,
    method: Option<(Matcher, MethodMatch)>,
    headers: Vec<HeaderMatch>,
}

impl Builder {
    fn add(&mut self, matcher: Matcher, pos: usize, args: Vec<Arg>) -> Result<(), ParseError> {
        if args.len() != matcher.arity() {
            return Err(ParseError::Arity { matcher: matcher.name(), expected: matcher.arity(), got: args.len(), pos });
        }
        let mut args = args.into_iter();
        // Arity was checked just above, so both arguments that a matcher reads are present.
        let mut arg = || args.next().expect("arity checked");
        match matcher {
            Matcher::Host | Matcher::HostRegexp => {
                check_unique("host", &self.host, matcher, pos)?;
                let arg = arg();
                let host = if matcher == Matcher::Host {
                    match pattern::parse_host(&arg.value, arg.pos)? {
                        Parsed::Literal(h) => HostMatch::Exact(h.into()),
                        Parsed::Pattern(p) => HostMatch::Pattern(p),
                    }
                } else {
                    HostMatch::Regexp(regexp(matcher, pos, &arg.value, true)?)
                };
                self.host = Some((matcher, host));
            }
            Matcher::Path | Matcher::PathPrefix | Matcher::PathRegexp => {
                check_unique("path", &self.path, matcher, pos)?;
                let arg = arg();
                let path = match matcher {
                    Matcher::Path => match pattern::parse_path(&arg.value, arg.pos)? {
                        Parsed::Literal(p) => PathMatch::Exact(p.into()),
                        Parsed::Pattern(p) => PathMatch::Pattern(p),
                    },
                    Matcher::PathPrefix => PathMatch::Prefix(prefix(arg)?.into()),
                    _ => PathMatch::Regexp(regexp(matcher, pos, &arg.value, false)?),
                };
                self.path = Some((matcher, path));
            }
            Matcher::Method | Matcher::MethodRegexp => {
                check_unique("method", &self.method, matcher, pos)?;
                let arg = arg();
                let method = if matcher == Matcher::Method {
                    let method = Method::from_bytes(arg.value.as_bytes())
                        .map_err(|_| bad_argument(matcher, "not a valid HTTP method token", arg.pos))?;
                    MethodMatch::Exact(method)
                } else {
                    MethodMatch::Regexp(regexp(matcher, pos, &arg.value, false)?)
                };
                self.method = Some((matcher, method));
            }
            Matcher::Header | Matcher::HeaderRegexp => {
                let name_arg = arg();
                let name = HeaderName::from_bytes(name_arg.value.as_bytes())
                    .map_err(|_| bad_argument(matcher, "not a valid header name", name_arg.pos))?;
                let value_arg = arg();
                let header = if matcher == Matcher::Header {
                    match pattern::parse_header(&value_arg.value, value_arg.pos)? {
                        Parsed::Literal(value) => {
                            let value = HeaderValue::from_str(&value)
                                .map_err(|_| bad_argument(matcher, "not a valid header value", value_arg.pos))?;
                            HeaderMatch::Exact { name, value }
                        }
                        Parsed::Pattern(pattern) => {
                            let src = pattern.to_string().into();
                            HeaderMatch::Pattern { name, pattern, src }
                        }
                    }
                } else {
                    HeaderMatch::Regexp { name, re: bytes_regexp(matcher, pos, &value_arg.value)? }
                };
                self.headers.push(header);
            }
        }
        Ok(())
    }

    fn finish(self) -> RouteExpr {
        let mut headers = self.headers;
        headers.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        headers.dedup();
        RouteExpr {
            host: self.host.map(|(_, h)| h),
            path: self.path.map(|(_, p)| p),
            method: self.method.map(|(_, m)| m),
            headers: headers.into_boxed_slice(),
        }
    }
}

fn check_unique<M>(
    kind: &'static str,
    slot: &Option<(Matcher, M)>,
    second: Matcher,
    pos: usize,
) -> Result<(), ParseError> {
    match slot {
        Some((first, _)) => Err(ParseError::Duplicate { kind, first: first.name(), second: second.name(), pos }),
        None => Ok(()),
    }
}

fn bad_argument(matcher: Matcher, reason: &'static str, pos: usize) -> ParseError {
    ParseError::BadArgument { matcher: matcher.name(), reason, pos }
}

/// Validates a `PathPrefix` argument: a rooted literal (patterns belong in `Path`).
fn prefix(arg: Arg) -> Result<String, ParseError> {
    let bad = |reason| bad_argument(Matcher::PathPrefix, reason, arg.pos);
    if !arg.value.starts_with('/') {
        return Err(bad("must start with `/`"));
    }
    if arg.value.contains('?') {
        return Err(bad(pattern::QUERY_REASON));
    }
    if arg.value.contains(['<', '>']) {
        return Err(bad("takes a literal prefix; use Path with `<path:rest>` for patterns"));
    }
    if arg.value.split('/').count() > MAX_SEGMENTS + 1 {
        return Err(bad("has more than 255 segments"));
    }
    Ok(arg.value)
}

/// Compiles a `HostRegexp`, `PathRegexp` or `MethodRegexp` as written: unanchored, as Go's
/// `regexp.MatchString` in Vulcand, so `^` and `$` are the user's to add.
fn regexp(matcher: Matcher, pos: usize, src: &str, case_insensitive: bool) -> Result<Rx, ParseError> {
    let bad = |e: regex::Error| ParseError::BadRegexp { matcher: matcher.name(), error: e.to_string(), pos };
    let re = regex::RegexBuilder::new(src)
        .size_limit(REGEX_SIZE_LIMIT)
        .case_insensitive(case_insensitive)
        .build()
        .map_err(bad)?;
    let (prefix_len, literal_len) = specificity::of(src);
    Ok(Rx { src: src.into(), re, prefix_len, literal_len })
}

/// Compiles a `HeaderRegexp` value regexp: unanchored, over bytes.
fn bytes_regexp(matcher: Matcher, pos: usize, src: &str) -> Result<BytesRx, ParseError> {
    let re = regex::bytes::RegexBuilder::new(src)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ParseError::BadRegexp { matcher: matcher.name(), error: e.to_string(), pos })?;
    Ok(BytesRx { src: src.into(), re })
}

#[derive(Debug, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    Str(String),
    LParen,
    RParen,
    Comma,
    AndAnd,
    OrOr,
    Bang,
    Eof,
}

struct Token<'a> {
    tok: Tok<'a>,
    pos: usize,
}

/// Splits the route string into tokens. Works on `char`s so every slice lands on a boundary.
struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn next(&mut self) -> Result<Token<'a>, ParseError> {
        let src = self.src;
        let rest = src.get(self.pos..).unwrap_or_default();
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let pos = self.pos;
        let Some(c) = trimmed.chars().next() else {
            return Ok(Token { tok: Tok::Eof, pos });
        };
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '!' => (Tok::Bang, 1),
            '&' if trimmed.starts_with("&&") => (Tok::AndAnd, 2),
            '&' => return Err(expected("`&&`", pos)),
            '|' if trimmed.starts_with("||") => (Tok::OrOr, 2),
            '"' => quoted(trimmed).ok_or(ParseError::UnterminatedString { pos })?,
            '`' => match trimmed[1..].find('`') {
                Some(end) => (Tok::Str(trimmed[1..=end].to_owned()), end + 2),
                None => return Err(ParseError::UnterminatedString { pos }),
            },
            c if c.is_ascii_alphabetic() => {
                let len = trimmed.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(trimmed.len());
                (Tok::Ident(&trimmed[..len]), len)
            }
            ch => return Err(ParseError::UnexpectedChar { ch, pos }),
        };
        self.pos += len;
        Ok(Token { tok, pos })
    }
}

/// Reads a double-quoted string at the start of `s`; returns it and its length in bytes, or
/// `None` if it never closes. Only `\"` and `\\` are escapes: other backslashes are kept, so
/// regexps like `"\d+"` need no doubling.
fn quoted(s: &str) -> Option<(Tok<'static>, usize)> {
    let mut value = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((Tok::Str(value), i + 1)),
            '\\' => match chars.next()? {
                (_, c @ ('"' | '\\')) => value.push(c),
                (_, other) => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests;
