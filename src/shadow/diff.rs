//! Comparing two answers to the same request: the pure part of shadowing, with no I/O. The worker hands it
//! the primary's answer (what the client got) and the shadow backend's, and gets back the fields that
//! differ: `status`, `header:<name>` for the compared headers, and for the body either `body` (the bytes
//! differ) or, when both bodies are JSON, one JSON pointer per differing value (`body:/product/name`), so a
//! report can say which field a new service gets wrong rather than only that the bytes differ.
//!
//! Ignored paths (configured) and noise (learned by comparing the primary with itself, as Diffy does) are
//! prefixes: ignoring `/meta` ignores everything below it.

use bytes::Bytes;
use serde_json::Value;

/// One answer, as far as it is compared.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    /// The compared headers, lower-case name and value (`None`: absent), in the order of the rules.
    pub headers: Vec<(String, Option<String>)>,
    /// `None` when the body was longer than the limit and was not kept.
    pub body: Option<Bytes>,
}

/// Past this many differing fields in one comparison the rest are summed up as one more field: a shadow
/// that answers something else entirely must not make one report line per array element.
const MAX_FIELDS: usize = 32;

/// The fields where `a` and `b` differ, in a stable order, leaving out those `ignored` says to.
pub fn compare(a: &Answer, b: &Answer, ignored: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |field: String| {
        if !ignored(&field) {
            out.push(field);
        }
    };
    if a.status != b.status {
        push("status".to_string());
    }
    for ((name, va), (_, vb)) in a.headers.iter().zip(&b.headers) {
        if va != vb {
            push(format!("header:{name}"));
        }
    }
    match (&a.body, &b.body) {
        (Some(x), Some(y)) if x != y => match (json(x), json(y)) {
            (Some(jx), Some(jy)) => {
                let mut fields = Vec::new();
                walk(&jx, &jy, &mut String::new(), &mut fields, ignored);
                let more = fields.len() > MAX_FIELDS;
                fields.truncate(MAX_FIELDS);
                out.extend(fields);
                if more {
                    out.push("body:(more)".to_string());
                }
            }
            _ => push("body".to_string()),
        },
        _ => {}
    }
    out
}

fn json(body: &Bytes) -> Option<Value> {
    let trimmed = body.trim_ascii_start();
    if !trimmed.starts_with(b"{") && !trimmed.starts_with(b"[") {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// Differences below `path`, as `body:<pointer>` fields; an ignored path is not descended into.
fn walk(a: &Value, b: &Value, path: &mut String, out: &mut Vec<String>, ignored: &dyn Fn(&str) -> bool) {
    if out.len() > MAX_FIELDS {
        return;
    }
    let field = format!("body:{path}");
    if ignored(&field) {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk(va, vb, path, out, ignored),
                    _ => leaf(path, out, ignored),
                }
                path.truncate(len);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(va, vb, path, out, ignored),
                    _ => leaf(path, out, ignored),
                }
                path.truncate(len);
            }
        }
        _ if a != b => out.push(if path.is_empty() { "body".to_string() } else { field }),
        _ => {}
    }
}

fn leaf(path: &str, out: &mut Vec<String>, ignored: &dyn Fn(&str) -> bool) {
    let field = format!("body:{path}");
    if !ignored(&field) {
        out.push(field);
    }
}

/// Whether `field` is `prefix` or lies below it (`body:/a/b` is below `body:/a`, `body:/ab` is not).
pub fn covered_by(field: &str, prefix: &str) -> bool {
    match field.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, ct: Option<&str>, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), ct.map(str::to_string))],
            body: Some(Bytes::from(body.to_string())),
        }
    }

    #[test]
    fn json_bodies_are_compared_by_structure_and_report_each_differing_pointer() {
        let a = answer(200, Some("application/json"), r#"{"gtin":"0123","name":"Tea","tags":["a","b"],"x":{"y":1}}"#);
        let b = answer(200, Some("application/json"), r#"{ "x":{"y":1}, "tags":["a"], "name":"Tee", "gtin":"0123" }"#);
        assert_eq!(compare(&a, &b, &|_| false), ["body:/name", "body:/tags/1"]);
        let same =
            answer(200, Some("application/json"), r#"{"x":{"y":1},"gtin":"0123","tags":["a","b"],"name":"Tea"}"#);
        assert!(compare(&a, &same, &|_| false).is_empty(), "key order and spacing are not differences");
    }

    #[test]
    fn status_headers_and_plain_bodies() {
        let a = answer(200, Some("application/json"), r#"{"a":1}"#);
        let b = answer(404, Some("text/plain"), "not found");
        assert_eq!(compare(&a, &b, &|_| false), ["status", "header:content-type", "body"]);
        let c = answer(200, None, "x");
        assert_eq!(compare(&c, &c.clone(), &|_| false), Vec::<String>::new());
    }

    #[test]
    fn ignored_paths_cover_their_subtree_only() {
        let a = answer(200, None, r#"{"meta":{"at":1,"by":"x"},"metadata":1,"v":1}"#);
        let b = answer(200, None, r#"{"meta":{"at":2,"by":"y"},"metadata":2,"v":1}"#);
        let ignore = |f: &str| covered_by(f, "body:/meta");
        assert_eq!(compare(&a, &b, &ignore), ["body:/metadata"]);
        assert!(covered_by("body:/meta/at", "body:/meta") && !covered_by("body:/metadata", "body:/meta"));
    }

    #[test]
    fn a_wholly_different_answer_is_summed_up() {
        let a = answer(200, None, &serde_json::to_string(&(0..100).collect::<Vec<_>>()).unwrap());
        let b = answer(200, None, &serde_json::to_string(&(1..101).collect::<Vec<_>>()).unwrap());
        let d = compare(&a, &b, &|_| false);
        assert_eq!(d.len(), MAX_FIELDS + 1);
        assert_eq!(d.last().unwrap(), "body:(more)", "{d:?}");
    }
}
