//! The route language and its precedence, through a real gateway process and real backends.

use crate::common;

use common::backend::TestBackend;
use common::*;
use http_body_util::Full;

/// One backend per frontend, named after it, so the answer says which frontend won.
async fn setup(frontends: &[(&str, &str, i32)]) -> (Routes, Vec<TestBackend>) {
    let routes = Routes::new();
    let mut backends = Vec::new();
    for (id, route, priority) in frontends {
        let b = TestBackend::start(id).await;
        routes.backend(id, &[("s1", b.addr)]);
        let v = serde_json::json!({"Type":"http","BackendId":id,"Route":route,"Priority":priority});
        routes.put(&format!("frontends/{id}/frontend"), &v.to_string());
        backends.push(b);
    }
    (routes, backends)
}

async fn winner(
    client: &HttpClient,
    ficus: &Ficus,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut req = http::Request::builder().method(method).uri(ficus.url(path)).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (code, body) = request(client, req.body(Full::default()).expect("request")).await;
    if code == 404 {
        return "404".to_string();
    }
    served_by(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matcher_routes() {
    let (routes, _b) = setup(&[
        ("host", "Host(`api.example.com`)", 0),
        ("hostpat", "Host(`<tenant>.shop.example.com`)", 0),
        ("hostre", "HostRegexp(`^static[0-9]+\\.example\\.com$`)", 0),
        ("path", "Path(`/exact`)", 0),
        ("pathpat", "Path(`/stores/<store>/gtins/<int:gtin>`)", 0),
        ("pathre", "PathRegexp(`/re/[a-z]+$`)", 0),
        ("prefix", "PathPrefix(`/pre`)", 0),
        ("method", "Method(`DELETE`) && Path(`/m`)", 0),
        ("methodre", "MethodRegexp(`PUT|PATCH`) && Path(`/m`)", 0),
        ("header", "Header(`X-Tenant`, `acme`) && Path(`/h`)", 0),
        ("headerre", "HeaderRegexp(`X-Tenant`, `^beta-`) && Path(`/h`)", 0),
        ("quoted", "Path(\"/double/quoted\")", 0),
    ])
    .await;
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    /// method, host, path, headers, the frontend that must win
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("GET", "api.example.com", "/anything", &[], "host"),
        ("GET", "API.Example.COM:8080", "/anything", &[], "host"),
        ("GET", "eu.shop.example.com", "/x", &[], "hostpat"),
        ("GET", "static12.example.com", "/x", &[], "hostre"),
        ("GET", "other", "/exact", &[], "path"),
        ("GET", "other", "/exact/", &[], "404"),
        ("GET", "other", "/stores/1/gtins/0123456789012", &[], "pathpat"),
        ("GET", "other", "/stores/1/gtins/abc", &[], "404"),
        ("GET", "other", "/re/abc", &[], "pathre"),
        ("GET", "other", "/re/ABC", &[], "404"),
        ("GET", "other", "/pre", &[], "prefix"),
        ("GET", "other", "/pre/fix/deep", &[], "prefix"),
        ("DELETE", "other", "/m", &[], "method"),
        ("PATCH", "other", "/m", &[], "methodre"),
        ("GET", "other", "/m", &[], "404"),
        ("GET", "other", "/h", &[("x-tenant", "acme")], "header"),
        ("GET", "other", "/h", &[("x-tenant", "beta-1")], "headerre"),
        ("GET", "other", "/h", &[("x-tenant", "gamma")], "404"),
        ("GET", "other", "/double/quoted", &[], "quoted"),
    ];
    for (method, host, path, headers, want) in cases {
        let got = winner(&c, &ficus, method, host, path, headers).await;
        assert_eq!(&got, want, "{method} {host}{path} {headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_fixes_vulcand_pitfalls() {
    let (routes, _b) = setup(&[
        // Vulcand lets this catch-all beat the specific route below; Ficus must not.
        ("catchall", "PathRegexp(`/.*`)", 0),
        ("specific", "Path(`/stores/1`)", 0),
        // A header-gated canary must beat the plain route on the same path.
        ("plain", "Path(`/gtin`)", 0),
        ("canary", "Header(`X-Canary`, `1`) && Path(`/gtin`)", 0),
        ("short", "PathPrefix(`/a`)", 0),
        ("long", "PathPrefix(`/a/b`)", 0),
        ("anyhost", "Path(`/h`)", 0),
        ("withhost", "Host(`h.example`) && PathPrefix(`/`)", 0),
        ("low", "Path(`/prio`)", 0),
        ("high", "PathPrefix(`/`) && Host(`prio.example`)", 5),
    ])
    .await;
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    assert_eq!(winner(&c, &ficus, "GET", "x", "/stores/1", &[]).await, "specific");
    assert_eq!(winner(&c, &ficus, "GET", "x", "/stores/2", &[]).await, "catchall");
    assert_eq!(winner(&c, &ficus, "GET", "x", "/gtin", &[]).await, "plain");
    assert_eq!(winner(&c, &ficus, "GET", "x", "/gtin", &[("x-canary", "1")]).await, "canary");
    assert_eq!(winner(&c, &ficus, "GET", "x", "/a/b/c", &[]).await, "long");
    assert_eq!(winner(&c, &ficus, "GET", "x", "/a/c", &[]).await, "short");
    // Exact host beats no host, even with a less specific path.
    assert_eq!(winner(&c, &ficus, "GET", "h.example", "/h", &[]).await, "withhost");
    assert_eq!(winner(&c, &ficus, "GET", "other", "/h", &[]).await, "anyhost");
    // Priority beats everything.
    assert_eq!(winner(&c, &ficus, "GET", "prio.example", "/prio", &[]).await, "high");
    assert_eq!(winner(&c, &ficus, "GET", "x", "/prio", &[]).await, "low");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_b1_never_gets_servers_of_b10() {
    let routes = Routes::new();
    let one = TestBackend::start("b1-server").await;
    let ten = TestBackend::start("b10-server").await;
    routes.backend("b1", &[("s", one.addr)]);
    routes.backend("b10", &[("s", ten.addr)]);
    routes.frontend("f1", "b1", "Path(`/one`)");
    routes.frontend("f10", "b10", "Path(`/ten`)");
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    for _ in 0..20 {
        assert_eq!(served_by(&get(&c, &ficus.url("/one")).await.1), "b1-server");
        assert_eq!(served_by(&get(&c, &ficus.url("/ten")).await.1), "b10-server");
    }
    assert_eq!(one.hits(), 20);
    assert_eq!(ten.hits(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_cannot_escape_a_prefix_route() {
    let (routes, _b) = setup(&[("public", "PathPrefix(`/public/`)", 0)]).await;
    let ficus = Ficus::start(routes.path()).await;
    // Raw requests: clients would normalise these paths themselves before sending.
    for (path, want) in
        [("/public/../admin", 404), ("/public/%2e%2E/admin", 404), ("/..", 400), ("/public/./a/../b", 200)]
    {
        let mut s = tokio::net::TcpStream::connect(ficus.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_string(&mut out)).await.unwrap().unwrap();
        assert!(out.starts_with(&format!("HTTP/1.1 {want}")), "{path}: {out}");
        if want == 200 {
            assert!(out.contains(r#""path":"/public/b""#), "the normalised path is forwarded: {out}");
        }
    }
}

/// Vulcand's route semantics, end to end: header-value patterns, a pattern after text in a segment,
/// unanchored regexps, first-value headers, and the more specific of two regexps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vulcand_route_semantics_through_the_proxy() {
    let (routes, _b) = setup(&[
        ("ctype", "Header(`Content-Type`, `application/<subtype>`) && Path(`/h`)", 0),
        ("versioned", "Path(`/v<int:version>/domains/<name>`)", 0),
        ("unanchored", "PathRegexp(`/r1`)", 0),
        ("catchall", "PathRegexp(`/.*`)", 0),
        ("stream", "PathRegexp(`/stream-bytes/.*`)", 0),
    ])
    .await;
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    let json = [("content-type", "application/json")];
    assert_eq!(winner(&c, &ficus, "GET", "x", "/h", &json).await, "ctype");
    assert_eq!(winner(&c, &ficus, "GET", "x", "/h", &[("content-type", "text/html")]).await, "catchall");
    // Only the first value counts.
    let two = [("content-type", "text/html"), ("content-type", "application/json")];
    assert_eq!(winner(&c, &ficus, "GET", "x", "/h", &two).await, "catchall");
    assert_eq!(winner(&c, &ficus, "GET", "x", "/v42/domains/d1", &[]).await, "versioned");
    assert_eq!(winner(&c, &ficus, "GET", "x", "/v42abc/domains/d1", &[]).await, "catchall");
    // `/r1` anywhere in the path, and `/x/r1` is more specific by its literal prefix than `/.*`.
    assert_eq!(winner(&c, &ficus, "GET", "x", "/x/r1", &[]).await, "unanchored");
    assert_eq!(winner(&c, &ficus, "GET", "x", "/stream-bytes/100", &[]).await, "stream");
}
