//! The path trie behind every host bucket of the [`Router`](super::Router), stored as flat arenas.
//! Part of route/: filled once per table build, walked once per request. Routing cost is
//! dominated by cache misses, not comparisons, so nodes are small fixed-size records laid out
//! depth-first (one host's subtree sits together), children and route lists are index ranges
//! into shared arrays, and short keys live inline instead of behind a pointer.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::expr::PathMatch;
use super::pattern::Segment;

/// A hash map with a fast, unkeyed hasher. Only for maps whose keys come from configuration: a
/// request can choose what it looks up but not what is stored, so it cannot build long probe
/// chains, and SipHash would cost as much as the rest of a lookup.
pub(super) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Multiply-rotate hashing over 8-byte words, with a final avalanche because the table indexes by
/// the low bits.
#[derive(Default, Clone, Copy)]
pub(super) struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        let mut word = [0; 8];
        word[..tail.len()].copy_from_slice(tail);
        self.add(u64::from_le_bytes(word) ^ ((tail.len() as u64) << 59));
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    // `[u8]` hashes its length first; taking it as one word saves a pass through `write`.
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

/// Index of a node in [`Trie::nodes`]; `NONE` for "no such child".
pub(super) type NodeId = u32;
pub(super) const NONE: NodeId = NodeId::MAX;

/// Converts an arena length to an index. Arenas hold a few entries per route segment, and a
/// table of four billion of them would not fit in memory long before this could fail.
fn index(len: usize) -> u32 {
    u32::try_from(len).expect("route arenas stay far below 4 billion entries")
}

/// A range of one of the arenas.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of<T>(self, items: &[T]) -> &[T] {
        let start = self.start as usize;
        items.get(start..start.saturating_add(self.len as usize)).unwrap_or(&[])
    }
}

/// A route as the index stores it: the rank inline, so pruning never chases a pointer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) rank: u128,
    pub(super) route: u32,
    /// Nothing left for [`RouteExpr::matches_unindexed`](super::RouteExpr) (no method or header
    /// matchers, no partial-segment path): once the index has matched host and path, the route
    /// matches, and checking it need not touch the route at all.
    pub(super) plain: bool,
}

/// One trie node, reached by consuming whole path segments from the root. Exactly one cache
/// line, aligned to one, so visiting a node costs at most one miss.
#[derive(Debug)]
#[repr(align(64))]
pub(super) struct Node {
    /// Best rank of any route at or below this node.
    pub(super) max_rank: u128,
    /// Literal children: scanned in [`Trie::edges`], or looked up in `maps[map]` if many.
    edges: Span,
    map: u32,
    pub(super) param: NodeId,
    pub(super) int: NodeId,
    /// Routes whose path ends exactly here (no slash after the last segment).
    pub(super) terminal: Span,
    /// `<path:>` routes: they take whatever follows the slash after this node.
    pub(super) catch_all: Span,
    /// `PathPrefix` routes whose prefix's segment-aligned part ends here.
    pub(super) prefixes: Span,
}

const _: () = assert!(std::mem::size_of::<Node>() == 64);

/// A string compared without a pointer chase when it fits in `N` bytes (most path segments
/// and host names do). `N` must stay below 256 so the length fits the `u8`.
#[derive(Debug, Clone)]
pub(super) enum Key<const N: usize = 22> {
    Inline { len: u8, bytes: [u8; N] },
    Heap(Box<str>),
}

impl<const N: usize> Key<N> {
    pub(super) fn new(s: &str) -> Self {
        let mut bytes = [0; N];
        match (bytes.get_mut(..s.len()), u8::try_from(s.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(s.as_bytes());
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(s.into()),
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or(&[]),
            Key::Heap(s) => s.as_bytes(),
        }
    }
}

/// A literal child. `head` (the first 8 bytes, zero-padded) and `len` settle most comparisons,
/// and all of those for segments of up to 8 bytes, with two integer compares.
#[derive(Debug)]
struct Edge {
    head: u64,
    len: u32,
    node: NodeId,
    key: Key,
}

/// The first 8 bytes of `segment`, little-endian, zero-padded: what [`Edge::head`] holds.
fn head(segment: &str) -> u64 {
    segment.bytes().take(8).enumerate().fold(0, |head, (i, b)| head | u64::from(b) << (8 * i))
}

/// The next segment of a path remainder, as the trie walk consumes it.
pub(super) struct Cut<'a> {
    pub(super) segment: &'a str,
    /// [`head`] of `segment`, for cheap edge comparisons.
    pub(super) head: u64,
    /// What follows the `/` after `segment`; `None` if the path ends with this segment.
    pub(super) next: Option<&'a str>,
}

/// Splits off the next segment in one pass over its bytes, which also packs its head and
/// notices a query string: `?` ends the path, since `Request::path` may carry one. A byte loop
/// beats `memchr` on segments this short, and `/` and `?` are ASCII, so the cuts fall on char
/// boundaries.
pub(super) fn cut(rest: &str) -> Cut<'_> {
    let mut head = 0;
    for (i, b) in rest.bytes().enumerate() {
        if b == b'/' || b == b'?' {
            return Cut { segment: &rest[..i], head, next: (b == b'/').then(|| &rest[i + 1..]) };
        }
        if i < 8 {
            head |= u64::from(b) << (8 * i);
        }
    }
    Cut { segment: rest, head, next: None }
}

/// A `PathPrefix` route: `tail` (the prefix after its last `/`) must start the rest of the path.
#[derive(Debug)]
pub(super) struct PrefixSlot {
    pub(super) tail: Key,
    pub(super) slot: Slot,
}

/// Above this many literal children a node uses a hash map instead of a scan.
const SCAN_LIMIT: usize = 8;

/// The arenas shared by all buckets of one router.
#[derive(Debug, Default)]
pub(super) struct Trie {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    maps: Vec<FastMap<Box<str>, NodeId>>,
    slots: Vec<Slot>,
    prefixes: Vec<PrefixSlot>,
}

impl Trie {
    pub(super) fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    pub(super) fn literal_child(&self, node: &Node, cut: &Cut<'_>) -> NodeId {
        if let Some(map) = self.maps.get(node.map as usize) {
            return map.get(cut.segment).copied().unwrap_or(NONE);
        }
        let segment = cut.segment.as_bytes();
        node.edges
            .of(&self.edges)
            .iter()
            .find(|edge| {
                edge.head == cut.head
                    && edge.len as usize == segment.len()
                    && (segment.len() <= 8 || edge.key.as_bytes() == segment)
            })
            .map_or(NONE, |edge| edge.node)
    }

    pub(super) fn slots(&self, span: Span) -> &[Slot] {
        span.of(&self.slots)
    }

    pub(super) fn prefixes(&self, span: Span) -> &[PrefixSlot] {
        span.of(&self.prefixes)
    }

    /// Stores a route list best first.
    pub(super) fn add_slots(&mut self, mut slots: Vec<Slot>) -> Span {
        slots.sort_unstable_by_key(|slot| Reverse(slot.rank));
        let span = Span { start: index(self.slots.len()), len: index(slots.len()) };
        self.slots.extend(slots);
        span
    }

    /// Lays out a built subtree depth-first and returns its root, or `NONE` if it holds nothing.
    /// Everything a node owns (its route lists, its edge list) is placed before its subtree, so
    /// a walk reads each arena forwards and mostly from lines it has just fetched.
    pub(super) fn add(&mut self, builder: NodeBuilder) -> NodeId {
        if builder.is_empty() {
            return NONE;
        }
        let NodeBuilder { literals, param, int, terminal, catch_all, mut prefixes } = builder;
        let id = index(self.nodes.len());
        let terminal = self.add_slots(terminal);
        let catch_all = self.add_slots(catch_all);
        prefixes.sort_unstable_by_key(|prefix| Reverse(prefix.slot.rank));
        let mut max_rank = [terminal, catch_all]
            .iter()
            .filter_map(|span| self.slots(*span).first())
            .map(|slot| slot.rank)
            .chain(prefixes.first().map(|prefix| prefix.slot.rank))
            .fold(0, u128::max);
        let prefix_span = Span { start: index(self.prefixes.len()), len: index(prefixes.len()) };
        self.prefixes.extend(prefixes);

        // Sorted so that the same routes always give the same layout.
        let mut literals: Vec<(Box<str>, NodeBuilder)> = literals.into_iter().collect();
        literals.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let (edges, map) = if literals.len() <= SCAN_LIMIT {
            let edges = Span { start: index(self.edges.len()), len: index(literals.len()) };
            // Child ids are filled in below, once their subtrees are laid out.
            self.edges.extend(literals.iter().map(|(segment, _)| Edge {
                head: head(segment),
                len: u32::try_from(segment.len()).unwrap_or(u32::MAX),
                node: NONE,
                key: Key::new(segment),
            }));
            (edges, NONE)
        } else {
            self.maps.push(FastMap::default());
            (Span::default(), index(self.maps.len() - 1))
        };
        self.nodes.push(Node {
            max_rank: 0,
            edges,
            map,
            param: NONE,
            int: NONE,
            terminal,
            catch_all,
            prefixes: prefix_span,
        });

        for (i, (segment, child)) in literals.into_iter().enumerate() {
            let child = self.add(child);
            max_rank = max_rank.max(self.node(child).map_or(0, |node| node.max_rank));
            if let Some(map) = self.maps.get_mut(map as usize) {
                map.insert(segment, child);
            } else if let Some(edge) = self.edges.get_mut(edges.start as usize + i) {
                edge.node = child;
            }
        }
        let param = param.map_or(NONE, |child| self.add(*child));
        let int = int.map_or(NONE, |child| self.add(*child));
        max_rank = [param, int]
            .into_iter()
            .filter_map(|child| self.node(child))
            .map(|child| child.max_rank)
            .fold(max_rank, u128::max);
        if let Some(node) = self.nodes.get_mut(id as usize) {
            node.max_rank = max_rank;
            node.param = param;
            node.int = int;
        }
        id
    }
}

/// A trie node under construction: plain maps and vectors, laid out by [`Trie::add`].
#[derive(Default)]
pub(super) struct NodeBuilder {
    literals: FastMap<Box<str>, NodeBuilder>,
    param: Option<Box<NodeBuilder>>,
    int: Option<Box<NodeBuilder>>,
    terminal: Vec<Slot>,
    catch_all: Vec<Slot>,
    prefixes: Vec<PrefixSlot>,
}

impl NodeBuilder {
    fn is_empty(&self) -> bool {
        self.literals.is_empty()
            && self.param.is_none()
            && self.int.is_none()
            && self.terminal.is_empty()
            && self.catch_all.is_empty()
            && self.prefixes.is_empty()
    }

    fn literal(&mut self, segment: &str) -> &mut NodeBuilder {
        self.literals.entry(segment.into()).or_default()
    }

    /// Files a route under its path matcher. Regexp paths do not belong in the trie; the caller
    /// keeps them in a list.
    pub(super) fn insert(&mut self, path: &PathMatch, slot: Slot) {
        match path {
            PathMatch::Exact(path) => {
                let mut node = self;
                for segment in rooted(path).split('/') {
                    node = node.literal(segment);
                }
                node.terminal.push(slot);
            }
            PathMatch::Pattern(pattern) => {
                let mut node = self;
                for segment in pattern.segments() {
                    node = match segment {
                        Segment::Literal(literal) => node.literal(literal),
                        Segment::Param(_) => node.param.get_or_insert_with(Box::default),
                        Segment::Int(_) => node.int.get_or_insert_with(Box::default),
                        // The trie indexes whole segments only: a route whose segment starts with
                        // text and ends in a pattern waits at the node before it, takes whatever
                        // follows like a `<path:>` route, and has its whole path checked when it
                        // is a candidate (its slot is not `plain`).
                        Segment::Rest(_) | Segment::Prefixed { .. } => {
                            node.catch_all.push(slot);
                            return;
                        }
                    };
                }
                node.terminal.push(slot);
            }
            PathMatch::Prefix(prefix) => {
                // `/api/v1` hangs off node `api` with tail `v1`; `/api` off the root with tail
                // `api`, so `/apix` still meets it: prefixes need not end on a segment boundary.
                let body = rooted(prefix);
                let (dirs, tail) = match body.rsplit_once('/') {
                    Some((dirs, tail)) => (Some(dirs), tail),
                    None => (None, body),
                };
                let mut node = self;
                for segment in dirs.into_iter().flat_map(|dirs| dirs.split('/')) {
                    node = node.literal(segment);
                }
                node.prefixes.push(PrefixSlot { tail: Key::new(tail), slot });
            }
            PathMatch::Regexp(_) => {}
        }
    }
}

/// A parsed path or prefix without its leading `/`.
fn rooted(path: &str) -> &str {
    // The parser rejects paths and prefixes that do not start with `/`.
    path.strip_prefix('/').expect("parser guarantees a leading `/`")
}
