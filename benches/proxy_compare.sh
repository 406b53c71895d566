#!/usr/bin/env bash
# Proxy throughput, in one run: wrk against the same tiny backend directly, through nginx (one worker, as a
# reverse proxy with upstream keep-alive), and through Ficus (one worker thread). Both proxies are pinned to
# the same core and run one at a time; the backend and wrk share the other core.
#
#   benches/proxy_compare.sh [seconds=10] [connections=50] [rounds=3]
#
# Prints every round and the median req/s and p99 per row, and for each proxy row the CPU the proxy spent per
# request (user + system microseconds, from /proc, the proxy's processes only): near saturation the load
# generator's core fills up too and caps every row alike, while the CPU per request still tells the proxies'
# efficiency apart. With BASE=<path to another ficus binary> a
# `ficus-base` row runs that binary in the same rounds (a before/after comparison under the same noise).
# With SWAP=1 two more Ficus rows run on etcd: `ficus-etcd-quiet`, while a writer (benches/etcd_writer.py)
# puts a key outside Ficus' prefix every 10 ms (the writer's own cost, no table swap), and
# `ficus-etcd-swapping`, while the same writer rewrites the frontend every 10 ms (a table swap per write).
# The pair isolates what the swaps cost from what the writer costs.
# With HAPROXY=1 a `haproxy` row runs HAProxy (one thread, pinned like the others, upstream connections reused)
# in the same rounds.
# With H2=1 two more rows load nginx (`listen ... http2`, cleartext) and Ficus over HTTP/2 with prior knowledge:
# h2load -c<connections> -m10, `nginx-h2` and `ficus-h2` (req/s and p99 of the request times).
# With MW=1 a `ficus-mw` row runs Ficus with a ratelimit (never reached), a connlimit (never reached) and a
# rewrite (a regexp that matches and leaves the URL as it was) on the route: the chain's own cost.
# With CORES=2 every proxy gets both cores (nginx and HAProxy two workers/threads, Ficus `--threads 2`), and the
# backend and wrk (two threads) share them unpinned: the scaling run, read as a ratio between the proxies.
# With QUOTA=<percent> (one-core runs) every proxy also runs in a CPU cgroup capped at that share of its core
# (CFS bandwidth, a 10 ms period): the proxy is then the only bottleneck, and req/s compares the proxies' work
# per core directly. Without it the load core (wrk and the backend) saturates too and caps every row near the
# same rate; each row's `load` figure is that core's busy time per request, and 1e6 divided by it is the
# ceiling no proxy can pass in the run. p99 in a QUOTA run measures the throttling, not the proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-50}
rounds=${3:-3}
cores=${CORES:-1}
if [ "$cores" = 1 ]; then proxy_cpus=1 load_cpus=0; else proxy_cpus=0-$((cores - 1)) load_cpus=0-$((cores - 1)); fi
scripts/install-deps wrk=wrk nginx=nginx-light
if [ "${HAPROXY:-0}" = 1 ]; then scripts/install-deps haproxy=haproxy; fi
if [ "${H2:-0}" = 1 ]; then scripts/install-deps h2load=nghttp2-client; fi
cargo build --release --quiet --bin ficus

work=$(mktemp -d)
pids=()
trap cleanup EXIT

BACKEND=127.0.0.1:19101 NGINX=127.0.0.1:19102 FICUS=127.0.0.1:19103 ADMIN=127.0.0.1:19104
ETCD=http://127.0.0.1:19105 HAPROXY_ADDR=127.0.0.1:19107 NGINX_H2=127.0.0.1:19108

cat > "$work/backend.conf" <<CONF
worker_processes 1; daemon off; error_log $work/backend.err; pid $work/backend.pid;
events { worker_connections 4096; }
http { access_log off; server { listen $BACKEND; keepalive_requests 1000000; location / { return 200 "ok\n"; } } }
CONF
cat > "$work/proxy.conf" <<CONF
worker_processes $cores; daemon off; error_log $work/proxy.err; pid $work/proxy.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream be { server $BACKEND; keepalive 64; keepalive_requests 1000000; }
  server { listen $NGINX; keepalive_requests 1000000;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen $NGINX_H2 http2; keepalive_requests 1000000;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread $cores
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind $HAPROXY_ADDR
  default_backend b
backend b
  server s1 $BACKEND
CONF
mkdir -p "$work/routes/backends/be/servers" "$work/routes/frontends/all"
echo '{"Type":"http","Settings":{"KeepAlive":{"MaxIdleConnsPerHost":128}}}' > "$work/routes/backends/be/backend.json"
echo "{\"URL\":\"http://$BACKEND\"}" > "$work/routes/backends/be/servers/s1.json"
echo '{"Type":"http","BackendId":"be","Route":"PathPrefix(`/`)"}' > "$work/routes/frontends/all/frontend.json"

cp -r "$work/routes" "$work/routes-mw"
mkdir -p "$work/routes-mw/frontends/all/middlewares"
echo '{"Type":"ratelimit","Priority":1,"Middleware":{"Requests":100000000,"PeriodSeconds":1,"Burst":100000000,"Variable":"client.ip"}}' \
  > "$work/routes-mw/frontends/all/middlewares/rl.json"
echo '{"Type":"connlimit","Priority":2,"Middleware":{"Connections":100000,"Variable":"client.ip"}}' \
  > "$work/routes-mw/frontends/all/middlewares/cl.json"
echo '{"Type":"rewrite","Priority":3,"Middleware":{"Regexp":"^(.*)$","Replacement":"$1"}}' \
  > "$work/routes-mw/frontends/all/middlewares/rw.json"

# The cgroup a QUOTA run confines each proxy to (v2 `cpu.max`, else v1's CFS files).
cg=""
if [ -n "${QUOTA:-}" ]; then
  [ "$cores" = 1 ] || { echo "QUOTA is for one-core runs"; exit 2; }
  quota=$((QUOTA * 100))
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg=/sys/fs/cgroup/proxy-compare-$$
    echo +cpu > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    mkdir "$cg" && echo "$quota 10000" > "$cg/cpu.max"
  else
    cg=/sys/fs/cgroup/cpu/proxy-compare-$$
    mkdir "$cg" && echo 10000 > "$cg/cpu.cfs_period_us" && echo "$quota" > "$cg/cpu.cfs_quota_us"
  fi
fi
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"
  if [ -n "${cg:-}" ]; then rmdir "$cg" 2>/dev/null || true; fi
}
# Runs a proxy on the proxy core(s), inside the QUOTA cgroup when there is one (the shell joins it, then becomes
# the proxy: `$!` stays the proxy's pid, and nginx's worker inherits the cgroup).
on_proxy_core() {
  if [ -n "$cg" ]; then
    exec sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" taskset -c "$proxy_cpus" "$@"
  else
    exec taskset -c "$proxy_cpus" "$@"
  fi
}

taskset -c "$load_cpus" nginx -c "$work/backend.conf" & pids+=($!)
sleep 0.5

# CPU ticks (user, system) of a process and its children (nginx's workers), from /proc: what the proxy's core
# spent, read before and after a load so each row also says how much CPU a request cost it.
cpu_ticks() { # pid
  local p u=0 s=0 t
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null) || continue
    u=$((u + ${t% *})) s=$((s + ${t#* }))
  done
  echo "$u $s"
}
# Microseconds of proxy CPU per request, user+system, from two cpu_ticks readings and the request count.
cpu_per_request() { # "u0 s0" "u1 s1" requests
  local hz; hz=$(getconf CLK_TCK)
  echo "$1 $2" | awk -v n="$3" -v hz="$hz" '{printf "%.1f+%.1fus", ($3-$1)*1e6/hz/n, ($4-$2)*1e6/hz/n}'
}

# Busy ticks of the load core (user, nice, system, irq, softirq from /proc/stat); one-core runs only, where
# wrk and the backend have that core to themselves.
load_ticks() { if [ "$cores" = 1 ]; then awk -v c="cpu$load_cpus" '$1==c {print $2+$3+$4+$7+$8}' /proc/stat; fi; }
# The load core's busy microseconds per request, from two load_ticks readings.
load_per_request() { # l0 l1 requests
  if [ -z "$1" ]; then echo -; return; fi
  awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1fus", (b-a)*1e6/hz/n}'
}

run_wrk() { # name url [proxy pid]
  local t0="" l0
  if [ -n "${3:-}" ]; then t0=$(cpu_ticks "$3"); fi
  l0=$(load_ticks)
  taskset -c "$load_cpus" wrk -t"$cores" -c"$conns" -d"${secs}s" --latency "$2" > "$work/wrk.out"
  local rps p99 n load cpu=-
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk.out")
  n=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  load=$(load_per_request "$l0" "$(load_ticks)" "$n")
  if [ -n "$t0" ]; then cpu=$(cpu_per_request "$t0" "$(cpu_ticks "$3")" "$n"); fi
  local errs
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$work/wrk.out" | tr '\n' ' ')
  echo "$1 $rps $p99 $cpu $load $errs" | tee -a "$work/rows"
}

run_h2load() { # name url [proxy pid]: req/s and the p99 of request times from h2load's per-request log
  local t0="" l0
  if [ -n "${3:-}" ]; then t0=$(cpu_ticks "$3"); fi
  l0=$(load_ticks)
  # h2load appends to its log: without this, each row's p99 and request count took in every earlier row's.
  rm -f "$work/h2.log"
  taskset -c "$load_cpus" h2load -t"$cores" -c"$conns" -m10 -D"$secs" --log-file="$work/h2.log" "$2" > "$work/h2.out"
  local rps p99 errs n load cpu=-
  rps=$(awk '/^finished in/ {gsub(/,/,""); print $4}' "$work/h2.out")
  p99=$(awk -F'\t' '{print $3}' "$work/h2.log" | sort -n | awk '{a[NR]=$1} END {printf "%.2fms", a[int(NR*0.99)]/1000}')
  n=$(wc -l < "$work/h2.log")
  load=$(load_per_request "$l0" "$(load_ticks)" "$n")
  if [ -n "$t0" ]; then cpu=$(cpu_per_request "$t0" "$(cpu_ticks "$3")" "$n"); fi
  errs=$(awk '/^requests:/ {print $10, "failed"}' "$work/h2.out")
  echo "$1 $rps $p99 $cpu $load $errs" | tee -a "$work/rows"
}

start_nginx() { on_proxy_core nginx -c "$work/proxy.conf" & echo $! > "$work/nginx.pid"; sleep 0.5; }
stop_nginx() { kill "$(cat "$work/nginx.pid")"; wait "$(cat "$work/nginx.pid")" 2>/dev/null || true; }
start_haproxy() { on_proxy_core haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 & echo $! > "$work/haproxy.pid"; sleep 0.5; }
stop_haproxy() { kill "$(cat "$work/haproxy.pid")"; wait "$(cat "$work/haproxy.pid")" 2>/dev/null || true; }
start_ficus() { # [binary] [routes dir]
  on_proxy_core "${1:-target/release/ficus}" serve --listen $FICUS --admin $ADMIN --routes "${2:-$work/routes}" \
    --threads "$cores" --no-access-log > "$work/ficus.log" 2>&1 & echo $! > "$work/ficus.pid"
  for _ in $(seq 50); do curl -sf "http://$ADMIN/health/ready" >/dev/null && return; sleep 0.1; done
  echo "ficus did not start"; cat "$work/ficus.log"; exit 1
}
stop_ficus() { kill "$(cat "$work/ficus.pid")"; wait "$(cat "$work/ficus.pid")" 2>/dev/null || true; }

start_etcd() {
  taskset -c 0 etcd --name bench --data-dir "$work/etcd" --listen-client-urls $ETCD --advertise-client-urls $ETCD \
    --listen-peer-urls http://127.0.0.1:19106 --initial-advertise-peer-urls http://127.0.0.1:19106 \
    --initial-cluster bench=http://127.0.0.1:19106 > "$work/etcd.log" 2>&1 & echo $! > "$work/etcd.pid"
  for _ in $(seq 50); do curl -sf "$ETCD/health" >/dev/null && break; sleep 0.1; done
  target/release/ficus apply "$work/routes" --etcd $ETCD > /dev/null
}
start_ficus_etcd() {
  taskset -c 1 target/release/ficus serve --listen $FICUS --admin $ADMIN --etcd $ETCD \
    --threads 1 --no-access-log > "$work/ficus.log" 2>&1 & echo $! > "$work/ficus.pid"
  for _ in $(seq 50); do curl -sf "http://$ADMIN/health/ready" >/dev/null && return; sleep 0.1; done
  echo "ficus did not start"; cat "$work/ficus.log"; exit 1
}
writer() { # key: put every 10 ms until killed; values alternate so every put is a change
  exec taskset -c 0 python3 benches/etcd_writer.py --etcd $ETCD --key "$1" --every 0.01 \
    --value '{"Type":"http","BackendId":"be","Route":"PathPrefix(`/`)","Priority":%d}'
}
generation() { curl -s "http://$ADMIN/status" | awk -F: '/"generation"/ {gsub(/[ ,]/,"",$2); print $2; exit}'; }

echo "row req/s p99 cpu-per-request(user+system) load-core-per-request errors"
for r in $(seq "$rounds"); do
  run_wrk direct "http://$BACKEND/"
  start_nginx; run_wrk nginx "http://$NGINX/" "$(cat "$work/nginx.pid")"
  if [ "${H2:-0}" = 1 ]; then run_h2load nginx-h2 "http://$NGINX_H2/" "$(cat "$work/nginx.pid")"; fi
  stop_nginx
  if [ "${HAPROXY:-0}" = 1 ]; then start_haproxy; run_wrk haproxy "http://$HAPROXY_ADDR/" "$(cat "$work/haproxy.pid")"; stop_haproxy; fi
  start_ficus; run_wrk ficus "http://$FICUS/" "$(cat "$work/ficus.pid")"
  if [ "${H2:-0}" = 1 ]; then run_h2load ficus-h2 "http://$FICUS/" "$(cat "$work/ficus.pid")"; fi
  stop_ficus
  if [ -n "${BASE:-}" ]; then start_ficus "$BASE"; run_wrk ficus-base "http://$FICUS/" "$(cat "$work/ficus.pid")"; stop_ficus; fi
  if [ "${MW:-0}" = 1 ]; then start_ficus "" "$work/routes-mw"; run_wrk ficus-mw "http://$FICUS/" "$(cat "$work/ficus.pid")"; stop_ficus; fi
  if [ "${SWAP:-0}" = 1 ]; then
    start_etcd; start_ficus_etcd
    writer /elsewhere/frontends/all/frontend & w=$!
    run_wrk ficus-etcd-quiet "http://$FICUS/" "$(cat "$work/ficus.pid")"
    kill $w; wait $w 2>/dev/null || true
    gen0=$(generation)
    writer /vulcand/frontends/all/frontend & w=$!
    run_wrk ficus-etcd-swapping "http://$FICUS/" "$(cat "$work/ficus.pid")"
    kill $w; wait $w 2>/dev/null || true
    echo "  table swaps during that run: $(( $(generation) - gen0 ))"
    stop_ficus
    kill "$(cat "$work/etcd.pid")"; wait "$(cat "$work/etcd.pid")" 2>/dev/null || true
    rm -rf "$work/etcd"
  fi
done

echo
echo "median over $rounds rounds (wrk -t$cores -c$conns -d${secs}s, proxies on cores $proxy_cpus, load on $load_cpus):"
for row in direct nginx haproxy ficus ficus-base nginx-h2 ficus-h2 ficus-mw ficus-etcd-quiet ficus-etcd-swapping; do
  grep -q "^$row " "$work/rows" || continue
  rps=$(awk -v r="$row" '$1==r {print $2}' "$work/rows" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  p99=$(awk -v r="$row" '$1==r {v=$3; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$work/rows" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  cpu=$(awk -v r="$row" '$1==r && $4 ~ /us$/ {v=$4; sub(/us$/,"",v); split(v,a,"+"); print a[1]+a[2], a[1], a[2]}' "$work/rows" \
    | sort -n | awk '{l[NR]=$0} END {if (NR) {split(l[int((NR+1)/2)],m," "); printf "cpu %.1f us/request (user %.1f, system %.1f)", m[1], m[2], m[3]}}')
  load=$(awk -v r="$row" '$1==r && $5 ~ /us$/ {v=$5; sub(/us$/,"",v); print v}' "$work/rows" \
    | sort -n | awk '{a[NR]=$1} END {if (NR) printf "load core %.1f us/request", a[int((NR+1)/2)]}')
  printf "  %-19s %10s req/s   p99 %s ms   %s   %s\n" "$row" "$rps" "$p99" "$cpu" "$load"
done
