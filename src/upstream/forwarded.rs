//! The fields the proxy sets on every request it sends upstream (X-Forwarded-For, -Proto, -Host, Host and
//! X-Request-Id), worked out once per request in the proxy's upstream-request phase and carried beside the
//! request to the pool, not inserted into its header map.
//!
//! Each insert into an `http::HeaderMap` hashes the name, probes, and may grow the map (hyper sizes it to the
//! fields it parsed): five of them cost about 1.5k instructions per request. Ficus's own HTTP/1.1 codec
//! (`super::h1`), which carries almost every request, writes these values straight into the head it sends,
//! in place of the client's fields of the same names; every other way out (hyper's client for TLS, HTTP/2,
//! upgrades and streamed bodies) puts them into the map first with [`Forwarded::apply`]. One value, two
//! writers, so the two paths cannot drift apart; the unit tests hold the two side by side.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What becomes of the client's `X-Forwarded-Host` (or `-Proto`) lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Believed (the client sits behind a trusted proxy that set them): forwarded as they came.
    Keep,
    /// Replaced by this one value.
    Set(HeaderValue),
    /// Removed (no host to name).
    Remove,
}

/// The values set on a request as it goes upstream. Every field set here replaces all of the client's lines
/// of that name, as `HeaderMap::insert` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub forwarded_for: HeaderValue,
    pub forwarded_proto: Field,
    pub forwarded_host: Field,
    /// The upstream `Host`.
    pub host: HeaderValue,
    pub request_id: HeaderValue,
}

/// The positions of the fields set, as bits of what the head writer has written already.
const FOR: u8 = 1;
const PROTO: u8 = 2;
const FWD_HOST: u8 = 4;
const HOST: u8 = 8;
const REQUEST_ID: u8 = 16;

impl Forwarded {
    /// Puts the values into `headers`, for a request that leaves through hyper's client (or is copied for a
    /// shadow), which sends the map as it is.
    pub fn apply(&self, headers: &mut HeaderMap) {
        // Room for the fields added, in one step: hyper sizes the map to the fields it parsed, so each
        // insert would otherwise grow it.
        headers.reserve(5);
        headers.insert(X_FORWARDED_FOR.clone(), self.forwarded_for.clone());
        match &self.forwarded_proto {
            Field::Keep => {}
            Field::Set(v) => drop(headers.insert(X_FORWARDED_PROTO.clone(), v.clone())),
            Field::Remove => drop(headers.remove(&X_FORWARDED_PROTO)),
        }
        match &self.forwarded_host {
            Field::Keep => {}
            Field::Set(v) => drop(headers.insert(X_FORWARDED_HOST.clone(), v.clone())),
            Field::Remove => drop(headers.remove(&X_FORWARDED_HOST)),
        }
        headers.insert(header::HOST, self.host.clone());
        headers.insert(X_REQUEST_ID.clone(), self.request_id.clone());
    }

    /// Which of the fields set this is, by its bit, and the value to write in its place (`None`: the line
    /// is dropped); `Err(())` for a field passed on as it came. Standard names compare as one byte; the
    /// custom ones by length first.
    fn replaces(&self, name: &HeaderName) -> Result<(u8, Option<&HeaderValue>), ()> {
        if *name == header::HOST {
            return Ok((HOST, Some(&self.host)));
        }
        fn field(f: &Field) -> Option<Option<&HeaderValue>> {
            match f {
                Field::Keep => None,
                Field::Set(v) => Some(Some(v)),
                Field::Remove => Some(None),
            }
        }
        // All four custom names start `x-`; most fields of a request do not.
        let s = name.as_str();
        if s.len() < 12 || !s.starts_with("x-") {
            return Err(());
        }
        if *name == X_FORWARDED_FOR {
            Ok((FOR, Some(&self.forwarded_for)))
        } else if *name == X_REQUEST_ID {
            Ok((REQUEST_ID, Some(&self.request_id)))
        } else if *name == X_FORWARDED_PROTO {
            field(&self.forwarded_proto).map(|v| (PROTO, v)).ok_or(())
        } else if *name == X_FORWARDED_HOST {
            field(&self.forwarded_host).map(|v| (FWD_HOST, v)).ok_or(())
        } else {
            Err(())
        }
    }

    /// Writes the header lines of `headers` with these values in place: each field set is written once,
    /// where the client's first line of that name stood (later lines of the name dropped), or after the
    /// client's fields when it had none. The lines are those `apply` puts in the map, each name's values in
    /// the same order; the order between different names may differ from the map's (its `remove` moves its
    /// last field into the gap), which means nothing to HTTP (RFC 9110 section 5.3).
    pub fn write_fields(&self, headers: &HeaderMap, dst: &mut Vec<u8>) {
        let mut written = 0u8;
        for (name, value) in headers {
            let value = match self.replaces(name) {
                Err(()) => value,
                Ok((bit, value)) => {
                    let first = written & bit == 0;
                    written |= bit;
                    match value {
                        Some(v) if first => v,
                        _ => continue,
                    }
                }
            };
            line(dst, name.as_str(), value);
        }
        if written & FOR == 0 {
            line(dst, X_FORWARDED_FOR.as_str(), &self.forwarded_for);
        }
        if let (0, Field::Set(v)) = (written & PROTO, &self.forwarded_proto) {
            line(dst, X_FORWARDED_PROTO.as_str(), v);
        }
        if let (0, Field::Set(v)) = (written & FWD_HOST, &self.forwarded_host) {
            line(dst, X_FORWARDED_HOST.as_str(), v);
        }
        if written & HOST == 0 {
            line(dst, header::HOST.as_str(), &self.host);
        }
        if written & REQUEST_ID == 0 {
            line(dst, X_REQUEST_ID.as_str(), &self.request_id);
        }
    }
}

/// One header line of an HTTP/1.1 head.
pub(crate) fn line(dst: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    dst.extend_from_slice(name.as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value.as_bytes());
    dst.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head's lines sorted by name, each name's lines in their order (the order between names means
    /// nothing).
    fn by_name(head: &[u8]) -> Vec<String> {
        let mut lines: Vec<String> = String::from_utf8_lossy(head).lines().map(str::to_string).collect();
        lines.sort_by_key(|l| l.split(':').next().unwrap_or("").to_string());
        lines
    }

    fn lines(headers: &HeaderMap) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            line(&mut out, name.as_str(), value);
        }
        out
    }

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(HeaderName::from_bytes(n.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn forwarded(proto: Field, host: Field) -> Forwarded {
        Forwarded {
            forwarded_for: HeaderValue::from_static("10.0.0.1"),
            forwarded_proto: proto,
            forwarded_host: host,
            host: HeaderValue::from_static("upstream:8080"),
            request_id: HeaderValue::from_static("id-1"),
        }
    }

    /// The head written straight from the client's fields is, line for line, the map `apply` builds.
    #[test]
    fn the_codec_writes_the_fields_apply_puts_in_the_map() {
        let clients = [
            map(&[("host", "a.example"), ("accept", "*/*")]),
            map(&[("user-agent", "x")]),
            map(&[
                ("x-forwarded-for", "1.1.1.1"),
                ("host", "a.example"),
                ("x-forwarded-for", "2.2.2.2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "b.example"),
                ("x-forwarded-host", "c.example"),
                ("x-request-id", "client"),
                ("x-other-long-name", "1"),
            ]),
            map(&[("x-request-id", "a"), ("x-request-id", "b"), ("x-forwarded-proto", "http")]),
        ];
        let fields = [Field::Keep, Field::Set(HeaderValue::from_static("set")), Field::Remove];
        for client in &clients {
            for proto in &fields {
                for host in &fields {
                    let fwd = forwarded(proto.clone(), host.clone());
                    let mut applied = client.clone();
                    fwd.apply(&mut applied);
                    let mut written = Vec::new();
                    fwd.write_fields(client, &mut written);
                    assert_eq!(
                        by_name(&written),
                        by_name(&lines(&applied)),
                        "client {client:?}, proto {proto:?}, host {host:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn kept_fields_pass_as_they_came_and_set_ones_replace_every_line() {
        let client = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "b.example"),
        ]);
        let fwd = forwarded(Field::Keep, Field::Remove);
        let mut out = Vec::new();
        fwd.write_fields(&client, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "x-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: https\r\nhost: upstream:8080\r\nx-request-id: id-1\r\n"
        );
    }
}
