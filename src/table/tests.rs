//! The layered index (base, masked routes, overlay) must answer every request exactly as one index built from
//! scratch over the same config would, through any sequence of changes and compactions.

use super::*;
use crate::model::{Change, ConfigState};
use crate::test_rng::Rng;

const ROUTES: &[&str] = &[
    "Path(`/a`)",
    "PathPrefix(`/`)",
    "PathPrefix(`/a`)",
    "Host(`x.com`) && Path(`/a`)",
    "Host(`x.com`)",
    "HostRegexp(`.*\\\\.com`) && PathPrefix(`/`)",
    "Header(`X-C`, `1`) && Path(`/a`)",
    "Method(`POST`) && PathPrefix(`/a`)",
    "PathRegexp(`/a.*`)",
    "Host(`<sub>.b.com`) && PathPrefix(`/b`)",
    "Path(`/a/<id>`)",
    "Host(`y.com`) && PathPrefix(`/b`)",
];

fn put(key: String, value: String) -> Change {
    Change::Put { key, value: value.into_bytes() }
}

fn probes() -> Vec<(http::Method, &'static str, &'static str, http::HeaderMap)> {
    let mut canary = http::HeaderMap::new();
    canary.insert("x-c", http::HeaderValue::from_static("1"));
    let mut out = Vec::new();
    for host in ["x.com", "y.com", "a.b.com", "other.org"] {
        for path in ["/", "/a", "/a/1", "/ab", "/b", "/bx"] {
            for method in [http::Method::GET, http::Method::POST] {
                for headers in [http::HeaderMap::new(), canary.clone()] {
                    out.push((method.clone(), host, path, headers));
                }
            }
        }
    }
    out
}

#[test]
fn layered_index_answers_as_a_fresh_index() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut state = ConfigState::new();
    let registry = Registry::new();
    let mut compiler = Compiler::new();
    for b in ["b0", "b1"] {
        state.apply(put(format!("backends/{b}/backend"), r#"{"Type":"http"}"#.into())).expect("backend");
        state.apply(put(format!("backends/{b}/servers/s1"), r#"{"URL":"http://127.0.0.1:9"}"#.into())).expect("server");
    }
    let probes = probes();
    let mut compactions = 0;
    // Two empty routers agree on everything: these show the comparison ran over real routes.
    let (mut most_routes, mut routed) = (0, 0);
    let mut table = RoutingTable::empty();
    for step in 0..1200u64 {
        let id = format!("f{}", rng.next() % 30);
        match rng.next() % 10 {
            0 => {
                state.apply(Change::Delete { key: format!("frontends/{id}/frontend") }).expect("delete");
            }
            1 => {
                let port = 1000 + rng.next() % 5;
                let b = rng.pick(&["b0", "b1"]);
                state
                    .apply(put(format!("backends/{b}/servers/s2"), format!(r#"{{"URL":"http://127.0.0.1:{port}"}}"#)))
                    .expect("server");
            }
            _ => {
                let route = rng.pick(ROUTES).replace('`', "\\\"");
                let priority = rng.pick(&[-1, 0, 0, 0, 1]);
                let backend = rng.pick(&["b0", "b1"]);
                let v = format!(r#"{{"Type":"http","BackendId":"{backend}","Route":"{route}","Priority":{priority}}}"#);
                state.apply(put(format!("frontends/{id}/frontend"), v)).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let validation = state.validate();
        assert!(validation.errors.is_empty(), "step {step}: {:?}", validation.errors);
        let config = Arc::new(validation.config);
        let (next, retired) = compiler.compile(config.clone(), &validation.delta, step + 1, &registry);
        registry.retire(retired);
        table = next;
        if rng.next() % 50 == 0 {
            compactions += 1;
            table.router = compiler.compact();
        }

        let fresh: Router<Arc<str>> = Router::build(
            config
                .frontends
                .iter()
                .map(|(id, f)| RouteSpec {
                    id: id.as_str().into(),
                    priority: f.priority,
                    expr: f.expr.clone(),
                    value: id.as_str().into(),
                })
                .collect(),
        );
        assert_eq!(table.router.len(), config.frontends.len());
        most_routes = most_routes.max(table.router.len());
        for (method, host, path, headers) in &probes {
            let req = Request { method, host, path, headers };
            let want = fresh.find(&req).map(|id| id.to_string());
            let got = table.router.find(&req).map(|f| f.id.to_string());
            routed += usize::from(got.is_some());
            assert_eq!(got, want, "step {step}: {method} {host}{path} {headers:?}");
        }
        // Every split reaches the backend it names, as the config has it now, whether or not the frontend was
        // recompiled since the backend changed.
        for f in table.router.frontends() {
            for at in f.split.items() {
                let b = table.router.backend(at).expect("the split's backend is in the table");
                assert_eq!(b.id, at.id, "step {step}");
                let spec = config.backends.get(&*at.id).expect("the split's backend is in the config");
                let want: Vec<&str> = spec.servers.iter().filter(|s| !s.draining).map(|s| s.url.as_str()).collect();
                let got: Vec<&str> = b.servers.items().iter().map(|s| s.url.as_str()).collect();
                assert_eq!(got, want, "step {step}: frontend {}", f.id);
            }
        }
    }
    assert!(most_routes >= 20, "at most {most_routes} routes at once");
    assert!(routed > 1200 * probes.len() / 2, "only {routed} probes routed");
    assert!(compactions > 10);
    // Enough route changes that the overlay also folded into the base by itself.
    assert!(table.router.pending() <= COMPACT_AT);
}

/// The servers of the backend a frontend's split names in table `t`.
fn urls(t: &RoutingTable, f: &Frontend) -> Vec<String> {
    let b = t.router.backend(&f.split.items()[0]).expect("the split's backend is in the table");
    b.servers.items().iter().map(|s| s.url.clone()).collect()
}

#[test]
fn a_changed_backend_reaches_its_users_without_recompiling_them_and_drains_what_left() {
    let mut state = ConfigState::new();
    let registry = Registry::new();
    let mut compiler = Compiler::new();
    state.apply(put("backends/b/backend".into(), r#"{"Type":"http"}"#.into())).expect("backend");
    state.apply(put("backends/b/servers/s1".into(), r#"{"URL":"http://127.0.0.1:9001"}"#.into())).expect("server");
    state
        .apply(put("frontends/f/frontend".into(), r#"{"Type":"http","BackendId":"b","Route":"Path(`/`)"}"#.into()))
        .expect("frontend");
    let v = state.validate();
    let (t1, retired) = compiler.compile(Arc::new(v.config), &v.delta, 1, &registry);
    assert!(retired.is_empty());
    let headers = http::HeaderMap::new();
    let req = Request { method: &http::Method::GET, host: "h", path: "/", headers: &headers };
    let f1 = t1.router.find(&req).expect("routed").clone();
    let s1 = t1.router.backend(&f1.split.items()[0]).expect("backend").servers.items()[0].clone();

    // The server moves: the frontend now reaches the new one, and the old one is handed back to drain.
    state.apply(put("backends/b/servers/s1".into(), r#"{"URL":"http://127.0.0.1:9002"}"#.into())).expect("server");
    let v = state.validate();
    let (t2, retired) = compiler.compile(Arc::new(v.config), &v.delta, 2, &registry);
    assert_eq!(retired.len(), 1);
    assert!(Arc::ptr_eq(&retired[0], &s1));
    let f2 = t2.router.find(&req).expect("routed");
    assert_eq!(urls(&t2, f2), ["http://127.0.0.1:9002"]);
    // The frontend was not recompiled: it reaches the backend's new value through the table.
    assert!(Arc::ptr_eq(f2, &f1));
    // The old table still answers with what it was built from.
    assert_eq!(urls(&t1, t1.router.find(&req).expect("routed")), ["http://127.0.0.1:9001"]);

    // An unrelated change leaves the compiled frontend as it was.
    state.apply(put("backends/other/backend".into(), r#"{"Type":"http"}"#.into())).expect("backend");
    let v = state.validate();
    let (t3, _) = compiler.compile(Arc::new(v.config), &v.delta, 3, &registry);
    assert!(Arc::ptr_eq(t3.router.find(&req).expect("routed"), f2));
}

/// A backend removed and added again (a frontend switched away and back, the backend's slot given to another
/// backend meanwhile) is reached at its new slot: the frontends naming it are recompiled when it appears.
#[test]
fn a_backend_that_leaves_and_returns_is_found_at_its_new_slot() {
    let mut state = ConfigState::new();
    let registry = Registry::new();
    let mut compiler = Compiler::new();
    let headers = http::HeaderMap::new();
    let req = Request { method: &http::Method::GET, host: "h", path: "/", headers: &headers };
    let mut generation = 0;
    let mut step = |state: &mut ConfigState, changes: &[(&str, Option<&str>)]| {
        for (key, value) in changes {
            let change = match value {
                Some(v) => put(key.to_string(), v.to_string()),
                None => Change::Delete { key: key.to_string() },
            };
            state.apply(change).expect(key);
        }
        let v = state.validate();
        assert!(v.errors.is_empty(), "{:?}", v.errors);
        generation += 1;
        let (t, retired) = compiler.compile(Arc::new(v.config), &v.delta, generation, &registry);
        registry.retire(retired);
        t
    };
    let t = step(
        &mut state,
        &[
            ("backends/a/backend", Some(r#"{"Type":"http"}"#)),
            ("backends/a/servers/s", Some(r#"{"URL":"http://127.0.0.1:9001"}"#)),
            ("backends/b/backend", Some(r#"{"Type":"http"}"#)),
            ("backends/b/servers/s", Some(r#"{"URL":"http://127.0.0.1:9002"}"#)),
            ("frontends/f/frontend", Some(r#"{"Type":"http","BackendId":"a","Route":"Path(`/`)"}"#)),
            ("frontends/g/frontend", Some(r#"{"Type":"http","BackendId":"b","Route":"Path(`/g`)"}"#)),
        ],
    );
    assert_eq!(urls(&t, t.router.find(&req).expect("routed")), ["http://127.0.0.1:9001"]);
    // `f` moves to `b`, and `a` goes: its slot is free.
    let f = r#"{"Type":"http","BackendId":"b","Route":"Path(`/`)"}"#;
    let t = step(
        &mut state,
        &[("frontends/f/frontend", Some(f)), ("backends/a/servers/s", None), ("backends/a/backend", None)],
    );
    assert_eq!(urls(&t, t.router.find(&req).expect("routed")), ["http://127.0.0.1:9002"]);
    // A new backend takes the free slot; `a` comes back elsewhere and `f` returns to it.
    let t = step(
        &mut state,
        &[
            ("backends/c/backend", Some(r#"{"Type":"http"}"#)),
            ("backends/c/servers/s", Some(r#"{"URL":"http://127.0.0.1:9003"}"#)),
        ],
    );
    assert_eq!(urls(&t, t.router.find(&req).expect("routed")), ["http://127.0.0.1:9002"]);
    let f = r#"{"Type":"http","BackendId":"a","Route":"Path(`/`)"}"#;
    let t = step(
        &mut state,
        &[
            ("backends/a/backend", Some(r#"{"Type":"http"}"#)),
            ("backends/a/servers/s", Some(r#"{"URL":"http://127.0.0.1:9004"}"#)),
            ("frontends/f/frontend", Some(f)),
        ],
    );
    assert_eq!(urls(&t, t.router.find(&req).expect("routed")), ["http://127.0.0.1:9004"]);
    let g = Request { method: &http::Method::GET, host: "h", path: "/g", headers: &headers };
    assert_eq!(urls(&t, t.router.find(&g).expect("routed")), ["http://127.0.0.1:9002"]);
}

/// A frontend's shadow follows its backend: a new server there is where the next copy goes, without a write to
/// the frontend; and the shadow's state (its report) is the same object across the two tables.
#[test]
fn a_shadow_follows_its_backends_servers_and_keeps_its_state() {
    let mut state = ConfigState::new();
    let registry = Registry::new();
    let mut compiler = Compiler::new();
    for (key, value) in [
        ("backends/p/backend", r#"{"Type":"http"}"#),
        ("backends/p/servers/s1", r#"{"URL":"http://127.0.0.1:9"}"#),
        ("backends/sh/backend", r#"{"Type":"http"}"#),
        ("backends/sh/servers/s1", r#"{"URL":"http://127.0.0.1:10"}"#),
        ("frontends/f/frontend", r#"{"Type":"http","BackendId":"p","Route":"Path(`/`)","Shadow":{"BackendId":"sh"}}"#),
    ] {
        state.apply(put(key.into(), value.into())).expect(key);
    }
    let headers = http::HeaderMap::new();
    let req = Request { method: &http::Method::GET, host: "h", path: "/", headers: &headers };
    let v = state.validate();
    let (t1, _) = compiler.compile(Arc::new(v.config), &v.delta, 1, &registry);
    let shadow = |t: &RoutingTable| {
        let f = t.router.find(&req).expect("routed").clone();
        let s = f.shadow.as_ref().expect("a shadow");
        let backend = t.router.backend(&s.backend).expect("the shadow's backend is in the table");
        (s.state.clone(), backend.servers.items().iter().map(|s| s.url.clone()).collect::<Vec<_>>())
    };
    let (state1, urls1) = shadow(&t1);
    assert_eq!(urls1, ["http://127.0.0.1:10"]);
    state.apply(put("backends/sh/servers/s1".into(), r#"{"URL":"http://127.0.0.1:11"}"#.into())).expect("server");
    let v = state.validate();
    let (t2, _) = compiler.compile(Arc::new(v.config), &v.delta, 2, &registry);
    let (state2, urls2) = shadow(&t2);
    assert_eq!(urls2, ["http://127.0.0.1:11"]);
    assert!(Arc::ptr_eq(&state1, &state2), "the report survives an unrelated change");
    assert!(t2.shadows.report("f").is_some());
}
