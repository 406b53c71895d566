//! A backend's upstream TLS settings, Vulcand's backend `Settings.TLS` block with Ficus extensions: the CA
//! bundle servers are verified against (`CA`, PEM; the system roots when absent), a client certificate
//! (`Cert` and `Key`, PEM), the name checked and sent as SNI (`ServerName`; the server URL's host when
//! absent), and Vulcand's `InsecureSkipVerify`. Checked per key when the backend's value arrives (a bad PEM is
//! refused naming its field) and turned into a rustls client config once; `upstream::pool` dials with it.

use super::{ConfigError, Key};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// `Settings.TLS` as stored. Vulcand's tuning fields are decoded so existing trees load; rustls' own safe
/// defaults apply instead of them, and setting one is reported as unsupported.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct UpstreamTlsSpec {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// Ficus: PEM certificates of the CAs servers are verified against.
    #[serde(default, rename = "CA", skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Ficus: the client certificate chain (PEM) offered to servers that ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Ficus: the client certificate's private key (PEM).
    #[serde(default, skip_serializing, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Ficus: the name verified in server certificates and sent as SNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_server_cipher_suites: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_tickets_disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_cache: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suites: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
}

impl UpstreamTlsSpec {
    /// Vulcand's tuning fields that are set (and not acted on).
    pub fn tuning_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.prefer_server_cipher_suites.is_some() {
            out.push("PreferServerCipherSuites");
        }
        if self.session_tickets_disabled.is_some() {
            out.push("SessionTicketsDisabled");
        }
        if self.session_cache.is_some() {
            out.push("SessionCache");
        }
        if self.cipher_suites.is_some() {
            out.push("CipherSuites");
        }
        if self.min_version.is_some() {
            out.push("MinVersion");
        }
        if self.max_version.is_some() {
            out.push("MaxVersion");
        }
        out
    }
}

/// A checked `Settings.TLS`: the client config servers of the backend are dialled with.
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    pub server_name: Option<ServerName<'static>>,
    /// Tells two values apart without comparing configs: a hash of the stored block.
    pub id: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("server_name", &self.server_name).field("id", &self.id).finish()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for UpstreamTls {}

impl Serialize for UpstreamTls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:016x}", self.id))
    }
}

/// Where the system's CA bundle is looked for, in order (`SSL_CERT_FILE` first), as OpenSSL-based tools do.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's roots, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let from_env = std::env::var("SSL_CERT_FILE").ok();
            let paths = from_env.iter().map(String::as_str).chain(SYSTEM_BUNDLES.iter().copied());
            for path in paths {
                let Ok(pem) = std::fs::read(path) else { continue };
                let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
                let (added, _) = store.add_parsable_certificates(certs);
                if added > 0 {
                    break;
                }
            }
            if store.is_empty() {
                tracing::warn!("no system CA bundle found; https servers need Settings.TLS.CA");
            }
            Arc::new(store)
        })
        .clone()
}

/// The config for `https://` servers of a backend without a `TLS` block: the system roots, no client
/// certificate.
pub fn default_upstream_tls() -> Arc<UpstreamTls> {
    static DEFAULT: OnceLock<Arc<UpstreamTls>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            let builder = builder();
            let config = match builder {
                Ok(b) => b.with_root_certificates(system_roots()).with_no_client_auth(),
                // The ring provider supports the default versions; this cannot fail, but stay total.
                Err(_) => ClientConfig::builder().with_root_certificates(system_roots()).with_no_client_auth(),
            };
            Arc::new(UpstreamTls { config: Arc::new(alpn(config)), server_name: None, id: 0 })
        })
        .clone()
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, rustls::Error> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
}

fn alpn(mut config: ClientConfig) -> ClientConfig {
    // Upstreams are spoken to in HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

pub(super) fn check(key: &Key, spec: &UpstreamTlsSpec) -> Result<Arc<UpstreamTls>, ConfigError> {
    let err = |field: &str, msg: String| ConfigError::new(key, Some(&format!("Settings.TLS.{field}")), msg);
    let roots = match &spec.ca {
        None => system_roots(),
        Some(pem) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| err("CA", format!("bad PEM: {e}")))?;
            if certs.is_empty() {
                return Err(err("CA", "no certificate in PEM".to_string()));
            }
            let mut store = RootCertStore::empty();
            for c in certs {
                store.add(c).map_err(|e| err("CA", format!("unusable CA certificate: {e}")))?;
            }
            Arc::new(store)
        }
    };
    let server_name = match &spec.server_name {
        None => None,
        Some(n) => {
            Some(ServerName::try_from(n.clone()).map_err(|e| err("ServerName", format!("`{n}` is not a name: {e}")))?)
        }
    };
    let builder = builder().map_err(|e| err("MinVersion", e.to_string()))?;
    let builder = if spec.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification::new()))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match (&spec.cert, &spec.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(err("Key", "missing: a client Cert needs its Key".to_string())),
        (None, Some(_)) => return Err(err("Cert", "missing: a client Key needs its Cert".to_string())),
        (Some(cert), Some(k)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| err("Cert", format!("bad PEM: {e}")))?;
            if chain.is_empty() {
                return Err(err("Cert", "no certificate in PEM".to_string()));
            }
            let private = PrivateKeyDer::from_pem_slice(k.as_bytes())
                .map_err(|e| err("Key", format!("bad PEM private key: {e}")))?;
            builder.with_client_auth_cert(chain, private).map_err(|e| err("Key", format!("unusable: {e}")))?
        }
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    spec.key.hash(&mut h);
    Ok(Arc::new(UpstreamTls { config: Arc::new(alpn(config)), server_name, id: h.finish() | 1 }))
}

/// `InsecureSkipVerify`: any certificate is accepted; signatures are still checked so the handshake is sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl NoVerification {
    fn new() -> Self {
        NoVerification(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
