//! Router tests: one per precedence rule and Vulcand pitfall, the index's edge cases (prefixes off
//! segment boundaries, catch-alls, fallbacks when a better route fails its method), and a
//! differential test against the one-route-at-a-time reference semantics.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::super::{parse, Request, RouteSpec};
use super::Router;

fn router(routes: &[(&str, i32, &str)]) -> Router<String> {
    Router::build(
        routes
            .iter()
            .map(|&(id, priority, src)| RouteSpec {
                id: Arc::from(id),
                priority,
                expr: parse(src).unwrap_or_else(|e| panic!("{src}: {e}")),
                value: format!("value of {id}"),
            })
            .collect(),
    )
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    map
}

fn find_with<'r>(
    router: &'r Router<String>,
    method: &str,
    host: &str,
    path: &str,
    pairs: &[(&str, &str)],
) -> Option<&'r str> {
    let method = Method::from_bytes(method.as_bytes()).expect("test method");
    let headers = headers(pairs);
    let req = Request { method: &method, host, path, headers: &headers };
    let found = router.find_route(&req);
    assert_eq!(found.map(|(_, v)| v), router.find(&req));
    found.map(|(id, _)| id)
}

fn find<'r>(router: &'r Router<String>, host: &str, path: &str) -> Option<&'r str> {
    find_with(router, "GET", host, path, &[])
}

#[test]
fn empty_router() {
    let r = router(&[]);
    assert!(r.is_empty());
    assert_eq!(r.len(), 0);
    assert_eq!(find(&r, "a.com", "/"), None);
    assert!(Router::<()>::default().is_empty());
}

#[test]
fn router_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router<String>>();
    assert_send_sync::<super::super::RouteExpr>();
}

#[test]
fn duplicate_ids_keep_the_first() {
    let r = router(&[("a", 0, r#"Path("/x")"#), ("a", 9, r#"Path("/y")"#)]);
    assert_eq!(r.len(), 1);
    assert_eq!(find(&r, "h", "/x"), Some("a"));
    assert_eq!(find(&r, "h", "/y"), None);
    assert_eq!(r.iter().map(|(id, _, _)| id).collect::<Vec<_>>(), ["a"]);
}

#[test]
fn finds_by_host_and_path() {
    let r = router(&[
        ("exact", 0, r#"Host("a.com") && Path("/a/b")"#),
        ("pattern", 0, r#"Host("a.com") && Path("/stores/<s>/gtins/<int:g>")"#),
        ("prefix", 0, r#"Host("a.com") && PathPrefix("/api")"#),
        ("files", 0, r#"Host("a.com") && Path("/static/<path:f>")"#),
        ("other", 0, r#"Host("b.com") && Path("/a/b")"#),
    ]);
    assert_eq!(r.len(), 5);
    assert_eq!(find(&r, "a.com", "/a/b"), Some("exact"));
    assert_eq!(find(&r, "a.com", "/a/b/"), None);
    assert_eq!(find(&r, "a.com", "/a"), None);
    assert_eq!(find(&r, "A.COM:8080", "/a/b"), Some("exact"));
    assert_eq!(find(&r, "b.com", "/a/b"), Some("other"));
    assert_eq!(find(&r, "c.com", "/a/b"), None);
    assert_eq!(find(&r, "a.com", "/stores/1/gtins/0042"), Some("pattern"));
    assert_eq!(find(&r, "a.com", "/stores/1/gtins/x42"), None);
    assert_eq!(find(&r, "a.com", "/stores//gtins/42"), None);
    for path in ["/api", "/api/", "/api/v1/x", "/apix", "/api?x"] {
        assert_eq!(find(&r, "a.com", path), Some("prefix"), "{path}");
    }
    assert_eq!(find(&r, "a.com", "/ap"), None);
    assert_eq!(find(&r, "a.com", "/static/"), Some("files"));
    assert_eq!(find(&r, "a.com", "/static/a/b.css"), Some("files"));
    assert_eq!(find(&r, "a.com", "/static"), None);
    assert_eq!(find(&r, "a.com", ""), None);
    assert_eq!(find(&r, "a.com", "*"), None);
}

#[test]
fn prefixes_off_segment_boundaries() {
    let r = router(&[
        ("root", 0, r#"PathPrefix("/")"#),
        ("v", 0, r#"PathPrefix("/api/v")"#),
        ("api-slash", 0, r#"PathPrefix("/api/")"#),
        ("deep", 0, r#"PathPrefix("/api/v1/users/12")"#),
    ]);
    assert_eq!(find(&r, "h", "/"), Some("root"));
    assert_eq!(find(&r, "h", "/api"), Some("root"), "`/api/` needs the slash");
    assert_eq!(find(&r, "h", "/api/"), Some("api-slash"));
    assert_eq!(find(&r, "h", "/api/x"), Some("api-slash"));
    assert_eq!(find(&r, "h", "/api/v"), Some("v"));
    assert_eq!(find(&r, "h", "/api/v2/x"), Some("v"));
    assert_eq!(find(&r, "h", "/api/v1/users/123"), Some("deep"));
    assert_eq!(find(&r, "h", "/api/v1/users/1"), Some("v"));
    assert_eq!(find(&r, "", ""), None);
}

#[test]
fn many_literal_children_use_the_map() {
    let routes: Vec<(String, String)> =
        (0..40).map(|i| (format!("r{i}"), format!(r#"Host("h") && Path("/p{i}/x")"#))).collect();
    let specs: Vec<(&str, i32, &str)> = routes.iter().map(|(id, src)| (&**id, 0, &**src)).collect();
    let r = router(&specs);
    for i in 0..40 {
        assert_eq!(find(&r, "h", &format!("/p{i}/x")), Some(&*format!("r{i}")));
    }
    assert_eq!(find(&r, "h", "/p40/x"), None);
}

#[test]
fn rule_1_priority_beats_specificity() {
    let r = router(&[
        ("specific", 0, r#"Host("a.com") && Path("/x") && Method("GET")"#),
        ("catch-all", 1, r#"PathRegexp("/.*")"#),
    ]);
    assert_eq!(find(&r, "a.com", "/x"), Some("catch-all"));
    let r = router(&[
        ("specific", 0, r#"Host("a.com") && Path("/x")"#),
        ("other-host", -1, r#"HostRegexp(".*") && Path("/x")"#),
    ]);
    assert_eq!(find(&r, "a.com", "/x"), Some("specific"));
    assert_eq!(find(&r, "b.com", "/x"), Some("other-host"));
}

#[test]
fn rule_2_host_specificity() {
    let routes = [
        ("exact", 0, r#"Host("api.example.com") && PathRegexp("/.*")"#),
        ("pattern", 0, r#"Host("<x>.example.com") && Path("/x")"#),
        ("short-pattern", 0, r#"Host("<x>.<y>.com") && Path("/x")"#),
        ("regexp", 0, r#"HostRegexp(".*") && Path("/x")"#),
        ("none", 0, r#"Path("/x")"#),
    ];
    // Drop the winner each time and check the next one takes over.
    for skip in 0..routes.len() {
        let r = router(&routes[skip..]);
        assert_eq!(find(&r, "api.example.com", "/x"), Some(routes[skip].0));
    }
}

#[test]
fn rule_3_path_specificity() {
    let routes = [
        ("exact", 0, r#"Path("/a/b/1")"#),
        ("pattern-5-literals", 0, r#"Path("/a/b/<c>")"#),
        ("pattern-4-literals", 0, r#"Path("/a/<b>/<int:c>")"#),
        ("pattern-3-literals", 0, r#"Path("/<a>/<b>/<c>")"#),
        ("pattern-3-literals-rest", 0, r#"Path("/a/<path:rest>")"#),
        ("prefix-long", 0, r#"PathPrefix("/a/b/")"#),
        ("prefix-short", 0, r#"PathPrefix("/a")"#),
        ("regexp", 0, r#"PathRegexp("/a/b/1$")"#),
        ("none", 0, r#"Method("GET")"#),
    ];
    // Drop the winner each time and check the next one takes over.
    for skip in 0..routes.len() {
        let r = router(&routes[skip..]);
        assert_eq!(find(&r, "h", "/a/b/1"), Some(routes[skip].0));
    }
    // Same literal characters: a pattern without `<path:>` beats one with it.
    let r = router(&[("rest", 0, r#"Path("/a/<path:p>")"#), ("one", 0, r#"Path("/a/<p>")"#)]);
    assert_eq!(find(&r, "h", "/a/x"), Some("one"));
    assert_eq!(find(&r, "h", "/a/x/y"), Some("rest"));
}

#[test]
fn rule_4_more_matchers_win() {
    let r = router(&[
        ("plain", 0, r#"Host("a.com") && Path("/x")"#),
        ("canary", 0, r#"Host("a.com") && Path("/x") && Header("X-Canary", "1")"#),
        ("get", 0, r#"Host("a.com") && Path("/x") && Method("GET")"#),
    ]);
    assert_eq!(find_with(&r, "GET", "a.com", "/x", &[("x-canary", "1")]), Some("canary"));
    assert_eq!(find_with(&r, "GET", "a.com", "/x", &[]), Some("get"));
    assert_eq!(find_with(&r, "POST", "a.com", "/x", &[]), Some("plain"));
    assert_eq!(find_with(&r, "POST", "a.com", "/x", &[("x-canary", "0")]), Some("plain"));
}

#[test]
fn rule_5_smaller_id_breaks_ties_whatever_the_order() {
    let a = router(&[("b", 0, r#"Path("/x")"#), ("a", 0, r#"Path("/x")"#)]);
    let b = router(&[("a", 0, r#"Path("/x")"#), ("b", 0, r#"Path("/x")"#)]);
    assert_eq!(find(&a, "h", "/x"), Some("a"));
    assert_eq!(find(&b, "h", "/x"), Some("a"));
}

#[test]
fn vulcand_pitfalls_are_fixed() {
    // A regexp catch-all registered first never shadows a specific path.
    let r = router(&[
        ("catch-all", 0, r#"Host("a.com") && PathRegexp("/.*")"#),
        ("gtin", 0, r#"Host("a.com") && Path("/stores/<s>/gtins/<g>")"#),
    ]);
    assert_eq!(find(&r, "a.com", "/stores/1/gtins/2"), Some("gtin"));
    assert_eq!(find(&r, "a.com", "/stores/1"), Some("catch-all"));
    // A header-gated canary wins when its header is sent, and only then.
    let r = router(&[
        ("legacy", 0, r#"Host("a.com") && PathPrefix("/stores")"#),
        ("canary", 0, r#"Host("a.com") && PathPrefix("/stores") && Header("X-Canary", "1")"#),
    ]);
    assert_eq!(find_with(&r, "GET", "a.com", "/stores/1", &[("X-Canary", "1")]), Some("canary"));
    assert_eq!(find_with(&r, "GET", "a.com", "/stores/1", &[]), Some("legacy"));
}

#[test]
fn falls_back_when_the_best_route_fails_its_method() {
    let r = router(&[
        ("post", 5, r#"Host("a.com") && Path("/x") && Method("POST")"#),
        ("any-host-get", 1, r#"Path("/x") && MethodRegexp("GET|HEAD")"#),
        ("pattern-host", 0, r#"Host("<n>.com") && PathPrefix("/")"#),
    ]);
    assert_eq!(find_with(&r, "POST", "a.com", "/x", &[]), Some("post"));
    assert_eq!(find_with(&r, "HEAD", "a.com", "/x", &[]), Some("any-host-get"));
    assert_eq!(find_with(&r, "PUT", "a.com", "/x", &[]), Some("pattern-host"));
    assert_eq!(find_with(&r, "PUT", "a.b.com", "/x", &[]), None);
}

#[test]
fn odd_hosts() {
    let long = format!("{}.com", "A".repeat(300));
    let r = router(&[
        ("long", 0, &format!("Host(`{long}`)")),
        ("v6", 0, r#"Host("[::1]")"#),
        ("utf8", 0, r#"Host("bücher.de")"#),
    ]);
    assert_eq!(find(&r, &long, "/"), Some("long"));
    assert_eq!(find(&r, &long.to_lowercase(), "/"), Some("long"));
    assert_eq!(find(&r, "[::1]:443", "/"), Some("v6"));
    assert_eq!(find(&r, "BÜCHER.DE", "/"), None, "only ASCII case is folded");
    assert_eq!(find(&r, "BüCHER.DE", "/"), Some("utf8"));
}

use crate::test_rng::Rng;

#[test]
fn partial_segment_patterns_wait_before_their_segment_and_are_checked() {
    let r = router(&[
        ("versioned", 0, r#"Path("/v<int:version>/domains/<name>")"#),
        ("any", 0, r#"Path("/<version>/domains/<name>")"#),
        ("literal", 0, r#"Path("/v2/domains/special")"#),
        ("api", 0, r#"Host("a.com") && Path("/api/v<int:n>")"#),
    ]);
    // One more literal character (the `v`) than `any`.
    assert_eq!(find(&r, "h", "/v42/domains/d1"), Some("versioned"));
    assert_eq!(find(&r, "h", "/v42abc/domains/d1"), Some("any"));
    assert_eq!(find(&r, "h", "/v2/domains/special"), Some("literal"));
    assert_eq!(find(&r, "a.com", "/api/v3"), Some("api"));
    assert_eq!(find(&r, "a.com", "/api/v3?x=1"), Some("api"));
    assert_eq!(find(&r, "a.com", "/api/vx"), None);
    assert_eq!(find(&r, "a.com", "/api/v3/"), None);
}

#[test]
fn regexp_routes_rank_by_their_literal_prefix() {
    let r = router(&[
        ("a-catchall", 0, r#"PathRegexp("/.*")"#),
        ("stream", 0, r#"PathRegexp("/stream-bytes/.*")"#),
        ("b-unanchored", 0, r#"PathRegexp("bytes")"#),
    ]);
    assert_eq!(find(&r, "h", "/stream-bytes/100"), Some("stream"));
    assert_eq!(find(&r, "h", "/x/bytes"), Some("b-unanchored"), "5 literal characters beat 1");
    assert_eq!(find(&r, "h", "/x"), Some("a-catchall"));
}

/// The router must pick exactly what "highest rank among all matching routes" picks.
#[test]
fn agrees_with_the_reference_semantics() {
    const HOSTS: &[&str] = &[
        "",
        "",
        r#"Host("a.com")"#,
        r#"Host("b.com")"#,
        r#"Host("<x>.com")"#,
        r#"Host("<int:n>.b.com")"#,
        r#"Host("x<int:n>.b.com")"#,
        r#"HostRegexp("(a|b)\.com")"#,
        r#"HostRegexp("^b\.com$")"#,
    ];
    const PATHS: &[&str] = &[
        "",
        r#"Path("/")"#,
        r#"Path("/a")"#,
        r#"Path("/a/")"#,
        r#"Path("/a/b")"#,
        r#"Path("/a/1")"#,
        r#"Path("//a")"#,
        r#"Path("/a/<x>")"#,
        r#"Path("/<x>/b")"#,
        r#"Path("/a/<int:n>")"#,
        r#"Path("/<path:p>")"#,
        r#"Path("/a/<path:p>")"#,
        r#"Path("/<x>/<int:y>/<path:z>")"#,
        r#"Path("/a<x>")"#,
        r#"Path("/a/b<int:n>")"#,
        r#"Path("/<x>/a<y>/<path:z>")"#,
        r#"Path("/a/<x")"#,
        r#"PathPrefix("/")"#,
        r#"PathPrefix("/a")"#,
        r#"PathPrefix("/a/")"#,
        r#"PathPrefix("/a/b")"#,
        r#"PathPrefix("/ab")"#,
        r#"PathPrefix("//")"#,
        r#"PathRegexp("/a.*")"#,
        r#"PathRegexp(".*b$")"#,
        r#"PathRegexp("/[0-9]+")"#,
        r#"PathRegexp("^/a/b")"#,
        r#"PathRegexp("b/")"#,
    ];
    const METHODS: &[&str] = &["", "", "", r#"Method("GET")"#, r#"Method("POST")"#, r#"MethodRegexp("P.*")"#];
    const HEADERS: &[&str] =
        &["", "", "", r#"Header("X-A", "1")"#, r#"HeaderRegexp("X-B", "z")"#, r#"Header("X-B", "x<y>")"#];
    const REQ_HOSTS: &[&str] = &["a.com", "A.com:80", "b.com", "c.com", "1.b.com", "x.b.com", "x1.b.com", "ab.com", ""];
    const REQ_PATHS: &[&str] = &[
        "/", "/a", "/a/", "/a/b", "/a/1", "/a/12/", "/ab", "/abc", "//a", "/x/b", "/b", "", "/a/b/c", "/1/2/3",
        "/a?q=1", "/a/1/x/y", "/a/?x", "/?q", "/a/b?x/y", "/ab?", "?", "/a/b12", "/ab1", "/x/ay/z", "/a/<x",
    ];
    const REQ_METHODS: &[&str] = &["GET", "POST", "PUT"];
    let req_headers = [
        headers(&[]),
        headers(&[("x-a", "1")]),
        headers(&[("x-b", "xyz"), ("x-a", "2")]),
        headers(&[("x-a", "2"), ("x-a", "1"), ("x-b", "q"), ("x-b", "xz")]),
    ];

    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let (mut asked, mut found) = (0, 0);
    // Parsing compiles regexps; the vocabulary is small, so parse each route once.
    let mut parsed = std::collections::HashMap::new();
    for _ in 0..300 {
        let mut specs = Vec::new();
        for i in 0..(5 + rng.next() % 40) {
            let parts = [rng.pick(HOSTS), rng.pick(PATHS), rng.pick(METHODS), rng.pick(HEADERS)];
            let mut src = parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join(" && ");
            if src.is_empty() {
                src = r#"Header("X-C", "never")"#.to_owned();
            }
            specs.push(RouteSpec {
                id: Arc::from(format!("r{}", rng.next() % 1000 * 100 + i)),
                priority: [0, 0, 0, 1, -1][(rng.next() % 5) as usize],
                expr: parsed
                    .entry(src.clone())
                    .or_insert_with(|| parse(&src).unwrap_or_else(|e| panic!("{src}: {e}")))
                    .clone(),
                value: src,
            });
        }
        let r = Router::build(specs);
        for _ in 0..100 {
            let method = Method::from_bytes(rng.pick(REQ_METHODS).as_bytes()).expect("method");
            let req = Request {
                method: &method,
                host: rng.pick(REQ_HOSTS),
                path: rng.pick(REQ_PATHS),
                headers: &req_headers[(rng.next() % 4) as usize],
            };
            let expected = r
                .iter()
                .enumerate()
                .filter(|(_, (_, expr, _))| expr.matches(&req))
                .max_by_key(|&(index, _)| r.rank_of(index))
                .map(|(_, (id, _, _))| id);
            assert_eq!(r.find_route(&req).map(|(id, _)| id), expected, "{req:?} in {r:?}");
            asked += 1;
            found += usize::from(expected.is_some());
        }
    }
    // Guard against a generator that makes the comparison vacuous.
    assert!(found * 3 > asked && found < asked, "{found} of {asked} requests matched");
}

#[test]
fn garbage_requests_do_not_panic() {
    let r = router(&[
        ("a", 0, r#"Host("<x>.com") && Path("/<a>/<int:b>/<path:c>")"#),
        ("b", 0, r#"HostRegexp("é+") && PathPrefix("/é")"#),
        ("c", 0, r#"PathRegexp("/.*") && HeaderRegexp("X", "é")"#),
    ]);
    let mut rng = Rng(7);
    const BITS: &[&str] = &["/", "é", "日", ":", "[", "]", ".", "?", "A", "1", "", "\u{0}", "//"];
    for _ in 0..5_000 {
        let host: String = (0..rng.next() % 8).map(|_| rng.pick(BITS)).collect();
        let path: String = (0..rng.next() % 8).map(|_| rng.pick(BITS)).collect();
        find(&r, &host, &path);
    }
}

#[test]
fn long_segments_and_prefix_tails() {
    let long = "a-segment-longer-than-the-inline-key-buffer";
    let r = router(&[
        ("exact", 0, &format!(r#"Path("/{long}/x")"#)),
        ("prefix", 0, &format!(r#"PathPrefix("/p/{long}")"#)),
    ]);
    assert_eq!(find(&r, "h", &format!("/{long}/x")), Some("exact"));
    assert_eq!(find(&r, "h", &format!("/{long}x/x")), None);
    assert_eq!(find(&r, "h", &format!("/p/{long}-and-more")), Some("prefix"));
    assert_eq!(find(&r, "h", &format!("/p/{}", &long[..30])), None);
}
