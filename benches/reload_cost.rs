//! Where a reload's time goes with 10,000 frontends, in process and without I/O: applying one change to the
//! model, the cross-key validation, compiling the table, and the route index build inside it. It explains the
//! numbers `etcd_apply` measures end to end.
//!
//! Run with `cargo bench --bench reload_cost`.

use ficus::model::{Change, ConfigState};
use ficus::table::route::{RouteSpec, Router};
use ficus::table::{compile, RoutingTable};
use ficus::upstream::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FRONTENDS: usize = 10_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut state = ConfigState::new();
    let put = |k: String, v: String| Change::Put { key: k, value: v.into_bytes() };
    let _ = state.apply(put("backends/b/backend".into(), r#"{"Type":"http"}"#.into()));
    let _ = state.apply(put("backends/b/servers/s1".into(), r#"{"URL":"http://127.0.0.1:9"}"#.into()));
    for i in 0..FRONTENDS {
        let host = format!("h{}.example.com", i / 10);
        let v = format!(r#"{{"Type":"http","BackendId":"b","Route":"Host(`{host}`) && PathPrefix(`/api/{i}`)"}}"#);
        let _ = state.apply(put(format!("frontends/f{i}/frontend"), v));
    }
    let registry = Registry::new();
    let (mut apply, mut validate, mut compile_t, mut build) = (vec![], vec![], vec![], vec![]);
    let mut last: Option<RoutingTable> = None;
    for n in 0..30 {
        let t = Instant::now();
        let v = format!(r#"{{"Type":"http","BackendId":"b","Route":"Path(`/probe/{n}`)"}}"#);
        let _ = state.apply(put("frontends/probe/frontend".into(), v));
        apply.push(t.elapsed());

        let t = Instant::now();
        let validation = state.validate();
        validate.push(t.elapsed());
        let config = Arc::new(validation.config);

        let t = Instant::now();
        let mut session = registry.session();
        let table = compile(config.clone(), n + 1, &mut session, last.as_ref());
        session.finish();
        compile_t.push(t.elapsed());

        let routes: Vec<RouteSpec<usize>> = config
            .frontends
            .iter()
            .map(|(id, f)| RouteSpec { id: id.as_str().into(), priority: f.priority, expr: f.expr.clone(), value: 0 })
            .collect();
        let t = Instant::now();
        let router = Router::build(routes);
        build.push(t.elapsed());
        std::hint::black_box(router);
        last = Some(table);
    }
    std::hint::black_box(last);
    println!("one change with {FRONTENDS} frontends present (median of 30):");
    println!("  ConfigState::apply (decode one value)   {:?}", median(apply));
    println!("  ConfigState::validate (cross-key pass)  {:?}", median(validate));
    println!("  table::compile (whole table)            {:?}", median(compile_t));
    println!("    of which Router::build alone          {:?}", median(build));
}
