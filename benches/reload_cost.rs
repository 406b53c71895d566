//! Where a reload's time goes with 10,000 frontends, in process and without I/O: applying one change to the
//! model, the cross-key validation pass, compiling the next table, and a compaction (a full rebuild of the base
//! route index, done when the config is quiet). It explains the numbers `etcd_apply` measures end to end.
//!
//! Run with `cargo bench --bench reload_cost`.

use ficus::model::{Change, ConfigState};
use ficus::table::{Compiler, RoutingTable};
use ficus::upstream::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FRONTENDS: usize = 10_000;
const ROUNDS: usize = 200;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() - 1) * 99 / 100]
}

struct Steps {
    apply: Vec<Duration>,
    validate: Vec<Duration>,
    compile: Vec<Duration>,
}

/// Applies `change(n)` for `ROUNDS` rounds, timing each step of the reload it causes.
fn run(
    state: &mut ConfigState,
    compiler: &mut Compiler,
    registry: &Registry,
    generation: &mut u64,
    change: impl Fn(usize) -> Change,
) -> Steps {
    let mut steps = Steps { apply: vec![], validate: vec![], compile: vec![] };
    let mut last: Option<RoutingTable> = None;
    for n in 0..ROUNDS {
        let t = Instant::now();
        let _ = state.apply(change(n));
        steps.apply.push(t.elapsed());

        let t = Instant::now();
        let validation = state.validate();
        steps.validate.push(t.elapsed());

        let t = Instant::now();
        *generation += 1;
        let (table, retired) = compiler.compile(Arc::new(validation.config), &validation.delta, *generation, registry);
        registry.retire(retired);
        steps.compile.push(t.elapsed());
        last = Some(table);
    }
    std::hint::black_box(last);
    steps
}

fn print(what: &str, s: Steps) {
    println!("{what} (median / p99 of {ROUNDS}):");
    println!("  ConfigState::apply (decode one value)   {:?} / {:?}", median(s.apply.clone()), p99(s.apply));
    println!("  ConfigState::validate (cross-key pass)  {:?} / {:?}", median(s.validate.clone()), p99(s.validate));
    println!("  Compiler::compile (next table)          {:?} / {:?}", median(s.compile.clone()), p99(s.compile));
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
    let _ = state.apply(put("backends/other/backend".into(), r#"{"Type":"http"}"#.into()));
    let _ = state.apply(put(
        "frontends/fo/frontend".into(),
        r#"{"Type":"http","BackendId":"other","Route":"Path(`/o`)"}"#.into(),
    ));
    let registry = Registry::new();
    let mut compiler = Compiler::new();
    let mut generation = 0;

    let t = Instant::now();
    let validation = state.validate();
    generation += 1;
    let (table, _) = compiler.compile(Arc::new(validation.config), &validation.delta, generation, &registry);
    println!("first build of {FRONTENDS} frontends: {:?} ({} in the table)", t.elapsed(), table.router.len());

    let s = run(&mut state, &mut compiler, &registry, &mut generation, |n| {
        put(
            "frontends/probe/frontend".into(),
            format!(r#"{{"Type":"http","BackendId":"b","Route":"Path(`/probe/{n}`)"}}"#),
        )
    });
    print("one frontend put (its route changes)", s);

    let s = run(&mut state, &mut compiler, &registry, &mut generation, |n| {
        put("backends/other/servers/s1".into(), format!(r#"{{"URL":"http://127.0.0.1:{}"}}"#, 1000 + n))
    });
    print("one server put, in a backend one frontend uses", s);

    let s = run(&mut state, &mut compiler, &registry, &mut generation, |n| {
        put("backends/b/servers/s2".into(), format!(r#"{{"URL":"http://127.0.0.1:{}"}}"#, 1000 + n))
    });
    print(&format!("one server put, in the backend all {FRONTENDS} frontends use"), s);

    let mut compact = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        std::hint::black_box(compiler.compact());
        compact.push(t.elapsed());
    }
    println!("compaction (base index rebuilt over {FRONTENDS} frontends, when quiet): median {:?}", median(compact));
}
