//! The `ficus` command line: `serve`, `check`, and the etcd operator commands `apply`, `export`, `canary`
//! (one split, or a judged rollout), `rollout status|abort`, `drain`, and `upgrade` (hot binary upgrade through the control socket).

use clap::{Parser, Subcommand};
use ficus::app::{ListenerSettings, Settings};
use ficus::lifecycle::{self, Shutdown};
use ficus::model::{parse_duration, Protocol};
use ficus::source::etcd::EtcdSettings;
use ficus::telemetry::{self, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The process allocator, chosen by the proxy's allocation pattern: every proxied request allocates and frees a
/// handful of blocks (hyper's 8 KiB read buffers among them, on both sides of the proxy). The C library's
/// allocator spent a tenth of the request path's instructions on them, mimalloc a third of that. Set here, in
/// the binary, so the library leaves the choice to whoever embeds it.
#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

/// mimalloc, entered through its plain `malloc` whenever that already gives the alignment asked for.
/// `mimalloc::MiMalloc` always calls `mi_malloc_aligned`, which serves blocks over 1 KiB (hyper's buffers, the
/// boxed request future) by over-allocating and aligning by hand: five of the eleven allocations of a proxied
/// request went that way, 1.2k instructions (docs/PERFORMANCE.md). Plain `mi_malloc` blocks are aligned to 16
/// bytes from 16 bytes up (to 8 below), as the C library's `malloc` promises; std's own allocator makes the
/// same test before it calls `malloc`.
struct Mimalloc;

/// The alignment every `mi_malloc` block of at least this many bytes has (`MI_MAX_ALIGN_SIZE`).
const MI_MAX_ALIGN: usize = 16;

impl Mimalloc {
    #[inline]
    fn plain(layout: std::alloc::Layout) -> bool {
        layout.align() <= MI_MAX_ALIGN && layout.align() <= layout.size()
    }
}

// SAFETY: every block comes from mimalloc with at least the layout's alignment (the plain entry points only
// when `plain` holds, see above), and every block goes back through `mi_free`, which takes blocks of any of
// its entry points.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if Self::plain(layout) {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if Self::plain(layout) {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MI_MAX_ALIGN && layout.align() <= new_size {
            libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// Called as a runtime thread goes idle: passes on the access-log lines it buffered, and gives the memory this
/// thread freed back to the OS, at most once a second. mimalloc hands pages back only from the thread that owns them,
/// on its next allocations, so a gateway going quiet after a burst (thousands of keep-alive connections
/// parking, see `listen::conn`) would otherwise keep the whole peak resident until traffic resumes.
fn on_idle() {
    use std::cell::Cell;
    use std::time::Instant;
    const EVERY: Duration = Duration::from_secs(1);
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    telemetry::batch::flush_thread();
    LAST.with(|last| {
        let now = Instant::now();
        if last.get().map_or(true, |t| now.duration_since(t) >= EVERY) {
            last.set(Some(now));
            // SAFETY: mi_collect takes no pointers; it only walks this thread's own heap.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    });
}

#[derive(Parser)]
#[command(name = "ficus", version, about = "A programmable reverse proxy and strangler gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Flags override the config file.
    Serve(Box<ServeArgs>),
    /// Hot-upgrade the serving gateway: it starts the binary again with the same sockets, waits until the
    /// new process is ready, then drains. Exits 1 (with the reason) if the upgrade failed.
    Upgrade {
        /// The control socket given to `serve --control`.
        #[arg(long, value_name = "PATH")]
        control: PathBuf,
        /// How long to wait for the outcome (Go-style duration).
        #[arg(long, value_parser = parse_go_duration, default_value = "60s")]
        wait: Duration,
    },
    /// Validate a routes directory and list every problem; exits 1 if any value would be refused.
    Check {
        /// The routes directory.
        dir: PathBuf,
    },
    /// Validate a routes directory, show its diff against etcd, and write it in one guarded transaction (several,
    /// dependencies first, when it is over etcd's per-transaction limit).
    Apply {
        /// The routes directory.
        dir: PathBuf,
        #[command(flatten)]
        etcd: EtcdArgs,
        /// Show the diff, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete keys under the prefix that no file defines (keys with a lease are kept).
        #[arg(long)]
        prune: bool,
        /// Write even if someone changed the keys since they were read.
        #[arg(long)]
        force: bool,
        /// The etcd server's --max-txn-ops: a larger plan is written in several transactions, dependencies first.
        #[arg(long, default_value_t = ficus::ops::ETCD_MAX_TXN_OPS as u64, value_parser = clap::value_parser!(u64).range(1..))]
        max_txn_ops: u64,
    },
    /// Write etcd's tree under the prefix as route files.
    Export {
        /// Where to write (created if missing).
        dir: PathBuf,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Split a frontend's traffic: `ficus canary gtin legacy=95 gtin=5` (percents sum to 100); or move it in
    /// judged steps with rollback: `ficus canary gtin --to gtin --steps 5,25,50,100 --interval 60s
    /// --max-error-rate 1% --max-p99 250ms --admin http://10.0.0.1:9090,http://10.0.0.2:9090`. A rollout's
    /// state is kept in etcd: the same command continues it after it was stopped.
    Canary {
        frontend: String,
        #[arg(value_name = "BACKEND=PERCENT", required_unless_present = "to", conflicts_with = "to")]
        split: Vec<String>,
        /// Roll out to this backend in steps (the frontend's other backends share the rest).
        #[arg(long, value_name = "BACKEND", requires = "admin")]
        to: Option<String>,
        /// The canary's percentages, rising.
        #[arg(long, value_name = "P,P,...", default_value = "5,25,50,100")]
        steps: String,
        /// How long each step is held before it is judged and promoted (Go-style duration); a breach is looked
        /// for every second meanwhile and rolls back at once.
        #[arg(long, value_parser = parse_go_duration, default_value = "60s")]
        interval: Duration,
        /// Roll back when the canary's share of 5xx answers over a step is above this.
        #[arg(long, value_parser = ficus::ops::rollout::parse_rate, default_value = "1%")]
        max_error_rate: f64,
        /// Roll back when the canary's p99 latency at any instance over a step is above this.
        #[arg(long, value_parser = parse_go_duration, default_value = "250ms")]
        max_p99: Duration,
        /// Fewer canary requests in a step is too little to judge: the step is held for another interval.
        #[arg(long, value_name = "N", default_value_t = 20)]
        min_requests: u64,
        /// Every instance's admin listener, whose counters judge each step (token from FICUS_ADMIN_TOKEN).
        #[arg(long, value_name = "URL", value_delimiter = ',')]
        admin: Vec<String>,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// A rollout started by `ficus canary --to`: `status` shows it, `abort` rolls the canary back to 0%.
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// Mark a server draining (no new requests, in-flight ones finish): `ficus drain gtin/gtin-1`.
    Drain {
        #[arg(value_name = "BACKEND/SERVER")]
        target: String,
        /// Put the server back into rotation.
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

#[derive(Subcommand)]
enum RolloutAction {
    /// The stored state of a frontend's rollout.
    Status {
        frontend: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Roll the canary back to 0% and stop the rollout (a running command sees it and stops).
    Abort {
        frontend: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

/// Where etcd is. The password comes from `FICUS_ETCD_PASSWORD`, never from a flag anyone can see in `ps`.
#[derive(clap::Args, Clone, Default)]
struct EtcdArgs {
    /// etcd endpoint(s), `http://host:2379` or `https://...`; repeatable or comma-separated.
    #[arg(long = "etcd", value_name = "URL", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Key prefix (default /vulcand).
    #[arg(long = "etcd-prefix", value_name = "PREFIX")]
    prefix: Option<String>,
    /// etcd user (password from FICUS_ETCD_PASSWORD).
    #[arg(long = "etcd-user", value_name = "NAME")]
    user: Option<String>,
    /// CA certificate (PEM) for etcd's TLS.
    #[arg(long = "etcd-ca", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's TLS.
    #[arg(long = "etcd-cert", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Client key (PEM) for etcd's TLS.
    #[arg(long = "etcd-key", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Bound on each etcd request (Go-style duration).
    #[arg(long = "etcd-timeout", value_parser = parse_go_duration, value_name = "DURATION")]
    timeout: Option<Duration>,
    /// How quiet a watch may be before Ficus pings etcd to check it is alive (Go-style duration).
    #[arg(long = "etcd-keepalive", value_parser = parse_go_duration, value_name = "DURATION")]
    keepalive: Option<Duration>,
}

impl EtcdArgs {
    /// Flags over the config file's `[etcd]`; `None` when neither names an endpoint.
    fn settings(&self, base: Option<EtcdSettings>) -> Option<EtcdSettings> {
        let mut s = match base {
            Some(b) => b,
            None if self.endpoints.is_empty() => return None,
            None => EtcdSettings::new(Vec::new()),
        };
        if !self.endpoints.is_empty() {
            s.endpoints = self.endpoints.clone();
        }
        if let Some(p) = &self.prefix {
            s.prefix = p.clone();
        }
        if let Some(u) = &self.user {
            s.username = Some(u.clone());
        }
        if self.ca.is_some() {
            s.ca = self.ca.clone();
        }
        if self.cert.is_some() {
            s.cert = self.cert.clone();
        }
        if self.key.is_some() {
            s.key = self.key.clone();
        }
        if let Some(t) = self.timeout {
            s.request_timeout = t;
        }
        if let Some(k) = self.keepalive {
            s.keepalive = k;
        }
        Some(s)
    }

    fn required(&self) -> Result<EtcdSettings, String> {
        self.settings(None).ok_or_else(|| "give --etcd URL".to_string())
    }
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
    /// Admin listener for /metrics, /status, /config, the dashboard (/dashboard/), or `off`.
    #[arg(long, value_name = "ADDR|off")]
    admin: Option<String>,
    /// Routes directory (the embedded file store).
    #[arg(long, value_name = "DIR")]
    routes: Option<PathBuf>,
    #[command(flatten)]
    etcd: EtcdArgs,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Turn the per-request access log off.
    #[arg(long)]
    no_access_log: bool,
    /// Write the access log to this file instead of stdout; SIGHUP reopens it (logrotate).
    #[arg(long, value_name = "PATH")]
    access_log_file: Option<PathBuf>,
    /// Believe X-Forwarded-* headers from clients of the --listen/--tls-listen listeners.
    #[arg(long)]
    trust_forward_header: bool,
    /// How long a shutdown waits for in-flight requests (Go-style duration, e.g. 30s).
    #[arg(long, value_parser = parse_go_duration)]
    drain_timeout: Option<Duration>,
    /// Worker threads (default: one per CPU this process may run on), like nginx's `worker_processes auto`.
    /// More than one: each thread runs its own single-threaded runtime and serves the connections handed to
    /// it (thread-per-core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Keep this file naming the pid of the process that serves (across hot upgrades).
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
    /// Unix control socket for `ficus upgrade`.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Once bound, write the pid and each listener's address here (JSON); useful with port 0.
    #[arg(long, value_name = "PATH")]
    address_file: Option<PathBuf>,
    /// How long a hot upgrade waits for the new process to be ready (Go-style duration, default 30s).
    #[arg(long, value_parser = parse_go_duration)]
    upgrade_timeout: Option<Duration>,
    /// Largest request head (request line and headers) in bytes; more is 431 (default 32768, at least 8192).
    #[arg(long, value_name = "BYTES")]
    max_head_bytes: Option<usize>,
    /// Longest request line in bytes; more is 414 (default 8192).
    #[arg(long, value_name = "BYTES")]
    max_request_line_bytes: Option<usize>,
    /// Longest header line in bytes; more is 431 (default 8192).
    #[arg(long, value_name = "BYTES")]
    max_header_bytes: Option<usize>,
    /// Most header lines in one request; more is 431 (default 100).
    #[arg(long, value_name = "N")]
    max_headers: Option<usize>,
    /// Open connections per listener (default: half the open-file limit less 128).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// What an encoded slash (%2F) in a request path does: `reject` (400, the default) or `keep`.
    #[arg(long, value_name = "reject|keep")]
    encoded_slash: Option<ficus::proxy::limits::EncodedSlash>,
    /// How long a client has to send a request head; a partial one is then answered 408 (default 30s).
    #[arg(long, value_parser = parse_go_duration)]
    header_timeout: Option<Duration>,
    /// A Host name the admin listener answers besides loopback names; repeatable.
    #[arg(long = "admin-allowed-host", value_name = "NAME")]
    admin_allowed_hosts: Vec<String>,
}

fn parse_go_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { dir } => check(&dir),
        Command::Upgrade { control, wait } => match lifecycle::upgrade::request_upgrade(&control, wait) {
            Ok(msg) => {
                println!("upgraded: {msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: upgrade failed: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => serve(*args),
        Command::Apply { dir, etcd, dry_run, prune, force, max_txn_ops } => {
            let opts = ficus::ops::ApplyOptions { dry_run, prune, force, max_txn_ops: max_txn_ops as usize };
            operate(&etcd, |s| async move { apply(&dir, &s, &opts).await })
        }
        Command::Export { dir, etcd } => operate(&etcd, |s| async move {
            let (n, warnings) = ficus::ops::export(&s, &dir).await.map_err(|e| e.to_string())?;
            for w in warnings {
                println!("warning: {w}");
            }
            println!("wrote {n} keys to {}", dir.display());
            Ok(())
        }),
        Command::Canary {
            frontend,
            to: Some(to),
            steps,
            interval,
            max_error_rate,
            max_p99,
            min_requests,
            admin,
            etcd,
            ..
        } => operate(&etcd, |s| async move {
            let steps = ficus::ops::rollout::parse_steps(&steps).map_err(|e| e.to_string())?;
            let admin_token = std::env::var("FICUS_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
            let spec = ficus::ops::rollout::RolloutSpec {
                to,
                steps,
                interval,
                max_error_rate,
                max_p99,
                min_requests,
                admin,
                admin_token,
            };
            let mut out = Progress::new();
            let outcome =
                ficus::ops::rollout::rollout(&s, &frontend, &spec, &mut out).await.map_err(|e| e.to_string())?;
            out.finish();
            match outcome {
                ficus::ops::rollout::Outcome::Done => Ok(()),
                ficus::ops::rollout::Outcome::RolledBack(why) => Err(format!("{frontend}: {why}")),
                ficus::ops::rollout::Outcome::Paused(why) => Err(format!("{frontend}: paused: {why}")),
                ficus::ops::rollout::Outcome::Stopped(why) => Err(format!("{frontend}: {why}")),
            }
        }),
        Command::Rollout { action: RolloutAction::Status { frontend, etcd } } => operate(&etcd, |s| async move {
            println!("{}", ficus::ops::rollout::status(&s, &frontend).await.map_err(|e| e.to_string())?);
            Ok(())
        }),
        Command::Rollout { action: RolloutAction::Abort { frontend, etcd } } => operate(&etcd, |s| async move {
            println!("{}", ficus::ops::rollout::abort(&s, &frontend).await.map_err(|e| e.to_string())?);
            Ok(())
        }),
        Command::Canary { frontend, split, etcd, .. } => operate(&etcd, |s| async move {
            let split = ficus::ops::parse_split(&split).map_err(|e| e.to_string())?;
            let value = ficus::ops::canary(&s, &frontend, &split).await.map_err(|e| e.to_string())?;
            println!("{}: {value}", s.absolute_key(&format!("frontends/{frontend}/frontend")));
            Ok(())
        }),
        Command::Drain { target, undo, etcd } => operate(&etcd, |s| async move {
            let value = ficus::ops::drain(&s, &target, undo).await.map_err(|e| e.to_string())?;
            println!("{}: {value}", s.absolute_key(&format!("backends/{}", target.replacen('/', "/servers/", 1))));
            Ok(())
        }),
    }
}

/// A rollout's progress on stdout: whole lines always; on a terminal, also one line redrawn in place.
struct Progress {
    tty: bool,
    drawn: bool,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Progress { tty: std::io::stdout().is_terminal(), drawn: false }
    }

    fn clear(&mut self) {
        if self.drawn {
            print!("\r\x1b[2K");
            self.drawn = false;
        }
    }

    fn finish(&mut self) {
        self.clear();
    }
}

impl ficus::ops::rollout::Report for Progress {
    fn line(&mut self, text: &str) {
        self.clear();
        println!("{text}");
    }

    fn progress(&mut self, text: &str) {
        use std::io::Write;
        if self.tty {
            print!("\r\x1b[2K{text}");
            let _ = std::io::stdout().flush();
            self.drawn = true;
        }
    }
}

/// Runs one etcd operator command on a small runtime; errors print and exit 1 (2 for bad usage).
fn operate<F, Fut>(etcd: &EtcdArgs, f: F) -> ExitCode
where
    F: FnOnce(EtcdSettings) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let settings = match etcd.required() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn apply(dir: &std::path::Path, s: &EtcdSettings, opts: &ficus::ops::ApplyOptions) -> Result<(), String> {
    let report = ficus::ops::apply(dir, s, opts).await.map_err(|e| e.to_string())?;
    for w in &report.warnings {
        println!("warning: {w}");
    }
    let d = &report.diff;
    for k in &d.added {
        println!("+ {}", s.absolute_key(k));
    }
    for k in &d.changed {
        println!("~ {}", s.absolute_key(k));
    }
    for k in &d.removed {
        let what = if opts.prune { "" } else { " (kept; --prune deletes it)" };
        println!("- {}{what}", s.absolute_key(k));
    }
    for k in &d.leased {
        println!("= {} (leased, not in files: kept)", s.absolute_key(k));
    }
    let removed = if opts.prune { d.removed.len() } else { 0 };
    let verb = match (opts.dry_run, report.written_at) {
        (true, _) => "dry run: would write".to_string(),
        (false, Some(rev)) if report.transactions > 1 => {
            format!(
                "written in {} transactions (over etcd's per-transaction limit), the last at revision {rev}:",
                report.transactions
            )
        }
        (false, Some(rev)) => format!("written at revision {rev}:"),
        (false, None) => "nothing to write:".to_string(),
    };
    println!("{verb} {} added, {} changed, {removed} removed", d.added.len(), d.changed.len());
    Ok(())
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
        s.listeners.push(ListenerSettings {
            name,
            address: *addr,
            protocol: Protocol::Http,
            trust_forward_header: args.trust_forward_header,
        });
    }
    for (i, addr) in args.tls_listen.iter().enumerate() {
        let name = if i == 0 { "https".to_string() } else { format!("https{i}") };
        s.listeners.push(ListenerSettings {
            name,
            address: *addr,
            protocol: Protocol::Https,
            trust_forward_header: args.trust_forward_header,
        });
    }
    match args.admin.as_deref() {
        Some("off") => s.admin.address = None,
        Some(a) => s.admin.address = Some(a.parse().map_err(|e| format!("--admin {a}: {e}"))?),
        None => {}
    }
    if let Some(r) = args.routes {
        s.routes.dir = r;
    }
    if let Some(etcd) = args.etcd.settings(s.etcd.take()) {
        s.etcd = Some(etcd);
    }
    if let Some(f) = args.log_format {
        s.log.format = f;
    }
    if args.no_access_log {
        s.log.access_log = false;
    }
    if args.access_log_file.is_some() {
        s.log.access_log_file = args.access_log_file;
    }
    if let Some(d) = args.drain_timeout {
        s.drain_timeout = d;
    }
    if args.pid_file.is_some() {
        s.process.pid_file = args.pid_file;
    }
    if args.control.is_some() {
        s.process.control = args.control;
    }
    if args.address_file.is_some() {
        s.process.address_file = args.address_file;
    }
    if let Some(t) = args.upgrade_timeout {
        s.process.upgrade_timeout = t;
    }
    let l = &mut s.limits;
    l.max_head_bytes = args.max_head_bytes.unwrap_or(l.max_head_bytes);
    l.max_request_line_bytes = args.max_request_line_bytes.unwrap_or(l.max_request_line_bytes);
    l.max_header_bytes = args.max_header_bytes.unwrap_or(l.max_header_bytes);
    l.max_headers = args.max_headers.unwrap_or(l.max_headers);
    l.max_connections = args.max_connections.unwrap_or(l.max_connections);
    l.encoded_slash = args.encoded_slash.unwrap_or(l.encoded_slash);
    l.header_timeout = args.header_timeout.unwrap_or(l.header_timeout);
    s.admin.allowed_hosts.extend(args.admin_allowed_hosts);
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

/// The gateway on this thread's runtime: the control plane, the accept loops, and (in thread-per-core mode,
/// as worker 0) connections.
fn run_gateway(
    runtime: &tokio::runtime::Runtime,
    settings: ficus::app::Settings,
    reopen_access_log: bool,
) -> Result<(), ficus::app::AppError> {
    let drain_timeout = settings.drain_timeout;
    runtime.block_on(async move {
        let shutdown = Shutdown::new();
        tokio::spawn(lifecycle::watch_signals(shutdown.clone(), drain_timeout));
        tokio::spawn(telemetry::reopen_access_log_on_sighup(reopen_access_log));
        ficus::app::run(settings, shutdown).await
    })
}

/// One thread (`--threads 1`, or a process allowed one CPU): one single-threaded runtime, nginx's
/// `worker_processes 1`.
fn one_runtime(settings: ficus::app::Settings, reopen_access_log: bool) -> Result<(), ficus::app::AppError> {
    let runtime = worker_runtime().map_err(ficus::app::AppError::Runtime)?;
    let result = run_gateway(&runtime, settings, reopen_access_log);
    // A single-threaded runtime ran on this thread: its buffered lines go out before the log is flushed.
    telemetry::batch::stop_thread();
    result
}

/// A single-threaded runtime with the hooks every serving thread has (telemetry batching, memory given back).
fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(on_idle)
        .on_thread_stop(telemetry::batch::stop_thread)
        .build()
}

/// Thread-per-core (`--threads n`, n > 1): n single-threaded runtimes, like nginx's worker processes
/// (`ficus::worker`). Runtime 0 is this thread's and runs the gateway as today; threads 1..n serve the
/// connections handed to them until the gateway has drained, then are joined.
fn thread_per_core(
    n: usize,
    settings: ficus::app::Settings,
    reopen_access_log: bool,
) -> Result<(), ficus::app::AppError> {
    let main = worker_runtime().map_err(ficus::app::AppError::Runtime)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut handles = vec![main.handle().clone()];
    let mut threads = Vec::with_capacity(n - 1);
    for id in 1..n {
        let runtime = worker_runtime().map_err(ficus::app::AppError::Runtime)?;
        handles.push(runtime.handle().clone());
        let mut stop = stop_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ficus-worker-{id}"))
            .spawn(move || {
                ficus::worker::enter(id);
                runtime.block_on(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                });
                // What the worker's tasks still hold (idle upstream connections, reapers) goes with its runtime,
                // on its own thread; then its buffered log lines go out.
                drop(runtime);
                telemetry::batch::stop_thread();
            })
            .map_err(ficus::app::AppError::Runtime)?;
        threads.push(thread);
    }
    ficus::worker::enter(0);
    ficus::worker::install(handles);
    let result = run_gateway(&main, settings, reopen_access_log);
    let _ = stop_tx.send(true);
    for thread in threads {
        let _ = thread.join();
    }
    drop(main);
    telemetry::batch::stop_thread();
    result
}

fn serve(args: ServeArgs) -> ExitCode {
    // First: remember how this process was started and adopt inherited sockets (hot upgrade, systemd).
    lifecycle::upgrade::init();
    // One thread per CPU this process may run on (its affinity mask and cgroup quota), as nginx's
    // `worker_processes auto`: thread-per-core used less CPU per request than tokio's multi-thread scheduler
    // on two cores, keep-alive or not (docs/PERFORMANCE.md), so that scheduler is no longer used.
    let threads = args
        .threads
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    let settings = match settings(args) {
        Ok(s) => s,
        Err(e) => {
            lifecycle::upgrade::report_failure(&e);
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let access_file = settings.log.access_log_file.clone();
    let _log_guards =
        match telemetry::init_logging(settings.log.format, settings.log.access_log, access_file.as_deref()) {
            Ok(guards) => guards,
            Err(e) => {
                let path = access_file.as_deref().unwrap_or(std::path::Path::new("")).display();
                let e = format!("access log file {path}: {e}");
                lifecycle::upgrade::report_failure(&e);
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
    raise_fd_limit();
    let result = match threads {
        n if n > 1 => thread_per_core(n, settings, access_file.is_some()),
        _ => one_runtime(settings, access_file.is_some()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            lifecycle::upgrade::report_failure(&e.to_string());
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
