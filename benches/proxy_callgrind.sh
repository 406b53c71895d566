#!/usr/bin/env bash
# User-space instructions and allocations per proxied request, counted by callgrind: the figure that stays
# the same on a busy machine, where req/s moves by 20% between rounds. Ficus runs with one worker thread
# (`--threads 1`, access log off) in front of a tiny nginx backend; wrk sends keep-alive GETs. After a
# warm-up the counters are zeroed, wrk runs for a fixed time, and the counts are dumped and divided by the
# requests wrk saw answered (the few in flight at either edge are within 0.5% at the default sizes).
#
#   benches/proxy_callgrind.sh [seconds=20] [connections=50]
#
# Prints instructions and allocations (calls into mimalloc's malloc, zalloc and realloc) per request, then
# the exclusive instructions per request grouped by crate, then the top functions. BIN=<path> measures
# another ficus binary (a before/after pair); NGINX=1 measures nginx as the proxy instead, in one process.
# KEEP=<dir> keeps the callgrind output there for callgrind_annotate; PORT_BASE=<port> uses that port and the
# next two instead of 19201 to 19203.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
conns=${2:-50}
bin=${BIN:-target/release/ficus}
if [ -z "${BIN:-}" ] && [ "${NGINX:-0}" != 1 ]; then cargo build --release --quiet --bin ficus; fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# PORT_BASE moves the three ports (backend, proxy, admin), so two counts can run side by side.
base=${PORT_BASE:-19201}
BACKEND=127.0.0.1:$base PROXY=127.0.0.1:$((base + 1)) ADMIN=127.0.0.1:$((base + 2))

cat > "$work/backend.conf" <<CONF
worker_processes 1; daemon off; error_log $work/backend.err; pid $work/backend.pid;
events { worker_connections 4096; }
http { access_log off; server { listen $BACKEND; keepalive_requests 1000000; location / { return 200 "ok\n"; } } }
CONF
cat > "$work/proxy.conf" <<CONF
worker_processes 1; master_process off; daemon off; error_log $work/proxy.err; pid $work/proxy.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream be { server $BACKEND; keepalive 64; keepalive_requests 1000000; }
  server { listen $PROXY; keepalive_requests 1000000;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
mkdir -p "$work/routes/backends/be/servers" "$work/routes/frontends/all"
echo '{"Type":"http","Settings":{"KeepAlive":{"MaxIdleConnsPerHost":128}}}' > "$work/routes/backends/be/backend.json"
echo "{\"URL\":\"http://$BACKEND\"}" > "$work/routes/backends/be/servers/s1.json"
echo '{"Type":"http","BackendId":"be","Route":"PathPrefix(`/`)"}' > "$work/routes/frontends/all/frontend.json"

nginx -c "$work/backend.conf" & pids+=($!)
sleep 0.5

out="$work/callgrind.out"
if [ "${NGINX:-0}" = 1 ]; then
  valgrind --tool=callgrind --callgrind-out-file="$out" nginx -c "$work/proxy.conf" 2> "$work/valgrind.log" &
else
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" serve --listen $PROXY --admin $ADMIN \
    --routes "$work/routes" --threads 1 --no-access-log > "$work/proxy.log" 2> "$work/valgrind.log" &
fi
vg=$!
pids+=($vg)
for _ in $(seq 300); do curl -sf -o /dev/null "http://$PROXY/" && break; sleep 0.2; done
curl -sf -o /dev/null "http://$PROXY/" || { echo "the proxy did not start"; cat "$work/valgrind.log"; exit 1; }

# Warm-up: connections pooled, metric slots claimed, caches of the allocator filled.
wrk -t1 -c"$conns" -d3s "http://$PROXY/" > /dev/null
callgrind_control -z "$vg" > /dev/null
wrk -t1 -c"$conns" -d"${secs}s" "http://$PROXY/" > "$work/wrk.out"
callgrind_control -d "$vg" > /dev/null
requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
dump=$(ls "$out".* | sort | tail -1)
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$dump" "$KEEP/"

python3 - "$dump" "$requests" <<'PY'
import collections, re, sys
path, requests = sys.argv[1], int(sys.argv[2])
names, fn, cfn = {}, None, None
excl = collections.Counter()
calls = collections.Counter()
total = 0
expect_calls = False
def name(kind, rest):
    m = re.match(r"\((\d+)\)(?: (.*))?", rest)
    if not m:
        return rest
    key = (kind, m.group(1))
    if m.group(2):
        names[key] = m.group(2)
    return names.get(key, rest)
with open(path) as f:
    for line in f:
        if line.startswith("fn="):
            fn = name("fn", line[3:].strip()); expect_calls = False
        elif line.startswith("cfn="):
            cfn = name("fn", line[4:].strip())
        elif line.startswith("calls="):
            calls[cfn] += int(line[6:].split()[0]); expect_calls = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if len(parts) >= 2:
                cost = int(parts[1])
                if expect_calls:
                    expect_calls = False  # the call's inclusive cost line
                else:
                    excl[fn] += cost; total += cost
allocs = sum(n for f, n in calls.items() if f and re.match(r"mi_(malloc|zalloc|realloc|calloc)", f))
print(f"requests {requests}, instructions/request {total/requests:,.0f}, allocations/request {allocs/requests:.2f}")
def crate(f):
    f = f or "?"
    for pat, c in [(r"^mi_|^_mi_|^mi_", "mimalloc"), (r"^(__|_dl|std::sys|syscall|epoll|recv|send|write|read|memcpy|memmove|memset|clock_gettime)", "libc/std sys")]:
        if re.match(pat, f):
            return c
    m = re.match(r"^(?:<)?(?:&(?:mut )?)?([a-z_][a-z0-9_]*)::", f)
    return m.group(1) if m else f.split("(")[0][:40]
by_crate = collections.Counter()
for f, c in excl.items():
    by_crate[crate(f)] += c
print("\nexclusive instructions per request, by crate (or symbol):")
for c, v in by_crate.most_common(14):
    print(f"  {v/requests:8,.0f}  {c}")
print("\ntop functions (exclusive per request):")
for f, v in excl.most_common(30):
    print(f"  {v/requests:8,.0f}  {f[:150]}")
PY
