//! Reaching a locked-down etcd: TLS with a private CA and client certificates, and username/password auth with
//! the password from the config file. Both through a real etcd and a real gateway.

use crate::common;

use common::backend::TestBackend;
use common::etcd::Etcd;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use std::path::Path;
use std::time::{Duration, Instant};

async fn wait_routed(ficus: &Ficus, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&http1_client(), &ficus.url(path)).await.0 != 200 {
        assert!(Instant::now() < deadline, "{path} never routed: {}\n{}", ficus.status().await, ficus.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn seed(etcd: &Etcd, b: std::net::SocketAddr) {
    etcd.put("/vulcand/backends/b/backend", r#"{"Type":"http"}"#);
    etcd.put("/vulcand/backends/b/servers/s1", &format!(r#"{{"URL":"http://{b}"}}"#));
    etcd.put("/vulcand/frontends/f/frontend", r#"{"Type":"http","BackendId":"b","Route":"Path(\"/f\")"}"#);
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, pem).expect("write pem");
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let certs = tempfile::tempdir().expect("temp");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf = |client: bool| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        p.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        p.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        if !client {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let cert = p.signed_by(&key, &ca, &ca_key).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (srv_cert, srv_key) = leaf(false);
    let (cli_cert, cli_key) = leaf(true);
    let d = certs.path();
    let ca_file = write(d, "ca.pem", &ca.pem());
    let (sc, sk) = (write(d, "server.pem", &srv_cert), write(d, "server-key.pem", &srv_key));
    let (cc, ck) = (write(d, "client.pem", &cli_cert), write(d, "client-key.pem", &cli_key));
    let extra = ["--cert-file", &sc, "--key-file", &sk, "--trusted-ca-file", &ca_file, "--client-cert-auth"];
    let ctl = ["--cacert", &ca_file, "--cert", &cc, "--key", &ck];
    let etcd = Etcd::start_with(
        extra.iter().map(|s| s.to_string()).collect(),
        "https",
        ctl.iter().map(|s| s.to_string()).collect(),
    );
    let b = TestBackend::start("b").await;
    seed(&etcd, b.addr);
    let mut args: Vec<String> =
        ["--etcd", &etcd.endpoint(), "--etcd-ca", &ca_file, "--etcd-cert", &cc, "--etcd-key", &ck]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--etcd-timeout", "1s"].map(String::from));
    let ficus = Ficus::start_with(Path::new("/nonexistent"), FicusOptions { extra: args, ..Default::default() }).await;
    wait_routed(&ficus, "/f").await;
    etcd.put("/vulcand/frontends/g/frontend", r#"{"Type":"http","BackendId":"b","Route":"Path(\"/g\")"}"#);
    wait_routed(&ficus, "/g").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_from_the_config_file() {
    let etcd = Etcd::start();
    let b = TestBackend::start("b").await;
    seed(&etcd, b.addr);
    etcd.ctl(&["user", "add", "root", "--new-user-password=s3cret"]);
    etcd.ctl(&["auth", "enable"]);
    let cfg = tempfile::tempdir().expect("temp");
    let file = cfg.path().join("ficus.toml");
    let toml = format!(
        "[etcd]\nendpoints = [\"{}\"]\nprefix = \"/vulcand\"\nusername = \"root\"\npassword = \"s3cret\"\nrequest_timeout = \"1s\"\n",
        etcd.endpoint()
    );
    std::fs::write(&file, toml).expect("write config");
    let extra = vec!["--config".to_string(), file.display().to_string()];
    let ficus = Ficus::start_with(Path::new("/nonexistent"), FicusOptions { extra, ..Default::default() }).await;
    wait_routed(&ficus, "/f").await;
    let root = ["--user", "root:s3cret"];
    let v = r#"{"Type":"http","BackendId":"b","Route":"Path(\"/g\")"}"#;
    etcd.ctl(&[root[0], root[1], "put", "/vulcand/frontends/g/frontend", v]);
    wait_routed(&ficus, "/g").await;
    let status = ficus.status().await;
    assert_eq!(status["source"]["state"], "watching", "{status}");
}
