//! Vulcand's `trace`: one structured record per request (method, URL, the named request headers; status,
//! round trip in milliseconds, the named response headers), in syslog form with Vulcand's `@cee:` JSON body,
//! sent to a UDP address or a unix datagram socket. The chain captures the request's part in
//! `request_filter`; the proxy completes it once the answer's head is known ([`super::Admitted::observe`]).
//!
//! The request never waits for the socket: a record goes into a bounded queue (`try_send`) drained by a task
//! of the tracer's own, and a record that finds the queue full is dropped and counted
//! (`ficus_trace_dropped_total`). The task starts with the first record and ends when the last table holding
//! the tracer is gone (the queue's sender is dropped with it).

use super::Input;
use crate::model::{SyslogTarget, TraceConfig};
use crate::telemetry;
use http::HeaderMap;
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Records waiting for the socket before new ones are dropped.
const QUEUE: usize = 1024;

pub struct Tracer {
    pub config: TraceConfig,
    frontend: Arc<str>,
    queue: OnceLock<mpsc::Sender<Vec<u8>>>,
    dropped: metrics::Counter,
    /// `host ficus[pid]: ` after the timestamp of every record.
    tag: String,
}

/// The request's half of a record, captured by the chain.
pub struct Pending {
    tracer: Arc<Tracer>,
    request: Map<String, Value>,
}

impl Tracer {
    pub fn new(config: TraceConfig, frontend: &str) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string());
        let tag = format!("{} ficus[{}]: ", host.unwrap_or_else(|_| "ficus".into()), std::process::id());
        Tracer {
            config,
            frontend: frontend.into(),
            queue: OnceLock::new(),
            dropped: metrics::counter!(telemetry::TRACE_DROPPED_TOTAL, "frontend" => frontend.to_string()),
            tag,
        }
    }

    pub fn capture(self: &Arc<Self>, input: &Input<'_>) -> Pending {
        let mut request = Map::new();
        request.insert("method".into(), input.method.as_str().into());
        request.insert("url".into(), input.url().into());
        if let Some(h) = headers(&self.config.req_headers, input.headers) {
            request.insert("headers".into(), h);
        }
        Pending { tracer: self.clone(), request }
    }

    fn send(&self, record: Vec<u8>) {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(drain(self.config.target.clone(), self.frontend.clone(), rx, self.dropped.clone()));
                }
                Err(_) => tracing::warn!(frontend = %self.frontend, "no runtime for the trace sender"),
            }
            tx
        });
        if queue.try_send(record).is_err() {
            self.dropped.increment(1);
        }
    }
}

impl Pending {
    /// Completes the record with the answer and queues it.
    pub fn finish(self, status: u16, response_headers: Option<&HeaderMap>, elapsed: Duration) {
        let t = &self.tracer;
        let mut response = Map::new();
        response.insert("code".into(), status.into());
        response.insert("roundtrip".into(), (elapsed.as_secs_f64() * 1e3).into());
        if let Some(h) = response_headers.and_then(|h| headers(&t.config.resp_headers, h)) {
            response.insert("headers".into(), h);
        }
        let mut body = Map::new();
        body.insert("request".into(), Value::Object(self.request));
        body.insert("response".into(), Value::Object(response));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut line = format!("<{}>", t.config.priority);
        telemetry::access::civil_time(now.as_secs(), &mut line);
        line.push_str("Z ");
        line.push_str(&t.tag);
        line.push_str("@cee: ");
        line.push_str(&Value::Object(body).to_string());
        t.send(line.into_bytes());
    }
}

/// The named headers present in `map`, as Go's `http.Header` marshals (name to list of values).
fn headers(names: &[http::HeaderName], map: &HeaderMap) -> Option<Value> {
    let mut out = Map::new();
    for n in names {
        let values: Vec<Value> =
            map.get_all(n).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into()).collect();
        if !values.is_empty() {
            out.insert(canonical(n.as_str()), Value::Array(values));
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// `x-custom-header` as Go writes it: `X-Custom-Header`.
fn canonical(name: &str) -> String {
    let mut up = true;
    name.chars()
        .map(|c| {
            let out = if up { c.to_ascii_uppercase() } else { c };
            up = c == '-';
            out
        })
        .collect()
}

enum Sink {
    Udp(tokio::net::UdpSocket),
    Unix(tokio::net::UnixDatagram),
}

async fn open(target: &SyslogTarget) -> std::io::Result<Sink> {
    match target {
        SyslogTarget::Udp(addr) => {
            let to = tokio::net::lookup_host(addr.as_str())
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to nothing")))?;
            let local: std::net::SocketAddr =
                if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
            let s = tokio::net::UdpSocket::bind(local).await?;
            s.connect(to).await?;
            Ok(Sink::Udp(s))
        }
        SyslogTarget::Unix(path) => {
            let s = tokio::net::UnixDatagram::unbound()?;
            s.connect(path)?;
            Ok(Sink::Unix(s))
        }
    }
}

async fn drain(target: SyslogTarget, frontend: Arc<str>, mut rx: mpsc::Receiver<Vec<u8>>, dropped: metrics::Counter) {
    let mut sink: Option<Sink> = None;
    while let Some(record) = rx.recv().await {
        if sink.is_none() {
            match open(&target).await {
                Ok(s) => sink = Some(s),
                Err(e) => {
                    tracing::warn!(%frontend, target = ?target, error = %e, "trace socket unavailable; record dropped");
                    dropped.increment(1);
                    continue;
                }
            }
        }
        let sent = match &sink {
            Some(Sink::Udp(s)) => s.send(&record).await,
            Some(Sink::Unix(s)) => s.send(&record).await,
            None => continue,
        };
        if let Err(e) = sent {
            tracing::debug!(%frontend, error = %e, "trace record not sent");
            dropped.increment(1);
            // Reopen on the next record: a restarted syslog daemon has a new socket.
            sink = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_names_are_written_the_way_go_does() {
        assert_eq!(super::canonical("x-custom-header"), "X-Custom-Header");
        assert_eq!(super::canonical("content-type"), "Content-Type");
    }
}
