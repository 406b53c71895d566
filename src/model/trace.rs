//! Vulcand's `trace` middleware value, decoded and checked per key: where the structured records go (a syslog
//! `Addr`: `syslog://host:port` over UDP, `syslog:///path` to a unix datagram socket, `syslog://` for the
//! system's `/dev/log`, each with optional `?f=FACILITY&sev=SEVERITY`) and which request and response headers
//! they capture. Part of model/, called by `middleware::check`; `middleware::trace` sends the records.

use super::{ConfigError, Key};
use http::HeaderName;
use serde::{Deserialize, Serialize, Serializer};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TraceConfig {
    /// As written, for `/config`.
    pub addr: String,
    #[serde(skip)]
    pub target: SyslogTarget,
    /// The syslog priority (`facility * 8 + severity`) every record carries.
    #[serde(skip)]
    pub priority: u8,
    #[serde(serialize_with = "ser_names")]
    pub req_headers: Vec<HeaderName>,
    #[serde(serialize_with = "ser_names")]
    pub resp_headers: Vec<HeaderName>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SyslogTarget {
    /// `host:port`, resolved when the sender starts.
    Udp(String),
    /// A unix datagram socket.
    Unix(PathBuf),
}

fn ser_names<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub(super) struct TraceSpec {
    addr: String,
    #[serde(default)]
    req_headers: Vec<String>,
    #[serde(default)]
    resp_headers: Vec<String>,
}

const FACILITIES: &[(&str, u8)] = &[
    ("KERN", 0),
    ("USER", 1),
    ("MAIL", 2),
    ("DAEMON", 3),
    ("AUTH", 4),
    ("SYSLOG", 5),
    ("LPR", 6),
    ("NEWS", 7),
    ("UUCP", 8),
    ("CRON", 9),
    ("AUTHPRIV", 10),
    ("FTP", 11),
    ("LOCAL0", 16),
    ("LOCAL1", 17),
    ("LOCAL2", 18),
    ("LOCAL3", 19),
    ("LOCAL4", 20),
    ("LOCAL5", 21),
    ("LOCAL6", 22),
    ("LOCAL7", 23),
];

const SEVERITIES: &[(&str, u8)] =
    &[("EMERG", 0), ("ALERT", 1), ("CRIT", 2), ("ERR", 3), ("WARNING", 4), ("NOTICE", 5), ("INFO", 6), ("DEBUG", 7)];

fn lookup(table: &[(&str, u8)], s: &str) -> Option<u8> {
    let s = s.strip_prefix("LOG_").unwrap_or(s);
    table.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)).map(|(_, v)| *v)
}

pub(super) fn check(key: &Key, s: TraceSpec) -> Result<TraceConfig, ConfigError> {
    let addr_err = |msg: String| ConfigError::new(key, Some("Middleware.Addr"), msg);
    let rest =
        s.addr.strip_prefix("syslog://").ok_or_else(|| addr_err(format!("`{}` is not a syslog:// address", s.addr)))?;
    let (place, query) = rest.split_once('?').unwrap_or((rest, ""));
    let target = if place.is_empty() {
        SyslogTarget::Unix(PathBuf::from("/dev/log"))
    } else if place.starts_with('/') {
        SyslogTarget::Unix(PathBuf::from(place))
    } else {
        let port_ok =
            place.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok {
            return Err(addr_err(format!("`{place}` is not host:port")));
        }
        SyslogTarget::Udp(place.to_string())
    };
    let (mut facility, mut severity) = (16u8, 6u8);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "f" => {
                facility = lookup(FACILITIES, v).ok_or_else(|| addr_err(format!("unknown syslog facility `{v}`")))?
            }
            "sev" => {
                severity = lookup(SEVERITIES, v).ok_or_else(|| addr_err(format!("unknown syslog severity `{v}`")))?
            }
            _ => return Err(addr_err(format!("unknown parameter `{k}` (f, sev)"))),
        }
    }
    let names = |field: &str, v: &[String]| -> Result<Vec<HeaderName>, ConfigError> {
        v.iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                    ConfigError::new(key, Some(&format!("Middleware.{field}")), format!("`{n}` is not a header name"))
                })
            })
            .collect()
    };
    Ok(TraceConfig {
        req_headers: names("ReqHeaders", &s.req_headers)?,
        resp_headers: names("RespHeaders", &s.resp_headers)?,
        addr: s.addr,
        target,
        priority: facility * 8 + severity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_json(json: &str) -> Result<TraceConfig, ConfigError> {
        let key = Key::parse("frontends/f/middlewares/t").unwrap();
        check(&key, serde_json::from_str(json).unwrap())
    }

    #[test]
    fn vulcands_addresses_are_understood() {
        let t = check_json(r#"{"ReqHeaders":["X-A","X-B"],"RespHeaders":["X-C","X-D"],"Addr":"syslog://"}"#).unwrap();
        assert_eq!(t.target, SyslogTarget::Unix("/dev/log".into()));
        assert_eq!(t.priority, 16 * 8 + 6);
        let t = check_json(r#"{"Addr":"syslog://localhost:5000?f=MAIL&sev=DEBUG"}"#).unwrap();
        assert_eq!((t.target, t.priority), (SyslogTarget::Udp("localhost:5000".into()), 2 * 8 + 7));
        let t = check_json(r#"{"Addr":"syslog:///tmp/out.sock?f=LOG_LOCAL0"}"#).unwrap();
        assert_eq!(t.target, SyslogTarget::Unix("/tmp/out.sock".into()));
    }

    #[test]
    fn bad_traces_name_their_field() {
        for (json, field) in [
            (r#"{"Addr":"udp://h:1"}"#, "Middleware.Addr"),
            (r#"{"Addr":"syslog://h"}"#, "Middleware.Addr"),
            (r#"{"Addr":"syslog://h:1?f=NOPE"}"#, "Middleware.Addr"),
            (r#"{"Addr":"syslog://h:1","ReqHeaders":["a b"]}"#, "Middleware.ReqHeaders"),
        ] {
            assert_eq!(check_json(json).unwrap_err().field.as_deref(), Some(field), "{json}");
        }
    }
}
