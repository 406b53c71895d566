//! The packaging users run without this repository's tests around them: docker-compose.yml, the Dockerfile
//! and the release build script they share with scripts/demo. No container engine runs here, so the compose
//! file is read by a real compose parser (`docker-compose config`), the Dockerfile's build step is checked to
//! be the shared script, and that script is run (in the dev profile, which the suite has built already) to
//! see the three binaries come out of it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BINARIES: [&str; 3] = ["ficus", "legacy-catalog", "gtin-service"];

fn compose_config() -> serde_json::Value {
    let out = Command::new("docker-compose")
        .args(["-f", &format!("{ROOT}/docker-compose.yml"), "config"])
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

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default()
}

/// The `host:port` of every server in the routes/ plan.
fn planned_servers() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for backend in std::fs::read_dir(format!("{ROOT}/routes/backends")).expect("routes/backends") {
        let dir = backend.expect("entry").path().join("servers");
        for server in std::fs::read_dir(&dir).into_iter().flatten() {
            let text = std::fs::read_to_string(server.expect("entry").path()).expect("server file");
            let v: serde_json::Value = serde_json::from_str(&text).expect("server JSON");
            let url = v["URL"].as_str().expect("URL");
            found.insert(url.trim_start_matches("http://").to_string());
        }
    }
    found
}

#[test]
fn compose_file_is_valid_builds_its_image_and_routes_to_every_service() {
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
    let cmd = strings(&ficus["command"]);
    assert!(cmd.contains(&"--etcd=http://127.0.0.1:2379") && cmd.contains(&"--listen=0.0.0.0:8080"), "{cmd:?}");
    let routes = strings(&c["services"]["routes"]["command"]);
    assert_eq!(&routes[..3], ["ficus", "apply", "/opt/ficus/routes"]);
    let root = std::fs::canonicalize(ROOT).expect("root");
    for (name, s) in services {
        if name == "etcd" {
            continue;
        }
        // Every service but etcd shares etcd's network namespace, so routes/ applies unchanged.
        assert_eq!(s["network_mode"], "service:etcd", "{name}");
        // ... and builds the image itself: `docker compose up` must not go looking for ficus:latest in a registry.
        let context = s["build"]["context"].as_str().unwrap_or_else(|| panic!("{name} has no build: {s}"));
        assert_eq!(std::fs::canonicalize(context).expect("context"), root, "{name}");
        assert_eq!(s["image"], "ficus:latest", "{name}");
    }
    // Every long-running service that listens gets traffic: its address is a server of the plan.
    let planned = planned_servers();
    for name in ["legacy-catalog", "gtin-blue", "gtin-green"] {
        let cmd = strings(&services[name]["command"]);
        let at = cmd.iter().position(|a| *a == "--listen").unwrap_or_else(|| panic!("{name}: no --listen"));
        let addr = cmd[at + 1];
        assert!(planned.contains(addr), "{name} listens on {addr}, which no server in routes/ names: {planned:?}");
    }
}

#[test]
fn dockerfile_builds_with_the_shared_script_and_serves_on_every_address() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).expect("Dockerfile");
    let runs: Vec<&str> = dockerfile.lines().filter_map(|l| l.strip_prefix("RUN ")).collect();
    assert!(runs.contains(&"scripts/build-release"), "the image is not built by scripts/build-release: {runs:?}");
    assert!(!dockerfile.contains("cargo build"), "the Dockerfile builds on its own instead of through the script");
    let copy = dockerfile.lines().find(|l| l.starts_with("COPY --from=build")).expect("COPY of the binaries");
    for bin in BINARIES {
        assert!(copy.contains(&format!("/src/target/release/{bin} ")), "{bin} not copied: {copy}");
    }
    // The image's default command uses the container config, which binds every address (a container's
    // loopback is unreachable through published ports).
    let cmd = dockerfile.lines().find(|l| l.starts_with("CMD ")).expect("CMD");
    assert!(cmd.contains("/opt/ficus/config/container.toml"), "{cmd}");
    let settings = ficus::app::Settings::load(Path::new(&format!("{ROOT}/config/container.toml"))).expect("loads");
    assert!(!settings.listeners.is_empty());
    for l in &settings.listeners {
        assert!(l.address.ip().is_unspecified(), "listener {} binds {}", l.name, l.address);
    }
    assert!(settings.admin.address.is_some_and(|a| a.ip().is_unspecified()), "{:?}", settings.admin.address);
    assert_eq!(settings.routes.dir, Path::new("/opt/ficus/routes"));
}

#[test]
fn the_release_build_script_builds_all_three_binaries() {
    // The script as the Dockerfile and scripts/demo run it, in the dev profile the suite has built already.
    let out = Command::new(format!("{ROOT}/scripts/build-release"))
        .args(["--quiet", "--message-format=json"])
        .env("FICUS_PROFILE", "dev")
        .output()
        .expect("scripts/build-release");
    assert!(out.status.success(), "build failed: {}", String::from_utf8_lossy(&out.stderr));
    let built: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| m["executable"].as_str().map(|e| e.rsplit('/').next().unwrap_or(e).to_string()))
        .collect();
    assert_eq!(built, BINARIES.iter().map(|b| b.to_string()).collect(), "{built:?}");
}
