#!/usr/bin/env bash
# Memory held by unfinished request heads, Ficus and nginx in the same run: 1,000 connections each send an
# unfinished head (benches/head_flood.py) and stay open; the proxy's RSS growth is reported for two shapes:
# `maximal` (30,000 bytes in 7,500-byte header lines: held by both until their header timeout) and `repro`
# (one 390,000-byte header: both refuse it and close).
#
#   benches/head_flood.sh [connections=1000]
#
# With BASE=<path to another ficus binary> that binary is measured too (a before/after comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000}
scripts/install-deps nginx=nginx-light
cargo build --release --quiet --bin ficus

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

NGINX=127.0.0.1:19112 FICUS=127.0.0.1:19113 ADMIN=127.0.0.1:19114 BACKEND=127.0.0.1:19111
cat > "$work/nginx.conf" <<CONF
worker_processes 1; daemon off; error_log $work/nginx.err; pid $work/nginx.pid;
events { worker_connections 8192; }
http { access_log off; server { listen $NGINX; location / { proxy_pass http://$BACKEND; } } }
CONF
mkdir -p "$work/routes/backends/be/servers" "$work/routes/frontends/all"
echo '{"Type":"http"}' > "$work/routes/backends/be/backend.json"
echo "{\"URL\":\"http://$BACKEND\"}" > "$work/routes/backends/be/servers/s1.json"
echo '{"Type":"http","BackendId":"be","Route":"PathPrefix(`/`)"}' > "$work/routes/frontends/all/frontend.json"

measure_ficus() { # name binary shape
  "$2" serve --listen $FICUS --admin $ADMIN --routes "$work/routes" --threads 1 --no-access-log \
    > "$work/ficus.log" 2>&1 & local pid=$!
  for _ in $(seq 50); do curl -sf "http://$ADMIN/health/ready" >/dev/null && break; sleep 0.1; done
  echo -n "$1 "; python3 benches/head_flood.py --addr $FICUS --pid $pid --count "$count" --shape "$3"
  kill $pid; wait $pid 2>/dev/null || true
}
measure_nginx() { # shape
  nginx -c "$work/nginx.conf" & local master=$!
  sleep 0.5
  local worker
  worker=$(pgrep -P $master | head -1)
  echo -n "nginx "; python3 benches/head_flood.py --addr $NGINX --pid $master --pid "$worker" --count "$count" --shape "$1"
  kill $master; wait $master 2>/dev/null || true
}

for shape in maximal repro; do
  measure_ficus ficus target/release/ficus $shape
  if [ -n "${BASE:-}" ]; then measure_ficus ficus-base "$BASE" $shape; fi
  measure_nginx $shape
done
