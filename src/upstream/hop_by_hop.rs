//! The hop-by-hop rule (RFC 9110 section 7.6.1): `Connection`, the fields it names, and the fields that only
//! describe one connection never cross the proxy. One definition for both directions and both ways out: the
//! proxy's upstream-request phase strips the client's request with it and its respond phase strips hyper's
//! responses, while Ficus's own client codec (`super::h1`) leaves the same fields out of a response's map
//! as it builds it (its tests hold the two side by side). It sits in `upstream` because the codec, below the
//! proxy, must follow it too.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

const HOP_BY_HOP: [&HeaderName; 8] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// `Connection` values of one message: almost always one, so no allocation for it.
enum SmallValues {
    None,
    One(HeaderValue),
    Many(Vec<HeaderValue>),
}

impl FromIterator<HeaderValue> for SmallValues {
    fn from_iter<I: IntoIterator<Item = HeaderValue>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        let Some(first) = iter.next() else { return SmallValues::None };
        match iter.next() {
            None => SmallValues::One(first),
            Some(second) => SmallValues::Many([first, second].into_iter().chain(iter).collect()),
        }
    }
}

impl SmallValues {
    fn iter(&self) -> std::slice::Iter<'_, HeaderValue> {
        match self {
            SmallValues::None => [].iter(),
            SmallValues::One(v) => std::slice::from_ref(v).iter(),
            SmallValues::Many(v) => v.iter(),
        }
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names. `TE: trailers` survives, since
/// it asks the next hop for trailers and gRPC relies on it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most messages carry none of these (or only `Connection`), and removing
    // an absent name still costs a hash and a probe each.
    let mut present = 0u16;
    let mut te = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present |= 1 << i;
        } else if name == header::TE {
            te = true;
        }
    }
    if present & 1 != 0 {
        // Taken out with its values in one probe (looking the values up, then removing the name, probed twice);
        // the names they list are removed after.
        let values: SmallValues = match headers.entry(header::CONNECTION) {
            Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
            Entry::Vacant(_) => SmallValues::None,
        };
        remove_named(headers, values.iter(), &mut te);
    }
    // `Connection` (bit 0) is gone already.
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    if te {
        keep_te_trailers(headers);
    }
}

/// Removes the fields the `Connection` `values` name. `te` (a `TE` field is present) is cleared when they
/// name it, so it is gone.
pub fn remove_named<'a>(headers: &mut HeaderMap, values: impl Iterator<Item = &'a HeaderValue>, te: &mut bool) {
    for value in values {
        for token in value.to_str().unwrap_or("").split(',').map(str::trim) {
            // These name headers removed anyway.
            if token.is_empty() || token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("upgrade") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                if name == header::TE {
                    *te = false;
                }
                headers.remove(name);
            }
        }
    }
}

/// `TE` survives only as `TE: trailers`, when it asks for trailers (gRPC relies on it); otherwise it goes.
pub fn keep_te_trailers(headers: &mut HeaderMap) {
    let wants_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.to_str().map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))).unwrap_or(false));
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    } else {
        headers.remove(header::TE);
    }
}
