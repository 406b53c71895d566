//! TLS for client connections: certificates are picked per handshake by SNI from the routing table's
//! certificate store, so a certificate written to `hosts/<name>/host` is served without a restart.

use crate::table::SharedTable;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

pub struct SniResolver {
    table: SharedTable,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl SniResolver {
    pub fn new(table: SharedTable) -> Self {
        SniResolver { table }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table.load().certs.resolve(hello.server_name())
    }
}

/// A server config offering h2 and http/1.1 by ALPN, with ring as the one crypto provider.
pub fn server_config(table: SharedTable) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(table)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
