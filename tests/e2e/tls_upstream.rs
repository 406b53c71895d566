//! TLS to upstreams through a real gateway: `https://` servers verified against the CA bundle in the
//! backend's `Settings.TLS` (health checks dialled the same way), a wrong CA answered 502 naming the TLS
//! error, a client certificate offered to a server that requires one, and a bad TLS value refused by field.
//! The upstream is a real TLS server on a loopback socket with certificates made by rcgen.

use crate::common::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A CA and what it signed, PEM and DER.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).expect("CA");
        Pki { ca_pem: ca.pem(), ca_der: ca.der().clone(), ca, ca_key }
    }

    /// A certificate for `names`, signed by the CA: (PEM, DER, key PEM, key DER).
    fn issue(&self, names: &[&str]) -> (String, CertificateDer<'static>, String, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).expect("signed");
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.pem(), cert.der().clone(), key.serialize_pem(), key_der)
    }
}

/// A TLS upstream answering `tls-ok` to everything; with `clients`, it requires a client certificate from that
/// CA. Counts requests.
struct TlsUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_upstream(pki: &Pki, clients: Option<&Pki>) -> TlsUpstream {
    let (_, cert, _, key) = pki.issue(&["localhost", "127.0.0.1"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(c.ca_der.clone()).expect("client CA");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(vec![cert], key).expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            conns.spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let svc = service_fn(move |_req| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"tls-ok")))) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    TlsUpstream { addr, requests, task }
}

fn routes_for(upstream: &TlsUpstream, tls: serde_json::Value, extra: serde_json::Value) -> Routes {
    let routes = Routes::new();
    let mut settings = serde_json::json!({"TLS": tls});
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    routes.put("backends/b/backend", &serde_json::json!({"Type":"http","Settings":settings}).to_string());
    routes.put("backends/b/servers/s1", &format!(r#"{{"URL":"https://{}"}}"#, upstream.addr));
    routes.frontend("f", "b", "PathPrefix(`/`)");
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_server_is_verified_against_the_backends_ca_and_health_checked_over_tls() {
    let pki = Pki::new("test CA");
    let upstream = tls_upstream(&pki, None).await;
    let checks = serde_json::json!({"HealthCheck":{"Path":"/health","Interval":"100ms","Timeout":"100ms"}});
    let routes = routes_for(&upstream, serde_json::json!({"CA": pki.ca_pem}), checks);
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    let (code, body) = get(&http1_client(), &ficus.url("/x")).await;
    assert_eq!((code, &body[..]), (200, &b"tls-ok"[..]));
    let before = upstream.requests.load(Ordering::SeqCst);
    wait_for("health checks over TLS", || upstream.requests.load(Ordering::SeqCst) >= before + 3).await;
    let status = ficus.status().await;
    assert!(status["servers"][0]["checks_passed"].as_u64().unwrap_or(0) >= 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_answered_502_naming_the_tls_error() {
    let (pki, other) = (Pki::new("test CA"), Pki::new("other CA"));
    let upstream = tls_upstream(&pki, None).await;
    let routes = routes_for(&upstream, serde_json::json!({"CA": other.ca_pem}), serde_json::json!({}));
    let ficus = Ficus::start(routes.path()).await;
    let client = http1_client();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&client, &ficus.url("/x")).await.0 == 404 {
        assert!(std::time::Instant::now() < deadline, "never routed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&client, &ficus.url("/x")).await.0, 502);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 0);
    assert!(ficus.log_shows("UnknownIssuer").await, "{}", ficus.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_offered_to_a_server_that_requires_one() {
    let (pki, clients) = (Pki::new("test CA"), Pki::new("client CA"));
    let upstream = tls_upstream(&pki, Some(&clients)).await;
    let (cert, _, key, _) = clients.issue(&["ficus"]);
    let routes =
        routes_for(&upstream, serde_json::json!({"CA": pki.ca_pem, "Cert": cert, "Key": key}), serde_json::json!({}));
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    // Without the certificate, the server refuses the handshake.
    routes.put(
        "backends/b/backend",
        &serde_json::json!({"Type":"http","Settings":{"TLS":{"CA": pki.ca_pem}}}).to_string(),
    );
    let client = http1_client();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&client, &ficus.url("/x")).await.0 != 502 {
        assert!(std::time::Instant::now() < deadline, "the server took a client without a certificate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_are_refused_by_field() {
    let pki = Pki::new("test CA");
    let upstream = tls_upstream(&pki, None).await;
    let routes = routes_for(&upstream, serde_json::json!({"CA": pki.ca_pem}), serde_json::json!({}));
    let ficus = Ficus::start(routes.path()).await;
    wait_paths(&ficus, &["/x"], &[], Duration::from_secs(10)).await;
    let (cert, _, _, _) = pki.issue(&["ficus"]);
    let bad = [
        (serde_json::json!({"CA": "not a certificate"}), "Settings.TLS.CA"),
        (serde_json::json!({"CA": pki.ca_pem, "Cert": cert}), "Settings.TLS.Key"),
        (serde_json::json!({"CA": pki.ca_pem, "ServerName": "bad name!"}), "Settings.TLS.ServerName"),
    ];
    for (tls, field) in bad {
        routes.put("backends/b/backend", &serde_json::json!({"Type":"http","Settings":{"TLS": tls}}).to_string());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = ficus.status().await;
            let rejected = status["rejected"].as_array().cloned().unwrap_or_default();
            if let Some(r) = rejected.iter().find(|r| r["key"] == "backends/b/backend" && r["field"] == field) {
                assert!(!r["message"].as_str().unwrap_or("").is_empty(), "{r}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{field} never refused: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The last good value keeps serving.
        assert_eq!(get(&http1_client(), &ficus.url("/x")).await.0, 200);
    }
}
