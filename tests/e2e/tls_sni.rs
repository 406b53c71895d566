//! Which certificate the TLS listener serves: the SNI choice (exact name, then a one-level wildcard, then the
//! `Default` host) and a certificate replaced by rewriting its `hosts/` key. With three certificates installed,
//! a resolver that always returns one of them fails here; the client records the certificate it was shown.

use crate::common;

use common::backend::TestBackend;
use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A self-signed certificate for `san`, with `cn` as its subject's common name.
struct Cert {
    cn: &'static str,
    der: Vec<u8>,
    host_json: String,
}

fn cert(cn: &'static str, san: &str, default: bool) -> Cert {
    let mut params = rcgen::CertificateParams::new(vec![san.to_string()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().expect("key");
    let c = params.self_signed(&key).expect("self-signed");
    let host_json =
        serde_json::json!({"Settings":{"Default":default,"KeyPair":{"Cert":c.pem(),"Key":key.serialize_pem()}}})
            .to_string();
    Cert { cn, der: c.der().to_vec(), host_json }
}

/// Accepts any certificate: the test asks which one was served, not whether a client would trust it.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
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

/// The DER of the certificate served to a new connection that sends `sni` (a DNS name), or no SNI at all for
/// an IP address.
async fn served(addr: SocketAddr, sni: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake within 10 s")
        .unwrap_or_else(|e| panic!("handshake for {sni:?}: {e}"));
    let certs = tls.get_ref().1.peer_certificates().expect("a certificate");
    certs[0].to_vec()
}

fn which<'a>(der: &[u8], certs: &[&'a Cert]) -> &'a str {
    certs.iter().find(|c| c.der == der).map(|c| c.cn).unwrap_or("an unknown certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_exact_name_then_the_wildcard_then_the_default() {
    sni_picks(&[]).await;
}

/// The same with two workers: the connections, handed to both in turn, do their handshakes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_exact_name_then_the_wildcard_then_the_default_with_two_workers() {
    sni_picks(&["--threads", "2"]).await;
}

async fn sni_picks(extra: &[&str]) {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let exact = cert("exact", "api.sni.test", false);
    let wildcard = cert("wildcard", "*.sni.test", false);
    let default = cert("default", "default.test", true);
    routes.put("hosts/api.sni.test/host", &exact.host_json);
    routes.put("hosts/*.sni.test/host", &wildcard.host_json);
    routes.put("hosts/default.test/host", &default.host_json);
    let extra = extra.iter().map(|s| s.to_string()).collect();
    let ficus = Ficus::start_with(routes.path(), FicusOptions { tls: true, extra, ..Default::default() }).await;
    let tls = ficus.tls_addr.expect("TLS listener");
    let all = [&exact, &wildcard, &default];
    let cases = [
        // The wildcard covers this name too: the exact certificate wins.
        ("api.sni.test", &exact),
        ("API.sni.test", &exact),
        ("web.sni.test", &wildcard),
        // A wildcard covers one level only.
        ("a.web.sni.test", &default),
        ("sni.test", &default),
        ("other.test", &default),
        // An IP address is sent without SNI.
        ("127.0.0.1", &default),
    ];
    for (sni, want) in cases {
        let got = served(tls, sni).await;
        assert_eq!(which(&got, &all), want.cn, "SNI {sni:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_host_key_serves_the_new_certificate_to_new_connections() {
    let routes = Routes::new();
    let b = TestBackend::start("app").await;
    routes.backend("app", &[("s1", b.addr)]);
    routes.frontend("app", "app", "PathPrefix(`/`)");
    let old = cert("old", "api.sni.test", false);
    let other = cert("other", "other.sni.test", true);
    routes.put("hosts/api.sni.test/host", &old.host_json);
    routes.put("hosts/other.sni.test/host", &other.host_json);
    let ficus = Ficus::start_with(routes.path(), FicusOptions { tls: true, ..Default::default() }).await;
    let tls = ficus.tls_addr.expect("TLS listener");
    let new = cert("new", "api.sni.test", false);
    let all = [&old, &new, &other];
    assert_eq!(which(&served(tls, "api.sni.test").await, &all), "old");

    let gen = ficus.generation().await;
    routes.put("hosts/api.sni.test/host", &new.host_json);
    ficus.wait_generation_above(gen).await;
    // The table that holds the new certificate is in place: every new connection gets it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = which(&served(tls, "api.sni.test").await, &all);
        if got == "new" {
            break;
        }
        assert!(Instant::now() < deadline, "still served {got} after the rewrite; log:\n{}", ficus.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        assert_eq!(which(&served(tls, "api.sni.test").await, &all), "new");
    }
    // The other host's certificate is untouched.
    assert_eq!(which(&served(tls, "other.sni.test").await, &all), "other");
}
