//! Gauges that describe what exists now (each server's health, each draining server's requests, each circuit
//! breaker's state), written into `/metrics` from the live status at every scrape instead of being kept in
//! the metrics registry.
//!
//! A registry gauge keeps its last value after the thing it describes is gone: a server removed while failing
//! its checks would report `ficus_upstream_health 0` until Ficus restarts, and alerts would fire for a server
//! nobody runs any more. Rendered from the status, a series leaves `/metrics` when its server, draining
//! server or breaker leaves the config. Counters stay in the registry: a total keeps its meaning after its
//! server left, and Prometheus' `rate()` treats a series that stops as ended.

use crate::table::reload::Status;
use crate::upstream::health;
use std::fmt::Write as _;

use crate::telemetry::{CIRCUIT_STATE, DRAINING_INFLIGHT, DRAINING_SERVERS, LISTENERS_UNBOUND, UPSTREAM_HEALTH};

/// Appends the state gauges to a Prometheus text exposition.
pub fn render(status: &Status, out: &mut String) {
    header(out, LISTENERS_UNBOUND, "Listeners defined by keys that could not bind their address (see /status)");
    let _ = writeln!(out, "{LISTENERS_UNBOUND} {}", status.unbound_listeners.len());

    header(out, DRAINING_SERVERS, "Servers that left the config and still have requests in flight");
    let _ = writeln!(out, "{DRAINING_SERVERS} {}", status.draining.len());

    if !status.draining.is_empty() {
        header(out, DRAINING_INFLIGHT, "Requests in flight on a draining server, by backend and server");
        for d in &status.draining {
            series(out, DRAINING_INFLIGHT, &[("backend", &d.backend), ("server", &d.server)], d.inflight as f64);
        }
    }

    if !status.servers.is_empty() {
        header(out, UPSTREAM_HEALTH, "1 when the server takes requests, 0 while it fails its checks or is ejected");
        for s in &status.servers {
            let up = matches!(s.state, health::State::Healthy);
            series(out, UPSTREAM_HEALTH, &[("backend", &s.backend), ("server", &s.server)], f64::from(u8::from(up)));
        }
    }

    let mut breakers = status
        .chains
        .iter()
        .flat_map(|(frontend, chain)| chain.iter().map(move |m| (frontend, m)))
        .filter_map(|(frontend, m)| Some((frontend, &m.id, m.state.as_ref()?.0.state())))
        .peekable();
    if breakers.peek().is_some() {
        header(
            out,
            CIRCUIT_STATE,
            "Circuit breaker state by frontend and middleware: 0 standby, 1 tripped, 2 recovering",
        );
        for (frontend, middleware, state) in breakers {
            series(out, CIRCUIT_STATE, &[("frontend", frontend), ("middleware", middleware)], f64::from(state as u8));
        }
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn series(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    out.push('{');
    for (i, (label, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(label);
        out.push_str("=\"");
        escape(out, v);
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

/// The exposition format's label escapes: backslash, double quote and line feed.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{DrainingServer, ServerHealth};

    fn server(name: &str, state: health::State) -> ServerHealth {
        ServerHealth {
            backend: "b".into(),
            server: name.into(),
            url: "http://127.0.0.1:1".into(),
            state,
            checked: true,
            ejections: 0,
            checks_passed: 0,
            checks_failed: 0,
        }
    }

    #[test]
    fn only_what_exists_now_is_written() {
        let mut status = Status::default();
        let mut out = String::new();
        render(&status, &mut out);
        assert_eq!(
            out.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>(),
            ["ficus_listeners_unbound 0", "ficus_draining_servers 0"]
        );

        status.servers = vec![server("s1", health::State::Healthy), server("s\"2\n", health::State::Ejected)];
        status.draining =
            vec![DrainingServer { backend: "b".into(), server: "old".into(), url: "http://x".into(), inflight: 3 }];
        let mut out = String::new();
        render(&status, &mut out);
        let lines: Vec<_> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "ficus_listeners_unbound 0",
                "ficus_draining_servers 1",
                r#"ficus_draining_inflight{backend="b",server="old"} 3"#,
                r#"ficus_upstream_health{backend="b",server="s1"} 1"#,
                r#"ficus_upstream_health{backend="b",server="s\"2\n"} 0"#,
            ]
        );
        assert_eq!(out.matches("# TYPE ficus_upstream_health gauge").count(), 1);
    }
}
