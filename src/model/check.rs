//! Per-key checks: everything that can be said about one key's value without looking at another key. They run
//! when a value arrives (`ConfigState::apply`), so a bad value never replaces a good one, and the cross-key pass
//! (`validate`) builds the validated types from values that already passed them.

use super::{BackendSpec, ConfigError, FrontendSpec, HostSpec, Key, ListenerSpec, MiddlewareSpec, ServerSpec, Spec};
use super::{Protocol, UpstreamSettings, ValidatedFrontend, ValidatedHost, ValidatedListener, ValidatedServer};
use crate::route;
use http::uri::Scheme;
use std::sync::Arc;
use std::time::Duration;

/// Weights are relative; this bound keeps the precomputed balancing sequences small.
pub const MAX_WEIGHT: u32 = 10_000;

/// Per-key checks that need no other key; run at decode time so a bad value never replaces a good one.
pub(super) fn check_one(key: &Key, spec: &Spec) -> Result<(), ConfigError> {
    let key_id = match key {
        Key::Backend { backend } => backend,
        Key::Server { server, .. } => server,
        Key::Frontend { frontend } => frontend,
        Key::Middleware { middleware, .. } => middleware,
        Key::Host { host } => host,
        Key::Listener { listener } => listener,
    };
    let declared_id = match spec {
        Spec::Backend(BackendSpec { id, .. })
        | Spec::Server(ServerSpec { id, .. })
        | Spec::Frontend(FrontendSpec { id, .. })
        | Spec::Middleware(MiddlewareSpec { id, .. })
        | Spec::Listener(ListenerSpec { id, .. }) => id.as_deref(),
        Spec::Host(HostSpec { name, .. }) => name.as_deref(),
    };
    if let Some(declared) = declared_id {
        if declared != key_id {
            let field = if matches!(spec, Spec::Host(_)) { "Name" } else { "Id" };
            return Err(ConfigError::new(
                key,
                Some(field),
                format!("`{declared}` differs from the key's id `{key_id}`"),
            ));
        }
    }
    match spec {
        Spec::Backend(b) => {
            check_type(key, &b.kind)?;
            let http2 = super::Http2::parse(key, b.settings.http2.as_deref())?;
            // Whether its servers are https is not known from this key alone; the TLS block is checked now,
            // the system roots when the backend is assembled.
            super::upstream_tls::build(key, b.settings.tls.as_deref(), http2, false)?;
            super::health::health(key, b.settings.health_check.as_ref(), b.settings.outlier.as_ref()).map(|_| ())
        }
        Spec::Server(s) => server(key, key_id, s).map(|_| ()),
        Spec::Frontend(f) => frontend(key, key_id, f).map(|_| ()),
        Spec::Middleware(m) => super::middleware::check(key, key_id, m).map(|_| ()),
        Spec::Host(h) => host(key, key_id, h).map(|_| ()),
        Spec::Listener(l) => listener(key, key_id, l).map(|_| ()),
    }
}

fn check_type(key: &Key, kind: &str) -> Result<(), ConfigError> {
    if kind == "http" {
        Ok(())
    } else {
        Err(ConfigError::new(key, Some("Type"), format!("unsupported type `{kind}` (only `http`)")))
    }
}

pub(super) fn server(key: &Key, id: &str, s: &ServerSpec) -> Result<ValidatedServer, ConfigError> {
    let bad = |msg: String| ConfigError::new(key, Some("URL"), msg);
    let uri: http::Uri = s.url.parse().map_err(|e| bad(format!("`{}` is not a URL: {e}", s.url)))?;
    let scheme = uri.scheme().cloned().ok_or_else(|| bad(format!("`{}` has no scheme (http://host:port)", s.url)))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(bad(format!("scheme `{scheme}` is not supported for servers (http or https)")));
    }
    let authority = uri.authority().cloned().ok_or_else(|| bad(format!("`{}` has no host", s.url)))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in server URLs are not supported".to_string()));
    }
    server_address(&authority).map_err(|why| bad(format!("`{}`: {why}", s.url)))?;
    if s.url.contains('#') {
        // `http::Uri` drops a fragment without a word; a server URL has no use for one.
        return Err(bad(format!("`{}`: a fragment is not supported", s.url)));
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if path != "/" && !path.is_empty() {
        return Err(bad(format!("path `{path}` is not supported: a server URL names scheme, host and port only")));
    }
    let weight = s.weight.unwrap_or(1);
    if weight > MAX_WEIGHT {
        return Err(ConfigError::new(key, Some("Weight"), format!("{weight} is above the maximum {MAX_WEIGHT}")));
    }
    Ok(ValidatedServer { id: id.to_string(), url: s.url.clone(), scheme, authority, weight, draining: s.draining })
}

/// The host and port a server URL's authority names, checked as a dial would need them: `http::Uri`
/// accepts any digits (or none) after the colon and an empty host, and the pool would then dial the
/// scheme's default port (`:99999` connected to port 80) or fail at every request.
fn server_address(authority: &http::uri::Authority) -> Result<(), String> {
    let host = authority.host();
    if host.is_empty() {
        return Err("no host".to_string());
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(format!("`{host}` is not an IPv4 address"));
    }
    // The pool dials a bracketed host as the address inside (a zone id such as `%25eth0` is not dialled).
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{host}` is not an IPv6 address"));
        }
    }
    // Credentials were refused before, so the authority is the host, then `:port` or nothing; an IPv6
    // literal's colons are inside its brackets.
    let text = authority.as_str();
    let host_end = match text.strip_prefix('[') {
        Some(_) => text.find(']').map_or(text.len(), |i| i + 1),
        None => text.find(':').unwrap_or(text.len()),
    };
    if let Some(port) = text[host_end..].strip_prefix(':') {
        match port.parse::<u16>() {
            Ok(n) if n > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(format!("port `{port}` is not a port (1 to 65535)")),
        }
    }
    Ok(())
}

/// A `Host` Ficus sends upstream (a frontend's `Hostname`, a health check's): a host and optional port, as a
/// server URL's would be (a value that is no header value would otherwise be dropped at compile time without
/// a word, and one with spaces sent as it is).
pub(super) fn upstream_host(hostname: &str) -> Result<(), String> {
    // A DNS name's 253 bytes, `:` and a port's 5.
    if hostname.len() > 259 {
        return Err("longer than a host name and port".to_string());
    }
    let authority: http::uri::Authority = hostname.parse().map_err(|_| "not a host or host:port".to_string())?;
    if authority.as_str().contains('@') || authority.as_str() != hostname {
        return Err("not a host or host:port".to_string());
    }
    server_address(&authority)
}

pub(super) fn frontend(key: &Key, id: &str, f: &FrontendSpec) -> Result<ValidatedFrontend, ConfigError> {
    check_type(key, &f.kind)?;
    let expr = route::parse(&f.route).map_err(|e| ConfigError::new(key, Some("Route"), e))?;
    let backends = match (&f.backend_id, &f.backends) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(key, Some("Backends"), "set either BackendId or Backends, not both"));
        }
        (None, None) => return Err(ConfigError::new(key, Some("BackendId"), "missing: set BackendId or Backends")),
        (Some(b), None) if b.is_empty() => return Err(ConfigError::new(key, Some("BackendId"), "empty")),
        (Some(b), None) => vec![(b.clone(), 1)],
        (None, Some(list)) => {
            if list.is_empty() {
                return Err(ConfigError::new(key, Some("Backends"), "empty list"));
            }
            let mut out: Vec<(String, u32)> = Vec::with_capacity(list.len());
            for (i, wb) in list.iter().enumerate() {
                if out.iter().any(|(id, _)| *id == wb.id) {
                    return Err(ConfigError::new(
                        key,
                        Some(&format!("Backends[{i}].Id")),
                        format!("`{}` listed twice", wb.id),
                    ));
                }
                if wb.weight > MAX_WEIGHT {
                    let field = format!("Backends[{i}].Weight");
                    return Err(ConfigError::new(
                        key,
                        Some(&field),
                        format!("{} is above the maximum {MAX_WEIGHT}", wb.weight),
                    ));
                }
                out.push((wb.id.clone(), wb.weight));
            }
            if out.iter().all(|(_, w)| *w == 0) {
                return Err(ConfigError::new(key, Some("Backends"), "all weights are 0"));
            }
            out
        }
    };
    if !f.settings.hostname.is_empty() {
        upstream_host(&f.settings.hostname).map_err(|why| {
            ConfigError::new(key, Some("Settings.Hostname"), format!("`{}`: {why}", f.settings.hostname))
        })?;
    }
    Ok(ValidatedFrontend {
        id: id.to_string(),
        route: f.route.clone(),
        expr,
        priority: f.priority,
        backends,
        settings: f.settings.clone(),
        failover: super::failover::check(key, &f.settings.failover_predicate, f.settings.retry_budget.as_ref())?
            .map(Arc::new),
        middlewares: Vec::new(),
        sticky: f.sticky.as_ref().map(|s| super::canary::sticky(key, s)).transpose()?,
        shadow: f.shadow.as_ref().map(|s| super::canary::shadow(key, s)).transpose()?,
    })
}

pub(super) fn host(key: &Key, id: &str, h: &HostSpec) -> Result<ValidatedHost, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let kp = h.settings.key_pair.as_ref().ok_or_else(|| ConfigError::new(key, Some("Settings.KeyPair"), "missing"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(kp.cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::new(key, Some("Settings.KeyPair.Cert"), format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(key, Some("Settings.KeyPair.Cert"), "no certificate in PEM"));
    }
    let private = PrivateKeyDer::from_pem_slice(kp.key.as_bytes())
        .map_err(|e| ConfigError::new(key, Some("Settings.KeyPair.Key"), format!("bad PEM private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| ConfigError::new(key, Some("Settings.KeyPair.Key"), format!("unusable private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        ConfigError::new(key, Some("Settings.KeyPair"), format!("certificate and key do not match: {e}"))
    })?;
    Ok(ValidatedHost { name: id.to_ascii_lowercase(), default: h.settings.default, certified_key: Arc::new(certified) })
}

pub(super) fn listener(key: &Key, id: &str, l: &ListenerSpec) -> Result<ValidatedListener, ConfigError> {
    let protocol = match l.protocol.as_str() {
        "http" => Protocol::Http,
        "https" => Protocol::Https,
        other => {
            return Err(ConfigError::new(
                key,
                Some("Protocol"),
                format!("unsupported protocol `{other}` (http or https)"),
            ))
        }
    };
    if l.address.network != "tcp" {
        return Err(ConfigError::new(
            key,
            Some("Address.Network"),
            format!("unsupported network `{}` (only tcp)", l.address.network),
        ));
    }
    let address = l.address.address.parse().map_err(|e| {
        ConfigError::new(key, Some("Address.Address"), format!("`{}`: {e} (expected ip:port)", l.address.address))
    })?;
    Ok(ValidatedListener { id: id.to_string(), protocol, address })
}

pub(super) fn upstream_settings(b: &BackendSpec) -> UpstreamSettings {
    let d = UpstreamSettings::default();
    let t = &b.settings.timeouts;
    let k = &b.settings.keep_alive;
    // A zero timeout in Vulcand means "use the default", not "never wait".
    let or = |v: Option<super::GoDuration>, dflt: Duration| v.map(|g| g.0).filter(|d| !d.is_zero()).unwrap_or(dflt);
    UpstreamSettings {
        dial_timeout: or(t.dial, d.dial_timeout),
        read_timeout: or(t.read, d.read_timeout),
        tls_handshake_timeout: or(t.tls_handshake, d.tls_handshake_timeout),
        keep_alive_period: or(k.period, d.keep_alive_period),
        max_idle_per_host: k.max_idle_conns_per_host.unwrap_or(d.max_idle_per_host),
        drain_timeout: or(b.settings.drain_timeout, d.drain_timeout),
        // Checked with the key; a value that got this far parses.
        http2: super::Http2::parse(&Key::Backend { backend: String::new() }, b.settings.http2.as_deref())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Change, ConfigState};

    #[test]
    fn server_urls_that_name_a_host_and_port_are_taken() {
        let mut s = ConfigState::new();
        for url in [
            "http://127.0.0.1:1",
            "http://[::1]:65535",
            "https://[::1]",
            "http://gtin-1.internal",
            "http://10.0.0.1:80/",
        ] {
            let value = format!(r#"{{"URL":"{url}"}}"#);
            s.apply(Change::Put { key: "backends/b/servers/s".into(), value: value.into_bytes() }).expect(url);
        }
    }

    #[test]
    fn each_bad_value_is_refused_naming_its_field() {
        let mut s = ConfigState::new();
        let bad = [
            ("backends/b/servers/s", r#"{"URL":"ftp://x:1"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://x:1/path"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://127.0.0.1:99999"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://127.0.0.1:65536"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://127.0.0.1:-1"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://127.0.0.1:0"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://127.0.0.1:"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://:80"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://127.0.0.1:1#f"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://999.999.999.999:1"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://[zz]:80"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://[fe80::1%25eth0]:80"}"#, "URL"),
            ("backends/b/servers/s", r#"{"URL":"http://x:1","Weight":20000}"#, "Weight"),
            ("backends/b/servers/s", r#"{"Id":"t","URL":"http://x:1"}"#, "Id"),
            ("frontends/f/frontend", r#"{"Type":"http","Route":"Path(`/`)"}"#, "BackendId"),
            (
                "frontends/f/frontend",
                r#"{"Type":"http","Backends":[{"Id":"a","Weight":0}],"Route":"Path(`/`)"}"#,
                "Backends",
            ),
            ("frontends/f/frontend", r#"{"Type":"tcp","BackendId":"a","Route":"Path(`/`)"}"#, "Type"),
            (
                "frontends/f/frontend",
                r#"{"Type":"http","BackendId":"a","Route":"Path(`/`)","Settings":{"Hostname":"a\r\nX-Inj: 1"}}"#,
                "Settings.Hostname",
            ),
            (
                "frontends/f/frontend",
                r#"{"Type":"http","BackendId":"a","Route":"Path(`/`)","Settings":{"Hostname":"bad host"}}"#,
                "Settings.Hostname",
            ),
            (
                "frontends/f/frontend",
                r#"{"Type":"http","BackendId":"a","Route":"Path(`/`)","Settings":{"Hostname":"h:99999"}}"#,
                "Settings.Hostname",
            ),
            ("frontends/f/middlewares/m", r#"{"Type":"magic"}"#, "Type"),
            ("listeners/l", r#"{"Protocol":"http","Address":{"Network":"tcp","Address":"nope"}}"#, "Address.Address"),
            ("hosts/h/host", r#"{"Settings":{"KeyPair":{"Cert":"x","Key":"y"}}}"#, "Settings.KeyPair.Cert"),
        ];
        for (key, value, field) in bad {
            let e = s.apply(Change::Put { key: key.into(), value: value.as_bytes().to_vec() }).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{key} {value}: {e}");
        }
    }
}
