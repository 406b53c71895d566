//! The `gtin-service` command line: `serve` runs the lookup service, `sync` pulls the legacy export into a new
//! snapshot, `verify` checks a snapshot file, and `bench-build` / `gen-export` produce synthetic data for
//! measurements. Only argument parsing and wiring live here; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use gtin::server::{self, ServeOptions};
use gtin::snapshot::Snapshot;
use gtin::{clock, telemetry};

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
        /// How long in-flight requests may take to finish after SIGTERM (e.g. 10s).
        #[arg(long, default_value = "10s", value_parser = duration)]
        drain_timeout: Duration,
        #[arg(long, default_value_t = 10_000)]
        max_connections: usize,
    },
    /// Check a snapshot file completely (checksum, key order, every record).
    Verify { file: PathBuf },
}

fn duration(s: &str) -> Result<Duration, String> {
    clock::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging();
    match cli.command {
        Command::Serve { listen, data, drain_timeout, max_connections } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async {
                let metrics = telemetry::install_metrics().context("installing the metrics recorder")?;
                let options = ServeOptions { listen, data, drain_timeout, max_connections };
                server::serve(options, Some(metrics), server::shutdown_signal()).await?;
                anyhow::Ok(())
            })
        }
        Command::Verify { file } => {
            let started = std::time::Instant::now();
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
    }
}
