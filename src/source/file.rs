//! The embedded file store: a routes directory whose files map one to one onto store keys.
//!
//! `routes/backends/gtin/backend.json` holds the value of key `backends/gtin/backend`, so a plan kept in files
//! can be written to etcd unchanged. The directory is watched; after any change (debounced, since editors
//! write a file in several steps) it is rescanned and the full listing sent, and the reload loop applies only
//! what changed. A file that cannot be read keeps its last good content and is reported.

use super::SourceEvent;
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Editors write through temp files and renames; wait for the burst to settle before rescanning.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// ...but never longer than this after the first change, so a steady stream of writes still gets applied.
const MAX_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("routes directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("watching {path}: {source}")]
    Watch { path: PathBuf, source: notify::Error },
}

/// One scan of the directory.
#[derive(Debug, Default)]
pub struct Scan {
    /// `(key, value)` for every `*.json` file.
    pub entries: Vec<(String, Vec<u8>)>,
    /// Files that exist but could not be read: `(key, file, error)`.
    pub unreadable: Vec<(String, PathBuf, String)>,
}

/// Maps a key back to its file, for error messages.
pub fn file_of(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.json"))
}

/// Reads every route file under `dir`. Hidden files, editor backups and non-JSON files are skipped.
pub fn scan(dir: &Path) -> Result<Scan, FileSourceError> {
    let mut out = Scan::default();
    let meta = std::fs::metadata(dir).map_err(|source| FileSourceError::Dir { path: dir.to_path_buf(), source })?;
    if !meta.is_dir() {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory");
        return Err(FileSourceError::Dir { path: dir.to_path_buf(), source });
    }
    walk(dir, dir, &mut out, 0).map_err(|source| FileSourceError::Dir { path: dir.to_path_buf(), source })?;
    out.entries.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Scan, depth: usize) -> std::io::Result<()> {
    // The deepest key is backends/<b>/servers/<s>: four levels. Deeper trees are not ours (or a symlink loop).
    if depth > 6 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || name.ends_with('~') || name.starts_with('#') {
            continue;
        }
        let path = entry.path();
        let file_type = std::fs::metadata(&path).map(|m| m.file_type());
        match file_type {
            Ok(t) if t.is_dir() => walk(root, &path, out, depth + 1)?,
            Ok(t) if t.is_file() && name.ends_with(".json") => {
                let Ok(rel) = path.strip_prefix(root) else { continue };
                let rel = rel.to_string_lossy();
                let key = rel.trim_end_matches(".json").replace(std::path::MAIN_SEPARATOR, "/");
                match std::fs::read(&path) {
                    Ok(bytes) => out.entries.push((key, bytes)),
                    Err(e) => out.unreadable.push((key, path.clone(), e.to_string())),
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Watches `dir` and sends a [`SourceEvent::Snapshot`] now and after every change. Runs until `events` closes.
pub async fn watch(dir: PathBuf, events: mpsc::Sender<SourceEvent>) -> Result<(), FileSourceError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Our own reads show up as access events; reacting to them would rescan forever.
        if let Ok(ev) = &res {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
        }
        let _ = tx.send(res.map(|_| ()));
    })
    .map_err(|source| FileSourceError::Watch { path: dir.clone(), source })?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|source| FileSourceError::Watch { path: dir.clone(), source })?;

    let mut last_good: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut revision = 0u64;
    loop {
        revision += 1;
        let event = match scan(&dir) {
            Ok(scan) => {
                let mut entries: BTreeMap<String, Vec<u8>> = scan.entries.into_iter().collect();
                let mut problems = Vec::new();
                for (key, path, err) in scan.unreadable {
                    problems
                        .push(format!("{}: {key}: cannot read: {err}; its last good content stays", path.display()));
                    if let Some(prev) = last_good.get(&key) {
                        entries.insert(key, prev.clone());
                    }
                }
                for p in problems {
                    if events.send(SourceEvent::Problem { message: p }).await.is_err() {
                        return Ok(());
                    }
                }
                last_good = entries.clone();
                let locations = entries.keys().map(|k| (k.clone(), file_of(&dir, k).display().to_string())).collect();
                SourceEvent::Snapshot { revision, entries: entries.into_iter().collect(), locations }
            }
            Err(e) => SourceEvent::Problem { message: format!("{e}; the last good config keeps serving") },
        };
        if events.send(event).await.is_err() {
            return Ok(());
        }
        // Wait for a change, then for the burst to end.
        match rx.recv().await {
            Some(Err(e)) => tracing::warn!(dir = %dir.display(), error = %e, "route directory watch error"),
            Some(Ok(())) => {}
            None => return Ok(()),
        }
        let give_up = tokio::time::Instant::now() + MAX_DELAY;
        loop {
            let wait = DEBOUNCE.min(give_up.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(_) => break,
            }
        }
    }
}
