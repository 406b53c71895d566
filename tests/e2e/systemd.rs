//! The systemd units in config/ are checked by systemd itself: `systemd-analyze verify` (no running systemd
//! needed) loads every unit, its sockets and its template instances, and complains about unknown keys, bad
//! values (a `:` in a FileDescriptorName) and ExecStart binaries that do not exist. The units name the
//! installed binaries (/usr/local/bin); the checked copies name the ones this build made instead.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn unit(name: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/config/{name}")).unwrap_or_else(|e| panic!("config/{name}: {e}"))
}

/// The value of every `Key=` line of a unit.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).collect()
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ficus")).parent().expect("bin dir").to_path_buf();
    for bin in ["ficus", "gtin-service"] {
        assert!(
            bin_dir.join(bin).exists(),
            "{bin} is not built in {} (cargo build --workspace --bins)",
            bin_dir.display()
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(format!("{ROOT}/config")).expect("config/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_string();
        if !(name.ends_with(".service") || name.ends_with(".socket")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("unit");
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        // A template is verified as an instance of itself, as systemctl would load it.
        let name = name.replace("@.", "@blue.");
        std::fs::write(dir.path().join(&name), text).expect("write unit");
        checked.push(name);
    }
    for wanted in ["ficus.service", "ficus.socket", "ficus-admin.socket", "gtin-service@blue.service"] {
        assert!(checked.iter().any(|c| c == wanted), "{wanted} missing from config/: {checked:?}");
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .args(&checked)
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze is installed by scripts/install-deps");
    // Bad keys and values are only warnings (exit 0), so any output at all fails the check.
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify {checked:?}:\n{said}");
}

#[test]
fn the_check_fails_on_what_systemd_refuses() {
    // The verify above must be able to fail: the old socket unit's name with a `:` is reported.
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = unit("ficus.socket").replace("FileDescriptorName=http", "FileDescriptorName=ficus:http");
    std::fs::write(dir.path().join("ficus.socket"), bad).expect("write");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no", "ficus.socket"])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid file descriptor name"), "{out:?}");
}

#[test]
fn units_run_as_their_own_users_with_absolute_paths_and_hardening() {
    for name in ["ficus.service", "gtin-service@.service", "gtin-sync@.service"] {
        let text = unit(name);
        let user = values(&text, "User");
        assert!(user.len() == 1 && user[0] != "root", "{name}: User={user:?}");
        for key in ["ExecStart", "ExecReload", "WorkingDirectory", "ReadWritePaths", "EnvironmentFile", "PIDFile"] {
            for v in values(&text, key) {
                assert!(v.starts_with('/'), "{name}: {key}={v} is not an absolute path");
            }
        }
        assert_eq!(values(&text, "WorkingDirectory").len(), 1, "{name}: WorkingDirectory");
        for (key, want) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
        ] {
            assert_eq!(values(&text, key), [want], "{name}: {key}");
        }
        assert_eq!(values(&text, "CapabilityBoundingSet").len(), 1, "{name}: CapabilityBoundingSet");
        assert_eq!(values(&text, "ReadWritePaths").len(), 1, "{name}: ReadWritePaths");
    }
    // The users the units name are the ones config/ficus.sysusers creates.
    let sysusers = unit("ficus.sysusers");
    for user in ["ficus", "gtin"] {
        assert!(sysusers.lines().any(|l| l.starts_with(&format!("u {user} "))), "{user} not in ficus.sysusers");
    }
    // One name per socket unit (systemd gives the name to every socket of a unit), and none with `:`, the
    // separator of LISTEN_FDNAMES.
    for name in ["ficus.socket", "ficus-admin.socket"] {
        let text = unit(name);
        let names = values(&text, "FileDescriptorName");
        assert_eq!(values(&text, "ListenStream").len(), 1, "{name}");
        assert!(names.len() == 1 && !names[0].contains(':'), "{name}: {names:?}");
    }
}
