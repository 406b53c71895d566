//! The access-log line of a proxied request, formatted here rather than by the tracing formatter.
//!
//! It is the one log line written per request, so its cost is paid at the full request rate: going through
//! tracing's formatter (a visitor per field, a dynamic writer, the timestamp worked out afresh) cost several
//! times what writing the same fields into a buffer does. The line keeps the shape of the other log lines,
//! text or JSON, and is still switched on and off by the `access` target of the log filter.
//!
//! The lines go to stdout with the other log lines, or to a file of their own ([`ReopeningFile`]) that is
//! reopened on SIGHUP, so logrotate can move it away and have the next lines land in a new file.

use super::batch;
use super::LogFormat;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static FORMAT: AtomicU8 = AtomicU8::new(0);

pub(super) fn set_format(format: LogFormat) {
    FORMAT.store(matches!(format, LogFormat::Json) as u8, Ordering::Relaxed);
}

/// What one access-log line says. `None` is written `-` in text and `null` in JSON.
pub struct AccessLine<'a> {
    pub frontend: &'a str,
    pub backend: &'a str,
    pub server: &'a str,
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// `HTTP/1.1`, `HTTP/2.0`: the client's protocol.
    pub protocol: &'a str,
    pub status: u16,
    /// The request body's declared length; `None` when it was streamed without one.
    pub bytes_in: Option<u64>,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub peer: std::net::SocketAddr,
    pub duration_ms: f64,
    pub request_id: &'a str,
}

/// Text form of an optional client-supplied value: quoted and escaped, or `-`.
struct Quoted<'a>(Option<&'a str>);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(s) => write!(f, "{s:?}"),
            None => f.write_str("-"),
        }
    }
}

struct Count(Option<u64>);

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("-"),
        }
    }
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
            "{prefix}.{micros:06}Z  INFO access: request frontend={} backend={} server={} method={} host={} path={} \
             query={} protocol={} status={} bytes_in={} bytes_out={} peer={} duration_ms={:.3} user_agent={} \
             referer={} request_id={:?}",
            self.frontend,
            self.backend,
            self.server,
            self.method,
            Quoted(self.host),
            self.path,
            Quoted(self.query),
            self.protocol,
            self.status,
            Count(self.bytes_in),
            self.bytes_out,
            self.peer,
            self.duration_ms,
            Quoted(self.user_agent),
            Quoted(self.referer),
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
        out.push_str(r#","host":"#);
        json_opt(out, self.host);
        out.push_str(r#","path":"#);
        json_str(out, self.path);
        out.push_str(r#","query":"#);
        json_opt(out, self.query);
        out.push_str(r#","protocol":"#);
        json_str(out, self.protocol);
        write!(out, r#","status":{},"bytes_in":"#, self.status)?;
        match self.bytes_in {
            Some(n) => write!(out, "{n}")?,
            None => out.push_str("null"),
        }
        write!(
            out,
            r#","bytes_out":{},"peer":"{}","duration_ms":{:.3},"user_agent":"#,
            self.bytes_out, self.peer, self.duration_ms
        )?;
        json_opt(out, self.user_agent);
        out.push_str(r#","referer":"#);
        json_opt(out, self.referer);
        out.push_str(r#","request_id":"#);
        json_str(out, self.request_id);
        out.push_str(r#","target":"access"}"#);
        Ok(())
    }
}

fn json_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
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

/// Set by SIGHUP: the access-log file is reopened before the next write.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Asks for the access-log file to be reopened (by its path) before its next write.
pub fn request_reopen() {
    REOPEN.store(true, Ordering::Release);
}

/// The access-log file. Only the log writer thread writes to it, so reopening needs no lock: the thread
/// checks the flag SIGHUP sets once per batch it writes.
pub struct ReopeningFile {
    path: PathBuf,
    file: std::fs::File,
}

impl ReopeningFile {
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = Self::open_path(&path)?;
        Ok(ReopeningFile { path, file })
    }

    fn open_path(path: &std::path::Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new().create(true).append(true).open(path)
    }
}

impl std::io::Write for ReopeningFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if REOPEN.swap(false, Ordering::AcqRel) {
            match Self::open_path(&self.path) {
                Ok(file) => self.file = file,
                // Keep writing to the old file rather than losing lines; the next SIGHUP tries again.
                Err(e) => eprintln!("cannot reopen the access log {}: {e}", self.path.display()),
            }
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time, by the days-to-civil-date conversion of the proleptic Gregorian
/// calendar (eras of 400 years, years starting in March so the leap day comes last). Also the trace
/// middleware's syslog timestamp.
pub fn civil_time(unix: u64, out: &mut String) {
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
            host: Some("a.example"),
            path: "/a\u{1}b",
            query: Some("q=\"x\""),
            protocol: "HTTP/1.1",
            status: 200,
            bytes_in: None,
            bytes_out: 12,
            user_agent: Some("curl/8 (x; y)"),
            referer: None,
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
        assert_eq!(v["host"], "a.example");
        assert_eq!(v["query"], "q=\"x\"");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["bytes_in"], serde_json::Value::Null);
        assert_eq!(v["bytes_out"], 12);
        assert_eq!(v["user_agent"], "curl/8 (x; y)");
        assert_eq!(v["referer"], serde_json::Value::Null);
        let mut text = String::new();
        line.text(&mut text, "2026-11-23T19:59:59", 42).unwrap();
        assert!(text.contains(r#" user_agent="curl/8 (x; y)" referer=- "#), "{text}");
        assert!(text.contains(r#" query="q=\"x\"" protocol=HTTP/1.1 status=200 bytes_in=- bytes_out=12 "#), "{text}");
    }
}
