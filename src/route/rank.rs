//! Route precedence as one integer. Part of route/: the index computes each route's rank once
//! at build time, and the per-request search compares and prunes on plain `u128`s instead of
//! re-deriving "how specific is this route" for every candidate. The rules are documented on the
//! [module](super); this file is their single implementation.

use super::expr::{HostMatch, PathMatch, RouteExpr};

/// Packs the precedence keys of a route, most significant first, so that a greater integer means
/// a route that wins. Fields and widths (125 bits in all):
///
/// | bits | key | higher wins |
/// |---|---|---|
/// | 32 | priority | offset so that `i32::MIN` is 0 |
/// | 2 | host class | exact 3, pattern 2, regexp 1, none 0 |
/// | 12 | host literal characters | patterns: literal characters; regexps: literal bytes every match contains |
/// | 3 | path class | exact 4, pattern 3, prefix 2, regexp 1, none 0 |
/// | 24 | path, first measure | patterns: literal characters; prefixes: length; regexps: literal prefix every match starts with |
/// | 12 | path, second measure | patterns: 1 without `<path:>`; regexps: literal bytes every match contains |
/// | 8 | matcher count | |
/// | 32 | inverted position in id order | smaller id wins |
///
/// Lengths saturate at their field width; beyond that (hosts over 4 KiB, paths over 16 MiB)
/// the next key decides. `id_order` is the route's position among all ids sorted ascending. The
/// id field is never zero, so every rank is at least 1 and 0 can stand for "nothing found".
/// Width of the id tie-break field, the lowest bits of a rank.
pub(super) const ID_BITS: u32 = 32;

pub(super) fn rank(priority: i32, expr: &RouteExpr, id_order: usize) -> u128 {
    let (host_class, host_literals) = match &expr.host {
        Some(HostMatch::Exact(_)) => (3, 0),
        Some(HostMatch::Pattern(p)) => (2, p.literal_len()),
        Some(HostMatch::Regexp(rx)) => (1, rx.literal_len),
        None => (0, 0),
    };
    let (path_class, path_first, path_second) = match &expr.path {
        Some(PathMatch::Exact(_)) => (4, 0, 0),
        Some(PathMatch::Pattern(p)) => (3, p.literal_len(), usize::from(!p.has_rest())),
        Some(PathMatch::Prefix(p)) => (2, p.len(), 0),
        Some(PathMatch::Regexp(rx)) => (1, rx.prefix_len, rx.literal_len),
        None => (0, 0, 0),
    };
    let priority = i64::from(priority) - i64::from(i32::MIN);
    let id_field = u64::from(u32::MAX) - (id_order as u64).min(u64::from(u32::MAX) - 1);
    Packer(0)
        .push(32, u64::try_from(priority).unwrap_or(0))
        .push(2, host_class)
        .push(12, host_literals as u64)
        .push(3, path_class)
        .push(24, path_first as u64)
        .push(12, path_second as u64)
        .push(8, expr.matcher_count() as u64)
        .push(ID_BITS, id_field)
        .0
}

struct Packer(u128);

impl Packer {
    /// Appends a field of `bits` bits, saturating `value` to fit.
    fn push(self, bits: u32, value: u64) -> Self {
        let max = (1u64 << bits) - 1;
        Packer((self.0 << bits) | u128::from(value.min(max)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn r(priority: i32, route: &str) -> u128 {
        rank_id(priority, route, 0)
    }

    fn rank_id(priority: i32, route: &str, id_order: usize) -> u128 {
        let expr = parse(route).unwrap_or_else(|e| panic!("{route}: {e}"));
        rank(priority, &expr, id_order)
    }

    /// Asserts that each route outranks the next one.
    fn descending(routes: &[(i32, &str)]) {
        for pair in routes.windows(2) {
            let (a, b) = (r(pair[0].0, pair[0].1), r(pair[1].0, pair[1].1));
            assert!(a > b, "{:?} should outrank {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn priority_comes_first() {
        descending(&[
            (i32::MAX, r#"PathRegexp("/.*")"#),
            (1, r#"PathRegexp("/.*")"#),
            (0, r#"Host("a.com") && Path("/x") && Method("GET") && Header("X-A", "1")"#),
            (-1, r#"Host("a.com") && Path("/x")"#),
            (i32::MIN, r#"Host("a.com") && Path("/x")"#),
        ]);
    }

    #[test]
    fn host_specificity() {
        descending(&[
            (0, r#"Host("a.example.com")"#),
            (0, r#"Host("<x>.example.com")"#),
            (0, r#"Host("<x>.com")"#),
            (0, r#"HostRegexp(".*\.example\.com")"#),
            (0, r#"HostRegexp(".*\.com")"#),
            (0, r#"Method("GET") && Header("X-A", "1")"#),
        ]);
        descending(&[
            (0, r#"Host("a.example.com") && PathRegexp("/.*")"#),
            (0, r#"Host("<x>.example.com") && Path("/exact")"#),
        ]);
    }

    #[test]
    fn path_specificity() {
        descending(&[
            (0, r#"Path("/a/b")"#),
            (0, r#"Path("/stores/<s>/gtins/<g>")"#),
            (0, r#"Path("/a/<b>/<c>")"#),
            (0, r#"Path("/a/<path:rest>")"#),
            (0, r#"Path("/<a>/<b>")"#),
            (0, r#"PathPrefix("/api/v1")"#),
            (0, r#"PathPrefix("/api")"#),
            (0, r#"PathPrefix("/")"#),
            (0, r#"PathRegexp("/api/v1/users/.*")"#),
            (0, r#"Method("GET")"#),
        ]);
        // Between regexps: the longer literal prefix, then more literal bytes.
        descending(&[
            (0, r#"PathRegexp("/stream-bytes/.*x")"#),
            (0, r#"PathRegexp("/stream-bytes/.*")"#),
            (0, r#"PathRegexp("/stream.*")"#),
            (0, r#"PathRegexp("/.*bytes")"#),
            (0, r#"PathRegexp("/.*")"#),
            (0, r#"PathRegexp(".*")"#),
        ]);
        // Equal literal characters: the pattern without `<path:>` goes first.
        descending(&[(0, r#"Path("/a/<b>")"#), (0, r#"Path("/a/<path:b>")"#)]);
    }

    #[test]
    fn more_matchers_win() {
        descending(&[
            (0, r#"Path("/x") && Header("X-Canary", "1") && Header("X-B", "2")"#),
            (0, r#"Header("X-Canary", "1") && Path("/x")"#),
            (0, r#"Path("/x")"#),
        ]);
        descending(&[(0, r#"Method("GET") && Path("/x")"#), (0, r#"Path("/x")"#)]);
    }

    #[test]
    fn smaller_id_breaks_ties_and_ranks_are_never_zero() {
        let route = r#"Path("/x")"#;
        assert!(rank_id(0, route, 0) > rank_id(0, route, 1));
        assert!(rank_id(i32::MIN, "Method(`GET`)", usize::MAX) >= 1);
        assert_ne!(rank_id(i32::MIN, "Method(`GET`)", usize::MAX - 1), 0, "the id field saturates above zero");
    }

    #[test]
    fn fields_saturate_instead_of_spilling_into_the_next() {
        assert_eq!(Packer(0).push(4, 100).0, 15);
        assert_eq!(Packer(0).push(4, 100).push(4, 1).0, 0xF1);
        assert_eq!(Packer(1).push(32, u64::MAX).0, 0x1_FFFF_FFFF);
    }
}
