//! [`Router`]: the compiled, immutable route index. Part of table/route: the reload step builds one
//! per table generation from every frontend's parsed route, and the proxy asks it for the winning
//! route once per request. It exists so that a request costs a host lookup and a short trie walk
//! instead of a scan of every route, and so that lookups neither lock nor allocate.
//!
//! Shape: routes are bucketed by exact host (hash map), by host pattern or regexp (a short list,
//! each entry one distinct host matcher), or into the no-host bucket. A bucket holds a trie of path
//! segments for `Path` and `PathPrefix` routes, plus rank-sorted lists for `PathRegexp` routes and
//! routes without a path matcher. Every list is sorted by rank and every trie node knows the best
//! rank beneath it, so the search stops as soon as nothing left can beat what it found.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use super::expr::{host_without_port, path_without_query, HostMatch, PathMatch, RouteExpr};
use super::pattern::{is_digits, Segment};
use super::{rank, Request, RouteSpec};

/// The compiled route table: immutable once built, shared by reference between requests.
pub struct Router<T> {
    routes: Box<[Route<T>]>,
    exact_hosts: HashMap<Box<str>, Bucket>,
    /// Host patterns and regexps, best bucket first so the search can stop early.
    other_hosts: Box<[(HostMatch, Bucket)]>,
    any_host: Bucket,
}

struct Route<T> {
    id: Arc<str>,
    /// Kept for tests, which compare the index against a brute-force maximum.
    #[cfg(test)]
    rank: u128,
    expr: RouteExpr,
    value: T,
}

/// A route reference as the index stores it: the rank inline, so pruning never chases a pointer.
#[derive(Debug, Clone, Copy)]
struct Slot {
    rank: u128,
    route: usize,
}

/// A `PathPrefix` route at the trie node of the prefix's segment-aligned part; `tail` is the rest
/// of the prefix, which must start the request's remaining path (so `/apix` meets `/api`).
struct PrefixSlot {
    tail: Box<str>,
    slot: Slot,
}

#[derive(Default)]
struct Bucket {
    trie: Node,
    regexp_paths: Box<[Slot]>,
    no_path: Box<[Slot]>,
    /// Best rank of any route in the bucket; 0 when empty.
    max_rank: u128,
}

/// One trie node, reached by consuming whole path segments from the root.
#[derive(Default)]
struct Node {
    /// Best rank of any route at or below this node; 0 when empty.
    max_rank: u128,
    literals: Children,
    param: Option<Box<Node>>,
    int: Option<Box<Node>>,
    /// Routes whose path ends exactly here (no slash after the last segment).
    terminal: Box<[Slot]>,
    /// `<path:>` routes: they take whatever follows the slash after this node.
    catch_all: Box<[Slot]>,
    prefixes: Box<[PrefixSlot]>,
}

/// Literal children. Most nodes have a handful, where a scan beats hashing the segment.
enum Children {
    Few(Box<[(Box<str>, Node)]>),
    Many(HashMap<Box<str>, Node>),
}

impl Default for Children {
    fn default() -> Self {
        Children::Few(Box::default())
    }
}

/// Above this many literal children a node switches from a scan to a hash map.
const SCAN_LIMIT: usize = 8;

impl Children {
    fn get(&self, segment: &str) -> Option<&Node> {
        match self {
            Children::Few(children) => children
                .iter()
                .find(|(literal, _)| **literal == *segment)
                .map(|(_, node)| node),
            Children::Many(map) => map.get(segment),
        }
    }
}

impl<T> Router<T> {
    /// Compiles the routes into an index. Routes are kept in order; when two share an id (the
    /// caller's bug) the first one is kept and the later ones are dropped.
    pub fn build(routes: Vec<RouteSpec<T>>) -> Router<T> {
        let mut seen = HashSet::with_capacity(routes.len());
        let routes: Vec<RouteSpec<T>> = routes
            .into_iter()
            .filter(|r| seen.insert(Arc::clone(&r.id)))
            .collect();
        drop(seen);

        // Position of each route in ascending id order, for the last tie-break.
        let mut by_id: Vec<usize> = (0..routes.len()).collect();
        by_id.sort_unstable_by(|&a, &b| routes[a].id.cmp(&routes[b].id));
        let mut id_order = vec![0; routes.len()];
        for (order, &route) in by_id.iter().enumerate() {
            id_order[route] = order;
        }

        let mut exact_hosts: HashMap<Box<str>, BucketBuilder> = HashMap::new();
        let mut other_index: HashMap<String, usize> = HashMap::new();
        let mut other_hosts: Vec<(HostMatch, BucketBuilder)> = Vec::new();
        let mut any_host = BucketBuilder::default();
        let mut compiled = Vec::with_capacity(routes.len());
        for (index, (spec, order)) in routes.into_iter().zip(id_order).enumerate() {
            let rank = rank::rank(spec.priority, &spec.expr, order);
            let slot = Slot { rank, route: index };
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
            compiled.push(Route {
                id: spec.id,
                #[cfg(test)]
                rank,
                expr: spec.expr,
                value: spec.value,
            });
        }

        let mut other_hosts: Vec<(HostMatch, Bucket)> = other_hosts
            .into_iter()
            .map(|(host, bucket)| (host, bucket.freeze()))
            .collect();
        other_hosts.sort_unstable_by_key(|(_, bucket)| Reverse(bucket.max_rank));
        Router {
            routes: compiled.into_boxed_slice(),
            exact_hosts: exact_hosts
                .into_iter()
                .map(|(host, bucket)| (host, bucket.freeze()))
                .collect(),
            other_hosts: other_hosts.into_boxed_slice(),
            any_host: any_host.freeze(),
        }
    }

    /// The value of the winning route for `req`, if any route matches.
    pub fn find(&self, req: &Request<'_>) -> Option<&T> {
        self.find_route(req).map(|(_, value)| value)
    }

    /// The id and value of the winning route for `req`, if any route matches.
    pub fn find_route(&self, req: &Request<'_>) -> Option<(&str, &T)> {
        let route = self.routes.get(self.find_index(req)?)?;
        Some((&route.id, &route.value))
    }

    /// Number of routes kept (after dropping duplicate ids).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every kept route as `(id, expr, value)`, in the order given to [`build`](Self::build).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RouteExpr, &T)> {
        self.routes.iter().map(|r| (&*r.id, &r.expr, &r.value))
    }

    fn find_index(&self, req: &Request<'_>) -> Option<usize> {
        with_lowercase(host_without_port(req.host), |host| {
            let mut search = Search {
                routes: &self.routes,
                req,
                path: path_without_query(req.path),
                best: Slot { rank: 0, route: 0 },
            };
            if let Some(bucket) = self.exact_hosts.get(host) {
                search.bucket(bucket);
            }
            for (matcher, bucket) in self.other_hosts.iter() {
                if bucket.max_rank <= search.best.rank {
                    break;
                }
                if matcher.matches(host) {
                    search.bucket(bucket);
                }
            }
            search.bucket(&self.any_host);
            (search.best.rank > 0).then_some(search.best.route)
        })
    }

    #[cfg(test)]
    fn rank_of(&self, index: usize) -> u128 {
        self.routes[index].rank
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
            .field("routes", &self.routes.len())
            .field("exact_hosts", &self.exact_hosts.len())
            .field("other_hosts", &self.other_hosts.len())
            .finish_non_exhaustive()
    }
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
struct Search<'a, T> {
    routes: &'a [Route<T>],
    req: &'a Request<'a>,
    path: &'a str,
    best: Slot,
}

impl<T> Search<'_, T> {
    fn bucket(&mut self, bucket: &Bucket) {
        if bucket.max_rank <= self.best.rank {
            return;
        }
        if let Some(rest) = self.path.strip_prefix('/') {
            self.node(&bucket.trie, rest);
        }
        let path = self.path;
        self.offer(&bucket.regexp_paths, |expr| expr.matches_path_regexp(path));
        self.offer(&bucket.no_path, |_| true);
    }

    /// Visits `node`, reached by consuming whole segments and the slash after them; `rest` is
    /// what follows that slash. Each node sits at one depth, so a walk visits it at most once.
    fn node(&mut self, node: &Node, rest: &str) {
        if node.max_rank <= self.best.rank {
            return;
        }
        for prefix in node.prefixes.iter() {
            if prefix.slot.rank <= self.best.rank {
                break;
            }
            if rest.starts_with(&*prefix.tail) && self.accept(prefix.slot) {
                break;
            }
        }
        self.offer(&node.catch_all, |_| true);

        let (segment, next) = match rest.split_once('/') {
            Some((segment, next)) => (segment, Some(next)),
            None => (rest, None),
        };
        if let Some(child) = node.literals.get(segment) {
            self.child(child, next);
        }
        if let Some(child) = &node.int {
            if is_digits(segment) {
                self.child(child, next);
            }
        }
        if let Some(child) = &node.param {
            if !segment.is_empty() {
                self.child(child, next);
            }
        }
    }

    fn child(&mut self, child: &Node, next: Option<&str>) {
        match next {
            Some(rest) => self.node(child, rest),
            None if child.max_rank > self.best.rank => self.offer(&child.terminal, |_| true),
            None => {}
        }
    }

    /// Tries a rank-sorted list: the first route that beats the best so far and fully matches
    /// becomes the best, and nothing after it in the list could do better.
    fn offer(&mut self, slots: &[Slot], path_ok: impl Fn(&RouteExpr) -> bool) {
        for &slot in slots {
            if slot.rank <= self.best.rank {
                return;
            }
            let Some(route) = self.routes.get(slot.route) else {
                continue;
            };
            if path_ok(&route.expr) && self.accept(slot) {
                return;
            }
        }
    }

    /// Checks what the index did not (method, headers) and records the route if it matches.
    fn accept(&mut self, slot: Slot) -> bool {
        let matched = self
            .routes
            .get(slot.route)
            .is_some_and(|route| route.expr.matches_method_and_headers(self.req));
        if matched {
            self.best = slot;
        }
        matched
    }
}

#[derive(Default)]
struct BucketBuilder {
    trie: NodeBuilder,
    regexp_paths: Vec<Slot>,
    no_path: Vec<Slot>,
}

#[derive(Default)]
struct NodeBuilder {
    literals: HashMap<Box<str>, NodeBuilder>,
    param: Option<Box<NodeBuilder>>,
    int: Option<Box<NodeBuilder>>,
    terminal: Vec<Slot>,
    catch_all: Vec<Slot>,
    prefixes: Vec<PrefixSlot>,
}

impl BucketBuilder {
    fn insert(&mut self, path: Option<&PathMatch>, slot: Slot) {
        match path {
            None => self.no_path.push(slot),
            Some(PathMatch::Regexp(_)) => self.regexp_paths.push(slot),
            Some(PathMatch::Exact(path)) => {
                let mut node = &mut self.trie;
                for segment in rooted(path).split('/') {
                    node = node.literal(segment);
                }
                node.terminal.push(slot);
            }
            Some(PathMatch::Pattern(pattern)) => {
                let mut node = &mut self.trie;
                for segment in pattern.segments() {
                    node = match segment {
                        Segment::Literal(literal) => node.literal(literal),
                        Segment::Param(_) => node.param.get_or_insert_with(Box::default),
                        Segment::Int(_) => node.int.get_or_insert_with(Box::default),
                        Segment::Rest(_) => {
                            node.catch_all.push(slot);
                            return;
                        }
                    };
                }
                node.terminal.push(slot);
            }
            Some(PathMatch::Prefix(prefix)) => {
                // `/api/v1` hangs off node `api` with tail `v1`; `/api` off the root with tail
                // `api`, so `/apix` still meets it: prefixes need not end on a segment boundary.
                let body = rooted(prefix);
                let (dirs, tail) = match body.rsplit_once('/') {
                    Some((dirs, tail)) => (Some(dirs), tail),
                    None => (None, body),
                };
                let mut node = &mut self.trie;
                for segment in dirs.into_iter().flat_map(|d| d.split('/')) {
                    node = node.literal(segment);
                }
                node.prefixes.push(PrefixSlot {
                    tail: tail.into(),
                    slot,
                });
            }
        }
    }

    fn freeze(self) -> Bucket {
        let trie = self.trie.freeze();
        let regexp_paths = sorted(self.regexp_paths);
        let no_path = sorted(self.no_path);
        let max_rank = [&regexp_paths, &no_path]
            .iter()
            .filter_map(|slots| slots.first())
            .map(|slot| slot.rank)
            .fold(trie.max_rank, u128::max);
        Bucket {
            trie,
            regexp_paths,
            no_path,
            max_rank,
        }
    }
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

/// A parsed path or prefix without its leading `/`.
fn rooted(path: &str) -> &str {
    // The parser rejects paths and prefixes that do not start with `/`.
    path.strip_prefix('/')
        .expect("parser guarantees a leading `/`")
}

impl NodeBuilder {
    fn literal(&mut self, segment: &str) -> &mut NodeBuilder {
        self.literals.entry(segment.into()).or_default()
    }

    fn freeze(self) -> Node {
        let literals: Vec<(Box<str>, Node)> = self
            .literals
            .into_iter()
            .map(|(segment, node)| (segment, node.freeze()))
            .collect();
        let param = self.param.map(|node| Box::new(node.freeze()));
        let int = self.int.map(|node| Box::new(node.freeze()));
        let terminal = sorted(self.terminal);
        let catch_all = sorted(self.catch_all);
        let mut prefixes = self.prefixes;
        prefixes.sort_unstable_by_key(|prefix| Reverse(prefix.slot.rank));

        let max_rank = literals
            .iter()
            .map(|(_, node)| node.max_rank)
            .chain(param.iter().chain(int.iter()).map(|node| node.max_rank))
            .chain(terminal.first().map(|slot| slot.rank))
            .chain(catch_all.first().map(|slot| slot.rank))
            .chain(prefixes.first().map(|prefix| prefix.slot.rank))
            .max()
            .unwrap_or(0);
        let literals = if literals.len() <= SCAN_LIMIT {
            Children::Few(literals.into_boxed_slice())
        } else {
            Children::Many(literals.into_iter().collect())
        };
        Node {
            max_rank,
            literals,
            param,
            int,
            terminal,
            catch_all,
            prefixes: prefixes.into_boxed_slice(),
        }
    }
}

/// Sorts slots best first.
fn sorted(mut slots: Vec<Slot>) -> Box<[Slot]> {
    slots.sort_unstable_by_key(|slot| Reverse(slot.rank));
    slots.into_boxed_slice()
}

#[cfg(test)]
mod tests;
