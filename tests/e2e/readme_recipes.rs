//! Every README block marked `<!-- recipe:NAME -->` runs verbatim here, against the real binaries, in a
//! private network namespace (`unshare -rn`, no privilege needed) so the ports the README names are free,
//! with what the README's text says is running (tests/e2e/readme_recipes.sh starts it). After each recipe a check
//! fails the test when the recipe did not do what the README says. A recipe added to the README without a
//! case here fails `every_recipe_has_a_case`. The etcdctl block has its own test (readme_etcdctl.rs); the two
//! commands (`scripts/demo`, `scripts/test`) are run by `scripts/fresh-check`.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `(name, body)` of every recipe block.
fn recipes() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).expect("README.md");
    let mut found = Vec::new();
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("<!-- recipe:") {
        rest = &rest[at + "<!-- recipe:".len()..];
        let name = &rest[..rest.find(" -->").expect("recipe marker closes")];
        let open = rest.find("```sh\n").expect("a sh block follows the marker") + "```sh\n".len();
        let close = rest[open..].find("\n```").expect("block closes") + open;
        found.push((name.to_string(), rest[open..close].to_string() + "\n"));
        rest = &rest[close..];
    }
    found
}

/// What runs before a recipe, then a script before it and a check after it.
fn case(name: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match name {
        "story-files" => (
            "files",
            "",
            // The edited file is applied: 5 of 100 requests reach the GTIN service.
            r#"
            for _ in $(seq 100); do curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:8080/stores/1/gtins/0123456789012; done > codes
            until [ "$(grep -c 200 codes)" = 5 ]; do
              for _ in $(seq 100); do curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:8080/stores/1/gtins/0123456789012; done > codes
            done
            "#,
        ),
        "story-etcd" => (
            "etcd",
            "",
            r#"
            until [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/stores/1/gtins/0123456789012)" = 200 ]; do sleep 0.1; done
            curl -s http://127.0.0.1:8080/stores/1/gtins/0123456789012 | jq -e '.upc == "123456789012"' >/dev/null
            "#,
        ),
        "apply" => (
            "etcd",
            "",
            r#"
            test -f exported/frontends/gtin/frontend.json && test -f exported/backends/gtin/servers/gtin-2.json
            etcdctl get /vulcand/frontends/gtin/frontend --print-value-only | jq -e '.Backends | map(.Weight) == [50, 50]'
            until curl -s http://127.0.0.1:8182/config | jq -e '.backends.gtin.servers[] | select(.id=="gtin-1") | .draining' >/dev/null; do sleep 0.1; done
            "#,
        ),
        "hot-upgrade" => (
            "bare",
            "",
            // The pid file names a new, serving process; the one the recipe started is gone.
            r#"
            new=$(cat ficus.pid)
            kill -0 "$new"
            curl -sf http://127.0.0.1:8182/health/ready >/dev/null
            [ "$(pgrep -c -f 'ficus serve --config config/ficus.toml' || true)" -ge 1 ]
            until [ "$(pgrep -f 'ficus serve --config config/ficus.toml' | grep -vc "^$new$" || true)" = 0 ]; do sleep 0.1; done
            "#,
        ),
        "rolling-deploy" => (
            "etcd",
            // All GTIN traffic to the two GTIN servers, and a steady load through the gateway during the deploy.
            r#"
            ficus canary gtin legacy=0 gtin=100 --etcd "$ETCDCTL_ENDPOINTS" > canary.log
            until [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/stores/1/gtins/0123456789012)" = 200 ]; do sleep 0.1; done
            cat run/gtin-service@blue.pid run/gtin-service@green.pid > old-pids
            ( while :; do curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:8080/stores/1/gtins/0123456789012 >> load-codes; done ) &
            echo $! > run/load.pid
            until [ -s load-codes ]; do sleep 0.05; done
            "#,
            // Both servers were replaced, both are back in rotation, and no request failed meanwhile.
            r#"
            kill "$(cat run/load.pid)"; rm run/load.pid
            for pid in $(cat old-pids); do ! kill -0 "$pid" 2>/dev/null; done
            for f in run/gtin-service@blue.pid run/gtin-service@green.pid; do grep -vxF -f old-pids "$f" >/dev/null; done
            curl -s http://127.0.0.1:8182/config | jq -e '[.backends.gtin.servers[] | select(.draining)] | length == 0'
            total=$(grep -c . load-codes); ok=$(grep -cx 200 load-codes || true)
            echo "load during the deploy: $ok of $total requests answered 200"
            [ "$total" -gt 10 ] && [ "$ok" = "$total" ]
            "#,
        ),
        "try-it" => (
            "files",
            "",
            r#"
            [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/stores/1/gtins/123456789012)" = 200 ]
            "#,
        ),
        _ => return None,
    })
}

#[test]
fn every_recipe_has_a_case() {
    let names: Vec<String> = recipes().into_iter().map(|(n, _)| n).collect();
    assert!(names.len() >= 6, "{names:?}");
    for n in &names {
        assert!(case(n).is_some(), "README recipe {n} is not run by tests/e2e/readme_recipes.rs");
    }
}

fn run(name: &str) {
    let (_, body) = recipes().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no recipe {name}"));
    let (mode, before, check) = case(name).expect("a case");
    let bin = Path::new(env!("CARGO_BIN_EXE_ficus")).parent().expect("bin dir").to_path_buf();
    for b in ["ficus", "legacy-catalog", "gtin-service"] {
        assert!(bin.join(b).exists(), "{b} is not built (cargo build --workspace --bins)");
    }
    let scripts = tempfile::tempdir().expect("temp dir");
    let work = tempfile::tempdir().expect("temp dir");
    let write = |file: &str, text: &str| {
        let p = scripts.path().join(file);
        std::fs::write(&p, text).expect("write");
        p
    };
    let (before, recipe, check) = (write("before.sh", before), write("recipe.sh", &body), write("check.sh", check));
    // The recipes wait for conditions themselves; this bounds the whole run should one never come.
    let out = Command::new("timeout")
        .args(["-s", "KILL", "240", "unshare", "-rn", "bash", &format!("{ROOT}/tests/e2e/readme_recipes.sh"), mode])
        .args([&before, &recipe, &check])
        .env("BIN", &bin)
        .env("ROOT", ROOT)
        .env("WORK", work.path())
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .expect("timeout, unshare and bash are installed");
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "recipe {name} ({mode}) failed:\n{body}\n{said}");
    assert!(said.contains("== recipe passed"), "{said}");
}

#[test]
fn story_files() {
    run("story-files");
}

#[test]
fn story_etcd() {
    run("story-etcd");
}

#[test]
fn apply_and_friends() {
    run("apply");
}

#[test]
fn hot_upgrade() {
    run("hot-upgrade");
}

#[test]
fn rolling_deploy_of_the_gtin_service() {
    run("rolling-deploy");
}

#[test]
fn try_it() {
    run("try-it");
}
