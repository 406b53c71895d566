//! The `gtin-service` command line: `serve` runs the lookup service, `sync` pulls the legacy export into a new
//! snapshot, `verify` checks a snapshot file, `gen-export` produces a synthetic legacy export, and (built with
//! the `bench` feature only) `bench-build` / `bench-lookup` / `bench-memory` measure. Only argument parsing
//! and wiring live here; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[cfg(feature = "bench")]
use gtin::bench;
use gtin::server::{self, ServeOptions};
use gtin::snapshot::Snapshot;
use gtin::sync::{self, SyncOptions};
use gtin::{clock, synth, telemetry};

#[derive(Parser)]
#[command(name = "gtin-service", version, about = "GTIN lookup service over an immutable memory-mapped snapshot")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve lookups from the newest snapshot in the data directory.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8082", env = "GTIN_LISTEN")]
        listen: SocketAddr,
        #[arg(long, env = "GTIN_DATA")]
        data: PathBuf,
        /// How long in-flight requests may take to finish after SIGTERM (Go's form: 10s, 1m30s); a second
        /// signal exits at once.
        #[arg(long, default_value = "10s", value_parser = serve::duration::arg)]
        drain_timeout: Duration,
        #[arg(long, default_value_t = 10_000)]
        max_connections: usize,
        /// Worker threads (default: one per CPU core). Fewer than the cores leaves room for a proxy and a load
        /// generator sharing the machine.
        #[arg(long, env = "GTIN_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
    },
    /// Pull the legacy export, build and verify a snapshot, publish it and tell the service to reload.
    Sync {
        /// `http://host:port/export`, `file:///path` or a path.
        #[arg(long)]
        from: String,
        #[arg(long, env = "GTIN_DATA")]
        data: PathBuf,
        /// Base URL of the running service (POSTs <URL>/admin/reload after publishing).
        #[arg(long)]
        notify: Option<String>,
        /// Keep syncing at this interval (Go's form: 30s, 10m, 24h, 168h; no `d`) until
        /// SIGTERM/SIGINT.
        #[arg(long, value_parser = serve::duration::arg)]
        every: Option<Duration>,
    },
    /// Check a snapshot file completely (checksum, slot order, every record).
    Verify { file: PathBuf },
    #[cfg(feature = "bench")]
    /// Build a snapshot of N synthetic products and print build time, open time, lookup latency and RSS.
    BenchBuild {
        #[arg(long, default_value_t = 1_000_000)]
        products: u64,
        /// Where to build; a fresh temporary directory (deleted afterwards) when left out.
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value_t = 1_000_000)]
        lookups: usize,
        /// Also run the full verify (reads every byte) and time it.
        #[arg(long)]
        verify: bool,
    },
    #[cfg(feature = "bench")]
    /// Time lookups on an existing snapshot file: random keys, and hot sets of 4096 and 64 products.
    BenchLookup {
        file: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        lookups: usize,
    },
    #[cfg(feature = "bench")]
    /// Cost of one random cache-line read in a buffer as large as a snapshot, with 4 KB and 2 MB pages,
    /// anonymous and file-backed: the floor under a lookup. Also the cost of the timer.
    #[command(hide = true)]
    BenchMemory {
        /// Buffer size; the default is that of an 18M-product snapshot.
        #[arg(long, default_value_t = 1_440_000_000)]
        bytes: usize,
        /// Where the file-backed buffer is written (and removed afterwards).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 10_000_000)]
        hops: usize,
        #[arg(long, default_value_t = 1_000_000)]
        timed: usize,
        /// Only these mappings (anon4k, anon2m, file2m, file4k); all when left out.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Write a synthetic legacy export (the format of services/legacy-catalog/EXPORT.md).
    GenExport {
        #[arg(long, default_value_t = 1_000_000)]
        products: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Add one dirty or duplicate row for every K products (0: none).
        #[arg(long, default_value_t = 1000)]
        dirty_every: u64,
        /// Output file, `-` for stdout.
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    serve::logging::init(serve::logging::LogFormat::Text);
    match cli.command {
        Command::Serve { listen, data, drain_timeout, max_connections, threads } => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = threads {
                runtime.worker_threads(usize::from(threads));
            }
            let runtime = runtime.enable_all().build().context("starting the runtime")?;
            runtime.block_on(async {
                let metrics = telemetry::install_metrics().context("installing the metrics recorder")?;
                let options = ServeOptions { listen, data, drain_timeout, max_connections };
                let shutdown = serve::signals::shutdown_on_signal()?;
                server::serve(options, Some(metrics), shutdown).await?;
                anyhow::Ok(())
            })
        }
        Command::Sync { from, data, notify, every } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let options = SyncOptions { from, data, notify, progress: true };
            runtime.block_on(run_sync(options, every))
        }
        Command::Verify { file } => verify(file),
        #[cfg(feature = "bench")]
        Command::BenchBuild { products, data, lookups, verify } => bench_build(products, data, lookups, verify),
        #[cfg(feature = "bench")]
        Command::BenchLookup { file, lookups } => bench_lookup(&file, lookups),
        #[cfg(feature = "bench")]
        Command::BenchMemory { bytes, dir, hops, timed, only } => bench_memory(bytes, &dir, hops, timed, &only),
        Command::GenExport { products, seed, dirty_every, out } => gen_export(products, seed, dirty_every, out),
    }
}

async fn run_sync(options: SyncOptions, every: Option<Duration>) -> anyhow::Result<()> {
    let Some(every) = every else {
        let (_, result) = sync::sync_once(&options).await;
        result?;
        return Ok(());
    };
    let shutdown = serve::signals::shutdown_on_signal()?;
    tokio::pin!(shutdown);
    loop {
        let (_, result) = sync::sync_once(&options).await;
        match result {
            Ok(path) => tracing::info!(snapshot = %path.display(), "sync published a snapshot"),
            Err(e) => tracing::error!(error = %e, "sync failed; the service keeps its current snapshot"),
        }
        tracing::info!(next_in = ?every, "waiting for the next sync");
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}

fn verify(file: PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    let snapshot = Snapshot::open(&file)?;
    let opened = started.elapsed();
    snapshot.verify()?;
    let h = snapshot.header();
    println!(
        "{}: ok, {} products, built {}, source {:?}, opened in {:?}, verified in {:?}",
        file.display(),
        snapshot.len(),
        clock::UtcTime::from_unix(h.built_at).rfc3339(),
        h.source,
        opened,
        started.elapsed()
    );
    Ok(())
}

#[cfg(feature = "bench")]
fn bench_lookup(file: &std::path::Path, lookups: usize) -> anyhow::Result<()> {
    let r = bench::lookup_existing(file, lookups)?;
    println!("products            {}", r.products);
    println!("open                {:.2?}", r.open);
    println!("timed               Snapshot::get per lookup: hash, probe, decode the whole record");
    for (name, p) in [
        ("uniform keys", r.uniform),
        ("  home line only", r.home_line),
        ("  find_slot only", r.find_slot),
        ("  get, again", r.get_again),
        ("  get, line cached", r.get_cached),
        ("hot 4096 products", r.hot_4096),
        ("hot 64 products", r.hot_64),
    ] {
        println!("{name:<20}p50 {:?}  p99 {:?}  p99.9 {:?}", p.p50, p.p99, p.p999);
    }
    let total = r.displacement.iter().sum::<u64>().max(1) as f64;
    let shares: Vec<String> = r.displacement.iter().map(|&c| format!("{:.1}%", 100.0 * c as f64 / total)).collect();
    println!("slots past home     {} (0, 1, 2, ..., the last: {} or more)", shares.join(" "), shares.len() - 1);
    println!("batches of 100      mean {:?} per lookup (uniform keys, prefetching 8 ahead)", r.batched_mean);
    println!("memory after        {}", r.memory);
    Ok(())
}

#[cfg(feature = "bench")]
fn bench_build(products: u64, data: Option<PathBuf>, lookups: usize, verify: bool) -> anyhow::Result<()> {
    let temp = match &data {
        Some(_) => None,
        None => Some(tempfile_dir()?),
    };
    let dir = data.or_else(|| temp.clone()).context("no data directory")?;
    let result = bench::run(&dir, products, lookups, verify);
    if let Some(temp) = temp {
        let _ = std::fs::remove_dir_all(temp);
    }
    let r = result?;
    println!("products            {}", r.products);
    println!(
        "generate + add      {:.2?}  ({:.0} products/s)",
        r.generate_and_add,
        rate(r.products, r.generate_and_add)
    );
    println!("finish + publish    {:.2?}  (sort, dedup, write, checksum, fsync)", r.finish);
    println!("build total         {:.2?}", r.generate_and_add + r.finish);
    println!("snapshot file       {:.1} MiB", r.file_bytes as f64 / 1_048_576.0);
    if let Some(kib) = r.peak_rss_build_kib {
        println!("peak RSS (build)    {} MiB", kib / 1024);
    }
    println!("open                {:.2?}", r.open);
    if let Some(v) = r.verify {
        println!("verify (full)       {v:.2?}");
    }
    let s = &r.slots;
    println!(
        "slot table          {} slots of {} bytes, load {:.2}, {} records overflowed, displacement mean {:.2} max {}",
        s.slots,
        s.slot_size,
        s.products as f64 / s.slots.max(1) as f64,
        s.overflowed,
        s.mean_displacement,
        s.max_displacement
    );
    println!(
        "lookups             {} per distribution, each timed alone (Instant included): Snapshot::get = hash, \
         probe, decode the whole record",
        r.lookups
    );
    let u = r.uniform;
    println!("uniform keys        p50 {:?}  p99 {:?}  p99.9 {:?}  (10% misses)", u.p50, u.p99, u.p999);
    let z = r.skewed;
    println!("zipf-like keys      p50 {:?}  p99 {:?}  p99.9 {:?}", z.p50, z.p99, z.p999);
    println!("mean, get           {:?}  (uniform keys back to back, no timer per call)", r.mean_get);
    println!("mean, find_slot     {:?}  (key probe only, no record: not a full lookup)", r.mean_find_slot);
    println!("memory after        {}", r.status_after);
    Ok(())
}

#[cfg(feature = "bench")]
fn bench_memory(bytes: usize, dir: &std::path::Path, hops: usize, timed: usize, only: &[String]) -> anyhow::Result<()> {
    use gtin::memprobe::{self, Backing};
    let t = memprobe::timer(timed);
    let e = t.empty_pair;
    println!("Instant::now()      mean {:?} per call", t.now_mean);
    println!("empty timed region  p50 {:?}  p99 {:?}  p99.9 {:?}", e.p50, e.p99, e.p999);
    let wanted = |b: Backing| {
        let tag = match b {
            Backing::Anon4k => "anon4k",
            Backing::Anon2m => "anon2m",
            Backing::File2m => "file2m",
            Backing::File4k => "file4k",
        };
        only.is_empty() || only.iter().any(|o| o == tag)
    };
    for backing in Backing::ALL.into_iter().filter(|&b| wanted(b)) {
        let r = memprobe::measure(backing, bytes, dir, hops, timed)?;
        println!(
            "{:<18}  {:.1} MiB, {} MiB in 2 MB pages",
            backing.name(),
            r.bytes as f64 / 1_048_576.0,
            r.huge_kib / 1024
        );
        println!("  chase             mean {:?} per dependent load (no timer)", r.chase_mean);
        let s = r.single;
        println!("  one line, timed   p50 {:?}  p99 {:?}  p99.9 {:?}", s.p50, s.p99, s.p999);
        let b = r.burst3;
        println!("  3 lines, timed    p50 {:?}  p99 {:?}  p99.9 {:?}", b.p50, b.p99, b.p999);
    }
    Ok(())
}

#[cfg(feature = "bench")]
fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

#[cfg(feature = "bench")]
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("gtin-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn gen_export(products: u64, seed: u64, dirty_every: u64, out: PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    let counts = if out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        synth::write_export(&mut w, seed, products, dirty_every)?
    } else {
        if out.exists() {
            bail!("{} exists; not overwriting", out.display());
        }
        let file = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let counts = synth::write_export(&mut w, seed, products, dirty_every)?;
        std::io::Write::flush(&mut w)?;
        counts
    };
    eprintln!("gen-export: {counts:?} in {:.2?}", started.elapsed());
    Ok(())
}
