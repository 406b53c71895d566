//! Request path normalisation before matching: dot segments are resolved (RFC 3986 section 5.2.4), with
//! `%2e` counted as a dot, so `/public/../admin` cannot match a `/public` route and then reach `/admin` on
//! an upstream that resolves it. The normalised path is also what is forwarded, so the route decision and
//! the upstream agree on what was asked for. Paths without dot segments (almost all) are not copied.

use std::borrow::Cow;

/// The path to route and forward, or `None` when it climbs above the root (a 400).
pub fn normalize(path: &str) -> Option<Cow<'_, str>> {
    if !needs_work(path.as_bytes()) {
        return Some(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match dot_kind(seg) {
            1 => trailing_slash = i == last,
            2 => {
                out.pop()?;
                trailing_slash = i == last;
            }
            _ => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing_slash || s.is_empty() {
        s.push('/');
    }
    Some(Cow::Owned(s))
}

/// 1 for `.`, 2 for `..` (either possibly percent-encoded), 0 otherwise.
fn dot_kind(seg: &str) -> u8 {
    let b = seg.as_bytes();
    let mut i = 0;
    let mut dots = 0;
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
        } else if b[i] == b'%' && b.len() >= i + 3 && b[i + 1] == b'2' && (b[i + 2] == b'e' || b[i + 2] == b'E') {
            i += 3;
        } else {
            return 0;
        }
        dots += 1;
        if dots > 2 {
            return 0;
        }
    }
    dots
}

fn needs_work(b: &[u8]) -> bool {
    // A dot segment needs a `.` or a `%` right after a `/`.
    b.windows(2).any(|w| w[0] == b'/' && (w[1] == b'.' || w[1] == b'%'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dot_segments() {
        assert_eq!(normalize("/a/b").unwrap(), "/a/b");
        assert!(matches!(normalize("/a/b").unwrap(), Cow::Borrowed(_)));
        assert_eq!(normalize("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalize("/public/%2e%2E/admin").unwrap(), "/admin");
        assert_eq!(normalize("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(normalize("/a/b/..").unwrap(), "/a/");
        assert_eq!(normalize("/a/.hidden").unwrap(), "/a/.hidden");
        assert_eq!(normalize("/a/%41").unwrap(), "/a/%41");
        assert_eq!(normalize("/...").unwrap(), "/...");
        assert!(normalize("/..").is_none());
        assert!(normalize("/a/../../etc").is_none());
    }
}
