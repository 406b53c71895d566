#!/usr/bin/env bash
# Runs one README recipe verbatim, for tests/e2e/readme_recipes.rs, inside a private network namespace (started
# with `unshare -rn`), so the ports the README names (8080, 8081, 8082, 8083, 8182) are this run's alone.
#   readme_recipes.sh MODE BEFORE RECIPE CHECK
# MODE says what runs before the recipe, as the README's text around it describes:
#   files   legacy catalog, GTIN blue and green (synced), Ficus on a copy of routes/ ($ROUTES)
#   etcd    the same services, etcd, routes/ applied with ficus apply, Ficus following etcd
#   bare    nothing; the working directory holds config/, routes/ and target/release/ficus (+ new-build/)
# BEFORE is a script run just before the recipe (e.g. starting a load), RECIPE the recipe's text, CHECK a
# script run after it that fails when the recipe did not do its job.
# Environment: BIN (the built binaries), ROOT (the repository), WORK (a fresh directory).
set -euo pipefail
mode=$1 before=$2 recipe=$3 check=$4
ip link set lo up
cd "$WORK"
export PATH="$BIN:$PATH"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Whatever the recipe started in the background (the hot upgrade's gateway, restarted GTIN servers).
  [ -d run ] && for f in run/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for f in ficus.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_http() { # url what
  for _ in $(seq 300); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "$2 did not answer $1; logs:" >&2
  tail -n 20 ./*.log >&2 || true
  exit 1
}

# A stand-in for systemctl that restarts a gtin-service@ instance the way the unit would: the same binary,
# the unit's environment file from config/, a fresh process.
mkdir -p run bin
cat > bin/systemctl <<'SHIM'
#!/usr/bin/env bash
set -euo pipefail
[ "$1" = restart ] || { echo "systemctl stand-in: only restart" >&2; exit 2; }
instance=${2#gtin-service@}
pidfile="$WORK/run/gtin-service@$instance.pid"
if [ -f "$pidfile" ]; then
  old=$(cat "$pidfile")
  kill -TERM "$old" 2>/dev/null || true
  while kill -0 "$old" 2>/dev/null; do sleep 0.05; done
fi
set -a; . "$ROOT/config/gtin-$instance.env"; set +a
GTIN_DATA="$WORK/gtin-$instance" nohup "$BIN/gtin-service" serve --drain-timeout 10s \
  >> "$WORK/gtin-$instance.log" 2>&1 &
echo $! > "$pidfile"
SHIM
chmod +x bin/systemctl
export PATH="$WORK/bin:$PATH"

services() {
  "$BIN/legacy-catalog" --listen 127.0.0.1:8081 --products 2000 --seed 1 > legacy.log 2>&1 &
  pids+=($!)
  wait_http http://127.0.0.1:8081/health legacy-catalog
  for colour in blue green; do
    mkdir -p "gtin-$colour"
    systemctl restart "gtin-service@$colour"
    port=$(sed -n 's/^GTIN_LISTEN=127.0.0.1://p' "$ROOT/config/gtin-$colour.env")
    wait_http "http://127.0.0.1:$port/health/live" "gtin-$colour"
    "$BIN/gtin-service" sync --from http://127.0.0.1:8081/export --data "gtin-$colour" \
      --notify "http://127.0.0.1:$port" > "sync-$colour.log" 2>&1
    wait_http "http://127.0.0.1:$port/health/ready" "gtin-$colour"
  done
}

case "$mode" in
  files)
    services
    mkdir -p target && ln -s "$BIN" target/release
    cp -r "$ROOT/routes" routes
    export ROUTES=$WORK/routes
    ficus serve --listen 127.0.0.1:8080 --admin 127.0.0.1:8182 --routes "$ROUTES" > ficus.log 2>&1 &
    pids+=($!)
    wait_http http://127.0.0.1:8182/health/ready ficus
    ;;
  etcd)
    services
    mkdir -p target && ln -s "$BIN" target/release
    cp -r "$ROOT/routes" routes
    export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=http://127.0.0.1:23790
    etcd --name recipes --data-dir etcd-data --listen-client-urls $ETCDCTL_ENDPOINTS \
      --advertise-client-urls $ETCDCTL_ENDPOINTS --listen-peer-urls http://127.0.0.1:23800 \
      --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster recipes=http://127.0.0.1:23800 \
      > etcd.log 2>&1 &
    pids+=($!)
    wait_http $ETCDCTL_ENDPOINTS/health etcd
    ficus apply routes --etcd $ETCDCTL_ENDPOINTS > apply.log
    ficus serve --listen 127.0.0.1:8080 --admin 127.0.0.1:8182 --etcd $ETCDCTL_ENDPOINTS > ficus.log 2>&1 &
    pids+=($!)
    wait_http http://127.0.0.1:8182/health/ready ficus
    ;;
  bare)
    mkdir -p target/release new-build
    cp -r "$ROOT/config" config
    cp -r "$ROOT/routes" routes
    cp "$BIN/ficus" target/release/ficus
    cp "$BIN/ficus" new-build/ficus
    ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac

echo "== before"
bash -euo pipefail "$before"
echo "== recipe"
bash -euo pipefail "$recipe"
echo "== check"
bash -euo pipefail "$check"
echo "== recipe passed"
