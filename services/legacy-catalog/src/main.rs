//! The `legacy-catalog` binary: command line, logging, signals, then `server::serve`.
//!
//! It prints one line to stdout once it accepts connections (`legacy-catalog listening on http://ADDR`),
//! which scripts and the tests wait for; everything else is tracing output on stderr.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use legacy_catalog::{server, App, Catalog, DirtyRate, Stopped};

/// The legacy catalog monolith stand-in: HTML pages, a 12-digit-only GTIN lookup, a bulk export.
#[derive(Debug, Parser)]
#[command(name = "legacy-catalog", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "LEGACY_CATALOG_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Number of products in the generated catalog.
    #[arg(long, env = "LEGACY_CATALOG_PRODUCTS", default_value_t = 100_000)]
    products: u64,
    /// Seed of the generated catalog; the same seed always gives the same catalog and export.
    #[arg(long, env = "LEGACY_CATALOG_SEED", default_value_t = 1)]
    seed: u64,
    /// Share of products (0 to 1) that get one extra dirty row in the export.
    #[arg(long, env = "LEGACY_CATALOG_DIRTY_RATE", default_value_t = 0.01)]
    dirty_rate: f64,
    /// Artificial delay before every response except /health, in milliseconds.
    #[arg(long, env = "LEGACY_CATALOG_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish, in milliseconds (a second
    /// signal exits at once).
    #[arg(long, env = "LEGACY_CATALOG_GRACE_MS", default_value_t = 5_000)]
    grace_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    serve::logging::init(serve::logging::LogFormat::Text);

    let catalog = Catalog::new(args.seed, args.products)?;
    let dirty_rate = DirtyRate::new(args.dirty_rate)?;
    let app = App::new(catalog, dirty_rate, Duration::from_millis(args.latency_ms));
    // Install the handlers before announcing the address, so a SIGTERM sent right after the announcement is
    // a graceful stop and not the default "terminate now". A second signal exits at once.
    let shutdown = serve::signals::shutdown_on_signal()?;

    let listener = server::bind(args.listen).await?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        %addr,
        products = args.products,
        seed = args.seed,
        dirty_rate = args.dirty_rate,
        latency_ms = args.latency_ms,
        "legacy catalog listening"
    );
    println!("legacy-catalog listening on http://{addr}");

    let grace = Duration::from_millis(args.grace_ms);
    match server::serve(listener, Arc::new(app), shutdown, grace).await {
        Stopped::Drained => tracing::info!("stopped"),
        Stopped::GraceExpired => tracing::warn!("stopped with connections cut"),
    }
    Ok(())
}
