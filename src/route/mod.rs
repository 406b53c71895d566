//! The route language (`Host("a.com") && PathPrefix("/v1")`) and the index that matches requests
//! against it. A leaf of the module graph: it imports nothing from the rest of the crate. The model
//! calls [`parse()`] once per frontend value, the table compiler calls [`Router::build`] for its base
//! and overlay indices, and the proxy searches them (with [`Router::find_ranked`]) once per request
//! against the table it loaded. The module is pure (no I/O, no clock, no globals, no `unsafe`) so a
//! table can be built and checked off the hot path, swapped in whole, and tested without sockets.
//!
//! # Language
//!
//! A route is one or more matchers joined by `&&`. Arguments are double-quoted (only `\"` and `\\`
//! are escapes; any other backslash is kept as written, so `"\d+"` is the regexp `\d+`) or
//! backtick-quoted (raw). Whitespace between tokens is free. `||`, `!` and parentheses are rejected
//! with an error saying so: Vulcand routes only ever join matchers with `&&`.
//!
//! | matcher | matches |
//! |---|---|
//! | `Host(h)` | the request host, ASCII case-insensitively, ignoring any `:port` |
//! | `HostRegexp(re)` | the host (lower-cased, no port) against `^(?:re)$`, case-insensitively |
//! | `Path(p)` | the whole path; `/a` does not match `/a/` |
//! | `PathPrefix(p)` | a plain string prefix of the path: `/api` matches `/api`, `/api/x` **and** `/apix`; write `/api/` to stop at a segment boundary |
//! | `PathRegexp(re)` | the path against `^(?:re)`: anchored at the start, open at the end unless `re` ends in `$` |
//! | `Method(m)` | the method, exactly and case-sensitively (HTTP methods are case-sensitive) |
//! | `MethodRegexp(re)` | the method against `^(?:re)$` |
//! | `Header(name, value)` | any value of the header (name case-insensitive) equal to `value` byte for byte |
//! | `HeaderRegexp(name, re)` | any value of the header containing a match of `re` (unanchored search) |
//!
//! `Path` and `Host` take segment patterns, each filling a whole segment (path segments are split by
//! `/`, host labels by `.`): `<name>` or `<string:name>` matches one non-empty segment, `<int:name>`
//! one segment of ASCII digits, and `<path:name>` (Path only, last) the rest of the path, slashes
//! included, possibly empty: `Path("/static/<path:file>")` matches `/static/` and `/static/a/b` but
//! not `/static`. A route has at most one host, one path and one method matcher, and any number of
//! header matchers. Paths are matched as given, minus any query string: percent-decoding and
//! dot-segment removal are the proxy's job before matching.
//!
//! # Precedence
//!
//! Among the routes whose matchers all match a request, the winner is the one with the greatest
//! rank, comparing these keys in order until one differs:
//!
//! 1. higher `priority` (given by the caller per route);
//! 2. host specificity: exact `Host` > `Host` with `<name>` labels (more literal characters first) >
//!    `HostRegexp` > no host matcher;
//! 3. path specificity: exact literal `Path` > `Path` with segment patterns (more literal
//!    characters first, counting the `/`s; then one without `<path:>` before one with it) >
//!    `PathPrefix` (longer prefix first) > `PathRegexp` > no path matcher;
//! 4. more matchers over fewer (a header-gated canary beats the plain route it shadows);
//! 5. smaller route id (byte-wise lexicographic), so the choice never depends on input order.
//!
//! For `GET http://shop.example.com/stores/7/gtins/123`, with all priorities 0:
//!
//! ```text
//! Host("shop.example.com") && Path("/stores/<s>/gtins/<g>")  wins: exact host, pattern path
//! Host("<sub>.example.com") && Path("/stores/7/gtins/123")   loses on rule 2 despite its exact path
//! Path("/stores/7/gtins/123")                                loses on rule 2 (no host)
//! Host("shop.example.com") && PathPrefix("/stores/")         loses on rule 3
//! Host("shop.example.com") && PathRegexp("/.*")              loses on rule 3: a catch-all never beats a Path
//! ```
//!
//! and `Header("X-Canary", "1") && Path("/x")` beats `Path("/x")` when the header is sent (rule 4).
//! Two routes given with the same id are the caller's bug; [`Router::build`] keeps the first.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use ficus::route::{parse, Request, RouteSpec, Router};
//!
//! let spec = |id: &str, route: &str| RouteSpec {
//!     id: Arc::from(id),
//!     priority: 0,
//!     expr: parse(route).expect("valid route"),
//!     value: id.to_owned(),
//! };
//! let router = Router::build(vec![
//!     spec("legacy", r#"Host("shop.example.com") && PathPrefix("/")"#),
//!     spec("gtin", r#"Host("shop.example.com") && Path("/stores/<store>/gtins/<gtin>")"#),
//! ]);
//! let headers = http::HeaderMap::new();
//! let req = |path| Request { method: &http::Method::GET, host: "Shop.Example.com:443", path, headers: &headers };
//! assert_eq!(router.find_route(&req("/stores/7/gtins/0123")).map(|(id, _)| id), Some("gtin"));
//! assert_eq!(router.find_route(&req("/stores/7")).map(|(id, _)| id), Some("legacy"));
//! ```
//!
//! # Index
//!
//! Requests never scan the whole table. Routes are bucketed by exact host (a hash map), by host
//! pattern or regexp (a short list), or into the no-host bucket; inside a bucket, `Path` and
//! `PathPrefix` routes live in a trie of path segments and the rest in rank-sorted lists. Each
//! route's rank is packed into one integer at build time, and a search skips every subtree whose
//! best rank cannot beat what it already found.
//!
//! Files: `parse` (route string to [`RouteExpr`]), `pattern` (`<name>` segment patterns), `expr`
//! ([`RouteExpr`] and the per-matcher checks), `rank` (precedence as one `u128`), `hosts` (the
//! exact-host table), `trie` (the path trie's flat arenas), `index` ([`Router`]: buckets and the
//! search).

#![forbid(unsafe_code)]

mod expr;
mod hosts;
mod index;
mod parse;
mod pattern;
mod rank;
mod trie;

use std::sync::Arc;

pub use expr::RouteExpr;
pub use index::{RouteSet, Router};
pub use parse::{parse, ParseError};

/// One route as the reload step hands it to [`Router::build`].
#[derive(Debug, Clone)]
pub struct RouteSpec<T> {
    /// Unique id (the frontend id); the final tie-break between otherwise equal routes.
    pub id: Arc<str>,
    /// Higher wins over every other precedence rule.
    pub priority: i32,
    pub expr: RouteExpr,
    /// What a match hands back to the proxy (the compiled frontend).
    pub value: T,
}

/// The parts of a request that routes look at, borrowed from the real request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a http::Method,
    /// The `Host` header or URI authority, with or without a `:port`, in any case.
    pub host: &'a str,
    /// The path as the proxy wants it matched (normalised by the caller). Anything from a `?` on
    /// is ignored, so passing a path-and-query is harmless.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
}
