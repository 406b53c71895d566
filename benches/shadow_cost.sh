#!/usr/bin/env bash
# What shadowing every GET costs the clients, in one run: one Ficus (one worker thread, pinned to one core)
# serves two frontends on the same nginx backend, `/plain/` without a shadow and `/shadowed/` copying 100% of
# its GETs to a second nginx; wrk alternates between the two in every round. The backends and wrk share the
# other core.
#
#   benches/shadow_cost.sh [seconds=10] [connections=50] [rounds=5]
#
# Prints every round (req/s, p50, p99, and the shadow report's compared and dropped counts after the
# shadowed run) and the medians per row.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-50}
rounds=${3:-5}
scripts/install-deps wrk=wrk nginx=nginx-light
cargo build --release --quiet --bin ficus

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

PRIMARY=127.0.0.1:19111 SHADOW=127.0.0.1:19112 FICUS=127.0.0.1:19113 ADMIN=127.0.0.1:19114

for b in primary:$PRIMARY shadow:$SHADOW; do
  name=${b%%:*} addr=${b#*:}
  cat > "$work/$name.conf" <<CONF
worker_processes 1; daemon off; error_log $work/$name.err; pid $work/$name.pid;
events { worker_connections 4096; }
http { access_log off; server { listen $addr; keepalive_requests 1000000;
  location / { default_type application/json; return 200 '{"ok":true}'; } } }
CONF
  taskset -c 0 nginx -c "$work/$name.conf" & pids+=($!)
done
mkdir -p "$work/routes/backends/be/servers" "$work/routes/backends/shadow/servers" \
  "$work/routes/frontends/plain" "$work/routes/frontends/shadowed"
echo '{"Type":"http","Settings":{"KeepAlive":{"MaxIdleConnsPerHost":128}}}' > "$work/routes/backends/be/backend.json"
echo "{\"URL\":\"http://$PRIMARY\"}" > "$work/routes/backends/be/servers/s1.json"
echo '{"Type":"http","Settings":{"KeepAlive":{"MaxIdleConnsPerHost":128}}}' > "$work/routes/backends/shadow/backend.json"
echo "{\"URL\":\"http://$SHADOW\"}" > "$work/routes/backends/shadow/servers/s1.json"
echo '{"Type":"http","BackendId":"be","Route":"PathPrefix(`/plain/`)"}' > "$work/routes/frontends/plain/frontend.json"
echo '{"Type":"http","BackendId":"be","Route":"PathPrefix(`/shadowed/`)","Shadow":{"BackendId":"shadow","Percent":100,"Methods":["GET"]}}' \
  > "$work/routes/frontends/shadowed/frontend.json"
sleep 0.5

taskset -c 1 target/release/ficus serve --listen $FICUS --admin $ADMIN --routes "$work/routes" \
  --threads 1 --no-access-log > "$work/ficus.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -sf "http://$ADMIN/health/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://$FICUS/shadowed/x" >/dev/null || { echo "ficus did not start"; cat "$work/ficus.log"; exit 1; }

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}'; }
run_wrk() { # name url
  taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency "$2" > "$work/wrk.out"
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p50=$(awk '$1=="50%" {print $2}' "$work/wrk.out" | to_ms)
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk.out" | to_ms)
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$work/wrk.out" | tr '\n' ' ')
  echo "$1 $rps $p50 $p99 $errs" | tee -a "$work/rows"
}
report() { curl -s "http://$ADMIN/shadow/shadowed" | tr -d ' \n' | grep -o '"\(compared\|equal\|different\|dropped\|errors\|skipped\)":[0-9]*' | tr '\n' ' '; echo; }

echo "row req/s p50_ms p99_ms errors"
for r in $(seq "$rounds"); do
  run_wrk plain "http://$FICUS/plain/x"
  run_wrk shadowed "http://$FICUS/shadowed/x"
  echo "  shadow report so far: $(report)"
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "median over $rounds rounds (wrk -t1 -c$conns -d${secs}s, Ficus one thread on one core):"
for row in plain shadowed; do
  rps=$(awk -v r="$row" '$1==r {print $2}' "$work/rows" | median)
  p50=$(awk -v r="$row" '$1==r {print $3}' "$work/rows" | median)
  p99=$(awk -v r="$row" '$1==r {print $4}' "$work/rows" | median)
  printf "  %-9s %10s req/s   p50 %s ms   p99 %s ms\n" "$row" "$rps" "$p50" "$p99"
done
