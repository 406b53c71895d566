//! The route language (`Host("a.com") && PathPrefix("/v1")`) and the index that matches requests
//! against it. A leaf of the module graph: it imports nothing from the rest of the crate. The model
//! calls [`parse()`] once per frontend value, the table compiler calls [`Router::build`] for its base
//! and overlay indices, and the proxy searches them (with [`Router::find_ranked`]) once per request
//! against the table it loaded. The module is pure (no I/O, no clock, no globals, no `unsafe`) so a
//! table can be built and checked off the hot path, swapped in whole, and tested without sockets.
//!
//! # Language
//!
//! The matchers, segment patterns, quoting, precedence rules and error messages are specified once, in
//! `docs/ROUTES.md`; this module implements that document, and its tests follow it. That document's
//! "For Vulcand users" section lists where Ficus deliberately differs from Vulcand, and
//! `vulcand_compat` checks both against Vulcand's own published route cases. `rank::rank` is the one
//! implementation of the precedence rules. Two routes given with the same id are the caller's bug;
//! [`Router::build`] keeps the first.
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
//! `PathPrefix` routes live in a trie of path segments and the rest in rank-sorted lists. A
//! pattern segment that starts with text (`v<int:n>`) cannot be a trie edge, so its route waits
//! at the node before that segment and has its whole path checked when it is a candidate. Path
//! regexps are unanchored, so they cannot hang under a literal prefix in the trie: they sit in
//! their host bucket's rank-sorted list, best first, and the search stops at the first one that
//! matches. Each route's rank is packed into one integer at build time, and a search skips every
//! subtree whose best rank cannot beat what it already found.
//!
//! Files: `parse` (route string to [`RouteExpr`]), `pattern` (`<name>` segment patterns), `expr`
//! ([`RouteExpr`] and the per-matcher checks), `specificity` (how specific a regexp is), `rank`
//! (precedence as one `u128`), `hosts` (the exact-host table), `trie` (the path trie's flat
//! arenas), `index` ([`Router`]: buckets and the search), `vulcand_compat` (Vulcand's published
//! route cases, test-only).

#![forbid(unsafe_code)]

mod expr;
mod hosts;
mod index;
mod parse;
mod pattern;
mod rank;
mod specificity;
mod trie;
#[cfg(test)]
mod vulcand_compat;

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
