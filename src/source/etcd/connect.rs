//! Where Ficus finds etcd and how it talks to it: endpoints, prefix, TLS (CA, client certificate), username and
//! password, keep-alive and timeouts. Shared by the watch (`serve --etcd`) and the operator commands (`apply`,
//! `export`, `canary`, `drain`), so both reach etcd the same way.
//!
//! `Client::connect` is lazy for plain connections, so [`connect`] proves etcd answers with a real request
//! before anyone relies on the client.

use super::{rpc, EtcdError};
use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use serde::Deserialize;
use serve::duration::de_duration;
use std::path::PathBuf;
use std::time::Duration;

/// `[etcd]` in `ficus.toml`, or `--etcd` and friends on the command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// `http://host:2379` or `https://host:2379`; several for a cluster.
    pub endpoints: Vec<String>,
    /// Keys live under `<prefix>/`; Vulcand's default.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Also read from `FICUS_ETCD_PASSWORD`, so it need not sit in a file or a process listing.
    #[serde(default)]
    pub password: Option<String>,
    /// CA bundle (PEM) that signed etcd's server certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) when etcd requires client certificates.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Bound on every single request (list, put, watch creation) and on the TCP connect.
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// A watch this quiet gets a progress request; HTTP/2 pings go out at the same period. Together they notice
    /// a hung etcd within `keepalive + request_timeout`.
    #[serde(default = "default_keepalive", deserialize_with = "de_duration")]
    pub keepalive: Duration,
    /// Reconnect backoff bounds (jittered, doubling).
    #[serde(default = "default_retry_min", deserialize_with = "de_duration")]
    pub retry_min: Duration,
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max: Duration,
}

fn default_prefix() -> String {
    "/vulcand".into()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_keepalive() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_min() -> Duration {
    Duration::from_millis(100)
}
fn default_retry_max() -> Duration {
    // Reconnecting is cheap for etcd; a long backoff only delays config after an outage.
    Duration::from_secs(2)
}

impl EtcdSettings {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdSettings {
            endpoints,
            prefix: default_prefix(),
            username: None,
            password: None,
            ca: None,
            cert: None,
            key: None,
            request_timeout: default_request_timeout(),
            keepalive: default_keepalive(),
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
        }
    }

    /// The prefix with exactly one leading `/` and no trailing one (`vulcand/` → `/vulcand`).
    pub fn normalized_prefix(&self) -> String {
        let p = self.prefix.trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("/{p}")
        }
    }

    /// What the watch and the listing cover: `<prefix>/`.
    pub fn watch_prefix(&self) -> String {
        format!("{}/", self.normalized_prefix())
    }

    /// The absolute etcd key of a relative key (`backends/b1/backend` → `/vulcand/backends/b1/backend`).
    pub fn absolute_key(&self, rel: &str) -> String {
        format!("{}{}", self.watch_prefix(), rel.trim_start_matches('/'))
    }

    /// The key relative to the prefix, or `None` for keys outside it. Non-UTF-8 bytes are kept visible (as
    /// replacement characters) so the key is refused by name instead of vanishing.
    pub fn relative_key(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.watch_prefix().as_bytes())?;
        Some(String::from_utf8_lossy(rest).into_owned())
    }

    pub fn endpoints_label(&self) -> String {
        self.endpoints.join(",")
    }

    fn options(&self) -> Result<ConnectOptions, EtcdError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.request_timeout)
            .with_keep_alive(self.keepalive, self.request_timeout)
            .with_keep_alive_while_idle(true)
            // The kernel counts TCP keep-alive idle time in whole seconds; below one it refuses the option.
            .with_tcp_keepalive(self.keepalive.max(Duration::from_secs(1)));
        let password = self.password.clone().or_else(|| std::env::var("FICUS_ETCD_PASSWORD").ok());
        match (&self.username, password) {
            (Some(user), Some(pw)) => opts = opts.with_user(user.clone(), pw),
            (Some(user), None) => {
                return Err(EtcdError::Settings(format!(
                    "user `{user}` given without a password (FICUS_ETCD_PASSWORD)"
                )))
            }
            (None, _) => {}
        }
        if self.ca.is_some() || self.cert.is_some() || self.key.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?)),
                (None, None) => {}
                _ => return Err(EtcdError::Settings("a client certificate needs both cert and key".into())),
            }
            opts = opts.with_tls(tls);
        }
        Ok(opts)
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::File { path: path.clone(), source })
}

/// Connects and proves etcd answers (a count-only read of the prefix), all within the request timeout.
pub async fn connect(settings: &EtcdSettings) -> Result<Client, EtcdError> {
    if settings.endpoints.is_empty() {
        return Err(EtcdError::Settings("no endpoints".into()));
    }
    let opts = settings.options()?;
    let mut client = rpc(settings, "connect", Client::connect(settings.endpoints.clone(), Some(opts))).await?;
    let probe = GetOptions::new().with_prefix().with_count_only();
    rpc(settings, "first request", client.get(settings.watch_prefix(), Some(probe))).await?;
    Ok(client)
}
