//! The sync job: the moving half of the anti-corruption layer. It streams the legacy export (HTTP or a file),
//! has [`crate::legacy`] translate every line, feeds accepted products to the [`SnapshotBuilder`], and publishes
//! the snapshot only if the export was complete and the new file verifies. Then it tells the running service to
//! reload. A report of what was rejected and why goes to stderr and to `sync-report-<ts>.json` in the data dir.
//!
//! ```text
//! hyper body frames --(bounded channel of chunks)--> blocking thread: split lines -> ExportReader -> builder
//!                                                    -> finish -> verify (checksum + sampled lookups) -> publish
//! -> report -> POST <notify>/admin/reload
//! ```
//! The body is never held in memory: the channel holds at most a few chunks, and each line is translated
//! borrowing from the chunk it arrived in.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use crate::builder::{BuildError, SnapshotBuilder};
use crate::clock::UtcTime;
use crate::gtin::Gtin;
use crate::legacy::{cut, ExportError, ExportReader, Line};
use crate::snapshot::SnapshotError;
use crate::synth::Rng;

mod report;

use report::{print_summary, write_report};
pub use report::{Example, ReasonCount, Report, Timings};

/// Keys remembered (reservoir-sampled) to look up in the new snapshot before it is published.
const SAMPLE: usize = 1000;
/// Example rows kept per rejection reason.
const EXAMPLES: usize = 3;
/// A line longer than this is not a row of this export; the export is refused.
const MAX_LINE: usize = 1 << 20;
/// Silence from the export server longer than this aborts the sync.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("--from {from:?}: {why}")]
    BadSource { from: String, why: &'static str },
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("reading {}: {source}", .path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("export refused: {0}")]
    Export(#[from] ExportError),
    #[error("export refused: line {line} is longer than {MAX_LINE} bytes")]
    LongLine { line: u64 },
    #[error("export refused: no valid products in it")]
    NoProducts,
    #[error("building the snapshot: {0}")]
    Build(#[from] BuildError),
    #[error("verifying the new snapshot: {0}")]
    Verify(#[from] SnapshotError),
    #[error("verifying the new snapshot: sampled GTIN {0} is missing")]
    SampleMissing(Gtin),
    #[error("notifying {url}: {message}")]
    Notify { url: String, message: String },
    #[error("writing the report {}: {source}", .path.display())]
    Report { path: PathBuf, source: io::Error },
    #[error("the sync worker failed: {0}")]
    Worker(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http(Uri),
    File(PathBuf),
}

impl Source {
    /// `http://...`, `file:///path`, or a plain path.
    pub fn parse(from: &str) -> Result<Source, SyncError> {
        let bad = |why| SyncError::BadSource { from: from.to_string(), why };
        if let Some(path) = from.strip_prefix("file://") {
            return Ok(Source::File(PathBuf::from(path)));
        }
        if from.starts_with("https://") {
            return Err(bad("https is not supported; sync from inside the network over http"));
        }
        if from.starts_with("http://") {
            return from.parse::<Uri>().map(Source::Http).map_err(|_| bad("not a valid URL"));
        }
        if from.contains("://") {
            return Err(bad("use http://, file:// or a path"));
        }
        Ok(Source::File(PathBuf::from(from)))
    }
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub from: String,
    pub data: PathBuf,
    /// Base URL of the running service; `/admin/reload` is appended unless already there.
    pub notify: Option<String>,
    /// Print a progress line to stderr while reading.
    pub progress: bool,
}

/// Runs one sync. The report is returned whatever happened; the result says whether a snapshot was published
/// (and the service notified).
pub async fn sync_once(options: &SyncOptions) -> (Report, Result<PathBuf, SyncError>) {
    let started = Instant::now();
    let started_at = UtcTime::now();
    let mut report = Report { source: options.from.clone(), started_at: started_at.rfc3339(), ..Report::default() };
    let result = match Source::parse(&options.from) {
        Ok(source) => ingest_and_publish(source, options, &mut report).await,
        Err(e) => Err(e),
    };
    let result = match result {
        Ok(path) => match &options.notify {
            Some(base) => match notify(base).await {
                Ok(answer) => {
                    report.notified = Some(answer);
                    Ok(path)
                }
                Err(e) => {
                    report.notified = Some(e.to_string());
                    Err(e)
                }
            },
            None => Ok(path),
        },
        Err(e) => {
            report.refused = Some(e.to_string());
            Err(e)
        }
    };
    report.seconds.total = started.elapsed().as_secs_f64();
    report.finished_at = UtcTime::now().rfc3339();
    print_summary(&report);
    if let Err(e) = write_report(&options.data, &started_at, &report) {
        tracing::error!(error = %e, "could not write the sync report");
    }
    (report, result)
}

async fn ingest_and_publish(source: Source, options: &SyncOptions, report: &mut Report) -> Result<PathBuf, SyncError> {
    let builder = SnapshotBuilder::new(&options.data, &cut_source(&options.from))?;
    let mut ingest = Ingest::new(builder, options.progress);
    let (ingest_result, fetch_result) = match source {
        Source::File(path) => {
            let worker = tokio::task::spawn_blocking(move || {
                let result = read_file(&path, &mut ingest).and_then(|()| ingest.finish());
                (ingest, result)
            });
            (worker.await, Ok(()))
        }
        Source::Http(uri) => {
            let (tx, mut rx) = mpsc::channel::<Bytes>(16);
            let worker = tokio::task::spawn_blocking(move || {
                let mut result = Ok(());
                while let Some(chunk) = rx.blocking_recv() {
                    if let Err(e) = ingest.push(&chunk) {
                        result = Err(e);
                        break;
                    }
                }
                // Dropping the receiver stops the fetch if this side gave up first.
                drop(rx);
                let result = result.and_then(|()| ingest.finish());
                (ingest, result)
            });
            let fetched = fetch(uri, tx).await;
            (worker.await, fetched)
        }
    };
    let (ingest, result) = ingest_result.map_err(|e| SyncError::Worker(e.to_string()))?;
    let Ingest { builder, report: partial, sample, .. } = ingest;
    *report = Report { source: report.source.clone(), started_at: report.started_at.clone(), ..partial };
    // A broken stream explains a missing trailer better than the missing trailer does.
    fetch_result?;
    result?;
    if report.accepted_rows == 0 {
        return Err(SyncError::NoProducts);
    }
    let (outcome, build_report) = tokio::task::spawn_blocking(move || build_verify_publish(builder, &sample))
        .await
        .map_err(|e| SyncError::Worker(e.to_string()))?;
    report.products = build_report.products;
    report.duplicates = build_report.duplicates;
    report.duplicate_examples = build_report.duplicate_examples;
    report.seconds.build = build_report.build;
    report.seconds.verify = build_report.verify;
    let path = outcome?;
    report.published = Some(path.display().to_string());
    Ok(path)
}

#[derive(Default)]
struct BuildReport {
    products: u64,
    duplicates: u64,
    duplicate_examples: Vec<String>,
    build: f64,
    verify: f64,
}

/// Sorts and writes the snapshot, verifies every byte and a sample of lookups, then publishes it.
fn build_verify_publish(builder: SnapshotBuilder, sample: &[u64]) -> (Result<PathBuf, SyncError>, BuildReport) {
    let mut out = BuildReport::default();
    let started = Instant::now();
    eprintln!("sync: building the snapshot ({} rows)", builder.len());
    let built = match builder.finish() {
        Ok(built) => built,
        Err(e) => return (Err(e.into()), out),
    };
    out.build = started.elapsed().as_secs_f64();
    out.products = built.stats.products;
    out.duplicates = built.stats.duplicates;
    out.duplicate_examples = built
        .stats
        .duplicate_examples
        .iter()
        .map(|d| format!("{}: kept the row updated {}, dropped {}", d.gtin, d.kept_updated, d.dropped_updated))
        .collect();
    let started = Instant::now();
    let verified = (|| {
        let snapshot = built.open()?;
        snapshot.verify()?;
        for &key in sample {
            let gtin = Gtin::from_key(key).ok_or(SyncError::Worker(format!("sampled key {key} out of range")))?;
            if snapshot.get(gtin)?.is_none() {
                return Err(SyncError::SampleMissing(gtin));
            }
        }
        Ok::<_, SyncError>(())
    })();
    out.verify = started.elapsed().as_secs_f64();
    eprintln!("sync: built in {:.1}s, verified in {:.1}s", out.build, out.verify);
    if let Err(e) = verified {
        return (Err(e), out);
    }
    (built.publish().map_err(SyncError::from), out)
}

/// Line splitting, translation and counting, on the blocking side.
struct Ingest {
    reader: ExportReader,
    builder: SnapshotBuilder,
    report: Report,
    pending: Vec<u8>,
    line_no: u64,
    sample: Vec<u64>,
    rng: Rng,
    progress: Progress,
}

impl Ingest {
    fn new(builder: SnapshotBuilder, progress: bool) -> Ingest {
        Ingest {
            reader: ExportReader::new(),
            builder,
            report: Report::default(),
            pending: Vec::new(),
            line_no: 0,
            sample: Vec::with_capacity(SAMPLE),
            rng: Rng::new(0x5eed),
            progress: Progress::new(progress),
        }
    }

    fn push(&mut self, mut chunk: &[u8]) -> Result<(), SyncError> {
        while let Some(at) = chunk.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                self.line(&chunk[..at])?;
            } else {
                self.pending.extend_from_slice(&chunk[..at]);
                let line = std::mem::take(&mut self.pending);
                self.line(&line)?;
                self.pending = line;
                self.pending.clear();
            }
            chunk = &chunk[at + 1..];
        }
        self.pending.extend_from_slice(chunk);
        if self.pending.len() > MAX_LINE {
            return Err(SyncError::LongLine { line: self.line_no + 1 });
        }
        Ok(())
    }

    /// The stream ended: the last line may lack its `\n`; the export must have been complete.
    fn finish(&mut self) -> Result<(), SyncError> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.line(&line)?;
        }
        self.progress.done(self.reader.rows());
        self.report.rows_read = self.reader.rows();
        self.report.seconds.read = self.progress.started.elapsed().as_secs_f64();
        self.report.rows_per_second = self.report.rows_read as f64 / self.report.seconds.read.max(1e-9);
        self.reader.finish()?;
        Ok(())
    }

    fn line(&mut self, bytes: &[u8]) -> Result<(), SyncError> {
        self.line_no += 1;
        match self.reader.line(self.line_no, bytes)? {
            Line::Header(header) => {
                if let Some(n) = header.products {
                    // A hint only; capped so that a wild header cannot make us reserve absurd memory.
                    self.builder.reserve(n.min(50_000_000) as usize + n.min(50_000_000) as usize / 16);
                }
                self.report.export_header = Some(header.line);
            }
            Line::Row(Ok(product)) => {
                self.builder.add(&product)?;
                let seen = self.report.accepted_rows;
                self.report.accepted_rows += 1;
                if self.sample.len() < SAMPLE {
                    self.sample.push(product.gtin.key());
                } else {
                    let slot = self.rng.below(seen + 1) as usize;
                    if slot < SAMPLE {
                        self.sample[slot] = product.gtin.key();
                    }
                }
            }
            Line::Row(Err(rejected)) => {
                self.report.rejected += 1;
                let entry = self.report.rejected_by_reason.entry(rejected.reason.as_str()).or_default();
                entry.count += 1;
                if entry.examples.len() < EXAMPLES {
                    let row = cut(&String::from_utf8_lossy(bytes));
                    entry.examples.push(Example { line: self.line_no, row, message: rejected.message });
                }
            }
            Line::Columns | Line::Trailer | Line::Blank => {}
        }
        if self.line_no % 65_536 == 0 {
            self.progress.tick(self.reader.rows());
        }
        Ok(())
    }
}

fn read_file(path: &Path, ingest: &mut Ingest) -> Result<(), SyncError> {
    let read_err = |source| SyncError::ReadFile { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(read_err)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        ingest.push(&buf[..n])?;
    }
}

/// Streams the export body into `tx`, chunk by chunk.
async fn fetch(uri: Uri, tx: mpsc::Sender<Bytes>) -> Result<(), SyncError> {
    let url = uri.to_string();
    let fail = |message: String| SyncError::Fetch { url: url.clone(), message };
    let client = http_client();
    let response = tokio::time::timeout(Duration::from_secs(30), client.get(uri))
        .await
        .map_err(|_| fail("no response within 30s".to_string()))?
        .map_err(|e| fail(error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(SyncError::Status { url, status: response.status().as_u16() });
    }
    let mut body = response.into_body();
    loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
            Err(_) => return Err(fail(format!("no data for {IDLE_TIMEOUT:?}"))),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(fail(error_chain(&e))),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if tx.send(data).await.is_err() {
                // The reader stopped (and holds the reason); stop downloading.
                return Ok(());
            }
        }
    }
}

fn http_client() -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// POSTs `<base>/admin/reload` and returns the answer, e.g. `200 {"status":"swapped",...}`.
pub async fn notify(base: &str) -> Result<String, SyncError> {
    let url = if base.ends_with("/admin/reload") {
        base.to_string()
    } else {
        format!("{}/admin/reload", base.trim_end_matches('/'))
    };
    let fail = |message: String| SyncError::Notify { url: url.clone(), message };
    let request = http::Request::post(&url).body(Empty::<Bytes>::new()).map_err(|e| fail(e.to_string()))?;
    let exchange = async {
        let response = http_client().request(request).await.map_err(|e| fail(error_chain(&e)))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| fail(e.to_string()))?.to_bytes();
        Ok::<_, SyncError>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| fail("no answer within 60s".to_string()))??;
    let answer = format!("{} {}", status.as_u16(), body.trim());
    if status.is_success() {
        Ok(answer)
    } else {
        Err(fail(answer))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn cut_source(from: &str) -> String {
    from.chars().take(512).collect()
}

/// The progress line: rewritten in place on a terminal, a plain line every few seconds otherwise.
struct Progress {
    enabled: bool,
    tty: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        let now = Instant::now();
        Progress { enabled, tty: io::stderr().is_terminal(), started: now, last: now }
    }

    fn tick(&mut self, rows: u64) {
        let every = if self.tty { Duration::from_millis(500) } else { Duration::from_secs(5) };
        if !self.enabled || self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        if self.tty {
            eprint!("\rsync: {rows} rows read, {rate:.0} rows/s   ");
        } else {
            eprintln!("sync: {rows} rows read, {rate:.0} rows/s");
        }
    }

    fn done(&mut self, rows: u64) {
        if self.enabled && self.tty {
            let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            eprintln!("\rsync: {rows} rows read, {rate:.0} rows/s   ");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_recognised() {
        assert_eq!(Source::parse("/tmp/x.txt").unwrap(), Source::File("/tmp/x.txt".into()));
        assert_eq!(Source::parse("file:///tmp/x.txt").unwrap(), Source::File("/tmp/x.txt".into()));
        assert!(matches!(Source::parse("http://127.0.0.1:8081/export").unwrap(), Source::Http(_)));
        assert!(Source::parse("https://example.com/export").is_err());
        assert!(Source::parse("ftp://example.com/export").is_err());
    }
}
