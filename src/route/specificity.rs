//! How specific a regexp is, for precedence between regexp routes. Part of route/: the parser
//! measures each `HostRegexp`, `PathRegexp` and `MethodRegexp` once at reload time and the rank
//! packs the figures, so `PathRegexp("/stream-bytes/.*")` beats `PathRegexp("/.*")` for
//! `/stream-bytes/100` instead of losing on the frontend id. It reads the regexp's syntax tree
//! rather than its text, so escapes, groups, alternations and optional parts count for what they
//! mean.

use regex_syntax::hir::{Hir, HirKind};

/// The bytes of the literal prefix every match starts with, and the literal bytes every match
/// contains. `/stream-bytes/.*` gives (14, 14), `/.*` (1, 1), `/(a|bc)/x` (2, 4), `.*\.json` (0,
/// 5). A regexp that does not parse measures (0, 0); the parser has already refused it anyway.
pub(super) fn of(src: &str) -> (usize, usize) {
    match regex_syntax::ParserBuilder::new().build().parse(src) {
        Ok(hir) => (prefix(&hir).0.len(), required(&hir)),
        Err(_) => (0, 0),
    }
}

/// The literal bytes every match of `hir` starts with, and whether they are the whole of it
/// (so whatever follows `hir` in a concatenation extends the prefix).
fn prefix(hir: &Hir) -> (Vec<u8>, bool) {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => (Vec::new(), true),
        HirKind::Literal(lit) => (lit.0.to_vec(), true),
        HirKind::Class(_) => (Vec::new(), false),
        HirKind::Capture(cap) => prefix(&cap.sub),
        HirKind::Repetition(rep) if rep.min == 0 => (Vec::new(), false),
        HirKind::Repetition(rep) => {
            let (bytes, whole) = prefix(&rep.sub);
            (bytes, whole && rep.max == Some(1))
        }
        HirKind::Concat(parts) => {
            let mut out = Vec::new();
            for part in parts {
                let (bytes, whole) = prefix(part);
                out.extend_from_slice(&bytes);
                if !whole {
                    return (out, false);
                }
            }
            (out, true)
        }
        HirKind::Alternation(branches) => {
            let mut common: Option<Vec<u8>> = None;
            for branch in branches {
                let (bytes, _) = prefix(branch);
                common = Some(match common {
                    None => bytes,
                    Some(c) => c.iter().zip(&bytes).take_while(|(a, b)| a == b).map(|(a, _)| *a).collect(),
                });
            }
            (common.unwrap_or_default(), false)
        }
    }
}

/// The literal bytes every match of `hir` contains, wherever they sit.
fn required(hir: &Hir) -> usize {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) | HirKind::Class(_) => 0,
        HirKind::Literal(lit) => lit.0.len(),
        HirKind::Capture(cap) => required(&cap.sub),
        HirKind::Repetition(rep) => required(&rep.sub).saturating_mul(rep.min as usize),
        HirKind::Concat(parts) => parts.iter().map(required).fold(0, usize::saturating_add),
        HirKind::Alternation(branches) => branches.iter().map(required).min().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::of;

    #[test]
    fn measures_the_literal_prefix_then_all_literals() {
        assert_eq!(of("/stream-bytes/.*"), (14, 14));
        assert_eq!(of("/.*"), (1, 1));
        assert_eq!(of("^/api/v1"), (7, 7), "anchors are zero-width");
        assert_eq!(of(r".*\.json"), (0, 5));
        assert_eq!(of("/(a|bc)/x"), (1, 4), "an alternation ends the prefix and counts its shortest branch");
        assert_eq!(of("/items/[0-9]+/x"), (7, 9));
        assert_eq!(of("/a?b"), (1, 2));
        assert_eq!(of("(ab){3}c"), (2, 7));
        assert_eq!(of("(/legacy|/old)/x"), (1, 6), "regex-syntax factors the common `/` out");
        assert_eq!(of(""), (0, 0));
        assert_eq!(of("[[["), (0, 0));
    }
}
