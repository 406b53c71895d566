#!/usr/bin/env bash
# GTIN lookups over HTTP at a fixed request rate: through Ficus, and straight to the GTIN service, in the same
# run and interleaved, so that both figures see the same machine.
#
#   benches/gtin_http.sh [rounds=3] [seconds=20]
#
# Set-up: legacy-catalog with PRODUCTS products and no dirty rows; `gtin-service sync` pulls its export over
# HTTP into a snapshot; `gtin-service serve` serves it; `ficus serve` runs a copy of routes/ with the GTIN split
# moved to 100% and both backends pointed at these processes. The load is h2load with CONNS HTTP/1.1 clients,
# each sending RPS requests per second (default 20 x 500 = 10,000 req/s), for `seconds` after a 2 s warm-up,
# cycling over URIS random present GTINs on the strangler path /stores/1/gtins/{gtin}. Each round runs the
# load once against the GTIN service and once through Ficus. Latency is h2load's per-request figure (request
# start to end of response, from its --log-file), percentiles over every request of the run.
#
# h2load walks the URI list in the same order on every client, so clients ask for the same codes at about the
# same time; the service's lookups are well under the latencies measured here either way.
#
# Output: one line per run (round, target, requests, non-200 answers, p50, p90, p99, p99.9 in ms, the load
# average when it started), the share of requests the GTIN service itself handled within 100 us and 1 ms
# (its own histogram, over all runs), then the median over rounds of each percentile per target. Results and
# the configurations compared are in services/gtin/README.md.
#
# Knobs (environment, default in brackets):
#   PRODUCTS [1000000]   products in the catalogue
#   URIS [100000]        distinct GTINs requested
#   CONNS [20], RPS [500]  clients and requests per second per client
#   GTIN_THREADS [2]     worker threads of gtin-service
#   FICUS_THREADS [2]    worker threads of Ficus
#   CPU_LOAD, CPU_FICUS, CPU_GTIN  taskset CPU lists for h2load, Ficus and the GTIN service (unset: no pinning)
#   ACCESS_LOG [1]       0 runs Ficus with --no-access-log; with 1 the access log goes to a file
#   NICE [0]             nice value of the three measured processes (below 0 needs root)
#   ORDER ["direct ficus"]  targets of a round, in order
#   BUILD [1]            0 uses the binaries in target/release as they are
#   KEEP [0]             1 keeps the work directory (logs, h2load logs) and prints where it is
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-20}
PRODUCTS=${PRODUCTS:-1000000} URIS=${URIS:-100000} CONNS=${CONNS:-20} RPS=${RPS:-500}
GTIN_THREADS=${GTIN_THREADS:-2} FICUS_THREADS=${FICUS_THREADS:-2} ACCESS_LOG=${ACCESS_LOG:-1} NICE=${NICE:-0}
ORDER=${ORDER:-"direct ficus"}
for tool in h2load curl taskset; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --quiet --workspace --bins
fi
bin=target/release

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then echo "pid $p still running" >&2; fi
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

LEGACY=127.0.0.1:19201 GTIN=127.0.0.1:19202 FICUS=127.0.0.1:19203 ADMIN=127.0.0.1:19204

# Sets `launch` to the prefix that runs a command with the given CPU list (none: unpinned) and NICE. taskset and
# nice exec the command, so `$!` after `"${launch[@]}" cmd &` is the command's own pid, the one cleanup kills.
launcher() {
  launch=(nice -n "$NICE")
  if [ -n "$1" ]; then launch=(taskset -c "$1" nice -n "$NICE"); fi
}
wait_for() { # url what
  for _ in $(seq 300); do curl -sf "$1" >/dev/null && return; sleep 0.1; done
  echo "$2 did not come up ($1)" >&2; exit 1
}

# A leftover process on one of these ports would answer in place of the one started here.
for addr in $LEGACY $GTIN $FICUS $ADMIN; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then echo "$addr is already in use" >&2; exit 1; fi
done

"$bin/legacy-catalog" --listen $LEGACY --products "$PRODUCTS" --dirty-rate 0 > "$work/legacy.log" 2>&1 &
pids+=($!)
wait_for "http://$LEGACY/health" legacy-catalog
mkdir -p "$work/data"
"$bin/gtin-service" sync --from "http://$LEGACY/export" --data "$work/data" > "$work/sync.log" 2>&1 \
  || { cat "$work/sync.log"; exit 1; }

# Present GTINs, in random order: the export's UPC_EAN column (the sync refused a handful of restricted codes;
# those answer 422 and show in the non-200 column).
curl -sf "http://$LEGACY/export" | awk -F'|' 'NR > 2 && $2 ~ /^[0-9]+$/ {print $2}' | shuf -n "$URIS" \
  --random-source=<(yes) | sed 's|^|http://gtin.invalid/stores/1/gtins/|' > "$work/uris.txt"

launcher "${CPU_GTIN:-}"
"${launch[@]}" "$bin/gtin-service" serve --listen $GTIN --data "$work/data" --threads "$GTIN_THREADS" \
  > "$work/gtin.log" 2>&1 &
pids+=($!)
wait_for "http://$GTIN/health/ready" gtin-service

cp -r routes "$work/routes"
echo "{\"URL\":\"http://$LEGACY\"}" > "$work/routes/backends/legacy/servers/legacy-1.json"
echo "{\"URL\":\"http://$GTIN\"}" > "$work/routes/backends/gtin/servers/gtin-1.json"
cat > "$work/routes/frontends/gtin/frontend.json" <<'JSON'
{"Type": "http", "Route": "Method(`GET`) && Path(`/stores/<store>/gtins/<gtin>`)", "Backends": [{"Id": "legacy", "Weight": 0}, {"Id": "gtin", "Weight": 100}]}
JSON
access=()
[ "$ACCESS_LOG" = 1 ] || access=(--no-access-log)
launcher "${CPU_FICUS:-}"
"${launch[@]}" "$bin/ficus" serve --listen $FICUS --admin $ADMIN --routes "$work/routes" \
  --threads "$FICUS_THREADS" "${access[@]}" > "$work/ficus.log" 2>&1 &
pids+=($!)
wait_for "http://$ADMIN/health/ready" ficus
# Both paths must answer from the GTIN service before anything is timed.
probe=$(head -1 "$work/uris.txt" | sed 's|http://gtin.invalid||')
for target in $GTIN $FICUS; do
  body=$(curl -sf "http://$target$probe") || { echo "no answer from $target$probe" >&2; exit 1; }
  case $body in *'"item_no"'*) ;; *) echo "unexpected answer from $target: $body" >&2; exit 1 ;; esac
done

echo "# $(date -u +%FT%TZ) products=$PRODUCTS conns=$CONNS rps/conn=$RPS secs=$secs gtin_threads=$GTIN_THREADS" \
  "ficus_threads=$FICUS_THREADS access_log=$ACCESS_LOG nice=$NICE cpu_load=${CPU_LOAD:-any}" \
  "cpu_ficus=${CPU_FICUS:-any} cpu_gtin=${CPU_GTIN:-any}"
echo "# round target requests non200 p50_ms p90_ms p99_ms p99.9_ms load1"
for round in $(seq "$rounds"); do
  for target in $ORDER; do
    case $target in direct) addr=$GTIN ;; ficus) addr=$FICUS ;; *) echo "unknown target $target" >&2; exit 1 ;; esac
    load1=$(cut -d' ' -f1 /proc/loadavg)
    rm -f "$work/h2load.log"
    launcher "${CPU_LOAD:-}"
    "${launch[@]}" h2load --h1 -c "$CONNS" --rps "$RPS" -D "$secs" --warm-up-time=2 -B "http://$addr" \
      -i "$work/uris.txt" --log-file="$work/h2load.log" > "$work/h2load-$round-$target.out" 2>&1
    # Column 3 is microseconds from request start to end of response.
    sort -t$'\t' -k3,3n "$work/h2load.log" | awk -F'\t' -v r="$round" -v t="$target" -v l="$load1" '
      { us[NR] = $3; if ($2 != 200) bad++ }
      function q(p) { i = int(NR * p); if (i < 1) i = 1; return us[i] / 1000 }
      END { printf "%s %s %d %d %.3f %.3f %.3f %.3f %s\n", r, t, NR, bad, q(0.5), q(0.9), q(0.99), q(0.999), l }' \
      | tee -a "$work/rows"
  done
done
# The GTIN service's own view (request handed over by hyper to response built), over every run above: how
# much of the latency is the service's work rather than waiting for a CPU, the network stack or the client.
curl -sf "http://$GTIN/metrics" | awk '/^gtin_http_request_duration_seconds_(bucket|count)\{.*route="legacy_gtin"/' \
  | awk '{ if ($1 ~ /_count/) n = $2; else { match($1, /le="[^"]*"/); le[substr($1, RSTART + 4, RLENGTH - 5)] = $2 } }
    END { if (n) printf "# gtin-service handling time: %.2f%% within 100 us, %.2f%% within 1 ms, of %d requests\n", 100 * le["0.0001"] / n, 100 * le["0.001"] / n, n }'
echo "# medians over rounds: target p50_ms p90_ms p99_ms p99.9_ms"
for target in $ORDER; do
  line="$target"
  for col in 5 6 7 8; do
    m=$(awk -v t="$target" -v c="$col" '$2 == t {print $c}' "$work/rows" | sort -n \
      | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
    line="$line $m"
  done
  echo "$line"
done
