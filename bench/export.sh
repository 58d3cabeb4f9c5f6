#!/usr/bin/env bash
# Bulk $export benchmark: resources/s, MB/s and the server's peak RSS for
#   A) one patient with OBS (default 50,000) Observations (Patient/{id}/$export), and
#   B) every demo patient (PATIENTS, default 1,000) through a system-level $export.
# Times run from kick-off to the completed manifest (polled every 50 ms), then every file is
# downloaded and its SHA-256 checked against the manifest. Peak RSS is the server process's
# `Maximum resident set size` from /usr/bin/time -v. Loopback only; SQLite in a temp dir
# unless PORTICO_DATABASE_URL names an empty PostgreSQL database.
#
#   bench/export.sh                       # release build, OBS=50000 PATIENTS=1000
#   OBS=5000 PATIENTS=100 bench/export.sh
#   SKIP_BUILD=1 PORTICO_BIN=path/to/portico bench/export.sh
#   RUNS=3 COMPARE=path/to/other/portico SKIP_BUILD=1 PORTICO_BIN=… bench/export.sh
#
# RUNS repeats each export on the same data (a fresh server start each time); COMPARE names
# other binaries (space-separated) that run each export right after the first one on the
# same data, so builds are compared under the same load (all must accept the database).
#
# The system export runs as the operator (admin token), which the gate treats like a
# backend service with every system scope. Exits 1 when a download does not match its hash.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OBS=${OBS:-50000}
PATIENTS=${PATIENTS:-1000}
BATCH=${BATCH:-}
RUNS=${RUNS:-1}
COMPARE=${COMPARE:-}
log() { printf '[export-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ "$OBS" =~ ^[0-9]+$ && "$PATIENTS" =~ ^[0-9]+$ && "$BATCH" =~ ^[0-9]*$ && "$RUNS" =~ ^[1-9][0-9]*$ ]] \
  || die "OBS, PATIENTS, BATCH and RUNS are numbers"
[[ -x /usr/bin/time ]] || die "needs /usr/bin/time (Debian: apt-get install time)"
command -v curl >/dev/null || die "needs curl"
command -v python3 >/dev/null || die "needs python3"

if [[ -z "${PORTICO_BIN:-}" ]]; then
  if [[ "${SKIP_BUILD:-}" != 1 ]]; then
    log "cargo build --release -p portico"
    cargo build --release -p portico --bin portico >&2
  fi
  PORTICO_BIN=$(cargo build --release -p portico --bin portico --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable"): print(m["executable"])' | tail -n 1)
fi
[[ -x "$PORTICO_BIN" ]] || die "no portico binary at $PORTICO_BIN"
for bin in $COMPARE; do [[ -x "$bin" ]] || die "no portico binary at $bin"; done

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM $(pgrep -P "$SERVER_PID") 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true
  fi
  [[ "${KEEP:-}" == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
export PORTICO_ADMIN_TOKEN="$TOKEN" PORTICO_LISTEN=127.0.0.1:0 PORTICO_RATE_PER_IP=0 PORTICO_RATE_PER_CLIENT=0
export RUST_LOG=${RUST_LOG:-warn}
# Resources per batch: the server's default ([export] batch) unless BATCH is given.
[[ -n "$BATCH" ]] && export PORTICO_EXPORT_BATCH="$BATCH"

start() { # data dir [binary] -> BASE
  local data=$1 bin=${2:-$PORTICO_BIN}
  PORTICO_DATA_DIR="$data" /usr/bin/time -v -o "$data/time.txt" "$bin" serve >"$data/server.out" 2>>"$data/server.err" </dev/null &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    BASE=$(grep -oE '^portico listening on http://[^ ]+' "$data/server.out" 2>/dev/null | sed 's/^portico listening on //' || true)
    [[ -n "$BASE" ]] && return 0
    sleep 0.1
  done
  die "server did not start: $(tail -n 20 "$data/server.err")"
}
stop() { # data dir -> RSS (peak RSS in kB); call directly, not in $(…), so `wait` reaches the server
  local data=$1
  # SERVER_PID is /usr/bin/time; the server is its child (time reports once it exits).
  kill -TERM $(pgrep -P "$SERVER_PID") 2>/dev/null || true
  wait "$SERVER_PID" || true; SERVER_PID=""
  RSS=$(grep -oE 'Maximum resident set size \(kbytes\): [0-9]+' "$data/time.txt" | grep -oE '[0-9]+$' || echo 0)
}

# Kick off, poll to completion, download and verify; prints "resources bytes seconds".
run_export() { # url-path
  local path=$1 t0 t1 loc
  t0=$(date +%s.%N)
  loc=$(curl -sS -D - -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Prefer: respond-async' "$BASE/fhir$path" \
    | tr -d '\r' | awk -F': ' 'tolower($1)=="content-location"{print $2}')
  [[ -n "$loc" ]] || die "kick-off of $path did not answer 202 with Content-Location"
  while :; do
    code=$(curl -sS -o "$WORK/manifest.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$loc")
    [[ "$code" == 200 ]] && break
    [[ "$code" == 202 ]] || die "status answered $code: $(head -c 300 "$WORK/manifest.json")"
    sleep 0.05
  done
  t1=$(date +%s.%N)
  python3 - "$WORK/manifest.json" "$TOKEN" "$t0" "$t1" <<'PY'
import hashlib, json, sys, urllib.request
manifest, token, t0, t1 = json.load(open(sys.argv[1])), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
n = size = 0
for o in manifest["output"]:
    req = urllib.request.Request(o["url"], headers={"Authorization": f"Bearer {token}"})
    h, got, lines = hashlib.sha256(), 0, 0
    with urllib.request.urlopen(req) as r:
        while chunk := r.read(1 << 20):
            h.update(chunk); got += len(chunk); lines += chunk.count(b"\n")
    ext = o["extension"]
    if h.hexdigest() != ext["https://portico.invalid/fhir/bulk/sha256"] or lines != o["count"]:
        sys.exit(f"{o['url']}: hash or count differs from the manifest")
    n += lines; size += got
print(n, size, f"{t1 - t0:.3f}")
PY
}

report() { # label resources bytes seconds rss_kb
  python3 - "$@" <<'PY'
import sys
label, n, b, s, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
print(f"| {label} | {n:,} | {b/1e6:,.1f} MB | {s:.2f} s | {n/s:,.0f} resources/s | {b/1e6/s:,.1f} MB/s | {rss/1024:,.0f} MB |")
PY
}

echo "| export | resources | size | time | rate | throughput | server peak RSS |"
echo "|---|---|---|---|---|---|---|"

# --- A: one patient with OBS Observations -------------------------------------------------
A="$WORK/a"; mkdir -p "$A"
log "A: generating $OBS Observations for Patient/bench-1"
python3 - "$A/bundles" "$OBS" <<'PY'
import json, os, sys
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
per = 1000
entries = [{"resource": {"resourceType": "Patient", "id": "bench-1", "name": [{"family": "Bench"}]},
            "request": {"method": "PUT", "url": "Patient/bench-1"}}]
for i in range(n):
    oid = f"obs-{i:06d}"
    entries.append({"resource": {"resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
        "subject": {"reference": "Patient/bench-1"}, "effectiveDateTime": "2024-01-01T08:00:00Z",
        "valueQuantity": {"value": 80 + i % 40, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
        "referenceRange": [{"low": {"value": 70, "unit": "mg/dL"}, "high": {"value": 110, "unit": "mg/dL"}}]},
        "request": {"method": "PUT", "url": f"Observation/{oid}"}})
for b in range(0, len(entries), per):
    with open(f"{out}/bundle-{b // per:05d}.json", "w") as f:
        json.dump({"resourceType": "Bundle", "type": "transaction", "entry": entries[b:b + per]}, f)
PY
log "A: portico import"
PORTICO_DATA_DIR="$A" "$PORTICO_BIN" import "$A"/bundles/bundle-*.json >&2
# Each export of a case, RUNS times, with each binary in turn.
each() { # label data-dir url-path
  local label=$1 data=$2 path=$3 run bin tag
  for run in $(seq 1 "$RUNS"); do
    for bin in "$PORTICO_BIN" $COMPARE; do
      tag=""
      [[ -n "$COMPARE" ]] && tag=" [$(basename "$bin")]"
      start "$data" "$bin"
      log "$label$tag: $path (run $run)"
      read -r n b s < <(run_export "$path")
      stop "$data"
      report "$label$tag" "$n" "$b" "$s" "$RSS"
    done
  done
}

each "one patient, $OBS Observations" "$A" "/Patient/bench-1/\$export?_type=Patient,Observation"

# --- B: every demo patient, system-level ---------------------------------------------------
B="$WORK/b"; mkdir -p "$B"
log "B: portico demo --patients $PATIENTS --no-serve"
PORTICO_DATA_DIR="$B" "$PORTICO_BIN" demo --patients "$PATIENTS" --no-serve >"$B/demo.out" 2>&1 || die "demo load failed: $(tail -n 20 "$B/demo.out")"
each "$PATIENTS demo patients, system export" "$B" "/\$export"
