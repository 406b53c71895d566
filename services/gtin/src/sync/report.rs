//! The sync report: what one sync read, kept, rejected (by reason, with example rows) and did. Printed to stderr
//! for the operator and written as `sync-report-<ts>.json` next to the snapshots for whoever comes later.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::SyncError;
use crate::clock::UtcTime;

/// What one sync did. Written as JSON next to the snapshots.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub source: String,
    pub export_header: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub rows_read: u64,
    pub rows_per_second: f64,
    pub accepted_rows: u64,
    pub duplicates: u64,
    pub products: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<&'static str, ReasonCount>,
    pub duplicate_examples: Vec<String>,
    pub seconds: Timings,
    pub published: Option<String>,
    pub refused: Option<String>,
    pub notified: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub read: f64,
    pub build: f64,
    pub verify: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReasonCount {
    pub count: u64,
    pub examples: Vec<Example>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub line: u64,
    pub row: String,
    pub message: String,
}

/// `sync-report-<ts>.json`, never overwriting an earlier report.
pub(super) fn write_report(dir: &Path, started: &UtcTime, report: &Report) -> Result<PathBuf, SyncError> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| SyncError::Worker(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| SyncError::Report { path: dir.to_path_buf(), source })?;
    let stamp = started.compact();
    for n in 0u32.. {
        let name = if n == 0 { format!("sync-report-{stamp}.json") } else { format!("sync-report-{stamp}-{n}.json") };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(&json).map_err(|source| SyncError::Report { path: path.clone(), source })?;
                eprintln!("sync: report written to {}", path.display());
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(SyncError::Report { path, source }),
        }
    }
    Err(SyncError::Worker("no free report name".to_string()))
}

pub(super) fn print_summary(r: &Report) {
    let mut out = String::new();
    out.push_str(&format!(
        "sync: {} rows from {} in {:.1}s ({:.0} rows/s read)\n",
        r.rows_read, r.source, r.seconds.total, r.rows_per_second
    ));
    out.push_str(&format!("  accepted rows {:>12}\n", r.accepted_rows));
    out.push_str(&format!("  duplicates    {:>12}  (newest UPD_DT kept, the later row on a tie)\n", r.duplicates));
    out.push_str(&format!("  products      {:>12}\n", r.products));
    out.push_str(&format!("  rejected      {:>12}\n", r.rejected));
    for (reason, count) in &r.rejected_by_reason {
        out.push_str(&format!("    {reason:<22}{:>10}\n", count.count));
        for e in &count.examples {
            out.push_str(&format!("      line {}: {} ({})\n", e.line, e.row, e.message));
        }
    }
    match (&r.published, &r.refused) {
        (Some(path), _) => out.push_str(&format!("  published {path}\n")),
        (None, Some(why)) => out.push_str(&format!("  NOT published: {why}\n")),
        (None, None) => {}
    }
    if let Some(n) = &r.notified {
        out.push_str(&format!("  notify: {n}\n"));
    }
    eprint!("{out}");
}
