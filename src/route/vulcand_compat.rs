//! Compatibility with Vulcand's route language, case by case. Part of route/, test-only: the cases
//! are transcribed from the published tests of Vulcand's route library (`router_test.go`,
//! `parse_test.go`, `trie_test.go`, `utils_test.go`) and from the route section of Vulcand's user
//! manual (`docs/proxy.rst`): the expressions, the requests and the routes Vulcand picks are facts
//! about Vulcand, and each one is checked here against [`Router`] (and, for single routes,
//! [`RouteExpr::matches`]). Where Ficus deliberately differs the case is kept, asserting Ficus's
//! answer, under a test named for the difference; the "For Vulcand users" section of docs/ROUTES.md lists
//! the same differences with their reasons. Requests are built the way Vulcand's tests build
//! them: the host is given apart from the URL (empty when a case gives none), the method is `GET`
//! when a case gives none, and the path is what `http::Uri` (which the proxy's HTTP parser uses)
//! makes of the URL.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::{parse, Request, RouteSpec, Router};

/// A router over `(id, route)` pairs, each at priority 0; a match hands back its id.
fn router(routes: &[(&str, &str)]) -> Router<String> {
    Router::build(
        routes
            .iter()
            .map(|&(id, src)| RouteSpec {
                id: Arc::from(id),
                priority: 0,
                expr: parse(src).unwrap_or_else(|e| panic!("Vulcand accepts {src}, Ficus refused it: {e}")),
                value: id.to_owned(),
            })
            .collect(),
    )
}

/// One request of a case: the URL as Vulcand's `makeReq` takes it, plus method, host and headers.
#[derive(Clone, Copy)]
struct Try<'a> {
    url: &'a str,
    method: &'a str,
    host: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

/// A `GET` of `url` with no host and no headers, like a Vulcand test request given only a URL.
fn url(url: &str) -> Try<'_> {
    Try { url, method: "GET", host: "", headers: &[] }
}

impl<'a> Try<'a> {
    fn method(self, method: &'a str) -> Self {
        Try { method, ..self }
    }

    fn host(self, host: &'a str) -> Self {
        Try { host, ..self }
    }

    fn headers(self, headers: &'a [(&'a str, &'a str)]) -> Self {
        Try { headers, ..self }
    }

    /// The path (with any query) the proxy would hand the router for this URL.
    fn path(&self) -> String {
        let uri: Uri = self.url.parse().unwrap_or_else(|e| panic!("test URL {}: {e}", self.url));
        match uri.query() {
            Some(query) => format!("{}?{query}", uri.path()),
            None => uri.path().to_owned(),
        }
    }

    /// Runs `f` on this request as the router sees it, with `path` instead of the URL's.
    fn with_path<R>(&self, path: &str, f: impl FnOnce(&Request<'_>) -> R) -> R {
        let method = Method::from_bytes(self.method.as_bytes()).expect("test method");
        let mut headers = HeaderMap::new();
        for (name, value) in self.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        f(&Request { method: &method, host: self.host, path, headers: &headers })
    }

    fn with<R>(&self, f: impl FnOnce(&Request<'_>) -> R) -> R {
        self.with_path(&self.path(), f)
    }

    /// The id of the route `router` picks for this request.
    fn winner(&self, router: &Router<String>) -> Option<String> {
        self.with(|req| router.find(req).cloned())
    }
}

/// Asserts that each request goes to the route with the given id (`None`: no route).
fn check(routes: &[(&str, &str)], tries: &[(Try<'_>, Option<&str>)]) {
    let router = router(routes);
    for (t, want) in tries {
        assert_eq!(
            t.winner(&router).as_deref(),
            *want,
            "routes {routes:?}, {} {} host {:?} headers {:?}",
            t.method,
            t.url,
            t.host,
            t.headers
        );
    }
}

/// Asserts that one route matches one request, both alone and through a router.
fn matches_alone(route: &str, t: Try<'_>) {
    let expr = parse(route).unwrap_or_else(|e| panic!("Vulcand accepts {route}, Ficus refused it: {e}"));
    assert!(t.with(|req| expr.matches(req)), "{route} should match {} {} host {:?}", t.method, t.url, t.host);
    check(&[("only", route)], &[(t, Some("only"))]);
}

// ---- router_test.go -------------------------------------------------------------------------

#[test]
fn router_empty_table_matches_nothing() {
    check(&[], &[(url("http://google.com/blabla"), None)]);
}

#[test]
fn router_bad_expression_is_refused_and_the_rest_still_routes() {
    assert!(parse("blabla").is_err());
    check(&[("m", r#"Path("/r1")"#)], &[(url("http://google.com/r1"), Some("m"))]);
}

#[test]
fn router_match_cases() {
    // Simple trie path matching.
    check(
        &[("m1", r#"Path("/r1")"#), ("m2", r#"Path("/r2")"#)],
        &[
            (url("http://google.com/r1"), Some("m1")),
            (url("http://google.com/r2"), Some("m2")),
            (url("http://google.com/r3"), None),
        ],
    );
    check(&[("m1", r#"Path("/r1")"#)], &[(url("http://google.com/r3"), None)]);
    // Regexp path matching.
    check(
        &[("m1", r#"PathRegexp("/r1")"#), ("m2", r#"PathRegexp("/r2")"#)],
        &[
            (url("http://google.com/r1"), Some("m1")),
            (url("http://google.com/r2"), Some("m2")),
            (url("http://google.com/r3"), None),
        ],
    );
    // Mixed matching with trie and regexp.
    check(
        &[("m1", r#"PathRegexp("/r1")"#), ("m2", r#"Path("/r2")"#)],
        &[
            (url("http://google.com/r1"), Some("m1")),
            (url("http://google.com/r2"), Some("m2")),
            (url("http://google.com/r3"), None),
        ],
    );
    // The longest path matches.
    check(&[("m1", r#"Path("/r")"#), ("m2", r#"Path("/r/hello")"#)], &[(url("http://google.com/r/hello"), Some("m2"))]);
    // Method and path.
    check(
        &[("m1", r#"Method("POST") && Path("/r1")"#), ("m2", r#"Method("GET") && Path("/r1")"#)],
        &[
            (url("http://google.com/r1").method("POST"), Some("m1")),
            (url("http://google.com/r1").method("GET"), Some("m2")),
            (url("http://google.com/r1").method("PUT"), None),
        ],
    );
    check(
        &[
            ("m1", r#"Method("GET") && Path("/v1")"#),
            ("m2", r#"Method("GET") && Path("/v2")"#),
            ("m3", r#"Method("GET") && Path("/v3")"#),
        ],
        &[
            (url("http://google.com/v1"), Some("m1")),
            (url("http://google.com/v2"), Some("m2")),
            (url("http://google.com/v3"), Some("m3")),
        ],
    );
    // Method, path and host name; same method and path.
    check(
        &[
            ("m1", r#"Host("h1") && Method("POST") && Path("/r1")"#),
            ("m2", r#"Host("h2") && Method("POST") && Path("/r1")"#),
        ],
        &[
            (url("http://h1/r1").method("POST").host("h1"), Some("m1")),
            (url("http://h2/r1").method("POST").host("h2"), Some("m2")),
            (url("http://h2/r1").method("GET").host("h2"), None),
            (url("http://h2/r1").method("GET"), None),
        ],
    );
    check(
        &[
            ("m1", r#"Host("h1") && Method("POST") && Path("/r1")"#),
            ("m2", r#"Host("h2") && Method("GET") && Path("/r1")"#),
        ],
        &[
            (url("http://h1/r1").method("POST").host("h1"), Some("m1")),
            (url("http://h2/r1").method("GET").host("h2"), Some("m2")),
            (url("http://h2/r1").method("GET"), None),
        ],
    );
    // Host and host regexp mixed.
    check(
        &[
            ("m1", r#"Host("h1") && Method("POST") && Path("/r1")"#),
            ("m2", r#"HostRegexp("h2") && Method("POST") && Path("/r1")"#),
        ],
        &[
            (url("http://h1/r1").method("POST").host("h1"), Some("m1")),
            (url("http://h2/r1").method("POST").host("h2"), Some("m2")),
        ],
    );
    // Header and header regexp.
    let json = &[("Content-Type", "application/json")];
    check(
        &[
            ("m1", r#"Host("h1") && Method("POST") && Path("/r1")"#),
            ("m2", r#"Host("h2") && Method("POST") && Path("/r1") && Header("Content-Type", "application/json")"#),
        ],
        &[
            (url("http://h1/r1").method("POST").host("h1"), Some("m1")),
            (url("http://h2/r1").method("POST").host("h2").headers(json), Some("m2")),
        ],
    );
    check(
        &[
            ("m1", r#"Host("h1") && Method("POST") && Path("/r1")"#),
            ("m2", r#"Host("h2") && Method("POST") && Path("/r1") && HeaderRegexp("Content-Type", "application/.*")"#),
        ],
        &[
            (url("http://h1/r1").method("POST").host("h1"), Some("m1")),
            (url("http://h2/r1").method("POST").host("h2").headers(json), Some("m2")),
        ],
    );
    // No overlap between the method and what follows it.
    check(
        &[("m1", r#"Host("h1") && Method("POST") && Path("/r1")"#)],
        &[(url("http://h/r1").method("1POST").host("h"), None)],
    );
}

/// Vulcand's router test of the GitHub API, `:name` marking a parameter.
const GITHUB_API: &[(&str, &str)] = &[
    // OAuth Authorizations
    ("GET", "/authorizations"),
    ("GET", "/authorizations/:id"),
    ("POST", "/authorizations"),
    ("DELETE", "/authorizations/:id"),
    ("GET", "/applications/:client_id/tokens/:access_token"),
    ("DELETE", "/applications/:client_id/tokens"),
    ("DELETE", "/applications/:client_id/tokens/:access_token"),
    // Activity
    ("GET", "/events"),
    ("GET", "/repos/:owner/:repo/events"),
    ("GET", "/networks/:owner/:repo/events"),
    ("GET", "/orgs/:org/events"),
    ("GET", "/users/:user/received_events"),
    ("GET", "/users/:user/received_events/public"),
    ("GET", "/users/:user/events"),
    ("GET", "/users/:user/events/public"),
    ("GET", "/users/:user/events/orgs/:org"),
    ("GET", "/feeds"),
    ("GET", "/notifications"),
    ("GET", "/repos/:owner/:repo/notifications"),
    ("PUT", "/notifications"),
    ("PUT", "/repos/:owner/:repo/notifications"),
    ("GET", "/notifications/threads/:id"),
    ("GET", "/notifications/threads/:id/subscription"),
    ("PUT", "/notifications/threads/:id/subscription"),
    ("DELETE", "/notifications/threads/:id/subscription"),
    ("GET", "/repos/:owner/:repo/stargazers"),
    ("GET", "/users/:user/starred"),
    ("GET", "/user/starred"),
    ("GET", "/user/starred/:owner/:repo"),
    ("PUT", "/user/starred/:owner/:repo"),
    ("DELETE", "/user/starred/:owner/:repo"),
    ("GET", "/repos/:owner/:repo/subscribers"),
    ("GET", "/users/:user/subscriptions"),
    ("GET", "/user/subscriptions"),
    ("GET", "/repos/:owner/:repo/subscription"),
    ("PUT", "/repos/:owner/:repo/subscription"),
    ("DELETE", "/repos/:owner/:repo/subscription"),
    ("GET", "/user/subscriptions/:owner/:repo"),
    ("PUT", "/user/subscriptions/:owner/:repo"),
    ("DELETE", "/user/subscriptions/:owner/:repo"),
    // Gists
    ("GET", "/users/:user/gists"),
    ("GET", "/gists"),
    ("GET", "/gists/:id"),
    ("POST", "/gists"),
    ("PUT", "/gists/:id/star"),
    ("DELETE", "/gists/:id/star"),
    ("GET", "/gists/:id/star"),
    ("POST", "/gists/:id/forks"),
    ("DELETE", "/gists/:id"),
    // Git Data
    ("GET", "/repos/:owner/:repo/git/blobs/:sha"),
    ("POST", "/repos/:owner/:repo/git/blobs"),
    ("GET", "/repos/:owner/:repo/git/commits/:sha"),
    ("POST", "/repos/:owner/:repo/git/commits"),
    ("GET", "/repos/:owner/:repo/git/refs"),
    ("POST", "/repos/:owner/:repo/git/refs"),
    ("GET", "/repos/:owner/:repo/git/tags/:sha"),
    ("POST", "/repos/:owner/:repo/git/tags"),
    ("GET", "/repos/:owner/:repo/git/trees/:sha"),
    ("POST", "/repos/:owner/:repo/git/trees"),
    // Issues
    ("GET", "/issues"),
    ("GET", "/user/issues"),
    ("GET", "/orgs/:org/issues"),
    ("GET", "/repos/:owner/:repo/issues"),
    ("GET", "/repos/:owner/:repo/issues/:number"),
    ("POST", "/repos/:owner/:repo/issues"),
    ("GET", "/repos/:owner/:repo/assignees"),
    ("GET", "/repos/:owner/:repo/assignees/:assignee"),
    ("GET", "/repos/:owner/:repo/issues/:number/comments"),
    ("POST", "/repos/:owner/:repo/issues/:number/comments"),
    ("GET", "/repos/:owner/:repo/issues/:number/events"),
    ("GET", "/repos/:owner/:repo/labels"),
    ("GET", "/repos/:owner/:repo/labels/:name"),
    ("POST", "/repos/:owner/:repo/labels"),
    ("DELETE", "/repos/:owner/:repo/labels/:name"),
    ("GET", "/repos/:owner/:repo/issues/:number/labels"),
    ("POST", "/repos/:owner/:repo/issues/:number/labels"),
    ("DELETE", "/repos/:owner/:repo/issues/:number/labels/:name"),
    ("PUT", "/repos/:owner/:repo/issues/:number/labels"),
    ("DELETE", "/repos/:owner/:repo/issues/:number/labels"),
    ("GET", "/repos/:owner/:repo/milestones/:number/labels"),
    ("GET", "/repos/:owner/:repo/milestones"),
    ("GET", "/repos/:owner/:repo/milestones/:number"),
    ("POST", "/repos/:owner/:repo/milestones"),
    ("DELETE", "/repos/:owner/:repo/milestones/:number"),
    // Miscellaneous
    ("GET", "/emojis"),
    ("GET", "/gitignore/templates"),
    ("GET", "/gitignore/templates/:name"),
    ("POST", "/markdown"),
    ("POST", "/markdown/raw"),
    ("GET", "/meta"),
    ("GET", "/rate_limit"),
    // Organizations
    ("GET", "/users/:user/orgs"),
    ("GET", "/user/orgs"),
    ("GET", "/orgs/:org"),
    ("GET", "/orgs/:org/members"),
    ("GET", "/orgs/:org/members/:user"),
    ("DELETE", "/orgs/:org/members/:user"),
    ("GET", "/orgs/:org/public_members"),
    ("GET", "/orgs/:org/public_members/:user"),
    ("PUT", "/orgs/:org/public_members/:user"),
    ("DELETE", "/orgs/:org/public_members/:user"),
    ("GET", "/orgs/:org/teams"),
    ("GET", "/teams/:id"),
    ("POST", "/orgs/:org/teams"),
    ("DELETE", "/teams/:id"),
    ("GET", "/teams/:id/members"),
    ("GET", "/teams/:id/members/:user"),
    ("PUT", "/teams/:id/members/:user"),
    ("DELETE", "/teams/:id/members/:user"),
    ("GET", "/teams/:id/repos"),
    ("GET", "/teams/:id/repos/:owner/:repo"),
    ("PUT", "/teams/:id/repos/:owner/:repo"),
    ("DELETE", "/teams/:id/repos/:owner/:repo"),
    ("GET", "/user/teams"),
    // Pull Requests
    ("GET", "/repos/:owner/:repo/pulls"),
    ("GET", "/repos/:owner/:repo/pulls/:number"),
    ("POST", "/repos/:owner/:repo/pulls"),
    ("GET", "/repos/:owner/:repo/pulls/:number/commits"),
    ("GET", "/repos/:owner/:repo/pulls/:number/files"),
    ("GET", "/repos/:owner/:repo/pulls/:number/merge"),
    ("PUT", "/repos/:owner/:repo/pulls/:number/merge"),
    ("GET", "/repos/:owner/:repo/pulls/:number/comments"),
    ("PUT", "/repos/:owner/:repo/pulls/:number/comments"),
    // Repositories
    ("GET", "/user/repos"),
    ("GET", "/users/:user/repos"),
    ("GET", "/orgs/:org/repos"),
    ("GET", "/repositories"),
    ("POST", "/user/repos"),
    ("POST", "/orgs/:org/repos"),
    ("GET", "/repos/:owner/:repo"),
    ("GET", "/repos/:owner/:repo/contributors"),
    ("GET", "/repos/:owner/:repo/languages"),
    ("GET", "/repos/:owner/:repo/teams"),
    ("GET", "/repos/:owner/:repo/tags"),
    ("GET", "/repos/:owner/:repo/branches"),
    ("GET", "/repos/:owner/:repo/branches/:branch"),
    ("DELETE", "/repos/:owner/:repo"),
    ("GET", "/repos/:owner/:repo/collaborators"),
    ("GET", "/repos/:owner/:repo/collaborators/:user"),
    ("PUT", "/repos/:owner/:repo/collaborators/:user"),
    ("DELETE", "/repos/:owner/:repo/collaborators/:user"),
    ("GET", "/repos/:owner/:repo/comments"),
    ("GET", "/repos/:owner/:repo/commits/:sha/comments"),
    ("POST", "/repos/:owner/:repo/commits/:sha/comments"),
    ("GET", "/repos/:owner/:repo/comments/:id"),
    ("DELETE", "/repos/:owner/:repo/comments/:id"),
    ("GET", "/repos/:owner/:repo/commits"),
    ("GET", "/repos/:owner/:repo/commits/:sha"),
    ("GET", "/repos/:owner/:repo/readme"),
    ("GET", "/repos/:owner/:repo/keys"),
    ("GET", "/repos/:owner/:repo/keys/:id"),
    ("POST", "/repos/:owner/:repo/keys"),
    ("DELETE", "/repos/:owner/:repo/keys/:id"),
    ("GET", "/repos/:owner/:repo/downloads"),
    ("GET", "/repos/:owner/:repo/downloads/:id"),
    ("DELETE", "/repos/:owner/:repo/downloads/:id"),
    ("GET", "/repos/:owner/:repo/forks"),
    ("POST", "/repos/:owner/:repo/forks"),
    ("GET", "/repos/:owner/:repo/hooks"),
    ("GET", "/repos/:owner/:repo/hooks/:id"),
    ("POST", "/repos/:owner/:repo/hooks"),
    ("POST", "/repos/:owner/:repo/hooks/:id/tests"),
    ("DELETE", "/repos/:owner/:repo/hooks/:id"),
    ("POST", "/repos/:owner/:repo/merges"),
    ("GET", "/repos/:owner/:repo/releases"),
    ("GET", "/repos/:owner/:repo/releases/:id"),
    ("POST", "/repos/:owner/:repo/releases"),
    ("DELETE", "/repos/:owner/:repo/releases/:id"),
    ("GET", "/repos/:owner/:repo/releases/:id/assets"),
    ("GET", "/repos/:owner/:repo/stats/contributors"),
    ("GET", "/repos/:owner/:repo/stats/commit_activity"),
    ("GET", "/repos/:owner/:repo/stats/code_frequency"),
    ("GET", "/repos/:owner/:repo/stats/participation"),
    ("GET", "/repos/:owner/:repo/stats/punch_card"),
    ("GET", "/repos/:owner/:repo/statuses/:ref"),
    ("POST", "/repos/:owner/:repo/statuses/:ref"),
    // Search
    ("GET", "/search/repositories"),
    ("GET", "/search/code"),
    ("GET", "/search/issues"),
    ("GET", "/search/users"),
    ("GET", "/legacy/issues/search/:owner/:repository/:state/:keyword"),
    ("GET", "/legacy/repos/search/:keyword"),
    ("GET", "/legacy/user/search/:keyword"),
    ("GET", "/legacy/user/email/:email"),
    // Users
    ("GET", "/users/:user"),
    ("GET", "/user"),
    ("GET", "/users"),
    ("GET", "/user/emails"),
    ("POST", "/user/emails"),
    ("DELETE", "/user/emails"),
    ("GET", "/users/:user/followers"),
    ("GET", "/user/followers"),
    ("GET", "/users/:user/following"),
    ("GET", "/user/following"),
    ("GET", "/user/following/:user"),
    ("GET", "/users/:user/following/:target_user"),
    ("PUT", "/user/following/:user"),
    ("DELETE", "/user/following/:user"),
    ("GET", "/users/:user/keys"),
    ("GET", "/user/keys"),
    ("GET", "/user/keys/:id"),
    ("POST", "/user/keys"),
    ("DELETE", "/user/keys/:id"),
];

/// `Method("GET") && Path("/a/<id>")` for `("GET", "/a/:id")`, as Vulcand's test writes it.
fn github_route(method: &str, path: &str) -> String {
    let path: Vec<String> = path
        .split('/')
        .map(|segment| match segment.strip_prefix(':') {
            Some(name) => format!("<{name}>"),
            None => segment.to_owned(),
        })
        .collect();
    format!(r#"Method("{method}") && Path("{}")"#, path.join("/"))
}

#[test]
fn router_github_api() {
    let routes: Vec<String> = GITHUB_API.iter().map(|(method, path)| github_route(method, path)).collect();
    // Each route is its own id, so the winner names the route.
    let pairs: Vec<(&str, &str)> = routes.iter().map(|r| (r.as_str(), r.as_str())).collect();
    let router = router(&pairs);
    assert_eq!(router.len(), GITHUB_API.len(), "every route is distinct");
    for ((method, path), route) in GITHUB_API.iter().zip(&routes) {
        // Vulcand's test sends the pattern path itself: `:id` is a segment like any other.
        let t = url(path).method(method);
        assert_eq!(t.winner(&router).as_deref(), Some(route.as_str()), "{method} {path}");
    }
}

// ---- parse_test.go --------------------------------------------------------------------------

#[test]
fn parse_and_match_success() {
    let json: &[(&str, &str)] = &[("Content-Type", "application/json")];
    let local = |u| url(u).host("localhost");
    let cases: &[(&str, Try<'_>)] = &[
        // Trie cases.
        (r#"Path("/helloworld")"#, local("http://google.com/helloworld")),
        (r#"Method("GET") && Path("/helloworld")"#, local("http://google.com/helloworld")),
        (r#"Path("/hello/<world>")"#, local("http://google.com/hello/world")),
        (r#"Method("POST") &&  Path("/helloworld%2F")"#, local("http://google.com/helloworld%2F").method("POST")),
        (r#"Method("POST") && Path("/helloworld%2F")"#, local("http://google.com/helloworld%2F?q=b").method("POST")),
        (r#"Method("POST") && Path("/helloworld/<name>")"#, local("http://google.com/helloworld/%2F").method("POST")),
        (
            r#"Method("POST") && Path("/helloworld/<path:name>")"#,
            local("http://google.com/helloworld/some/name").method("POST"),
        ),
        (
            r#"Method("POST") && Path("/escaped/<path:name>")"#,
            local("http://google.com/escaped/some%2Fpath").method("POST"),
        ),
        (r#"Path("/helloworld")"#, local("http://google.com/helloworld")),
        (r#"Method("POST") && Path("/helloworld")"#, local("http://google.com/helloworld").method("POST")),
        (
            r#"Host("localhost") && Method("POST") && Path("/helloworld")"#,
            local("http://google.com/helloworld").method("POST"),
        ),
        (
            r#"Host("<subdomain>.localhost") && Method("POST") && Path("/helloworld")"#,
            url("http://google.com/helloworld").method("POST").host("a.localhost"),
        ),
        (
            r#"Host("<sub1>.<sub2>.localhost") && Method("POST") && Path("/helloworld")"#,
            url("http://google.com/helloworld").method("POST").host("a.b.localhost"),
        ),
        (
            r#"Header("Content-Type", "application/json")"#,
            url("http://google.com/helloworld").method("POST").headers(json),
        ),
        (
            r#"Header("Content-Type", "application/<string>")"#,
            url("http://google.com/helloworld").method("POST").headers(json),
        ),
        (
            r#"Host("<sub1>.<sub2>.localhost") && Method("POST") && Path("/helloworld") && Header("Content-Type", "application/<string>")"#,
            url("http://google.com/helloworld").method("POST").host("a.b.localhost").headers(json),
        ),
        // Regexp cases.
        (r#"PathRegexp("/helloworld")"#, local("http://google.com/helloworld")),
        (
            r#"HostRegexp("[^\\.]+\\.localhost") && Method("POST") && PathRegexp("/hello.*")"#,
            url("http://google.com/helloworld").method("POST").host("a.localhost"),
        ),
        // Unanchored: `[^.]+\.localhost` finds `b.localhost` inside `a.b.localhost`.
        (
            r#"HostRegexp("[^\\.]+\\.localhost") && Method("POST") && PathRegexp("/hello.*") && HeaderRegexp("Content-Type", "application/.+")"#,
            url("http://google.com/helloworld").method("POST").host("a.b.localhost").headers(json),
        ),
    ];
    for (route, t) in cases {
        matches_alone(route, *t);
    }
}

#[test]
fn parse_failures() {
    for route in [
        "bad",
        "bad expression",
        r#"Path("/path") || Path("/path2")"#,
        "1 && 2",
        r#""standalone literal""#,
        r#"UnknownFunction("hi")"#,
        "Path(1)",
        "RegexpRoute(1)",
        "Path()",
        "PathRegexp()",
        r#"Path(Path("hello"))"#,
        r#"Path("")"#,
        r#"PathRegexp("[[[[")"#,
    ] {
        assert!(parse(route).is_err(), "Vulcand refuses {route}, so must Ficus");
    }
}

// ---- trie_test.go ---------------------------------------------------------------------------

#[test]
fn trie_root_matches_a_url_without_a_path() {
    matches_alone(r#"Path("/")"#, url("http://google.com"));
}

#[test]
fn trie_parse_failures() {
    for path in ["", "/<uint8:hi>", "/<string:hi:omg:hello>"] {
        let route = format!(r#"Path("{path}")"#);
        assert!(parse(&route).is_err(), "Vulcand refuses {route}, so must Ficus");
    }
}

#[test]
fn trie_merges() {
    // Common prefix.
    check(
        &[("v1", r#"Path("/a")"#), ("v2", r#"Path("/b")"#)],
        &[(url("http://google.com/a"), Some("v1")), (url("http://google.com/b"), Some("v2"))],
    );
    // One path a prefix of the other.
    check(
        &[("v1", r#"Path("/aa")"#), ("v2", r#"Path("/a")"#)],
        &[
            (url("http://google.com/aa"), Some("v1")),
            (url("http://google.com/a"), Some("v2")),
            (url("http://google.com/b"), None),
        ],
    );
    // A common parameter.
    check(
        &[("v1", r#"Path("/a/<string:name>/b")"#), ("v2", r#"Path("/a/<string:name>/c")"#)],
        &[
            (url("http://google.com/a/bla/b"), Some("v1")),
            (url("http://google.com/a/bla/c"), Some("v2")),
            (url("http://google.com/a/"), None),
        ],
    );
    // Diverging parameter names.
    check(
        &[("v1", r#"Path("/a/<string:name1>/b")"#), ("v2", r#"Path("/a/<string:name2>/c")"#)],
        &[
            (url("http://google.com/a/bla/b"), Some("v1")),
            (url("http://google.com/a/bla/c"), Some("v2")),
            (url("http://google.com/a/"), None),
        ],
    );
}

#[test]
fn trie_merge_and_match_cases() {
    // (routes in the order Vulcand merges them, URL, the route that wins)
    let cases: &[(&[&str], &str, &str)] = &[
        (&["/"], "http://google.com/", "/"),
        (&["/"], "http://google.com", "/"),
        (&["/v2/domains/", "/v2/domains/domain1"], "http://google.com/v2/domains/domain1", "/v2/domains/domain1"),
        (
            &["/v1/domains/<string:name>", "/v2/domains/<string:name>"],
            "http://google.com/v2/domains/domain1",
            "/v2/domains/<string:name>",
        ),
        (
            &["/v<int:version>/domains/<string:name>"],
            "http://google.com/v42/domains/domain1",
            "/v<int:version>/domains/<string:name>",
        ),
        (
            &["/v<int:version>/domains/<int:name>"],
            "http://google.com/v42/domains/1",
            "/v<int:version>/domains/<int:name>",
        ),
        (
            &["/v<int:version>/domains/<string:name>", "/<string:version>/domains/<string:name>"],
            "http://google.com/v42abc/domains/domain1",
            "/<string:version>/domains/<string:name>",
        ),
        (
            &["/v1/domains/<domain>", "/v2/users/<user>/mailboxes/<mbx>"],
            "http://google.com/v2/users/u1/mailboxes/mbx1",
            "/v2/users/<user>/mailboxes/<mbx>",
        ),
    ];
    for (paths, u, want) in cases {
        let routes: Vec<(String, String)> =
            paths.iter().map(|p| ((*p).to_owned(), format!(r#"Path("{p}")"#))).collect();
        let pairs: Vec<(&str, &str)> = routes.iter().map(|(id, r)| (id.as_str(), r.as_str())).collect();
        check(&pairs, &[(url(u), Some(want))]);
    }
}

#[test]
fn trie_something_that_looks_like_a_pattern_but_is_not() {
    // The path reaches the router only in tests: on the wire the HTTP parser refuses a raw `<`
    // (see `a_raw_angle_bracket_in_the_request_target_is_refused_before_routing`).
    let router = router(&[("/v1/<hello", r#"Path("/v1/<hello")"#)]);
    let found = url("http://google.com/").with_path("/v1/<hello", |req| router.find(req).cloned());
    assert_eq!(found.as_deref(), Some("/v1/<hello"));
}

#[test]
fn trie_chains() {
    check(&[("v1", r#"Method("GET") && Path("/v1")"#)], &[(url("http://localhost/v1"), Some("v1"))]);
    check(
        &[("v2", r#"Host("h1") && Method("GET") && Path("/v1")"#)],
        &[(url("http://localhost/v1").host("h1"), Some("v2"))],
    );
}

// ---- utils_test.go --------------------------------------------------------------------------

#[test]
fn raw_path_is_the_path_without_the_query() {
    for (u, path) in [
        ("http://google.com/", "/"),
        ("http://google.com/a?q=b", "/a"),
        ("http://google.com/%2Fvalue/hello", "/%2Fvalue/hello"),
        ("/home", "/home"),
        ("/home?a=b", "/home"),
        ("/home%2F", "/home%2F"),
        ("/oauth/callback?scope=email%20https://www.googleapis.com/auth/userinfo.email%20openid", "/oauth/callback"),
    ] {
        matches_alone(&format!(r#"Path("{path}")"#), url(u));
    }
}

// ---- docs/proxy.rst, "Route" and "Routing Language" -----------------------------------------

#[test]
fn manual_examples() {
    let json: &[(&str, &str)] = &[("Content-Type", "application/json")];
    let cases: &[(&str, Try<'_>)] = &[
        (r#"Host("<user>.example.com")"#, url("/").host("alice.example.com")),
        (r#"HostRegexp(".*.example.com")"#, url("/").host("alice.example.com")),
        (r#"Path("/v1/users/<user>")"#, url("/v1/users/alice")),
        (r#"Method("POST") && Path("/v1/users")"#, url("/v1/users").method("POST")),
        (r#"PathRegexp("/v1/users/.*")"#, url("/v1/users/alice")),
        (r#"MethodRegexp("DELETE|GET") && PathRegexp("/v1/users/.*")"#, url("/v1/users/alice").method("DELETE")),
        (r#"MethodRegexp("DELETE|GET") && PathRegexp("/v1/users/.*")"#, url("/v1/users/alice")),
        (r#"Header("Content-Type", "application/<subtype>")"#, url("/").headers(json)),
        (r#"HeaderRegexp("Content-Type", "application/.*")"#, url("/").headers(json)),
        // `Matcher("<string>.value")` uses trie-based matching for a.value and b.value.
        (r#"Host("<string>.value")"#, url("/").host("a.value")),
        (r#"Host("<string>.value")"#, url("/").host("b.value")),
        (r#"Host("<subdomain>.localhost")"#, url("/").host("a.localhost")),
        (r#"Host("<subdomain>.localhost")"#, url("/").host("b.localhost")),
        (r#"HostRegexp(".*localhost")"#, url("/").host("a.localhost")),
        (r#"Path("/hello/<value>")"#, url("/hello/world")),
        (r#"PathRegexp("/hello/.*")"#, url("/hello/world")),
        (r#"Method("GET")"#, url("/")),
        (r#"MethodRegexp("POST|PUT")"#, url("/").method("PUT")),
        (r#"Host("localhost") && Method("POST") && Path("/v1")"#, url("/v1").method("POST").host("localhost")),
        (r#"PathRegexp("/.*")"#, url("/hello").host("example.com")),
        (r#"PathRegexp("/.*")"#, url("/hello").host("hello.com")),
        (r#"Host("example.com") && PathRegexp("/.*")"#, url("/hello").host("example.com")),
    ];
    for (route, t) in cases {
        matches_alone(route, *t);
    }
    check(&[("vhost", r#"Host("example.com") && PathRegexp("/.*")"#)], &[(url("/hello").host("hello.com"), None)]);
    check(
        &[
            ("post-v1", r#"Host("localhost") && Method("POST") && Path("/v1")"#),
            ("get-v2", r#"Host("localhost") && Method("GET") && Path("/v2")"#),
            ("get-v2-re", r#"Host("localhost") && Method("GET") && PathRegexp("/v2/.*")"#),
        ],
        &[
            (url("/v1").method("POST").host("localhost"), Some("post-v1")),
            (url("/v2").host("localhost"), Some("get-v2")),
            (url("/v2/x").host("localhost"), Some("get-v2-re")),
            (url("/v1").host("localhost"), None),
        ],
    );
    check(
        &[
            ("create", r#"Host("localhost") && Method("POST") && Path("/users")"#),
            ("list", r#"Host("localhost") && Method("GET") && Path("/users")"#),
        ],
        &[
            (url("/users").method("POST").host("localhost"), Some("create")),
            (url("/users").host("localhost"), Some("list")),
        ],
    );
}

// ---- The semantics the issue confirmed by hand against Vulcand ------------------------------

#[test]
fn regexps_are_unanchored_unless_they_anchor_themselves() {
    matches_alone(r#"HostRegexp("[^\\.]+\\.localhost")"#, url("/").host("a.b.localhost"));
    matches_alone(r#"PathRegexp("/r1")"#, url("/x/r1"));
    matches_alone(r#"MethodRegexp("GET")"#, url("/").method("XGETX"));
    check(
        &[("anchored", r#"PathRegexp("^/r1$")"#)],
        &[(url("/x/r1"), None), (url("/r1/x"), None), (url("/r1"), Some("anchored"))],
    );
}

#[test]
fn headers_are_matched_on_their_first_value() {
    let route = r#"Header("X-Canary", "1")"#;
    check(
        &[("canary", route)],
        &[
            (url("/").headers(&[("X-Canary", "1"), ("X-Canary", "0")]), Some("canary")),
            (url("/").headers(&[("X-Canary", "0"), ("X-Canary", "1")]), None),
        ],
    );
    check(
        &[("ct", r#"Header("Content-Type", "<string>/<string>")"#)],
        &[
            (url("/").headers(&[("Content-Type", "text/html")]), Some("ct")),
            (url("/").headers(&[("Content-Type", "text")]), None),
        ],
    );
}

// ---- Deliberate differences (each listed, with its reason, in docs/ROUTES.md) -------------

#[test]
fn difference_precedence_never_depends_on_load_order() {
    // Vulcand's `TestMergeTriesWithSamePath`: two routes with one path, and the one added first
    // wins. Ficus decides by the rules, here the smaller id, in either order.
    for routes in
        [[("v1", r#"Path("/a")"#), ("v2", r#"Path("/a")"#)], [("v2", r#"Path("/a")"#), ("v1", r#"Path("/a")"#)]]
    {
        check(&routes, &[(url("http://google.com/a"), Some("v1"))]);
    }
    // The more specific regexp wins over a catch-all, whatever the ids.
    check(
        &[("catchall", r#"PathRegexp("/.*")"#), ("stream", r#"PathRegexp("/stream-bytes/.*")"#)],
        &[(url("/stream-bytes/100"), Some("stream")), (url("/other"), Some("catchall"))],
    );
    // And a specific `Path` beats a catch-all regexp however the regexp is written.
    check(
        &[("a-catchall", r#"PathRegexp("/.*")"#), ("specific", r#"Path("/stores/1")"#)],
        &[(url("/stores/1"), Some("specific")), (url("/stores/2"), Some("a-catchall"))],
    );
}

#[test]
fn difference_patterns_never_match_an_empty_segment() {
    // Vulcand's `<string>` and `<int>` take zero or more characters, so `/hello/` matches
    // `Path("/hello/<value>")` there.
    check(&[("hello", r#"Path("/hello/<value>")"#)], &[(url("/hello/"), None), (url("/hello/x"), Some("hello"))]);
    check(&[("v", r#"Path("/v<int:n>")"#)], &[(url("/v"), None), (url("/v1"), Some("v"))]);
    // A missing header is not an empty value.
    check(
        &[("h", r#"HeaderRegexp("X-Debug", ".*")"#)],
        &[(url("/"), None), (url("/").headers(&[("X-Debug", "")]), Some("h"))],
    );
}

#[test]
fn difference_text_after_a_pattern_is_refused() {
    // Vulcand loads these and never matches them (a pattern takes the rest of its segment).
    for route in [r#"Path("/<name>.json")"#, r#"Path("/v<int:n>x/y")"#, r#"Host("<a>-b.example.com")"#] {
        let err = parse(route).expect_err(route).to_string();
        assert!(err.contains("nothing may follow it"), "{route}: {err}");
    }
}

#[test]
fn difference_host_regexps_are_case_insensitive_as_written() {
    // Vulcand lower-cases the regexp's source, which turns `\D` into `\d`; Ficus keeps the
    // regexp as written and matches it case-insensitively against the lower-cased host.
    check(&[("re", r#"HostRegexp("^\D+\.example\.com$")"#)], &[(url("/").host("API.example.com"), Some("re"))]);
}

#[test]
fn a_raw_angle_bracket_in_the_request_target_is_refused_before_routing() {
    // Not a choice made here: the `http` crate's URI parser, which hyper uses for every request
    // line, refuses `<`, `>` and backticks in a path, so such requests get a 400 before any route
    // is consulted. Go's server passes them through. Percent-encoded (`%3C`), the request parses
    // but does not match a route with a literal `<` (neither does it in Vulcand, which matches
    // the raw path). This test fails, as a reminder, the day the parser starts accepting it.
    assert!("/v1/<hello".parse::<Uri>().is_err());
    assert!("/v1/%3Chello".parse::<Uri>().is_ok());
}
