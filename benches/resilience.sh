#!/usr/bin/env bash
# Resilience under load, with the release binary:
#
# 1. Three nginx servers behind Ficus, wrk on the gateway, one server killed (SIGKILL) a few seconds in. Three
#    rows: no health settings and no failover (the control), active health checks alone (Interval 1s,
#    Unhealthy 2), and failover (`IsNetworkError() && Attempts() <= 2`) with passive ejection. Each row prints
#    wrk's requests, the failed ones (non-2xx answers plus socket errors), and for the rows that fail, the
#    failure window that implies (failed / the dead server's share of the request rate).
# 2. The CPU cost of health checking 1,000 servers (one nginx listening on 1,000 ports; checks every 2s, so
#    500 a second): Ficus' CPU time over a quiet period with the checks, against the same config without them,
#    as a percentage of one core.
#
#   benches/resilience.sh [seconds=10] [connections=20] [cpu_seconds=30]
#
# PARTS="kill cpu" (the default) picks the parts; NO_BUILD=1 uses target/release/ficus as it is. RUNS=n
# repeats the failover row n times (a failed request there is rare). KEEP=dir turns the access log on in part 1
# and keeps each row's Ficus log there with wrk's output (a failed request's error line carries its request
# id; a retry not made says why). CPU_RUNS=n measures each CPU row over n periods of cpu_seconds in a row.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-20}
cpu_secs=${3:-30}
scripts/install-deps wrk=wrk nginx=nginx-light
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release --quiet --bin ficus
parts=${PARTS:-kill cpu}

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

FICUS=127.0.0.1:19303 ADMIN=127.0.0.1:19304
PORTS=(19311 19312 19313)

start_server() { # index: one nginx process (no master), so SIGKILL takes its socket and connections at once
  local port=${PORTS[$1]}
  cat > "$work/s$1.conf" <<CONF
worker_processes 1; master_process off; daemon off; error_log $work/s$1.err; pid $work/s$1.pid;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$port reuseport; keepalive_requests 1000000;
  location /health { return 200 "ok\n"; } location / { return 200 "s$1\n"; } } }
CONF
  taskset -c 0 nginx -c "$work/s$1.conf" & echo $! > "$work/s$1.nginxpid"; pids+=($!)
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && return; sleep 0.1; done
  echo "server $1 did not start"; exit 1
}

routes() { # backend-settings frontend-settings
  rm -rf "$work/routes"
  mkdir -p "$work/routes/backends/be/servers" "$work/routes/frontends/all"
  echo "{\"Type\":\"http\",\"Settings\":$1}" > "$work/routes/backends/be/backend.json"
  for i in 0 1 2; do echo "{\"URL\":\"http://127.0.0.1:${PORTS[$i]}\"}" > "$work/routes/backends/be/servers/s$i.json"; done
  echo "{\"Type\":\"http\",\"BackendId\":\"be\",\"Route\":\"PathPrefix(\`/\`)\",\"Settings\":$2}" \
    > "$work/routes/frontends/all/frontend.json"
}

start_ficus() { # [--no-access-log]
  taskset -c 1 target/release/ficus serve --listen $FICUS --admin $ADMIN --routes "$work/routes" \
    --threads 1 "$@" > "$work/ficus.log" 2>&1 & echo $! > "$work/ficus.pid"; pids+=($!)
  for _ in $(seq 100); do curl -sf "http://$ADMIN/health/ready" >/dev/null && return; sleep 0.1; done
  echo "ficus did not start"; cat "$work/ficus.log"; exit 1
}
stop_ficus() { kill "$(cat "$work/ficus.pid")"; wait "$(cat "$work/ficus.pid")" 2>/dev/null || true; }

kill_row() { # name backend-settings frontend-settings
  for i in 0 1 2; do start_server "$i"; done
  routes "$2" "$3"
  if [ -n "${KEEP:-}" ]; then start_ficus; else start_ficus --no-access-log; fi
  sleep 2.5 # health checks, when on, have run on every server
  (sleep 3; kill -9 "$(cat "$work/s1.nginxpid")") & local killer=$!
  taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" "http://$FICUS/" > "$work/wrk.out" 2>&1 || true
  wait "$killer" || true
  wait "$(cat "$work/s1.nginxpid")" 2>/dev/null || true
  local total non2xx sock rps failed window
  total=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.out"); non2xx=${non2xx:-0}
  sock=$(awk '/Socket errors/ {gsub(/,/,""); print $4+$6+$8+$10}' "$work/wrk.out"); sock=${sock:-0}
  failed=$((non2xx + sock))
  window=$(awk -v f="$failed" -v r="$rps" 'BEGIN { if (f > 0 && r > 0) printf "%.2f s", f / (r / 3); else print "-" }')
  printf "  %-22s %9s requests  %7s failed (%s non-2xx, %s socket errors)  failure window ~%s\n" \
    "$1" "$total" "$failed" "$non2xx" "$sock" "$window"
  local retries
  retries=$(curl -s "http://$ADMIN/metrics" | awk '/^ficus_retries_total/ {sub(/.*outcome="/, ""); sub(/"}/, ""); printf "%s=%s ", $1, $2}')
  [ -z "$retries" ] || echo "    retries: $retries"
  stop_ficus
  for i in 0 2; do kill "$(cat "$work/s$i.nginxpid")" 2>/dev/null || true; wait "$(cat "$work/s$i.nginxpid")" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"; cp "$work/ficus.log" "$KEEP/ficus-$1.log"; cp "$work/wrk.out" "$KEEP/wrk-$1.out"
  fi
}

if [[ " $parts " == *" kill "* ]]; then
  echo "1. one of three servers killed under wrk -t1 -c$conns -d${secs}s, 3 s in:"
  kill_row no-failover '{}' '{}'
  kill_row health-checks-only '{"HealthCheck":{"Path":"/health","Interval":"1s","Timeout":"500ms","Unhealthy":2}}' '{}'
  for run in $(seq "${RUNS:-1}"); do
    name=failover; [ "${RUNS:-1}" = 1 ] || name=failover-$run
    kill_row "$name" '{"Outlier":{"Consecutive":3}}' '{"FailoverPredicate":"IsNetworkError() && Attempts() <= 2"}'
  done
fi
[[ " $parts " == *" cpu "* ]] || exit 0

echo
echo "2. health checking 1,000 servers (Interval 2s), Ficus CPU over ${cpu_secs}s:"
{
  echo "worker_processes 1; master_process off; daemon off; error_log $work/many.err; pid $work/many.pid;"
  echo "events { worker_connections 8192; }"
  echo "worker_rlimit_nofile 16384;"
  echo "http { access_log off; server {"
  for p in $(seq 21000 21999); do echo "  listen 127.0.0.1:$p;"; done
  echo "  location / { return 200 \"ok\n\"; } } }"
} > "$work/many.conf"
taskset -c 0 nginx -c "$work/many.conf" & pids+=($!)
sleep 1
many_routes() { # backend-settings
  rm -rf "$work/routes"
  mkdir -p "$work/routes/backends/many/servers" "$work/routes/frontends/all"
  echo "{\"Type\":\"http\",\"Settings\":$1}" > "$work/routes/backends/many/backend.json"
  for p in $(seq 21000 21999); do echo "{\"URL\":\"http://127.0.0.1:$p\"}" > "$work/routes/backends/many/servers/s$p.json"; done
  echo '{"Type":"http","BackendId":"many","Route":"PathPrefix(`/`)"}' > "$work/routes/frontends/all/frontend.json"
}
cpu_ticks() { awk '{print $14, $15}' "/proc/$(cat "$work/ficus.pid")/stat"; } # user system
measure() { # name backend-settings
  many_routes "$2"
  ulimit -n 16384
  start_ficus --no-access-log
  sleep 5 # the first checks (spread over one interval) and their connections are made
  local u0 s0 u1 s1 hz load checks
  hz=$(getconf CLK_TCK)
  for _ in $(seq "${CPU_RUNS:-1}"); do
    read -r u0 s0 < <(cpu_ticks); sleep "$cpu_secs"; read -r u1 s1 < <(cpu_ticks)
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    checks=$(curl -s "http://$ADMIN/metrics" | awk '/^ficus_health_checks_total/ {s += $NF} END {print s + 0}')
    awk -v u="$((u1 - u0))" -v k="$((s1 - s0))" -v hz="$hz" -v s="$cpu_secs" -v n="$1" -v c="$checks" -v l="$load" \
      'BEGIN { printf "  %-22s %6.2f%% of one core (user %.2f%%, system %.2f%%; %d checks so far; load %s)\n", n, 100 * (u + k) / hz / s, 100 * u / hz / s, 100 * k / hz / s, c, l }'
  done
  stop_ficus
}
measure without-checks '{}'
measure with-checks '{"HealthCheck":{"Path":"/health","Interval":"2s","Timeout":"1s"}}'
