//! Request path normalisation before matching, so a frontend cannot be skipped by spelling its path another
//! way, and the route decision and the upstream agree on what was asked for (the normalised path is what is
//! forwarded). In order:
//!
//! 1. percent-encoded unreserved characters (RFC 3986 section 2.3: letters, digits, `-._~`) are decoded, so
//!    `/%61dmin` is `/admin`; other escapes stay encoded, with upper-case hex digits;
//! 2. an encoded slash (`%2F`) is refused (400) by default, or kept encoded by `limits.encoded_slash = "keep"`;
//! 3. repeated slashes are merged (`//admin` is `/admin`);
//! 4. dot segments are resolved (RFC 3986 section 5.2.4), encoded dots included (`%2e%2e` is `..`), and a path
//!    that climbs above the root is refused (400).
//!
//! Paths with nothing to do (no `%`, no `//`, no `/.`: almost all) are not copied.

use super::limits::EncodedSlash;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("the path holds an encoded slash (%2F)")]
    EncodedSlash,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::AboveRoot => "the path climbs above the root",
            PathError::EncodedSlash => "the path holds an encoded slash (%2F)",
        }
    }
}

/// The path to route and forward.
pub fn normalize(path: &str, slash: EncodedSlash) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || !needs_work(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path, slash)?;
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            // Merged with its neighbour; only a final empty segment (a trailing slash) means anything.
            "" | "." => trailing_slash = i == last,
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = i == last;
            }
            _ => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(decoded.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing_slash || s.is_empty() {
        s.push('/');
    }
    Ok(Cow::Owned(s))
}

fn decode_unreserved(path: &str, slash: EncodedSlash) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let byte = b[i];
        let decoded =
            (byte == b'%').then(|| Some((hex_value(*b.get(i + 1)?)? << 4) | hex_value(*b.get(i + 2)?)?)).flatten();
        match decoded {
            Some(v) if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => out.push(v),
            Some(b'/') if slash == EncodedSlash::Reject => return Err(PathError::EncodedSlash),
            Some(v) => out.extend_from_slice(&[b'%', HEX[(v >> 4) as usize], HEX[(v & 0xf) as usize]]),
            None => {
                out.push(byte);
                i += 1;
                continue;
            }
        }
        i += 3;
    }
    // Only ASCII was decoded, and everything else copied byte for byte from a `str`.
    String::from_utf8(out).map_err(|_| PathError::AboveRoot)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn needs_work(b: &[u8]) -> bool {
    b.contains(&b'%') || b.windows(2).any(|w| w[0] == b'/' && (w[1] == b'.' || w[1] == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<Cow<'_, str>, PathError> {
        normalize(p, EncodedSlash::Reject)
    }

    #[test]
    fn resolves_dot_segments() {
        assert_eq!(norm("/a/b").unwrap(), "/a/b");
        assert!(matches!(norm("/a/b").unwrap(), Cow::Borrowed(_)));
        assert_eq!(norm("/public/../admin").unwrap(), "/admin");
        assert_eq!(norm("/public/%2e%2E/admin").unwrap(), "/admin");
        assert_eq!(norm("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/.hidden").unwrap(), "/a/.hidden");
        assert_eq!(norm("/...").unwrap(), "/...");
        assert_eq!(norm("/..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(norm("/a/../../etc").unwrap_err(), PathError::AboveRoot);
    }

    #[test]
    fn decodes_unreserved_merges_slashes_and_refuses_encoded_slashes() {
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
        assert_eq!(norm("/a/%41%7e").unwrap(), "/a/A~");
        assert_eq!(norm("//admin").unwrap(), "/admin");
        assert_eq!(norm("/a///b//").unwrap(), "/a/b/");
        assert_eq!(norm("/%2Fadmin").unwrap_err(), PathError::EncodedSlash);
        assert_eq!(norm("/public/..%2fadmin").unwrap_err(), PathError::EncodedSlash);
        // Reserved and other characters stay encoded, in one spelling.
        assert_eq!(norm("/a%3fb%20c").unwrap(), "/a%3Fb%20c");
        assert_eq!(norm("/100%").unwrap(), "/100%");
        assert_eq!(norm("/%zz").unwrap(), "/%zz");
        assert_eq!(normalize("/%2Fadmin", EncodedSlash::Keep).unwrap(), "/%2Fadmin");
        assert_eq!(normalize("/public/..%2fadmin", EncodedSlash::Keep).unwrap(), "/public/..%2Fadmin");
        assert_eq!(norm("*").unwrap(), "*");
    }
}
