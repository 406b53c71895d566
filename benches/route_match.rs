//! Micro-benchmarks for route/, the route language and index the proxy consults once per
//! request and the reload step rebuilds once per table generation. They hold the index to its
//! budget: a match well under a microsecond (target p50 ≤ 300 ns), a build of 10,000 frontends
//! within 50 ms and of 100,000 within 1 s, so a reload never stalls and routing never shows up in
//! request latency. The route set is generated deterministically to look like a real gateway:
//! about ten routes per host, mostly `Host && PathPrefix` or `Host && Path`, a few with methods,
//! headers, no host, or regexps.
//!
//! Run with `cargo bench --bench route_match`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ficus::route::{parse, Request, RouteSpec, Router};
use http::{HeaderMap, HeaderValue, Method};

/// splitmix64: deterministic, so every run measures the same table and requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

const RESOURCES: &[&str] = &[
    "users",
    "orders",
    "products",
    "carts",
    "search",
    "inventory",
    "prices",
    "reviews",
    "payments",
    "shipping",
    "accounts",
    "sessions",
    "catalog",
    "media",
    "stores",
    "gtins",
];

/// An owned request, so the benchmark can hold thousands and borrow them as [`Request`]s.
struct OwnedRequest {
    method: Method,
    host: String,
    path: String,
    headers: HeaderMap,
}

impl OwnedRequest {
    fn new(method: Method, host: String, path: String) -> Self {
        OwnedRequest { method, host, path, headers: HeaderMap::new() }
    }
}

/// Packs every request's host and path into one buffer, side by side, the way a proxy holds a
/// request it has just parsed. Lookups then pay for the router's memory rather than for chasing
/// two scattered benchmark strings per request.
fn pack(requests: &[OwnedRequest]) -> String {
    requests.iter().flat_map(|r| [r.host.as_str(), r.path.as_str()]).collect()
}

/// Borrows the requests, with host and path taken from their [`pack`]ed copy `text`.
fn borrow<'a>(requests: &'a [OwnedRequest], text: &'a str) -> Vec<Request<'a>> {
    let mut at = 0;
    let mut take = |len: usize| {
        at += len;
        &text[at - len..at]
    };
    requests
        .iter()
        .map(|r| Request { method: &r.method, host: take(r.host.len()), path: take(r.path.len()), headers: &r.headers })
        .collect()
}

fn host_name(h: usize) -> String {
    format!("svc-{h}.shop{}.example.com", h % 7)
}

/// `n` frontends over `n / 10` hosts, and for each a request that reaches it.
fn frontends(n: usize) -> (Vec<RouteSpec<usize>>, Vec<OwnedRequest>) {
    let hosts = (n / 10).max(1);
    let mut rng = Rng(42);
    let mut specs = Vec::with_capacity(n);
    let mut hits = Vec::with_capacity(n);
    for i in 0..n {
        let resource = rng.pick(RESOURCES);
        let host = host_name(rng.below(hosts));
        let (route, mut req) = match i % 1000 {
            // 20 regexp routes per 10,000, half path and half host, scoped the way operators
            // write them.
            7 => (
                format!(r#"Host("{host}") && PathRegexp(`/legacy/[0-9]+/{resource}(/.*)?$`)"#),
                OwnedRequest::new(Method::GET, host, format!("/legacy/{i}/{resource}/x")),
            ),
            507 => (
                format!(r#"HostRegexp(`tenant-{i}-[a-z]+\.example\.org`) && PathPrefix("/")"#),
                OwnedRequest::new(Method::GET, format!("tenant-{i}-acme.example.org"), "/".into()),
            ),
            // About 1% without a host.
            _ if rng.percent(1) => (
                format!(r#"Path("/_internal/{i}/health")"#),
                OwnedRequest::new(Method::GET, "any.example.net".into(), format!("/_internal/{i}/health")),
            ),
            _ => {
                let version = 1 + rng.below(3);
                match rng.below(10) {
                    0..=4 => (
                        format!(r#"Host("{host}") && PathPrefix("/api/v{version}/{resource}")"#),
                        OwnedRequest::new(Method::GET, host, format!("/api/v{version}/{resource}/{i}/items?page=2")),
                    ),
                    5..=7 => (
                        format!(r#"Host("{host}") && Path("/{resource}/{i}")"#),
                        OwnedRequest::new(Method::GET, host, format!("/{resource}/{i}")),
                    ),
                    _ => (
                        format!(r#"Host("{host}") && Path("/{resource}/<id>/v{version}/<int:item>")"#),
                        OwnedRequest::new(
                            Method::GET,
                            host,
                            format!("/{resource}/x{i}/v{version}/{}", rng.below(1_000_000)),
                        ),
                    ),
                }
            }
        };
        let mut route = route;
        if rng.percent(10) {
            let method = [Method::GET, Method::POST, Method::PUT, Method::DELETE][rng.below(4)].clone();
            route = format!(r#"{route} && Method("{method}")"#);
            req.method = method;
        }
        if rng.percent(2) {
            route = format!(r#"{route} && Header("X-Canary", "1")"#);
            req.headers.insert("x-canary", HeaderValue::from_static("1"));
        }
        // Clients send the host as typed, sometimes with a port.
        if rng.percent(5) {
            req.host = req.host.to_uppercase();
        }
        if rng.percent(10) {
            req.host.push_str(":8080");
        }
        let expr = parse(&route).unwrap_or_else(|e| panic!("generated route {route}: {e}"));
        specs.push(RouteSpec { id: Arc::from(format!("frontend-{i:06}")), priority: 0, expr, value: i });
        hits.push(req);
    }
    (specs, hits)
}

/// Requests no route takes: unknown hosts, and known hosts with unknown paths.
fn misses(n: usize, hosts: usize) -> Vec<OwnedRequest> {
    let mut rng = Rng(7);
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                OwnedRequest::new(Method::GET, format!("unknown-{i}.example.com"), "/api/v1/users/1".into())
            } else {
                let host = host_name(rng.below(hosts));
                OwnedRequest::new(Method::GET, host, format!("/nope/{}/{i}", rng.pick(RESOURCES)))
            }
        })
        .collect()
}

fn bench_match(c: &mut Criterion) {
    let (specs, hits) = frontends(10_000);
    let router = Router::build(specs);
    let misses = misses(1_000, 1_000);

    // Check the generator: every hit request finds a route, every miss finds none.
    let (hit_text, miss_text) = (pack(&hits), pack(&misses));
    let hits = borrow(&hits, &hit_text);
    let misses = borrow(&misses, &miss_text);
    assert!(hits.iter().all(|r| router.find(r).is_some()), "a generated hit missed");
    assert!(misses.iter().all(|r| router.find(r).is_none()), "a generated miss hit");
    // Four hits to one miss, spread evenly.
    let mixed: Vec<Request<'_>> = hits
        .chunks(4)
        .zip(misses.iter().cycle())
        .flat_map(|(hits, miss)| hits.iter().chain(std::iter::once(miss)))
        .copied()
        .collect();

    percentiles("mixed", &router, &mixed);
    percentiles("hit", &router, &hits);

    let mut group = c.benchmark_group("match");
    group.throughput(Throughput::Elements(1));
    for (name, requests) in [("mixed", &mixed), ("hit", &hits), ("miss", &misses)] {
        group.bench_function(name, |b| {
            let mut next = 0;
            b.iter(|| {
                let req = &requests[next];
                next = if next + 1 == requests.len() { 0 } else { next + 1 };
                black_box(router.find(black_box(req)))
            })
        });
    }
    // The same request over and over: every line it touches stays cached, so this is the
    // compute floor; the cycling benchmarks above also pay for cache misses.
    let hot = hits[0];
    group.bench_function("hit_hot", |b| b.iter(|| black_box(router.find(black_box(&hot)))));
    group.finish();
}

/// Criterion reports means; the target is a median. So each lookup is also timed on its own, in the cycling
/// order the benchmarks use, and the percentiles printed, next to those of an empty timed section (the cost of
/// reading the clock twice, which every per-lookup figure includes and none has subtracted).
fn percentiles(name: &str, router: &Router<usize>, requests: &[Request<'_>]) {
    const LOOKUPS: usize = 1_000_000;
    let mut lookup = Vec::with_capacity(LOOKUPS);
    let mut clock = Vec::with_capacity(LOOKUPS);
    for i in 0..LOOKUPS {
        let req = &requests[i % requests.len()];
        let start = Instant::now();
        black_box(router.find(black_box(req)));
        lookup.push(start.elapsed().as_nanos() as u64);
        let start = Instant::now();
        clock.push(black_box(start).elapsed().as_nanos() as u64);
    }
    let pct = |v: &mut Vec<u64>, p: f64| {
        v.sort_unstable();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    };
    println!(
        "match/{name} per lookup over {LOOKUPS}: p50 {} ns, p90 {} ns, p99 {} ns (the clock alone: p50 {} ns, p99 {} ns)",
        pct(&mut lookup, 0.50),
        pct(&mut lookup, 0.90),
        pct(&mut lookup, 0.99),
        pct(&mut clock, 0.50),
        pct(&mut clock, 0.99),
    );
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for n in [10_000, 100_000] {
        let (specs, _) = frontends(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(n.to_string(), |b| b.iter_batched(|| specs.clone(), Router::build, BatchSize::LargeInput));
    }
    group.finish();
}

fn bench_parse(c: &mut Criterion) {
    let (specs, _) = frontends(10_000);
    let sources: Vec<String> = specs.iter().map(|s| s.expr.to_string()).collect();
    let mut group = c.benchmark_group("parse");
    group.sample_size(10);
    group.throughput(Throughput::Elements(sources.len() as u64));
    group.bench_function("10000", |b| {
        b.iter(|| {
            for src in &sources {
                black_box(parse(black_box(src)).is_ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_match, bench_build, bench_parse);
criterion_main!(benches);
