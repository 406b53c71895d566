//! Sticky splits: the same client always lands on the same side of a frontend's split, and moving the weights
//! moves as few clients as possible. Built at table-compile time beside the frontend's plain split; per
//! request it costs reading one key (a cookie, a header or the client address), one hash and a scan of a
//! handful of bounds, with no lock and no allocation (a new client's `Set-Cookie` is the only one).
//!
//! A key is hashed into one of [`BUCKETS`] buckets, and each backend owns a range of buckets proportional to
//! its weight. The ranges are laid out in the order of backend ids, not of the list as written, so raising a
//! canary from 5% to 10% only widens its range at the edge it shares with its neighbour: every client that
//! was on the canary stays there, and only clients from that edge join it (lowering it moves back exactly
//! those). With two backends this is exact; with more, a change between two of them moves only clients of
//! the ranges between them.
//!
//! A client that brings no cookie is given one. It names its bucket outright (`fc1.<bucket>`) rather than a
//! random token whose hash would decide: buckets are handed to new clients along a low-discrepancy sequence,
//! so the share of clients on each side tracks the weights to within a few clients instead of a binomial
//! spread (±1% of 1,000 clients would otherwise fail one time in five). Any other value (a cookie the
//! application sets itself, a header, an address) is hashed.

use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Buckets a key space is cut into: a weight step of 0.01% still moves whole buckets.
pub const BUCKETS: u32 = 10_000;

/// The prefix of a cookie value Ficus assigned; the bucket number follows.
const ASSIGNED: &str = "fc1.";

/// What a sticky split reads from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Cookie(Box<str>),
    Header(HeaderName),
    ClientIp,
}

/// A frontend's sticky split: the key to read and the bucket ranges of the split's items.
#[derive(Debug)]
pub struct Sticky {
    source: KeySource,
    /// `(end of the range, exclusive; the item's position in the split)`, in bucket order.
    ranges: Box<[(u32, u32)]>,
    /// The next new client's place in the assignment sequence; kept across tables by the caller.
    next: Arc<AtomicUsize>,
}

/// The outcome for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// The item at this position of the split.
    Item(usize),
    /// The item at this position, for a client that had no cookie: send it this `Set-Cookie`.
    Assigned(usize, HeaderValue),
    /// No key in the request (a missing header): the plain split decides.
    Unkeyed,
}

impl Sticky {
    /// `items`: `(id, weight)` in the split's order. `next` is the new-client counter, kept across tables.
    pub fn new(source: KeySource, items: &[(&str, u32)], next: Arc<AtomicUsize>) -> Self {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|a, b| items[*a].0.cmp(items[*b].0));
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut ranges = Vec::with_capacity(items.len());
        let mut cumulative = 0u64;
        for i in order {
            let w = u64::from(items[i].1);
            if w == 0 || total == 0 {
                continue;
            }
            cumulative += w;
            let end = (cumulative * u64::from(BUCKETS) / total) as u32;
            ranges.push((end, i as u32));
        }
        Sticky { source, ranges: ranges.into_boxed_slice(), next }
    }

    /// The item owning `bucket`, if any item has weight.
    #[inline]
    pub fn owner(&self, bucket: u32) -> Option<usize> {
        self.ranges.iter().find(|(end, _)| bucket < *end).map(|(_, i)| *i as usize)
    }

    /// The side of the split this request's client belongs to. `https`: the client reached Ficus over TLS
    /// (the cookie is then `Secure`).
    pub fn choose(&self, headers: &HeaderMap, client: IpAddr, https: bool) -> Option<Choice> {
        let bucket = match &self.source {
            KeySource::Cookie(name) => match cookie(headers, name) {
                Some(value) => bucket_of_cookie(value),
                None => {
                    let n = self.next.fetch_add(1, Ordering::Relaxed);
                    let bucket = sequence_bucket(n as u64);
                    let item = self.owner(bucket)?;
                    return Some(Choice::Assigned(item, set_cookie(name, bucket, https)));
                }
            },
            KeySource::Header(name) => match headers.get(name) {
                Some(v) => bucket_of(v.as_bytes()),
                None => return Some(Choice::Unkeyed),
            },
            KeySource::ClientIp => match client {
                IpAddr::V4(ip) => bucket_of(&ip.octets()),
                IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                    Some(v4) => bucket_of(&v4.octets()),
                    None => bucket_of(&ip.octets()),
                },
            },
        };
        self.owner(bucket).map(Choice::Item)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, without copying.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    for h in headers.get_all(COOKIE) {
        for pair in h.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii_start();
            if let Some(rest) = pair.strip_prefix(name.as_bytes()) {
                if let Some(value) = rest.strip_prefix(b"=") {
                    let value = value.trim_ascii_end();
                    let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
                    if !value.is_empty() {
                        return Some(value);
                    }
                }
            }
        }
    }
    None
}

/// A cookie Ficus assigned names its bucket; any other value is hashed.
fn bucket_of_cookie(value: &[u8]) -> u32 {
    if let Some(digits) = value.strip_prefix(ASSIGNED.as_bytes()) {
        if !digits.is_empty() && digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit) {
            let n = digits.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            if n < BUCKETS {
                return n;
            }
        }
    }
    bucket_of(value)
}

/// FNV-1a, then a 64-bit finaliser (FNV alone leaves short keys clustered in the low bits). Fixed, so every
/// instance and every version of Ficus puts a key in the same bucket.
pub fn bucket_of(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (((h >> 32) * u64::from(BUCKETS)) >> 32) as u32
}

/// The `n`-th new client's bucket: the golden-ratio (Weyl) sequence, whose first `n` points fall into every
/// range in proportion to its width, give or take a few.
fn sequence_bucket(n: u64) -> u32 {
    let x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (((x >> 32) * u64::from(BUCKETS)) >> 32) as u32
}

fn set_cookie(name: &str, bucket: u32, https: bool) -> HeaderValue {
    // A year: the assignment is only worth something if it outlives the session. HttpOnly: no script needs
    // it. Lax: sent on top-level navigation, not on cross-site subrequests. Secure only over TLS, where a
    // browser would otherwise drop it.
    let secure = if https { "; Secure" } else { "" };
    let value = format!("{name}={ASSIGNED}{bucket}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax{secure}");
    // The name passed validation as a token and the rest is ASCII, so this holds; fall back to no cookie.
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(canary: u32) -> Sticky {
        let items = [("legacy", 100 - canary), ("gtin", canary)];
        Sticky::new(KeySource::Header(HeaderName::from_static("x-user")), &items, Arc::default())
    }

    #[test]
    fn raising_a_canary_keeps_its_clients_and_lowering_moves_only_the_difference() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let side = |s: &Sticky, k: &str| s.owner(bucket_of(k.as_bytes())).unwrap();
        for (from, to) in [(5, 10), (10, 25), (25, 50), (50, 100), (50, 5), (10, 0)] {
            let (a, b) = (split(from), split(to));
            let moved = keys.iter().filter(|k| side(&a, k) != side(&b, k)).count();
            for k in &keys {
                let (x, y) = (side(&a, k), side(&b, k));
                if to > from {
                    assert!(!(x == 1 && y == 0), "{from}->{to}: {k} left the canary");
                } else {
                    assert!(!(x == 0 && y == 1), "{from}->{to}: {k} joined the canary");
                }
            }
            let expected = keys.len() * from.abs_diff(to) as usize / 100;
            assert!(moved.abs_diff(expected) < keys.len() / 50, "{from}->{to}: {moved} moved, about {expected}");
        }
    }

    #[test]
    fn the_order_of_the_list_does_not_matter() {
        let a = Sticky::new(KeySource::ClientIp, &[("b", 90), ("a", 10)], Arc::default());
        let b = Sticky::new(KeySource::ClientIp, &[("a", 10), ("b", 90)], Arc::default());
        for bucket in 0..BUCKETS {
            let (x, y) = (a.owner(bucket).unwrap(), b.owner(bucket).unwrap());
            assert_eq!(["b", "a"][x], ["a", "b"][y]);
        }
    }

    #[test]
    fn new_clients_are_spread_exactly_and_their_cookie_brings_them_back() {
        let s = Sticky::new(KeySource::Cookie("ficus_canary".into()), &[("legacy", 95), ("gtin", 5)], Arc::default());
        let mut on_canary = 0;
        for _ in 0..1000 {
            let Some(Choice::Assigned(item, cookie)) = s.choose(&HeaderMap::new(), [127, 0, 0, 1].into(), false) else {
                panic!("a client without a cookie is assigned one")
            };
            on_canary += usize::from(item == 1);
            let text = cookie.to_str().unwrap();
            assert!(text.contains("; Path=/;") && text.contains("HttpOnly") && !text.contains("Secure"), "{text}");
            let value = text.split(';').next().unwrap().to_string();
            let mut headers = HeaderMap::new();
            headers.insert(COOKIE, HeaderValue::from_str(&format!("other=1; {value}")).unwrap());
            assert_eq!(s.choose(&headers, [127, 0, 0, 1].into(), false), Some(Choice::Item(item)));
        }
        assert!(on_canary.abs_diff(50) <= 3, "{on_canary} of 1000 new clients on the 5% side");
    }

    #[test]
    fn a_missing_header_takes_the_plain_split_and_foreign_cookies_are_hashed() {
        let s = split(50);
        assert_eq!(s.choose(&HeaderMap::new(), [10, 0, 0, 1].into(), true), Some(Choice::Unkeyed));
        assert_eq!(bucket_of_cookie(b"fc1.42"), 42);
        assert_eq!(bucket_of_cookie(b"fc1.99999"), bucket_of(b"fc1.99999"));
        assert_eq!(bucket_of_cookie(b"session-abc"), bucket_of(b"session-abc"));
        let c = Sticky::new(KeySource::Cookie("c".into()), &[("a", 1)], Arc::default());
        match c.choose(&HeaderMap::new(), [10, 0, 0, 1].into(), true) {
            Some(Choice::Assigned(0, v)) => assert!(v.to_str().unwrap().ends_with("; Secure")),
            other => panic!("{other:?}"),
        }
    }
}
