//! `gtin-service bench-build`: the measurement behind the numbers in the README. It generates N synthetic
//! products, builds and publishes a snapshot through the same builder the sync job uses, opens it, and times
//! single lookups. Not on the serving path.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::builder::{BuildError, SnapshotBuilder};
use crate::gtin::Gtin;
use crate::snapshot::{SlotStats, Snapshot, SnapshotError};
use crate::synth::{gtin_of, Rng, SynthProduct};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("product {0} missing from the benchmark snapshot")]
    Missing(Gtin),
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub products: u64,
    pub generate_and_add: Duration,
    pub finish: Duration,
    pub file_bytes: u64,
    pub peak_rss_build_kib: Option<u64>,
    pub open: Duration,
    pub verify: Option<Duration>,
    pub lookups: usize,
    /// Uniformly random keys, 10% misses: the worst case for caches.
    pub uniform: Percentiles,
    /// Zipf-like popularity (exponent 1), all hits.
    pub skewed: Percentiles,
    /// `get` back to back over the uniform keys, no timer per call: lookups may overlap in the CPU.
    pub mean_get: Duration,
    /// Finding the slot only, without reading the record: for comparison, not the lookup a request makes.
    pub mean_find_slot: Duration,
    pub slots: SlotStats,
    pub status_after: String,
}

/// Builds a snapshot of `products` synthetic products in `dir` and measures it.
pub fn run(dir: &Path, products: u64, lookups: usize, verify: bool) -> Result<BenchReport, BenchError> {
    let seed = 1;
    let started = Instant::now();
    let mut builder = SnapshotBuilder::new(dir, &format!("bench-build synthetic products={products}"))?;
    builder.reserve(products as usize);
    let mut p = SynthProduct::default();
    for i in 0..products {
        p.fill(seed, i);
        builder.add(&p.product())?;
        if i > 0 && i % 2_000_000 == 0 {
            let rate = i as f64 / started.elapsed().as_secs_f64();
            eprintln!("bench-build: {i} products added, {rate:.0}/s");
        }
    }
    let generate_and_add = started.elapsed();
    let started = Instant::now();
    let built = builder.finish()?;
    let path = built.publish()?;
    let finish = started.elapsed();
    let peak_rss_build_kib = proc_status_kib("VmHWM");

    let started = Instant::now();
    let snapshot = Snapshot::open(&path)?;
    let open = started.elapsed();
    let file_bytes = snapshot.mapped_len() as u64;
    let verify = if verify {
        let started = Instant::now();
        snapshot.verify()?;
        Some(started.elapsed())
    } else {
        None
    };

    // Random products, chosen before the clock starts; a tenth of them absent, as real traffic has misses.
    let mut rng = Rng::new(42);
    let keys: Vec<Gtin> = (0..lookups)
        .map(|n| {
            if n % 10 == 9 {
                gtin_of(seed, products + rng.below(products.max(1)))
            } else {
                gtin_of(seed, rng.below(products.max(1)))
            }
        })
        .collect();
    for &g in keys.iter().take(1000).step_by(10) {
        if products > 0 && snapshot.get(g)?.is_none() {
            return Err(BenchError::Missing(g));
        }
    }
    let uniform = percentiles(&snapshot, &keys)?;
    // Real traffic is skewed: a few products are scanned far more often than the rest. Ranks drawn
    // log-uniformly approximate Zipf with exponent 1; the multiplier scatters popular ranks over the key space.
    let n = products.max(1);
    let skewed_keys: Vec<Gtin> = (0..lookups)
        .map(|_| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let rank = ((n as f64).powf(u) - 1.0) as u64 % n;
            gtin_of(seed, (rank as u128 * 7_919 % n as u128) as u64)
        })
        .collect();
    let skewed = percentiles(&snapshot, &skewed_keys)?;
    let t = Instant::now();
    let mut sum = 0u64;
    for &g in &keys {
        sum = sum.wrapping_add(snapshot.get(g)?.map_or(0, |p| p.price_cents));
    }
    std::hint::black_box(sum);
    let mean_get = t.elapsed() / keys.len().max(1) as u32;
    let t = Instant::now();
    let mut hits = 0usize;
    for g in &keys {
        hits += usize::from(snapshot.find_slot(g.key()).is_some());
    }
    std::hint::black_box(hits);
    let mean_find_slot = t.elapsed() / keys.len().max(1) as u32;
    let slots = snapshot.slot_stats();
    Ok(BenchReport {
        products,
        generate_and_add,
        finish,
        file_bytes,
        peak_rss_build_kib,
        open,
        verify,
        lookups: keys.len(),
        uniform,
        skewed,
        mean_get,
        mean_find_slot,
        slots,
        status_after: memory_line(),
    })
}

/// `bench-lookup`: lookup latency on an existing snapshot file (one built by `sync`, say).
pub fn lookup_existing(path: &Path, lookups: usize) -> Result<ExistingReport, BenchError> {
    let started = Instant::now();
    let snapshot = Snapshot::open(path)?;
    let open = started.elapsed();
    let n = snapshot.len() as u64;
    let slots = snapshot.slot_count() as u64;
    let mut rng = Rng::new(99);
    // Occupied slots drawn uniformly: every product equally likely, whatever its place in the table.
    let keys: Vec<Gtin> = (0..if n == 0 { 0 } else { lookups })
        .filter_map(|_| {
            (0..1000).find_map(|_| snapshot.key_in_slot(rng.below(slots) as usize)).and_then(Gtin::from_key)
        })
        .collect();
    let uniform = percentiles(&snapshot, &keys)?;
    let home_line = timed_each(&keys, |g| snapshot.read_home(g.key()));
    let find_slot = timed_each(&keys, |g| snapshot.find_slot(g.key()).unwrap_or(0) as u64);
    let get_again = percentiles(&snapshot, &keys)?;
    let mut timings = Vec::with_capacity(keys.len());
    for &g in &keys {
        std::hint::black_box(snapshot.get(g)?);
        let t = Instant::now();
        std::hint::black_box(snapshot.get(std::hint::black_box(g))?);
        timings.push(t.elapsed());
    }
    let get_cached = percentiles_of(timings);
    let mut displacement = [0u64; DISPLACEMENT_BUCKETS];
    for g in &keys {
        let d = snapshot.displacement(g.key()).unwrap_or(usize::MAX);
        displacement[d.min(DISPLACEMENT_BUCKETS - 1)] += 1;
    }
    let hot: Vec<Gtin> = keys.iter().take(4096).cycle().take(keys.len()).copied().collect();
    let hot_4096 = percentiles(&snapshot, &hot)?;
    let hot: Vec<Gtin> = keys.iter().take(64).cycle().take(keys.len()).copied().collect();
    let hot_64 = percentiles(&snapshot, &hot)?;
    let batched_mean = batched(&snapshot, &keys)?;
    Ok(ExistingReport {
        products: n,
        open,
        uniform,
        home_line,
        find_slot,
        get_again,
        get_cached,
        displacement,
        hot_4096,
        hot_64,
        batched_mean,
        memory: memory_line(),
    })
}

/// Displacements counted one by one up to this, the last bucket holding the rest.
pub const DISPLACEMENT_BUCKETS: usize = 6;

#[derive(Debug, Clone)]
pub struct ExistingReport {
    pub products: u64,
    pub open: Duration,
    pub uniform: Percentiles,
    /// The same keys, reading only the first word of the home slot: the memory round trip alone.
    pub home_line: Percentiles,
    /// The same keys, finding the slot without decoding the record.
    pub find_slot: Percentiles,
    /// The same keys through `get` once more, after the two passes above: how much the figure moves between
    /// passes on this machine.
    pub get_again: Percentiles,
    /// The same keys, each looked up twice and the second lookup timed: its lines are in the cache, so this is
    /// the lookup's own work (hash, probe, decode, branches mispredicted on random keys) without the memory
    /// round trip.
    pub get_cached: Percentiles,
    /// Sampled keys by slots past their home slot: 0, 1, ..., and the last bucket for the rest.
    pub displacement: [u64; DISPLACEMENT_BUCKETS],
    pub hot_4096: Percentiles,
    pub hot_64: Percentiles,
    /// Mean time per lookup for uniform keys in batches of 100, with the prefetch the batch endpoint does.
    pub batched_mean: Duration,
    pub memory: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

/// Times every lookup of `keys` on its own (the timer's own cost, about 20 ns here, is included). What is timed
/// is `Snapshot::get`, what a request does after parsing the code: hash the key, probe the slots, decode the
/// whole record (every text field checked as UTF-8).
fn percentiles(snapshot: &Snapshot, keys: &[Gtin]) -> Result<Percentiles, SnapshotError> {
    let mut timings = Vec::with_capacity(keys.len());
    for &g in keys {
        let t = Instant::now();
        // The whole product is handed to `black_box`, so no part of the decode can be left out as unused.
        std::hint::black_box(snapshot.get(std::hint::black_box(g))?);
        timings.push(t.elapsed());
    }
    timings.sort_unstable();
    let at = |q: f64| timings.get(((timings.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    Ok(Percentiles { p50: at(0.5), p99: at(0.99), p999: at(0.999) })
}

/// Times `op` on every key on its own, as `percentiles` times `get`.
fn timed_each(keys: &[Gtin], op: impl Fn(Gtin) -> u64) -> Percentiles {
    let mut timings = Vec::with_capacity(keys.len());
    for &g in keys {
        let t = Instant::now();
        std::hint::black_box(op(std::hint::black_box(g)));
        timings.push(t.elapsed());
    }
    percentiles_of(timings)
}

fn percentiles_of(mut timings: Vec<Duration>) -> Percentiles {
    timings.sort_unstable();
    let at = |q: f64| timings.get(((timings.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    Percentiles { p50: at(0.5), p99: at(0.99), p999: at(0.999) }
}

/// Mean per lookup of `get` over `keys` in batches of 100, prefetching 8 lookups ahead as the batch endpoint
/// does; one timer per batch.
fn batched(snapshot: &Snapshot, keys: &[Gtin]) -> Result<Duration, SnapshotError> {
    const AHEAD: usize = 8;
    let mut total = Duration::ZERO;
    let mut sum = 0u64;
    for batch in keys.chunks(100) {
        let t = Instant::now();
        for g in batch.iter().take(AHEAD) {
            snapshot.prefetch(*g);
        }
        for (i, g) in batch.iter().enumerate() {
            if let Some(ahead) = batch.get(i + AHEAD) {
                snapshot.prefetch(*ahead);
            }
            sum = sum.wrapping_add(snapshot.get(*g)?.map_or(0, |p| p.price_cents));
        }
        total += t.elapsed();
    }
    std::hint::black_box(sum);
    Ok(total / keys.len().max(1) as u32)
}

/// A field of /proc/self/status in KiB (Linux only).
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Resident memory split into anonymous (heap) and file-backed (the mapped snapshot) pages.
pub fn memory_line() -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let pmd = smaps.lines().find(|l| l.starts_with("FilePmdMapped:")).map(|l| l[14..].trim().to_string());
    let field = |f| proc_status_kib(f).map_or("?".to_string(), |k| format!("{} MiB", k / 1024));
    format!(
        "VmRSS {}, RssAnon {}, RssFile {}, VmHWM {}, file pages mapped as 2 MB huge pages {}",
        field("VmRSS"),
        field("RssAnon"),
        field("RssFile"),
        field("VmHWM"),
        pmd.unwrap_or_else(|| "?".to_string())
    )
}
