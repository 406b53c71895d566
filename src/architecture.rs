//! The module graph as a test: which top-level module of the crate may name which other one. It sits beside the
//! data flow, not in it, and exists so that "nothing downstream reaches back upstream" (docs/ARCHITECTURE.md)
//! holds without anyone remembering to check: a `crate::x` path in `src/y/**` that this table does not allow
//! fails the build's tests, and so does a table that itself has a cycle.
//!
//! Adding an edge is a design decision: change the table, the map in docs/ARCHITECTURE.md and `lib.rs` together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may import, in the order of the data flow. `main.rs` (the binary)
/// and `lib.rs` are outside the graph; `test_rng` is a test-only leaf anyone may use.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: pure libraries and the metric names.
    ("route", &[]),
    ("balance", &[]),
    ("telemetry", &[]),
    ("predicate", &[]),
    // State kept across tables by key, held weakly.
    ("kept", &[]),
    // HTTP/1.1 value rules both codecs read alike.
    ("http1", &[]),
    // Which worker thread this is, and the workers of thread-per-core mode.
    ("worker", &[]),
    // Config as stored and validated, and where it comes from.
    ("model", &["route", "predicate"]),
    ("source", &["model"]),
    // Process lifecycle primitives passed everywhere (shutdown, drain tracking, inherited sockets, upgrade).
    ("lifecycle", &["model"]),
    // Per-server state and pools, kept across tables.
    ("upstream", &["telemetry", "predicate", "model", "kept", "http1", "worker"]),
    // A frontend's middleware chain and its state kept across tables.
    ("middleware", &["telemetry", "model", "predicate", "kept"]),
    // Shadow copies of a frontend's requests and the comparison of their answers, kept across tables.
    ("shadow", &["telemetry", "model", "upstream"]),
    // The compiled table and the reload loop that builds it from source events.
    ("table", &["route", "balance", "telemetry", "model", "source", "upstream", "middleware", "shadow"]),
    // The request path, then the sockets that feed it, then what watches it all.
    ("proxy", &["route", "telemetry", "model", "lifecycle", "upstream", "middleware", "shadow", "table"]),
    ("listen", &["telemetry", "model", "lifecycle", "table", "proxy", "http1", "worker"]),
    ("admin", &["telemetry", "model", "lifecycle", "upstream", "table", "worker"]),
    // Beside the flow: checking and writing config.
    ("check", &["model", "source"]),
    ("ops", &["telemetry", "model", "source", "check"]),
    // Wires everything together.
    ("app", &["telemetry", "model", "source", "lifecycle", "upstream", "table", "proxy", "listen", "admin", "worker"]),
];

/// Modules any module may use (test helpers).
const ANYONE_MAY_USE: &[&str] = &["test_rng"];

/// Files directly under `src/` that are not modules of the graph.
const OUTSIDE: &[&str] = &["lib", "main", "architecture", "test_rng"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named by `crate::` paths in `text`, including each item of a `crate::{a, b::c}` group.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        // `ficus_crate::x` or `my_crate::x` are not ours.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Split the group at its top-level commas; each item starts with the module it names.
            let mut depth = 0usize;
            let mut items = vec![String::new()];
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(String::new());
                        continue;
                    }
                    _ => {}
                }
                items.last_mut().expect("never empty").push(c);
            }
            for item in items {
                let ident: String =
                    item.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !ident.is_empty() {
                    found.insert(ident);
                }
            }
        } else {
            let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !ident.is_empty() {
                found.insert(ident);
            }
        }
    }
    found
}

/// For every top-level module: the set of other top-level modules its files name, with one file per edge.
fn actual_edges() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("a file under src/");
        let first = rel.components().next().expect("a non-empty path").as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if OUTSIDE.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let targets = edges.entry(module.clone()).or_default();
        for target in crate_paths(&text) {
            if target != module {
                targets.entry(target).or_insert_with(|| rel.to_path_buf());
            }
        }
    }
    edges
}

#[test]
fn every_import_follows_the_documented_direction() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, targets) in actual_edges() {
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!("module `{module}` is not in the table of src/architecture.rs"));
            continue;
        };
        for (target, file) in targets {
            if !may.contains(&target.as_str()) && !ANYONE_MAY_USE.contains(&target.as_str()) {
                wrong.push(format!("{}: `{module}` uses `crate::{target}`, which it may not", file.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the module graph in docs/ARCHITECTURE.md:\n{}", wrong.join("\n"));
}

#[test]
fn the_allowed_graph_has_no_cycle_and_lists_each_module_after_what_it_uses() {
    // Listing order is a topological order: every module only uses modules listed before it.
    let mut seen = BTreeSet::new();
    for (module, uses) in ALLOWED {
        for u in *uses {
            assert!(
                seen.contains(u),
                "`{module}` may use `{u}`, which is not listed before it: a cycle or a misordering"
            );
        }
        assert!(seen.insert(*module), "`{module}` is listed twice");
    }
}

#[test]
fn every_top_level_module_is_in_the_table() {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).expect("src/lib.rs");
    let listed: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    for line in lib.lines() {
        if let Some(name) = line.trim().strip_prefix("pub mod ").and_then(|r| r.strip_suffix(';')) {
            assert!(listed.contains(name), "`{name}` is declared in lib.rs but missing from the module graph");
        }
    }
}

#[test]
fn grouped_and_plain_crate_paths_are_both_seen() {
    let text = "use crate::a::X;\nuse crate::{b, c::{D, E}, \n  f::G};\nlet x = crate::h::y(); // my_crate::no";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "f", "h"]);
}
