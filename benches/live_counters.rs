//! What the dashboard costs: the per-request part (`FrontendMetrics::record`, which now also adds to the
//! dashboard's live counters, and the live counters alone) and the admin side's once-a-second sampling of
//! 10,000 frontends and their backends. The request path's share must stay a few nanoseconds; the sampler's
//! runs off the request path, once a second.
//!
//! Run with `cargo bench --bench live_counters`.

use criterion::{criterion_group, criterion_main, Criterion};
use ficus::admin::dashboard::sampler::Sampler;
use ficus::model::ValidatedConfig;
use ficus::telemetry::live::{self, Kind};
use ficus::telemetry::{FrontendMetrics, ServerAt};
use std::hint::black_box;
use std::time::Duration;

fn per_request(c: &mut Criterion) {
    let _ = ficus::telemetry::install_metrics();
    let metrics = FrontendMetrics::new("bench-frontend", &["bench-legacy", "bench-new"]);
    let s2 = ServerAt { list: 1, len: 2, index: 1, id: "s2" };
    // Touch the slots once so the bench measures the steady state, not the first registration.
    metrics.record(Some((0, "bench-legacy")), Some(s2), 200, Duration::from_micros(800));
    c.bench_function("FrontendMetrics::record (Prometheus + live)", |b| {
        b.iter(|| {
            metrics.record(
                black_box(Some((0, "bench-legacy"))),
                black_box(Some(s2)),
                black_box(200),
                black_box(Duration::from_micros(800)),
            )
        })
    });
    let live = live::handle(Kind::Frontend, "bench-live");
    c.bench_function("live::Live::record alone", |b| {
        b.iter(|| live.record(black_box(200), black_box(Duration::from_micros(800))))
    });
}

fn sampling(c: &mut Criterion) {
    let handles: Vec<_> = (0..10_000)
        .flat_map(|i| {
            let f = live::handle(Kind::Frontend, &format!("bench-f{i}"));
            let b = live::handle(Kind::Backend, &format!("bench-b{i}"));
            f.record(200, Duration::from_millis(1));
            b.record(200, Duration::from_millis(1));
            [f, b]
        })
        .collect();
    let config = ValidatedConfig::default();
    let mut sampler = Sampler::default();
    c.bench_function("Sampler::sample, 10,000 frontends + 10,000 backends", |b| {
        b.iter(|| {
            for h in handles.iter().step_by(97) {
                h.record(200, Duration::from_millis(1));
            }
            sampler.sample(black_box(&config))
        })
    });
}

criterion_group!(benches, per_request, sampling);
criterion_main!(benches);
