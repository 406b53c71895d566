//! Micro-benchmarks of the two hot operations: parsing/normalising a GTIN, and looking one up in a memory-mapped
//! snapshot of N products (`GTIN_BENCH_PRODUCTS`, default 1,000,000). Criterion reports the time per iteration;
//! after it, a plain loop times every single lookup to print the p50/p99/p99.9 of individual lookups.
//!
//! `cargo bench -p gtin-service --bench lookup` (set `GTIN_BENCH_PRODUCTS=18000000` for the full-size run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use gtin::builder::SnapshotBuilder;
use gtin::gtin::{Format, Gtin};
use gtin::snapshot::Snapshot;
use gtin::synth::{gtin_of, Rng, SynthProduct};

fn products() -> u64 {
    std::env::var("GTIN_BENCH_PRODUCTS").ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(1_000_000)
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.bench_function("ean13", |b| b.iter(|| Gtin::parse(black_box("7501031311309"))));
    group.bench_function("upc_a_with_separators", |b| b.iter(|| Gtin::parse(black_box("0-36000-29145-2"))));
    group.bench_function("gtin14", |b| b.iter(|| Gtin::parse(black_box("98412345678908"))));
    group.bench_function("upc_e", |b| b.iter(|| Gtin::parse_with(black_box("04252614"), Format::UpcE)));
    group.bench_function("bad_check_digit", |b| b.iter(|| Gtin::parse(black_box("7501031311308"))));
    group.bench_function("canonical_text", |b| {
        let g = Gtin::parse("036000291452").expect("valid");
        b.iter(|| black_box(g).canonical())
    });
    group.finish();
}

fn build(dir: &std::path::Path, n: u64) -> Snapshot {
    let started = Instant::now();
    let mut builder = SnapshotBuilder::new(dir, "criterion").expect("builder");
    builder.reserve(n as usize);
    let mut p = SynthProduct::default();
    for i in 0..n {
        p.fill(1, i);
        builder.add(&p.product()).expect("add");
    }
    let path = builder.finish().expect("finish").publish().expect("publish");
    eprintln!("built a snapshot of {n} products in {:.2?}", started.elapsed());
    Snapshot::open(&path).expect("open")
}

fn lookup(c: &mut Criterion) {
    let n = products();
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = build(dir.path(), n);
    let mut rng = Rng::new(7);
    let hits: Vec<Gtin> = (0..1 << 20).map(|_| gtin_of(1, rng.below(n))).collect();
    let misses: Vec<Gtin> = (0..1 << 16).map(|_| gtin_of(1, n + rng.below(n))).collect();
    let mask = hits.len() - 1;

    let mut group = c.benchmark_group(format!("lookup_{n}"));
    let mut i = 0usize;
    group.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 1) & mask;
            snapshot.get(hits[i]).expect("readable").map(|p| p.price_cents)
        })
    });
    group.bench_function("get_miss", |b| {
        b.iter(|| {
            i = (i + 1) & (misses.len() - 1);
            snapshot.get(misses[i]).expect("readable").is_some()
        })
    });
    // The key probe alone, without reading the record: not what a request does, kept to show the split.
    group.bench_function("find_slot", |b| {
        b.iter(|| {
            i = (i + 1) & mask;
            snapshot.find_slot(hits[i].key())
        })
    });
    // The same lookups over a small hot set: what popular products cost once their pages are cached and
    // their translations are in the TLB (64 products) or no longer fit it (4096 products, ~12k pages).
    for hot in [64usize, 4096] {
        group.bench_function(format!("get_hot_{hot}"), |b| {
            b.iter(|| {
                i = (i + 1) & (hot - 1);
                snapshot.get(hits[i]).expect("readable").map(|p| p.price_cents)
            })
        });
    }
    group.bench_function("parse_and_get", |b| {
        let texts: Vec<String> = hits.iter().take(4096).map(|g| g.canonical().short_form().to_string()).collect();
        b.iter(|| {
            i = (i + 1) & 4095;
            let g = Gtin::parse(&texts[i]).expect("valid");
            snapshot.get(g).expect("readable").map(|p| p.price_cents)
        })
    });
    group.finish();

    let mut times: Vec<Duration> = hits
        .iter()
        .map(|&g| {
            let t = Instant::now();
            black_box(snapshot.get(g).expect("readable"));
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    eprintln!(
        "single lookups over {n} products ({} random hits, timer included): p50 {:?}, p99 {:?}, p99.9 {:?}",
        times.len(),
        at(0.5),
        at(0.99),
        at(0.999)
    );
}

criterion_group!(benches, parse, lookup);
criterion_main!(benches);
