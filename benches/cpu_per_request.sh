#!/usr/bin/env bash
# CPU time, syscalls and context switches per proxied request on two cores: nginx with two workers, then each
# given ficus binary with `--threads ${THREADS:-2}`, under `wrk -t2 -c50` sharing the same two cores, in front
# of a one-worker nginx backend. Counted from outside the process, so they hold on a busy machine better than
# req/s does: user and system time from /proc/<pid>/stat, voluntary and involuntary context switches summed
# over the process's threads, and `perf stat -e raw_syscalls:sys_enter,context-switches,task-clock -p <pid>`,
# each divided by the requests wrk saw answered.
#
#   BINS="<ficus> [<ficus> ...]" benches/cpu_per_request.sh
#
# WRK_HEADER='Connection: close' for one request per connection (what a handoff between threads pays);
# WITH_NGINX=0 skips the nginx row; DUR=<seconds> (default 7); PORT_BASE (default 19214) and the next three
# ports are used.
set -euo pipefail
W=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
P=${PORT_BASE:-19214}
B=127.0.0.1:$P N=127.0.0.1:$((P+1)) F=127.0.0.1:$((P+2)) A=127.0.0.1:$((P+3))
cat > $W/b.conf <<C
worker_processes 1; daemon off; error_log $W/b.err; pid $W/b.pid; events { worker_connections 4096; }
http { access_log off; server { listen $B; keepalive_requests 1000000; location / { return 200 "ok\n"; } } }
C
cat > $W/p.conf <<C
worker_processes ${NGINX_WORKERS:-2}; daemon off; error_log $W/p.err; pid $W/p.pid; events { worker_connections 4096; }
http { access_log off; upstream be { server $B; keepalive 64; keepalive_requests 1000000; }
server { listen $N; keepalive_requests 1000000; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
mkdir -p $W/r/backends/be/servers $W/r/frontends/all
echo '{"Type":"http","Settings":{"KeepAlive":{"MaxIdleConnsPerHost":128}}}' > $W/r/backends/be/backend.json
echo "{\"URL\":\"http://$B\"}" > $W/r/backends/be/servers/s1.json
echo '{"Type":"http","BackendId":"be","Route":"PathPrefix(`/`)"}' > $W/r/frontends/all/frontend.json
taskset -c 0-1 nginx -c $W/b.conf & pids+=($!)
sleep 0.5
hdr=()
[ -n "${WRK_HEADER:-}" ] && hdr=(-H "$WRK_HEADER")
DUR=${DUR:-7}
ctxt() { # voluntary and involuntary context switches, summed over every thread of the pids
  local v=0 i=0
  for p in "$@"; do for t in /proc/$p/task/*; do
    read a b < <(awk '/^voluntary_ctxt/ {v=$2} /^nonvoluntary_ctxt/ {n=$2} END {print v, n}' $t/status); v=$((v+a)); i=$((i+b))
  done; done
  echo "$v $i"
}
measure() { # name pids... ; url in $URL
  local name=$1; shift
  local c0; c0=$(ctxt "$@")
  local s0=0 u0=0
  for p in "$@"; do read u s < <(awk '{print $14, $15}' /proc/$p/stat); u0=$((u0+u)); s0=$((s0+s)); done
  perf stat -e raw_syscalls:sys_enter,context-switches,task-clock -p "$(IFS=,; echo "$*")" -o $W/perf.out -- sleep $((DUR+1)) &
  local ps=$!
  sleep 0.2
  taskset -c 0-1 wrk -t2 -c50 -d${DUR}s "${hdr[@]}" $URL > $W/wrk.out
  wait $ps
  local n; n=$(awk '/requests in/ {print $1}' $W/wrk.out)
  local c1; c1=$(ctxt "$@")
  local s1=0 u1=0
  for p in "$@"; do read u s < <(awk '{print $14, $15}' /proc/$p/stat); u1=$((u1+u)); s1=$((s1+s)); done
  echo "$name requests=$n $(grep -E 'Non-2xx|Socket errors' $W/wrk.out | tr '\n' ' ')"
  awk -v n=$n -v u=$((u1-u0)) -v s=$((s1-s0)) 'BEGIN {printf "  user us/req %.2f  sys us/req %.2f  total %.2f\n", u*1e4/n, s*1e4/n, (u+s)*1e4/n}'
  echo "$c0 $c1" | awk -v n=$n '{printf "  voluntary cs/req %.3f  involuntary cs/req %.3f\n", ($3-$1)/n, ($4-$2)/n}'
  awk -v n=$n '/raw_syscalls|context-switches|task-clock/ {gsub(/,/,"",$1); printf "  %s per request: %.3f\n", $2, $1/n}' $W/perf.out
}
if [ "${WITH_NGINX:-1}" = 1 ]; then
  nginx -c $W/p.conf & np=$!; pids+=($np); sleep 0.7
  URL=http://$N/ measure "nginx(${NGINX_WORKERS:-2} workers)" $np $(pgrep -P $np)
  kill $np; sleep 0.3
fi
for bin in $BINS; do
  taskset -c ${FCPU:-0-1} $bin serve --listen $F --admin $A --routes $W/r --threads ${THREADS:-2} --no-access-log > $W/f.log 2>&1 & fp=$!; pids+=($fp)
  for _ in $(seq 50); do curl -sf http://$A/health/ready >/dev/null && break; sleep 0.1; done
  URL=http://$F/ measure "ficus $(basename $bin) threads=${THREADS:-2}" $fp
  [ -n "${SHOW_STATUS:-}" ] && curl -s http://$A/status | python3 -c 'import json,sys; print("  workers", json.load(sys.stdin).get("workers"))'
  kill $fp; wait $fp 2>/dev/null || true; sleep 0.3
done
