//! TLS and HTTP/2 to upstream servers: `https://` servers verified against the backend's CA (or refused with a
//! 502 naming the TLS error), client certificates, SNI by `ServerName`, h2 by ALPN, h2c by
//! `HTTP2: prior-knowledge`, and real gRPC (Debian's grpcio on both sides) with its trailers, over h2c and over
//! TLS. The servers here are real TLS servers (rustls) with certificates from a test CA (rcgen).

use crate::common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A test CA and what it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Each CA its own name: a chain is matched to its issuer by name before the signature is checked.
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("ficus test CA {}", N.fetch_add(1, Ordering::Relaxed));
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        Ca { cert: params.self_signed(&key).expect("ca"), key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` (and 127.0.0.1): `(cert PEM, key PEM)`.
    fn leaf(&self, names: &[&str], client: bool) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        p.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        p.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

/// What the TLS server saw of one request.
#[derive(Default, Clone)]
struct Seen {
    sni: Option<String>,
    version: String,
    client_cert: bool,
    authority: String,
    path: String,
}

/// A real TLS server (HTTP/1.1 and HTTP/2 by ALPN, or h2c when `tls` is off) that answers every request with
/// 200 and records what it saw.
struct UpstreamServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UpstreamServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct ServerTls {
    cert: String,
    key: String,
    alpn: Vec<&'static [u8]>,
    /// Ask for a client certificate signed by this CA (PEM) and refuse connections without one.
    client_ca: Option<String>,
}

impl UpstreamServer {
    async fn start(tls: Option<ServerTls>) -> UpstreamServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tls.map(|t| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(t.cert.as_bytes()).collect::<Result<_, _>>().expect("cert");
            let key = PrivateKeyDer::from_pem_slice(t.key.as_bytes()).expect("key");
            let builder =
                rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions();
            let builder = builder.expect("versions");
            let builder = match t.client_ca {
                Some(ca) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                        roots.add(c.expect("ca")).expect("add ca");
                    }
                    let verifier =
                        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                            .build()
                            .expect("verifier");
                    builder.with_client_cert_verifier(verifier)
                }
                None => builder.with_no_client_auth(),
            };
            let mut config = builder.with_single_cert(chain, key).expect("server config");
            config.alpn_protocols = t.alpn.iter().map(|p| p.to_vec()).collect();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, record) = (connections.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, record) = (acceptor.clone(), record.clone());
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            let (_, conn) = tls.get_ref();
                            let base = Seen {
                                sni: conn.server_name().map(str::to_string),
                                client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                                ..Seen::default()
                            };
                            let svc = hyper::service::service_fn(move |req| answer(req, base.clone(), record.clone()));
                            let _ =
                                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc).await;
                        }
                        None => {
                            let svc =
                                hyper::service::service_fn(move |req| answer(req, Seen::default(), record.clone()));
                            let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        UpstreamServer { addr, connections, seen, task }
    }

    fn last(&self) -> Seen {
        self.seen.lock().expect("seen").last().cloned().expect("the server saw a request")
    }
}

async fn answer(
    mut req: Request<Incoming>,
    mut seen: Seen,
    record: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    seen.version = format!("{:?}", req.version());
    seen.path = req.uri().path().to_string();
    if req.headers().contains_key("upgrade") {
        // An echo tunnel: whatever comes in after the 101 goes back out.
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut r, mut w) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        record.lock().expect("seen").push(seen);
        let mut resp = Response::new(Full::default());
        *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert("connection", "upgrade".parse().expect("static"));
        resp.headers_mut().insert("upgrade", "echo".parse().expect("static"));
        return Ok(resp);
    }
    seen.authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| req.headers().get("host").and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_default();
    record.lock().expect("seen").push(seen);
    Ok(Response::new(Full::new(Bytes::from_static(b"upstream ok"))))
}

fn backend(routes: &Routes, settings: serde_json::Value, url: &str) {
    routes.put("backends/b/backend", &serde_json::json!({"Type":"http","Settings":settings}).to_string());
    routes.put("backends/b/servers/s1", &serde_json::json!({ "URL": url }).to_string());
    routes.frontend("f", "b", "PathRegexp(`/.*`)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_servers_are_verified_by_the_backends_ca_and_spoken_to_in_h2_by_alpn() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["backend.internal"], false);
    let server =
        UpstreamServer::start(Some(ServerTls { cert, key, alpn: vec![b"h2", b"http/1.1"], client_ca: None })).await;
    let routes = Routes::new();
    let tls = serde_json::json!({"TLS":{"CA":ca.pem(),"ServerName":"backend.internal"}});
    backend(&routes, tls, &format!("https://{}", server.addr));
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    for i in 0..5 {
        let (code, body) = get(&c, &ficus.url(&format!("/x{i}"))).await;
        assert_eq!(code, 200, "{}\n{}", String::from_utf8_lossy(&body), ficus.log_text());
    }
    let seen = server.last();
    assert_eq!(seen.sni.as_deref(), Some("backend.internal"), "SNI is the configured ServerName");
    assert_eq!(seen.version, "HTTP/2.0", "ALPN picked h2");
    assert_eq!(seen.authority, server.addr.to_string(), "the Host Ficus chose went as :authority");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "one shared HTTP/2 connection");
    let status = ficus.status().await;
    assert!(status["errors"].as_array().is_none_or(|e| e.is_empty()), "{status}");

    // An upgrade cannot ride HTTP/2: it gets an HTTP/1.1 connection of its own, and the tunnel carries bytes.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(ficus.addr).await.expect("connect");
    tcp.write_all(b"GET /tunnel HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await.expect("101 within 10 s");
        assert_eq!(n.expect("read"), 1, "connection closed after {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut echo)).await.expect("echo").expect("read");
    assert_eq!(&echo, b"ping");
    assert_eq!(server.last().version, "HTTP/1.1");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2, "the tunnel has its own connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_a_502_naming_the_tls_error() {
    let (ca, other) = (Ca::new(), Ca::new());
    let (cert, key) = other.leaf(&["backend.internal"], false);
    let server = UpstreamServer::start(Some(ServerTls { cert, key, alpn: vec![b"http/1.1"], client_ca: None })).await;
    let routes = Routes::new();
    backend(
        &routes,
        serde_json::json!({"TLS":{"CA":ca.pem(),"ServerName":"backend.internal"}}),
        &format!("https://{}", server.addr),
    );
    let ficus = Ficus::start(routes.path()).await;
    let (code, _) = get(&http1_client(), &ficus.url("/x")).await;
    assert_eq!(code, 502);
    assert!(ficus.log_shows("TLS handshake with").await, "{}", ficus.log_text());
    assert!(
        ficus.log_text().contains("invalid peer certificate: UnknownIssuer"),
        "the log names the certificate error: {}",
        ficus.log_text()
    );
    assert!(server.seen.lock().expect("seen").is_empty(), "no request reached the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_to_servers_that_ask_and_http2_off_keeps_http1() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["localhost"], false);
    let (client_cert, client_key) = ca.leaf(&["ficus"], true);
    let server =
        UpstreamServer::start(Some(ServerTls { cert, key, alpn: vec![b"h2", b"http/1.1"], client_ca: Some(ca.pem()) }))
            .await;
    let routes = Routes::new();
    let url = format!("https://localhost:{}", server.addr.port());
    // Without a client certificate the server refuses the handshake.
    backend(&routes, serde_json::json!({"TLS":{"CA":ca.pem()}}), &url);
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    assert_eq!(get(&c, &ficus.url("/x")).await.0, 502);

    let gen = ficus.generation().await;
    let settings = serde_json::json!({"HTTP2":"off","TLS":{"CA":ca.pem(),"Cert":client_cert,"Key":client_key}});
    routes.put("backends/b/backend", &serde_json::json!({"Type":"http","Settings":settings}).to_string());
    ficus.wait_generation_above(gen).await;
    let (code, body) = get(&c, &ficus.url("/x")).await;
    assert_eq!(code, 200, "{}\n{}", String::from_utf8_lossy(&body), ficus.log_text());
    let seen = server.last();
    assert!(seen.client_cert, "the server saw the client certificate");
    assert_eq!(seen.sni.as_deref(), Some("localhost"), "SNI is the URL's host");
    assert_eq!(seen.version, "HTTP/1.1", "HTTP2 off offers only http/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prior_knowledge_speaks_h2c_to_plain_servers() {
    let server = UpstreamServer::start(None).await;
    let routes = Routes::new();
    backend(&routes, serde_json::json!({"HTTP2":"prior-knowledge"}), &format!("http://{}", server.addr));
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    for _ in 0..3 {
        assert_eq!(get(&c, &ficus.url("/x")).await.0, 200, "{}", ficus.log_text());
    }
    assert_eq!(server.last().version, "HTTP/2.0");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_are_refused_by_field_and_the_last_good_value_keeps_serving() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["localhost"], false);
    let server = UpstreamServer::start(Some(ServerTls { cert, key, alpn: vec![b"http/1.1"], client_ca: None })).await;
    let routes = Routes::new();
    let url = format!("https://localhost:{}", server.addr.port());
    backend(&routes, serde_json::json!({"TLS":{"CA":ca.pem()}}), &url);
    let ficus = Ficus::start(routes.path()).await;
    let c = http1_client();
    assert_eq!(get(&c, &ficus.url("/x")).await.0, 200, "{}", ficus.log_text());
    let bad = [
        (serde_json::json!({"TLS":{"CA":"not a certificate"}}), "Settings.TLS.CA"),
        (serde_json::json!({"TLS":{"CA":ca.pem(),"MinVersion":"VersionTLS10"}}), "Settings.TLS.MinVersion"),
        (
            serde_json::json!({"TLS":{"CA":ca.pem(),"CipherSuites":["TLS_RSA_WITH_RC4_128_SHA"]}}),
            "Settings.TLS.CipherSuites[0]",
        ),
        (serde_json::json!({"TLS":{"CA":ca.pem(),"Cert":"x"}}), "Settings.TLS.Key"),
        (serde_json::json!({"HTTP2":"sometimes"}), "Settings.HTTP2"),
    ];
    for (settings, field) in bad {
        routes.put("backends/b/backend", &serde_json::json!({"Type":"http","Settings":settings}).to_string());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = ficus.status().await;
            if status.to_string().contains(field) {
                break;
            }
            assert!(Instant::now() < deadline, "{field} never reported: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(get(&c, &ficus.url("/x")).await.0, 200, "the last good TLS keeps serving after {field}");
    }
}

/// Debian's Python with its grpcio (scripts/install-deps installs it).
fn grpc_peer() -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/peers/grpc_peer.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script);
    cmd
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gRPC server on a port of its choosing; returns it and the port it printed.
fn grpc_server(args: &[&str]) -> (Peer, u16) {
    use std::io::BufRead;
    let mut child = grpc_peer()
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs (scripts/install-deps installs python3-grpcio)");
    let stdout = child.stdout.take().expect("stdout");
    let peer = Peer(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("the gRPC server prints its port within 20 s");
    (peer, line.trim().parse().expect("a port"))
}

/// Runs the gRPC client's checks (unary, streaming, an error status; trailers on each) through `target`;
/// `args` starts with the authority the client names.
async fn grpc_call(target: String, args: Vec<String>) {
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = grpc_peer();
        cmd.arg("call").arg(&target).args(&args);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("python3 runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    })
    .await
    .expect("join");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("ok"), "gRPC checks failed: {stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_with_trailers_over_h2c_and_over_tls() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().expect("temp");
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    // Plain: gRPC client -> Ficus (h2c) -> gRPC server (h2c, HTTP2 prior-knowledge).
    let (_plain, plain_port) = grpc_server(&[]);
    // TLS: gRPC client -> Ficus's TLS listener (h2 by ALPN) -> gRPC server over TLS (h2 by ALPN).
    let (srv_cert, srv_key) = ca.leaf(&["grpc.internal"], false);
    let (_secure, secure_port) = grpc_server(&["--tls", &file("srv.pem", &srv_cert), &file("srv.key", &srv_key)]);

    let routes = Routes::new();
    routes.put("backends/plain/backend", r#"{"Type":"http","Settings":{"HTTP2":"prior-knowledge"}}"#);
    routes.put("backends/plain/servers/s1", &format!(r#"{{"URL":"http://127.0.0.1:{plain_port}"}}"#));
    let tls = serde_json::json!({"Type":"http","Settings":{"TLS":{"CA":ca.pem(),"ServerName":"grpc.internal"}}});
    routes.put("backends/secure/backend", &tls.to_string());
    routes.put("backends/secure/servers/s1", &format!(r#"{{"URL":"https://127.0.0.1:{secure_port}"}}"#));
    routes.frontend("plain", "plain", "Host(`plain.test`)");
    routes.frontend("secure", "secure", "Host(`secure.test`)");
    let (front_cert, front_key) = ca.leaf(&["secure.test"], false);
    let host = serde_json::json!({"Settings":{"KeyPair":{"Cert":front_cert,"Key":front_key}}});
    routes.put("hosts/secure.test/host", &host.to_string());
    let ficus = Ficus::start_with(routes.path(), FicusOptions { tls: true, ..Default::default() }).await;

    grpc_call(format!("127.0.0.1:{}", ficus.addr.port()), vec!["plain.test".to_string()]).await;
    let tls_args = vec!["secure.test".to_string(), "--tls".to_string(), file("ca.pem", &ca.pem())];
    grpc_call(format!("127.0.0.1:{}", ficus.tls_addr.expect("tls listener").port()), tls_args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_reach_https_servers_with_the_backends_tls() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["backend.internal"], false);
    let server =
        UpstreamServer::start(Some(ServerTls { cert, key, alpn: vec![b"h2", b"http/1.1"], client_ca: None })).await;
    let routes = Routes::new();
    let settings = serde_json::json!({"TLS":{"CA":ca.pem(),"ServerName":"backend.internal"},
        "HealthCheck":{"Path":"/healthz","Interval":"100ms","Timeout":"100ms"}});
    backend(&routes, settings, &format!("https://{}", server.addr));
    let ficus = Ficus::start(routes.path()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let checked =
            server.seen.lock().expect("seen").iter().any(|s| {
                s.path == "/healthz" && s.sni.as_deref() == Some("backend.internal") && s.version == "HTTP/1.1"
            });
        if checked {
            break;
        }
        assert!(Instant::now() < deadline, "no health check arrived over TLS: {}", ficus.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Counted once the answer is read, a moment after the server saw the request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ficus.metric("ficus_health_checks_total").await < 1.0 {
        assert!(Instant::now() < deadline, "no health check counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = ficus.status().await;
    assert!(!status.to_string().contains("unhealthy"), "{status}");
}
