//! [`Router`]: the compiled, immutable route index. Part of route/: the table compiler builds
//! a base index over every frontend's parsed route and a small overlay index of recent changes
//! (masking replaced base routes with a [`RouteSet`]), and the proxy asks them for the winning
//! route once per request. It exists so that a request costs a host lookup and a short trie walk
//! instead of a scan of every route, and so that a lookup allocates nothing (regexps, when one
//! is consulted, use the regex crate's per-thread caches).
//!
//! Shape: routes are bucketed by exact host (a hash table), by host pattern or regexp (short lists,
//! one entry per distinct host matcher, the regexps behind one combined automaton that rules
//! them all out in a single pass), or into the no-host bucket. A bucket holds a trie of path
//! segments for `Path` and `PathPrefix` routes, plus rank-sorted lists for `PathRegexp` routes and
//! routes without a path matcher. Every list is sorted by rank and every trie node knows the best
//! rank beneath it, so the search stops as soon as nothing left can beat what it found.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use regex::{RegexSet, RegexSetBuilder};

use super::expr::{host_without_port, path_without_query, HostMatch, PathMatch, RouteExpr};
use super::hosts::HostTable;
use super::pattern::is_digits;
use super::trie::{cut, FastMap, NodeBuilder, NodeId, Slot, Span, Trie, NONE};
use super::{rank, Request, RouteSpec};

/// The compiled route table: immutable once built, shared by reference between requests.
pub struct Router<T> {
    /// What a match returns, by route index: kept apart from the matchers so the winner's line
    /// holds little else.
    found: Box<[(Arc<str>, T)]>,
    /// Every route's matchers, by route index: read for method and header checks, path regexps
    /// and [`iter`](Self::iter).
    exprs: Box<[RouteExpr]>,
    /// Rank by route index, for tests that check the index against a brute-force maximum.
    #[cfg(test)]
    ranks: Box<[u128]>,
    exact_hosts: HostTable<Bucket>,
    /// One bucket per distinct host pattern, best first so the search can stop early.
    host_patterns: Box<[(HostMatch, Ranked)]>,
    /// One bucket per distinct `HostRegexp`, best first.
    host_regexps: Box<[(HostMatch, Ranked)]>,
    /// All host regexps in one automaton: one pass tells whether any of them can match, so a
    /// request for an unknown host does not try every regexp in turn.
    regexp_gate: Option<RegexSet>,
    any_host: Ranked,
    trie: Trie,
}

/// The routes of one host matcher (or of no host matcher).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Root of the `Path` / `PathPrefix` trie, `NONE` if there are none.
    root: NodeId,
    regexp_paths: Span,
    no_path: Span,
}

// An exact-host entry (hash, inline host, bucket) is one cache line.
const _: () = assert!(std::mem::size_of::<super::hosts::Entry<Bucket>>() == 64);

/// A bucket with the best rank of its routes, for buckets searched after something may already
/// have been found. (Exact-host buckets are searched first, so they need no bound.)
#[derive(Debug)]
struct Ranked {
    max_rank: u128,
    bucket: Bucket,
}

impl<T> Router<T> {
    /// Compiles the routes into an index. Routes are kept in order; when two share an id (the
    /// caller's bug) the first one is kept and the later ones are dropped.
    pub fn build(routes: Vec<RouteSpec<T>>) -> Router<T> {
        let mut seen = HashSet::with_capacity(routes.len());
        let routes: Vec<RouteSpec<T>> = routes.into_iter().filter(|r| seen.insert(Arc::clone(&r.id))).collect();
        drop(seen);

        // Position of each route in ascending id order, for the last tie-break.
        let mut by_id: Vec<usize> = (0..routes.len()).collect();
        by_id.sort_unstable_by(|&a, &b| routes[a].id.cmp(&routes[b].id));
        let mut id_order = vec![0; routes.len()];
        for (order, &route) in by_id.iter().enumerate() {
            id_order[route] = order;
        }

        let mut exact_hosts: FastMap<Box<str>, BucketBuilder> = FastMap::default();
        let mut other_index: FastMap<String, usize> = FastMap::default();
        let mut other_hosts: Vec<(HostMatch, BucketBuilder)> = Vec::new();
        let mut any_host = BucketBuilder::default();
        let mut found = Vec::with_capacity(routes.len());
        let mut exprs = Vec::with_capacity(routes.len());
        #[cfg(test)]
        let mut ranks = Vec::with_capacity(routes.len());
        for (index, (spec, order)) in routes.into_iter().zip(id_order).enumerate() {
            let rank = rank::rank(spec.priority, &spec.expr, order);
            let plain = !spec.expr.checked_per_candidate();
            let slot = Slot { rank, route: arena_index(index), plain };
            let bucket = match &spec.expr.host {
                Some(HostMatch::Exact(host)) => exact_hosts.entry(host.clone()).or_default(),
                Some(host) => {
                    let at = *other_index.entry(host_key(host)).or_insert_with(|| {
                        other_hosts.push((host.clone(), BucketBuilder::default()));
                        other_hosts.len() - 1
                    });
                    &mut other_hosts[at].1
                }
                None => &mut any_host,
            };
            bucket.insert(spec.expr.path.as_ref(), slot);
            found.push((spec.id, spec.value));
            exprs.push(spec.expr);
            #[cfg(test)]
            ranks.push(rank);
        }

        let mut trie = Trie::default();
        let exact_hosts = HostTable::new(
            exact_hosts.into_iter().map(|(host, bucket)| (host, bucket.freeze(&mut trie).bucket)).collect(),
        );
        let (mut host_regexps, mut host_patterns): (Vec<_>, Vec<_>) = other_hosts
            .into_iter()
            .map(|(host, bucket)| (host, bucket.freeze(&mut trie)))
            .partition(|(host, _)| matches!(host, HostMatch::Regexp(_)));
        host_patterns.sort_unstable_by_key(|(_, ranked)| Reverse(ranked.max_rank));
        host_regexps.sort_unstable_by_key(|(_, ranked)| Reverse(ranked.max_rank));
        let any_host = any_host.freeze(&mut trie);
        Router {
            found: found.into_boxed_slice(),
            exprs: exprs.into_boxed_slice(),
            #[cfg(test)]
            ranks: ranks.into_boxed_slice(),
            exact_hosts,
            host_patterns: host_patterns.into_boxed_slice(),
            regexp_gate: regexp_gate(&host_regexps),
            host_regexps: host_regexps.into_boxed_slice(),
            any_host,
            trie,
        }
    }

    /// The value of the winning route for `req`, if any route matches.
    pub fn find(&self, req: &Request<'_>) -> Option<&T> {
        self.find_route(req).map(|(_, value)| value)
    }

    /// The id and value of the winning route for `req`, if any route matches.
    pub fn find_route(&self, req: &Request<'_>) -> Option<(&str, &T)> {
        let (id, value) = self.found.get(self.find_index(req)?)?;
        Some((id, value))
    }

    /// Number of routes kept (after dropping duplicate ids).
    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Every kept route as `(id, expr, value)`, in the order given to [`build`](Self::build).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RouteExpr, &T)> {
        self.found.iter().zip(self.exprs.iter()).map(|((id, value), expr)| (&**id, expr, value))
    }

    fn find_index(&self, req: &Request<'_>) -> Option<usize> {
        self.find_ranked(req, None).map(|(_, index)| index)
    }

    /// The winning route's precedence key and index, skipping the routes in `excluded`: a route
    /// that a newer layer replaced or removed must not win, and must not hide the next best one.
    /// The key leaves out the id tie-break, which only orders routes of one index; callers that
    /// merge indices compare [`id`](Self::id)s on equal keys.
    pub fn find_ranked(&self, req: &Request<'_>, excluded: Option<&RouteSet>) -> Option<(u128, usize)> {
        with_lowercase(host_without_port(req.host), |host| {
            let mut search = Search {
                exprs: &self.exprs,
                trie: &self.trie,
                req,
                path: req.path,
                excluded,
                best: Slot { rank: 0, route: 0, plain: true },
            };
            if let Some(bucket) = self.exact_hosts.get(host) {
                search.bucket(bucket);
            }
            search.host_list(&self.host_patterns, host);
            // Even the combined automaton costs more than the rest of a lookup, so it runs only
            // when a regexp bucket could still beat what was found.
            let regexp_could_win = self.host_regexps.first().is_some_and(|(_, r)| r.max_rank > search.best.rank);
            if regexp_could_win && self.any_host_regexp(host) {
                search.host_list(&self.host_regexps, host);
            }
            search.ranked(&self.any_host);
            (search.best.rank > 0).then_some((search.best.rank >> rank::ID_BITS, search.best.route as usize))
        })
    }

    /// The id and value of the route at `index` (as returned by [`find_ranked`](Self::find_ranked)).
    pub fn entry(&self, index: usize) -> Option<(&str, &T)> {
        self.found.get(index).map(|(id, value)| (&**id, value))
    }

    /// Whether any `HostRegexp` could match `host` (true if the combined automaton is missing).
    fn any_host_regexp(&self, host: &str) -> bool {
        match &self.regexp_gate {
            Some(set) => set.is_match(host),
            None => true,
        }
    }

    #[cfg(test)]
    fn rank_of(&self, index: usize) -> u128 {
        self.ranks[index]
    }
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router::build(Vec::new())
    }
}

impl<T> fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.found.len())
            .field("exact_hosts", &self.exact_hosts.len())
            .field("host_patterns", &self.host_patterns.len())
            .field("host_regexps", &self.host_regexps.len())
            .finish_non_exhaustive()
    }
}

/// Route indices are stored as `u32` to keep slots small.
fn arena_index(index: usize) -> u32 {
    // A table of four billion routes would not fit in memory long before this could fail.
    u32::try_from(index).expect("route tables stay far below 4 billion routes")
}

/// Identity of a host matcher, to give routes sharing one the same bucket. (Compiled regexps
/// cannot be hash keys themselves: they carry interior caches.)
fn host_key(host: &HostMatch) -> String {
    match host {
        HostMatch::Exact(h) => format!("exact {h}"),
        HostMatch::Pattern(p) => format!("pattern {p}"),
        HostMatch::Regexp(rx) => format!("regexp {}", rx.src),
    }
}

/// One automaton for every host regexp. `None` (no regexps, or too big together) means every
/// regexp bucket is tried on its own, which is correct, only slower.
fn regexp_gate(host_regexps: &[(HostMatch, Ranked)]) -> Option<RegexSet> {
    let sources: Vec<String> = host_regexps
        .iter()
        .filter_map(|(host, _)| match host {
            HostMatch::Regexp(rx) => Some(rx.src.to_string()),
            _ => None,
        })
        .collect();
    if sources.is_empty() {
        return None;
    }
    RegexSetBuilder::new(&sources).case_insensitive(true).size_limit(64 << 20).build().ok()
}

/// Calls `f` with `s` lower-cased. Hosts are keyed lower-case; mixed-case ones (rare: clients send
/// what the user typed) are lowered on the stack, and only absurdly long ones pay for a `String`.
fn with_lowercase<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(s);
    }
    let mut stack = [0u8; 256];
    match stack.get_mut(..s.len()) {
        Some(buf) => {
            buf.copy_from_slice(s.as_bytes());
            buf.make_ascii_lowercase();
            // ASCII lower-casing leaves multi-byte sequences intact, so this is still UTF-8.
            f(std::str::from_utf8(buf).unwrap_or(s))
        }
        None => f(&s.to_ascii_lowercase()),
    }
}

/// One lookup in progress: the request and the best route found so far (rank 0: none yet).
struct Search<'a> {
    exprs: &'a [RouteExpr],
    trie: &'a Trie,
    req: &'a Request<'a>,
    path: &'a str,
    excluded: Option<&'a RouteSet>,
    best: Slot,
}

impl Search<'_> {
    /// Searches the buckets whose host matcher matches, in a best-first list of them.
    fn host_list(&mut self, buckets: &[(HostMatch, Ranked)], host: &str) {
        for (matcher, ranked) in buckets {
            if ranked.max_rank <= self.best.rank {
                break;
            }
            if matcher.matches(host) {
                self.bucket(&ranked.bucket);
            }
        }
    }

    fn ranked(&mut self, ranked: &Ranked) {
        if ranked.max_rank > self.best.rank {
            self.bucket(&ranked.bucket);
        }
    }

    fn bucket(&mut self, bucket: &Bucket) {
        if let Some(rest) = self.path.strip_prefix('/') {
            self.node(bucket.root, rest);
        }
        let (trie, path) = (self.trie, self.path);
        // The trie walk stops at a `?` by itself; regexps need the query cut off first.
        self.offer(trie.slots(bucket.regexp_paths), |expr| expr.matches_path_regexp(path_without_query(path)));
        self.offer(trie.slots(bucket.no_path), |_| true);
    }

    /// Visits a node reached by consuming whole segments and the slash after them; `rest` is
    /// what follows that slash. Each node sits at one depth, so a walk visits it at most once.
    fn node(&mut self, id: NodeId, rest: &str) {
        let trie = self.trie;
        let Some(node) = trie.node(id) else {
            return;
        };
        if node.max_rank <= self.best.rank {
            return;
        }
        for prefix in trie.prefixes(node.prefixes) {
            if prefix.slot.rank <= self.best.rank {
                break;
            }
            if rest.as_bytes().starts_with(prefix.tail.as_bytes()) && self.accept(prefix.slot) {
                break;
            }
        }
        self.offer(trie.slots(node.catch_all), |_| true);
        if node.max_rank <= self.best.rank {
            // What this node held was the best of its subtree: no need to read the children.
            return;
        }

        let cut = cut(rest);
        self.child(trie.literal_child(node, &cut), cut.next);
        if node.int != NONE && is_digits(cut.segment) {
            self.child(node.int, cut.next);
        }
        if node.param != NONE && !cut.segment.is_empty() {
            self.child(node.param, cut.next);
        }
    }

    fn child(&mut self, id: NodeId, next: Option<&str>) {
        match next {
            Some(rest) => self.node(id, rest),
            None => {
                let trie = self.trie;
                if let Some(child) = trie.node(id) {
                    if child.max_rank > self.best.rank {
                        self.offer(trie.slots(child.terminal), |_| true);
                    }
                }
            }
        }
    }

    /// Tries a rank-sorted list: the first route that beats the best so far and fully matches
    /// becomes the best, and nothing after it in the list could do better.
    fn offer(&mut self, slots: &[Slot], path_ok: impl Fn(&RouteExpr) -> bool) {
        for &slot in slots {
            if slot.rank <= self.best.rank {
                return;
            }
            let Some(expr) = self.exprs.get(slot.route as usize) else {
                continue;
            };
            if path_ok(expr) && self.accept(slot) {
                return;
            }
        }
    }

    /// Checks what the index did not (method, headers, partial-segment paths) and records the
    /// route if it matches.
    fn accept(&mut self, slot: Slot) -> bool {
        if self.excluded.is_some_and(|set| set.contains(slot.route as usize)) {
            return false;
        }
        let matched =
            slot.plain || self.exprs.get(slot.route as usize).is_some_and(|expr| expr.matches_unindexed(self.req));
        if matched {
            self.best = slot;
        }
        matched
    }
}

/// A set of route indices of one [`Router`], as a bitmap: membership costs a shift and a mask.
#[derive(Debug, Clone, Default)]
pub struct RouteSet {
    words: Vec<u64>,
    len: usize,
}

impl RouteSet {
    pub fn insert(&mut self, index: usize) {
        let (word, bit) = (index / 64, index % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & (1 << bit) == 0 {
            self.words[word] |= 1 << bit;
            self.len += 1;
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        self.words.get(index / 64).is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Default)]
struct BucketBuilder {
    trie: NodeBuilder,
    regexp_paths: Vec<Slot>,
    no_path: Vec<Slot>,
}

impl BucketBuilder {
    fn insert(&mut self, path: Option<&PathMatch>, slot: Slot) {
        match path {
            None => self.no_path.push(slot),
            Some(PathMatch::Regexp(_)) => self.regexp_paths.push(slot),
            Some(path) => self.trie.insert(path, slot),
        }
    }

    fn freeze(self, trie: &mut Trie) -> Ranked {
        let root = trie.add(self.trie);
        let regexp_paths = trie.add_slots(self.regexp_paths);
        let no_path = trie.add_slots(self.no_path);
        let max_rank = [regexp_paths, no_path]
            .iter()
            .filter_map(|span| trie.slots(*span).first())
            .map(|slot| slot.rank)
            .chain(trie.node(root).map(|node| node.max_rank))
            .fold(0, u128::max);
        Ranked { max_rank, bucket: Bucket { root, regexp_paths, no_path } }
    }
}

#[cfg(test)]
mod tests;
