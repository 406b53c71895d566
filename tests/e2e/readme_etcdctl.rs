//! The README's etcdctl block, run verbatim (each line through `sh`) against a real etcd that a real Ficus
//! follows: the documented commands must be accepted, every key kind must load, nothing may be refused.

use crate::common;

use common::etcd::{Etcd, ETCDCTL};
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let start = readme.find("<!-- etcdctl:begin -->").expect("etcdctl block start");
    let end = readme.find("<!-- etcdctl:end -->").expect("etcdctl block end");
    readme[start..end].lines().filter(|l| l.starts_with("etcdctl ")).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_etcdctl_commands_run_verbatim() {
    let commands = readme_commands();
    assert!(commands.len() >= 10, "{commands:?}");
    let etcd = Etcd::start();
    let ficus = Ficus::start_etcd(&etcd.endpoint(), "/vulcand").await;
    let bin = std::path::Path::new(ETCDCTL).parent().expect("bin dir");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for line in &commands {
        let out = Command::new("sh")
            .arg("-c")
            .arg(line)
            .env("ETCDCTL_API", "3")
            .env("ETCDCTL_ENDPOINTS", etcd.endpoint())
            .env("PATH", &path)
            .output()
            .expect("sh");
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s = ficus.status().await;
        if s["source"]["revision"].as_i64() == Some(etcd.revision()) {
            break s;
        }
        assert!(Instant::now() < deadline, "not applied: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["rejected"].as_array().map(Vec::len), Some(0), "{status}");
    assert_eq!(status["errors"].as_array().map(Vec::len), Some(0), "{status}");
    assert_eq!(status["counts"]["frontends"], 2, "{status}");
    assert_eq!(status["counts"]["servers"], 5, "{status}");
    assert_eq!(status["counts"]["backends"], 4, "{status}");
    // The gRPC backend speaks h2c; the HTTPS one checks certificates for its ServerName.
    let (_, config) = get(&http1_client(), &format!("http://{}/config", ficus.admin)).await;
    let config: serde_json::Value = serde_json::from_slice(&config).expect("config is JSON");
    assert_eq!(config["backends"]["grpc"]["settings"]["http2"], "prior-knowledge", "{config}");
    assert_eq!(config["backends"]["api"]["tls"]["server_name"], "api.internal", "{config}");
    assert_eq!(config["backends"]["api"]["tls"]["verify"], true, "{config}");
    assert_eq!(status["counts"]["listeners"], 1, "{status}");
    // The middlewares left in place are in their frontends' chains and enforce: the per-client rate limit lets
    // its burst of 3 through (to servers that are not running here: 502) and refuses the 4th.
    assert_eq!(status["chains"]["gtin"][0]["id"], "per-client", "{status}");
    let legacy: Vec<&str> =
        status["chains"]["legacy"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(legacy, ["moved", "cl", "trace", "tmpl"], "{status}");
    let gtin: Vec<&str> =
        status["chains"]["gtin"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(gtin, ["per-client", "cb"], "{status}");
    assert_eq!(status["chains"]["gtin"][1]["state"], "standby", "{status}");
    let c = http1_client();
    let (parts, _) =
        request_full(&c, http::Request::get(ficus.url("/catalog/42")).body(Default::default()).unwrap()).await;
    assert_eq!(parts.status, 302);
    assert_eq!(parts.headers["location"], format!("http://{}/products/42", ficus.addr));
    let gtin = |client: &'static str| {
        let req = http::Request::get(ficus.url("/stores/1/gtins/123456789012")).header("x-client", client);
        request_full(&c, req.body(Default::default()).expect("request"))
    };
    for i in 0..3 {
        assert_ne!(gtin("readme").await.0.status, 429, "request {i} of the burst");
    }
    let (parts, _) = gtin("readme").await;
    assert_eq!(parts.status, 429);
    assert!(parts.headers.contains_key("retry-after"));
    assert_ne!(gtin("another").await.0.status, 429, "another client has its own bucket");
    let config = get(&http1_client(), &format!("http://{}/config", ficus.admin)).await.1;
    let config: serde_json::Value = serde_json::from_slice(&config).expect("config JSON");
    let gtin = &config["backends"]["gtin"]["servers"];
    assert!(
        gtin.as_array().is_some_and(|s| s.iter().any(|s| s["id"] == "gtin-1" && s["draining"] == true)),
        "{config}"
    );
}
