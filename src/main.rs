//! The `ficus` command line: `serve`, `check`.

use clap::{Parser, Subcommand};
use ficus::app::{ListenerSettings, Settings};
use ficus::lifecycle::{self, Shutdown};
use ficus::model::{parse_duration, Protocol};
use ficus::telemetry::{self, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "ficus", version, about = "A programmable reverse proxy and strangler gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Flags override the config file.
    Serve(ServeArgs),
    /// Validate a routes directory and list every problem; exits 1 if any value would be refused.
    Check {
        /// The routes directory.
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file (TOML). Without it, defaults plus flags.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Plain HTTP listener (HTTP/1.1 and h2c); repeatable.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// TLS listener (HTTP/1.1 and h2 by ALPN, certificates by SNI from hosts/ keys); repeatable.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Vec<SocketAddr>,
    /// Admin listener for /metrics, /status, /config, or `off`.
    #[arg(long, value_name = "ADDR|off")]
    admin: Option<String>,
    /// Routes directory (the embedded file store).
    #[arg(long, value_name = "DIR")]
    routes: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Turn the per-request access log off.
    #[arg(long)]
    no_access_log: bool,
    /// Believe X-Forwarded-* headers from clients of the --listen/--tls-listen listeners.
    #[arg(long)]
    trust_forward_header: bool,
    /// How long a shutdown waits for in-flight requests (Go-style duration, e.g. 30s).
    #[arg(long, value_parser = parse_go_duration)]
    drain_timeout: Option<Duration>,
    /// Worker threads (default: one per CPU core), like nginx's worker_processes.
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_go_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { dir } => check(&dir),
        Command::Serve(args) => serve(args),
    }
}

fn check(dir: &std::path::Path) -> ExitCode {
    match ficus::check::check_dir(dir) {
        Ok(report) => {
            for w in &report.warnings {
                println!("warning: {w}");
            }
            for e in &report.errors {
                println!("error: {e}");
            }
            println!(
                "{}: {} keys, {} frontends, {} backends, {} errors, {} warnings",
                dir.display(),
                report.keys,
                report.frontends,
                report.backends,
                report.errors.len(),
                report.warnings.len()
            );
            if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn settings(args: ServeArgs) -> Result<Settings, String> {
    let mut s = match &args.config {
        Some(path) => Settings::load(path).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    if !args.listen.is_empty() || !args.tls_listen.is_empty() {
        s.listeners.clear();
    }
    for (i, addr) in args.listen.iter().enumerate() {
        let name = if i == 0 { "http".to_string() } else { format!("http{i}") };
        s.listeners.push(ListenerSettings { name, address: *addr, protocol: Protocol::Http, trust_forward_header: args.trust_forward_header });
    }
    for (i, addr) in args.tls_listen.iter().enumerate() {
        let name = if i == 0 { "https".to_string() } else { format!("https{i}") };
        s.listeners.push(ListenerSettings { name, address: *addr, protocol: Protocol::Https, trust_forward_header: args.trust_forward_header });
    }
    match args.admin.as_deref() {
        Some("off") => s.admin.address = None,
        Some(a) => s.admin.address = Some(a.parse().map_err(|e| format!("--admin {a}: {e}"))?),
        None => {}
    }
    if let Some(r) = args.routes {
        s.routes.dir = r;
    }
    if let Some(f) = args.log_format {
        s.log.format = f;
    }
    if args.no_access_log {
        s.log.access_log = false;
    }
    if let Some(d) = args.drain_timeout {
        s.drain_timeout = d;
    }
    Ok(s)
}

/// A proxy holds two descriptors per proxied connection; the usual soft limit of 1024 is far too low, and
/// the hard limit is what the operator allowed.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::warn!("cannot raise the open file limit above {}", lim.rlim_cur);
            }
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let threads = args.threads;
    let settings = match settings(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _log_guard = telemetry::init_logging(settings.log.format, settings.log.access_log);
    raise_fd_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads.filter(|n| *n > 0) {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = Shutdown::new();
        tokio::spawn(lifecycle::watch_signals(shutdown.clone(), settings.drain_timeout));
        ficus::app::run(settings, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
