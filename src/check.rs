//! `ficus check DIR`: validates a routes directory the way the gateway would load it, and lists every problem.

use crate::model::{ConfigError, ConfigState};
use crate::source::file;
use std::path::Path;

/// The outcome of a check: problems that keep values out (errors) and parts that would be ignored.
#[derive(Debug, Default)]
pub struct Report {
    pub keys: usize,
    pub frontends: usize,
    pub backends: usize,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn check_dir(dir: &Path) -> Result<Report, file::FileSourceError> {
    let scan = file::scan(dir)?;
    let mut report = Report { keys: scan.entries.len(), ..Default::default() };
    let name = |e: &ConfigError| format!("{}: {e}", file::file_of(dir, &e.key).display());
    for (key, path, err) in &scan.unreadable {
        report.errors.push(format!("{}: {key}: cannot read: {err}", path.display()));
    }
    let mut state = ConfigState::new();
    let (errors, _) = state.reset(scan.entries);
    report.errors.extend(errors.iter().map(name));
    let v = state.validate();
    report.errors.extend(v.errors.iter().map(name));
    report.warnings.extend(v.unsupported.iter().map(name));
    report.frontends = v.config.frontends.len();
    report.backends = v.config.backends.len();
    Ok(report)
}
