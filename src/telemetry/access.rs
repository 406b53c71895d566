//! The access-log line of a proxied request, formatted here rather than by the tracing formatter.
//!
//! It is the one log line written per request, so its cost is paid at the full request rate: going through
//! tracing's formatter (a visitor per field, a dynamic writer, the timestamp worked out afresh) cost several
//! times what writing the same fields into a buffer does. The line keeps the shape of the other log lines,
//! text or JSON, and is still switched on and off by the `access` target of the log filter.

use super::batch;
use super::LogFormat;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static FORMAT: AtomicU8 = AtomicU8::new(0);

pub(super) fn set_format(format: LogFormat) {
    FORMAT.store(matches!(format, LogFormat::Json) as u8, Ordering::Relaxed);
}

/// What one access-log line says.
pub struct AccessLine<'a> {
    pub frontend: &'a str,
    pub backend: &'a str,
    pub server: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub peer: std::net::SocketAddr,
    pub duration_ms: f64,
    pub request_id: &'a str,
}

thread_local! {
    /// The line being built, and the date-time prefix of the current second, kept per thread.
    static SCRATCH: RefCell<(String, u64, String)> = const { RefCell::new((String::new(), u64::MAX, String::new())) };
}

impl AccessLine<'_> {
    pub fn write(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        SCRATCH.with(|scratch| {
            let (line, second, prefix) = &mut *scratch.borrow_mut();
            if *second != now.as_secs() {
                *second = now.as_secs();
                prefix.clear();
                civil_time(now.as_secs(), prefix);
            }
            line.clear();
            let json = FORMAT.load(Ordering::Relaxed) == 1;
            // Infallible: writing to a String.
            let _ = if json {
                self.json(line, prefix, now.subsec_micros())
            } else {
                self.text(line, prefix, now.subsec_micros())
            };
            line.push('\n');
            batch::write_line(line.as_bytes());
        });
    }

    fn text(&self, out: &mut String, prefix: &str, micros: u32) -> std::fmt::Result {
        write!(
            out,
            "{prefix}.{micros:06}Z  INFO access: request frontend={} backend={} server={} method={} path={} status={} \
             bytes={} peer={} duration_ms={:.3} request_id={:?}",
            self.frontend,
            self.backend,
            self.server,
            self.method,
            self.path,
            self.status,
            self.bytes,
            self.peer,
            self.duration_ms,
            self.request_id,
        )
    }

    fn json(&self, out: &mut String, prefix: &str, micros: u32) -> std::fmt::Result {
        write!(out, r#"{{"timestamp":"{prefix}.{micros:06}Z","level":"INFO","message":"request","frontend":"#)?;
        json_str(out, self.frontend);
        out.push_str(r#","backend":"#);
        json_str(out, self.backend);
        out.push_str(r#","server":"#);
        json_str(out, self.server);
        out.push_str(r#","method":"#);
        json_str(out, self.method);
        out.push_str(r#","path":"#);
        json_str(out, self.path);
        write!(
            out,
            r#","status":{},"bytes":{},"peer":"{}","duration_ms":{:.3},"request_id":"#,
            self.status, self.bytes, self.peer, self.duration_ms
        )?;
        json_str(out, self.request_id);
        out.push_str(r#","target":"access"}"#);
        Ok(())
    }
}

/// A JSON string literal of `s`.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time, by the days-to-civil-date conversion of the proleptic Gregorian
/// calendar (eras of 400 years, years starting in March so the leap day comes last).
fn civil_time(unix: u64, out: &mut String) {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(out, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_matches_known_dates() {
        for (unix, want) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_251_199, "2024-02-29T23:59:59"),
            (1_795_463_999, "2026-11-23T19:59:59"),
            (4_102_444_800, "2100-01-01T00:00:00"),
        ] {
            let mut out = String::new();
            civil_time(unix, &mut out);
            assert_eq!(out, want, "{unix}");
        }
    }

    #[test]
    fn json_lines_escape_what_they_carry_and_parse() {
        let line = AccessLine {
            frontend: "f\"1",
            backend: "b\\",
            server: "s\n",
            method: "GET",
            path: "/a\u{1}b",
            status: 200,
            bytes: 12,
            peer: "127.0.0.1:9".parse().unwrap(),
            duration_ms: 0.5,
            request_id: "id",
        };
        let mut out = String::new();
        line.json(&mut out, "2026-11-23T19:59:59", 42).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["frontend"], "f\"1");
        assert_eq!(v["backend"], "b\\");
        assert_eq!(v["server"], "s\n");
        assert_eq!(v["path"], "/a\u{1}b");
        assert_eq!(v["status"], 200);
        assert_eq!(v["timestamp"], "2026-11-23T19:59:59.000042Z");
        assert_eq!(v["target"], "access");
    }
}
