//! docker-compose.yml is for users; it cannot run here (no container engine), so it is checked with a real
//! compose parser: valid, and wired the way the README says.

use std::process::Command;

fn compose_config() -> serde_json::Value {
    let out = Command::new("docker-compose")
        .args(["-f", concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"), "config"])
        .output()
        .expect("docker-compose is installed by scripts/install-deps");
    assert!(out.status.success(), "compose file invalid: {}", String::from_utf8_lossy(&out.stderr));
    // The parser prints the normalised file as YAML; Debian's python3 (a docker-compose dependency) reads it.
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    py.stdin.take().expect("stdin").write_all(&out.stdout).expect("write");
    let json = py.wait_with_output().expect("python3 ran");
    assert!(json.status.success());
    serde_json::from_slice(&json.stdout).expect("JSON")
}

#[test]
fn compose_file_is_valid_and_wired() {
    let c = compose_config();
    let services = c["services"].as_object().expect("services");
    for s in ["etcd", "routes", "legacy-catalog", "gtin-blue", "gtin-green", "gtin-sync", "ficus"] {
        assert!(services.contains_key(s), "service {s} missing");
    }
    let ports: Vec<u64> = c["services"]["etcd"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["published"].as_u64().or_else(|| p["published"].as_str().and_then(|s| s.parse().ok())))
        .collect();
    for p in [8080, 8182, 2379] {
        assert!(ports.contains(&p), "port {p} not published: {ports:?}");
    }
    let ficus = &c["services"]["ficus"];
    assert_eq!(ficus["depends_on"]["routes"]["condition"], "service_completed_successfully");
    let cmd: Vec<&str> = ficus["command"].as_array().expect("command").iter().filter_map(|v| v.as_str()).collect();
    assert!(cmd.contains(&"--etcd=http://127.0.0.1:2379") && cmd.contains(&"--listen=0.0.0.0:8080"), "{cmd:?}");
    let routes: Vec<&str> =
        c["services"]["routes"]["command"].as_array().expect("command").iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(&routes[..3], ["ficus", "apply", "/opt/ficus/routes"]);
    // Every service but etcd shares etcd's network namespace, so routes/ applies unchanged.
    for (name, s) in services {
        if name != "etcd" {
            assert_eq!(s["network_mode"], "service:etcd", "{name}");
        }
    }
    // The image has the three binaries the commands name.
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).expect("Dockerfile");
    for bin in ["ficus", "legacy-catalog", "gtin-service"] {
        assert!(dockerfile.contains(&format!("--bin {bin}")), "{bin} not built in the Dockerfile");
    }
}
