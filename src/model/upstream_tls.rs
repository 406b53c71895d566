//! A backend's TLS to its servers, checked and built once per value: the `TLS` block and `HTTP2` setting of
//! `backends/<b>/backend` become rustls client configs here, at validation, so a bad CA, a key that does not
//! match its certificate or an unknown cipher suite is refused by key and field, and the pool that dials with
//! them never parses anything.
//!
//! Two configs per backend: one offering `h2` and `http/1.1` by ALPN (or only `h2` or only `http/1.1`,
//! as `HTTP2` says), and one offering only `http/1.1`, for requests that upgrade the connection (WebSocket),
//! which HTTP/2 to the server cannot carry.

use super::{BackendTls, ConfigError, Key};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// `HTTP2` of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Http2 {
    /// HTTP/2 when TLS's ALPN picks it; HTTP/1.1 otherwise and on `http://` servers.
    #[default]
    Alpn,
    /// Always HTTP/2: h2c on `http://` servers, h2 on `https://` ones.
    PriorKnowledge,
    /// HTTP/1.1 only.
    Off,
}

impl Http2 {
    pub fn parse(key: &Key, value: Option<&str>) -> Result<Http2, ConfigError> {
        match value {
            None | Some("alpn") => Ok(Http2::Alpn),
            Some("prior-knowledge") => Ok(Http2::PriorKnowledge),
            Some("off") => Ok(Http2::Off),
            Some(other) => Err(ConfigError::new(
                key,
                Some("Settings.HTTP2"),
                format!("`{other}` is not one of `alpn`, `prior-knowledge`, `off`"),
            )),
        }
    }
}

/// The built TLS of one backend. Equal when built from equal values, so an unrelated write keeps the servers
/// (and their pooled connections).
#[derive(Clone, Serialize)]
pub struct UpstreamTls {
    #[serde(skip)]
    pub config: Arc<ClientConfig>,
    /// `http/1.1` only, for upgrades.
    #[serde(skip)]
    pub h1_config: Arc<ClientConfig>,
    /// SNI and the name checked, when not the server URL's host.
    pub server_name: Option<String>,
    pub verify: bool,
    /// A CA bundle of the backend's own (else the system's roots).
    pub own_ca: bool,
    pub client_certificate: bool,
    #[serde(skip)]
    fingerprint: u64,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}
impl Eq for UpstreamTls {}
impl Hash for UpstreamTls {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.fingerprint.hash(state);
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .field("own_ca", &self.own_ca)
            .field("client_certificate", &self.client_certificate)
            .finish()
    }
}

/// The system's trusted roots, read once per process (they are read from disk).
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err(format!("no trusted roots found on this system{why}; set Settings.TLS.CA"));
            }
            Ok(Arc::new(store))
        })
        .clone()
}

/// A client config for requests Ficus makes of its own (a circuit breaker's `https://` webhooks): the system's
/// roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set), TLS 1.2 and 1.3, HTTP/1.1. Built once per process.
pub fn system_client_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = system_roots()?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

fn field(key: &Key, name: &str, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(key, Some(&format!("Settings.TLS.{name}")), msg)
}

fn version(key: &Key, name: &str, v: Option<&str>) -> Result<Option<u8>, ConfigError> {
    match v {
        None | Some("") => Ok(None),
        Some("VersionTLS12") => Ok(Some(2)),
        Some("VersionTLS13") => Ok(Some(3)),
        Some(old @ ("VersionTLS10" | "VersionTLS11" | "VersionSSL30")) => {
            Err(field(key, name, format!("`{old}` is not supported (TLS 1.2 and 1.3 only)")))
        }
        Some(other) => Err(field(key, name, format!("`{other}` is not `VersionTLS12` or `VersionTLS13`"))),
    }
}

/// Go's name of a TLS 1.2 suite to the provider's suite; suites the provider lacks (CBC, RC4, 3DES) are refused.
fn suite(name: &str) -> Option<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// Builds a backend's TLS. `None` when the backend has neither a `TLS` block nor an `https://` server.
pub fn build(
    key: &Key,
    spec: Option<&BackendTls>,
    http2: Http2,
    any_https: bool,
) -> Result<Option<UpstreamTls>, ConfigError> {
    if spec.is_none() && !any_https {
        return Ok(None);
    }
    let default = BackendTls::default();
    let t = spec.unwrap_or(&default);
    let min = version(key, "MinVersion", t.min_version.as_deref())?;
    let max = version(key, "MaxVersion", t.max_version.as_deref())?;
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(field(key, "MaxVersion", "is below MinVersion"));
        }
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| min.map_or(true, |lo| *v >= lo) && max.map_or(true, |hi| *v <= hi))
            .map(|(_, p)| p)
            .collect();
    let mut provider = rustls::crypto::ring::default_provider();
    if !t.cipher_suites.is_empty() {
        let mut chosen = Vec::new();
        for (i, name) in t.cipher_suites.iter().enumerate() {
            let s = suite(name).ok_or_else(|| {
                field(key, &format!("CipherSuites[{i}]"), format!("`{name}` is not a supported TLS 1.2 suite"))
            })?;
            chosen.push(s);
        }
        // TLS 1.3's suites are not configurable in Go either; they stay.
        chosen.extend(provider.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).copied());
        provider.cipher_suites = chosen;
    }
    let server_name = match t.server_name.as_deref() {
        None | Some("") => None,
        Some(n) => {
            ServerName::try_from(n.to_string()).map_err(|e| field(key, "ServerName", format!("`{n}`: {e}")))?;
            Some(n.to_string())
        }
    };
    let roots = match t.ca.as_deref() {
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| field(key, "CA", format!("bad PEM: {e}")))?;
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(field(key, "CA", "no usable certificate in PEM"));
            }
            Arc::new(store)
        }
        None if t.insecure_skip_verify => Arc::new(RootCertStore::empty()),
        None => system_roots().map_err(|e| field(key, "CA", e))?,
    };
    let client_auth = match (t.cert.as_deref(), t.key.as_deref()) {
        (None, None) => None,
        (Some(_), None) => return Err(field(key, "Key", "missing: Cert needs its Key")),
        (None, Some(_)) => return Err(field(key, "Cert", "missing: Key needs its Cert")),
        (Some(cert), Some(k)) => {
            use rustls::pki_types::pem::PemObject;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| field(key, "Cert", format!("bad PEM: {e}")))?;
            if chain.is_empty() {
                return Err(field(key, "Cert", "no certificate in PEM"));
            }
            let private =
                PrivateKeyDer::from_pem_slice(k.as_bytes()).map_err(|e| field(key, "Key", format!("bad PEM: {e}")))?;
            Some((chain, private))
        }
    };
    let provider = Arc::new(provider);
    let make = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, ConfigError> {
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| field(key, "MinVersion", e.to_string()))?;
        let builder = if t.insecure_skip_verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
        } else {
            builder.with_root_certificates(roots.clone())
        };
        let mut config = match &client_auth {
            None => builder.with_no_client_auth(),
            Some((chain, private)) => builder
                .with_client_auth_cert(chain.clone(), private.clone_key())
                .map_err(|e| field(key, "Key", format!("unusable with Cert: {e}")))?,
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        if t.session_tickets_disabled {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(Arc::new(config))
    };
    let alpn: &[&[u8]] = match http2 {
        Http2::Alpn => &[b"h2", b"http/1.1"],
        Http2::PriorKnowledge => &[b"h2"],
        Http2::Off => &[b"http/1.1"],
    };
    let config = make(alpn)?;
    let h1_config = make(&[b"http/1.1"])?;
    if t.insecure_skip_verify {
        tracing::warn!(key = %key, "Settings.TLS.InsecureSkipVerify: server certificates are not checked");
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(t).unwrap_or_default().hash(&mut h);
    http2.hash(&mut h);
    Ok(Some(UpstreamTls {
        config,
        h1_config,
        server_name,
        verify: !t.insecure_skip_verify,
        own_ca: t.ca.is_some(),
        client_certificate: client_auth.is_some(),
        fingerprint: h.finish(),
    }))
}

/// `InsecureSkipVerify`: any certificate is taken, but the handshake's signatures are still checked, so the
/// peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
