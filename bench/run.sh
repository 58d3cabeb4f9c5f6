#!/usr/bin/env bash
# portico load benchmark (see bench/README.md). Loopback only, every loop bounded.
#
#   bench/run.sh                                   # SQLite, 1000 demo patients, 20 s per figure
#   PATIENTS=200 DURATION=10 bench/run.sh
#   LOAD=import bench/run.sh                       # load PEERS-shaped PUT Bundles via `portico import`
#   BACKEND=postgres PORTICO_DATABASE_URL=postgres://u:p@127.0.0.1:5432/empty_db bench/run.sh
#
# Environment (defaults): PATIENTS=1000 DURATION=20 WARMUP=5 THREADS=2 CONNECTIONS=16
#   BACKEND=sqlite|postgres  LOAD=demo|import  LISTEN_TIMEOUT=900 (s, wait for the server)
#   SKIP_BUILD=1 (reuse the release binary)  PORTICO_BIN (binary to run)  KEEP=1 (keep work dir)
#   OUT=FILE (also write the markdown summary there)  STRICT=1 (exit 1 if a target is missed)
#   SEARCH=0 (skip the search figure)  PORTICO_AUDIT_APPEND etc. reach the server unchanged
# Exits 1 if a measured run saw non-2xx responses or socket errors (the figure is invalid).
# The markdown summary goes to stdout; progress and raw wrk output go to stderr.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/portico-target}"
PATIENTS=${PATIENTS:-1000}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-16}
BACKEND=${BACKEND:-sqlite}
LOAD=${LOAD:-demo}
LISTEN_TIMEOUT=${LISTEN_TIMEOUT:-900}

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in PATIENTS DURATION WARMUP THREADS CONNECTIONS LISTEN_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((PATIENTS >= 1 && PATIENTS <= 99999)) || die "PATIENTS must be 1..99999 (ids are pt-%05d)"
((DURATION >= 1 && DURATION <= 600)) || die "DURATION must be 1..600 s"
((WARMUP <= 120)) || die "WARMUP must be at most 120 s"
((THREADS >= 1 && THREADS <= 16 && CONNECTIONS >= THREADS && CONNECTIONS <= 1024)) \
  || die "need 1 <= THREADS <= 16 and THREADS <= CONNECTIONS <= 1024"
((LISTEN_TIMEOUT >= 1 && LISTEN_TIMEOUT <= 3600)) || die "LISTEN_TIMEOUT must be 1..3600 s"

case "$BACKEND" in
  sqlite) unset PORTICO_DATABASE_URL ;;
  postgres)
    [[ "${PORTICO_DATABASE_URL:-}" == postgres://* || "${PORTICO_DATABASE_URL:-}" == postgresql://* ]] \
      || die "BACKEND=postgres needs PORTICO_DATABASE_URL=postgres://... (an empty database)"
    export PORTICO_DATABASE_URL
    ;;
  *) die "BACKEND must be sqlite or postgres" ;;
esac
[[ "$LOAD" == demo || "$LOAD" == import ]] || die "LOAD must be demo or import"

# --- tools ---------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then
    log "installing wrk (Debian)"
    apt-get install -y -q wrk >&2 || { apt-get update -q >&2 && apt-get install -y -q wrk >&2; }
  else
    die "wrk is not installed: sudo apt-get install -y wrk"
  fi
fi
command -v curl >/dev/null 2>&1 || die "curl is required"
command -v python3 >/dev/null 2>&1 || die "python3 is required"

# --- build ---------------------------------------------------------------------------
if [[ -z "${PORTICO_BIN:-}" ]]; then
  if [[ "${SKIP_BUILD:-}" != 1 ]]; then
    log "cargo build --release -p portico (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    cargo build --release -p portico >&2
  fi
  PORTICO_BIN="$CARGO_TARGET_DIR/release/portico"
fi
[[ -x "$PORTICO_BIN" ]] || die "no portico binary at $PORTICO_BIN"

# --- work dir, server lifecycle --------------------------------------------------------
WORK=$(mktemp -d -t portico-bench.XXXXXX)
SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
cleanup() {
  stop_server
  if [[ "${KEEP:-}" == 1 ]]; then
    log "kept work dir $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

DATA="$WORK/data"
mkdir -p "$DATA"
TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
# The load generator is one address; measure the server, not the per-address limiter.
export PORTICO_RATE_PER_IP=0 PORTICO_RATE_PER_CLIENT=0
export PORTICO_ADMIN_TOKEN="$TOKEN" PORTICO_DATA_DIR="$DATA" PORTICO_LISTEN=127.0.0.1:0 PATIENTS

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

IMPORT_RE='imported [0-9]+ resources in [0-9.]+ ?m?s \([0-9.]+ resources/s\)'
IMPORT_LINE=""
IMPORT_WALL=""
EXPECTED_RESOURCES=$((PATIENTS * 59))

if [[ "$LOAD" == import ]]; then
  log "generating $PATIENTS PUT transaction Bundles (bench/gen_bundles.py)"
  python3 "$ROOT/bench/gen_bundles.py" --patients "$PATIENTS" --out "$WORK/bundles" >&2
  log "portico import ($EXPECTED_RESOURCES resources)"
  t0=$(now)
  timeout "$LISTEN_TIMEOUT" "$PORTICO_BIN" import "$WORK"/bundles/bundle-*.json \
    >"$WORK/import.out" 2>&1 </dev/null || { tail -n 30 "$WORK/import.out" >&2; die "portico import failed"; }
  IMPORT_WALL=$(elapsed "$t0" "$(now)")
  IMPORT_LINE=$(grep -oE "$IMPORT_RE" "$WORK/import.out" | tail -n 1 || true)
  SERVER_ARGS=(serve)
else
  SERVER_ARGS=(demo --patients "$PATIENTS")
fi

log "starting: portico ${SERVER_ARGS[*]} (backend $BACKEND)"
t0=$(now)
"$PORTICO_BIN" "${SERVER_ARGS[@]}" >"$WORK/server.out" 2>"$WORK/server.err" </dev/null &
SERVER_PID=$!

BASE=""
deadline=$((SECONDS + LISTEN_TIMEOUT))
while ((SECONDS < deadline)); do
  BASE=$(grep -oE '^portico listening on http://[^ ]+' "$WORK/server.out" 2>/dev/null \
    | head -n 1 | sed 's/^portico listening on //; s#/$##' || true)
  [[ -n "$BASE" ]] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    tail -n 30 "$WORK/server.out" "$WORK/server.err" >&2 || true
    die "portico exited before listening"
  fi
  sleep 0.2
done
[[ -n "$BASE" ]] || { tail -n 30 "$WORK/server.err" >&2; die "no 'portico listening on' line within $LISTEN_TIMEOUT s"; }
START_WALL=$(elapsed "$t0" "$(now)")
case "$BASE" in
  http://127.*|http://localhost:*|http://\[::1\]:*) ;;
  *) die "server listens on $BASE: this benchmark targets loopback only" ;;
esac
log "listening on $BASE after ${START_WALL}s"
if [[ "$LOAD" == demo ]]; then
  IMPORT_LINE=$(cat "$WORK/server.out" "$WORK/server.err" | grep -oE "$IMPORT_RE" | tail -n 1 || true)
  IMPORT_WALL=$START_WALL
fi

# --- sanity: the workload must hit real data ------------------------------------------
AUTH=(-H "Authorization: Bearer $TOKEN" -H "Accept: application/fhir+json")
code=$(curl -s -o "$WORK/read.json" -w '%{http_code}' --max-time 30 "${AUTH[@]}" "$BASE/fhir/Patient/pt-00001")
[[ "$code" == 200 ]] || die "GET /fhir/Patient/pt-00001 -> $code (demo ids must be pt-%05d): $(head -c 300 "$WORK/read.json")"
code=$(curl -s -o "$WORK/search.json" -w '%{http_code}' --max-time 30 "${AUTH[@]}" \
  "$BASE/fhir/Observation?patient=pt-00001&category=laboratory&_count=50")
[[ "$code" == 200 ]] || die "lab search -> $code: $(head -c 300 "$WORK/search.json")"
READ_BYTES=$(wc -c <"$WORK/read.json")
SEARCH_BYTES=$(wc -c <"$WORK/search.json")
SEARCH_ENTRIES=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1])).get("entry", [])))' "$WORK/search.json")
log "sanity: Patient read ${READ_BYTES} B; lab search page has ${SEARCH_ENTRIES} entries, ${SEARCH_BYTES} B"
((SEARCH_ENTRIES > 0)) || log "WARNING: the lab search for pt-00001 returned no entries: its figure is meaningless"

# --- wrk ------------------------------------------------------------------------------
# run_wrk NAME SCRIPT: warm-up, then the measured run; sets R[NAME_{rps,p50,p99,non2xx,err,reqs}]
declare -A R=()
to_ms() {  # wrk latency like 812.00us / 1.23ms / 1.02s -> ms
  awk -v x="$1" 'BEGIN {
    v = x + 0
    if (x ~ /us$/) v = v / 1000; else if (x ~ /ms$/) v = v; else if (x ~ /s$/) v = v * 1000
    printf "%.2f", v }'
}
run_wrk() {
  local name=$1 script=$2 out="$WORK/wrk-$1.txt"
  if ((WARMUP > 0)); then
    log "$name: warm-up ${WARMUP}s"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 10s -s "$script" "$BASE" >/dev/null
  fi
  log "$name: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency -s "$script" "$BASE" | tee "$out" >&2
  local rps p50 p99 non2xx err reqs
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
  err=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")
  reqs=$(awk '/requests in/ { print $1 }' "$out")
  R[${name}_rps]=${rps:-0}
  R[${name}_p50]=$p50
  R[${name}_p99]=$p99
  R[${name}_non2xx]=${non2xx:-0}
  R[${name}_err]=${err:-0}
  R[${name}_reqs]=${reqs:-0}
}
run_wrk read "$ROOT/bench/read.lua"
if [[ "${SEARCH:-1}" == 0 ]]; then
  R[search_rps]=0 R[search_p50]=- R[search_p99]=- R[search_non2xx]=0 R[search_err]=0 R[search_reqs]=0
else
  run_wrk search "$ROOT/bench/search.lua"
fi

# --- memory ---------------------------------------------------------------------------
kill -0 "$SERVER_PID" 2>/dev/null || die "portico died during the benchmark"
HWM_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
RSS_KB=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")
stop_server

# --- summary --------------------------------------------------------------------------
verdict() {  # verdict VALUE OP TARGET [NAME] -> ok / MISS / INVALID (wrk saw failed requests)
  if [[ -n "${4:-}" ]] && ((R[${4}_non2xx] > 0 || R[${4}_err] > 0)); then
    echo INVALID
    return
  fi
  awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {
    ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 < t + 0); print (ok ? "ok" : "MISS") }'
}
fmt_int() { printf "%'d" "$1" 2>/dev/null || printf '%s' "$1"; }
validity() {  # validity NAME -> note about failed requests
  if ((R[${1}_non2xx] > 0 || R[${1}_err] > 0)); then
    printf '; %s non-2xx, %s socket errors' "${R[${1}_non2xx]}" "${R[${1}_err]}"
  fi
}

if [[ -n "$IMPORT_LINE" ]]; then
  IMPORT_RATE=$(sed -E 's/.*\(([0-9.]+) resources\/s\).*/\1/' <<<"$IMPORT_LINE")
  IMPORT_CELL="$(fmt_int "${IMPORT_RATE%.*}") resources/s (server: \`$IMPORT_LINE\`)"
else
  IMPORT_RATE=$(awk -v n="$EXPECTED_RESOURCES" -v s="$IMPORT_WALL" 'BEGIN { printf "%.0f", (s > 0) ? n / s : 0 }')
  IMPORT_CELL="≈ $(fmt_int "$IMPORT_RATE") resources/s (wall clock, $EXPECTED_RESOURCES expected resources in ${IMPORT_WALL}s incl. startup; the server printed no 'imported … resources/s' line)"
fi
if [[ "${SEARCH:-1}" == 0 ]]; then
  SEARCH_CELL="skipped (SEARCH=0)" SEARCH_VERDICT="–"
else
  SEARCH_CELL="$(fmt_int "${R[search_rps]}") req/s ($(fmt_int "${R[search_reqs]}") requests$(validity search))"
  SEARCH_VERDICT=$(verdict "${R[search_rps]}" ">=" 5000 search)
fi
HWM_MB=$(awk -v k="$HWM_KB" 'BEGIN { printf "%.0f", k / 1024 }')
RSS_MB=$(awk -v k="$RSS_KB" 'BEGIN { printf "%.0f", k / 1024 }')
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "uncommitted")

SUMMARY=$(cat <<EOF

## portico bench — $BACKEND, $PATIENTS patients ($(fmt_int "$EXPECTED_RESOURCES") resources), load: $LOAD

$(date -u +%Y-%m-%dT%H:%M:%SZ), rev $REV, $(nproc) cores, \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency\` after a ${WARMUP}s warm-up, loopback.

| figure | result | p50 | p99 | target | |
|---|---|---|---|---|---|
| load ($LOAD) | $IMPORT_CELL | | | ≥ 20,000 resources/s | $(verdict "$IMPORT_RATE" ">=" 20000) |
| \`GET /fhir/Patient/{id}\` | $(fmt_int "${R[read_rps]}") req/s ($(fmt_int "${R[read_reqs]}") requests$(validity read)) | ${R[read_p50]} ms | ${R[read_p99]} ms | ≥ 20,000 req/s | $(verdict "${R[read_rps]}" ">=" 20000 read) |
| \`GET /fhir/Observation?patient=…&category=laboratory&_count=50\` ($SEARCH_ENTRIES entries/page) | $SEARCH_CELL | ${R[search_p50]} ms | ${R[search_p99]} ms | ≥ 5,000 req/s | $SEARCH_VERDICT |
| server peak RSS (VmHWM) | $HWM_MB MB (VmRSS at end $RSS_MB MB) | | | < 200 MB | $(verdict "$HWM_MB" "<" 200) |
EOF
)
printf '%s\n' "$SUMMARY"
if [[ -n "${OUT:-}" ]]; then
  printf '%s\n' "$SUMMARY" >"$OUT"
  log "summary written to $OUT"
fi
if grep -q '| INVALID |' <<<"$SUMMARY"; then
  log "some requests failed during a measured run: the figures above are not valid"
  exit 1
fi
if [[ "${STRICT:-}" == 1 ]] && grep -q '| MISS |' <<<"$SUMMARY"; then
  log "STRICT=1: a target was missed"
  exit 1
fi
