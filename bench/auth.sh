#!/usr/bin/env bash
# What authentication costs on the read path: the same read of one patient's record with
# the operator's admin token (a constant-time compare) and with an OAuth access token issued
# for that patient with SMART scopes (token lookup joined to grant, user and device, then
# scope enforcement at the gate). One server, back-to-back runs; report the ratio.
#
#   bench/auth.sh                          # SQLite, 50 demo patients
#   PATIENTS=50 DURATION=15 WARMUP=3 bench/auth.sh
#   BACKEND=postgres PORTICO_DATABASE_URL=postgres://u:p@127.0.0.1:5432/empty_db bench/auth.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/portico-release}"
PATIENTS=${PATIENTS:-50}
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
BACKEND=${BACKEND:-sqlite}
log() { printf '[auth-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ "$PATIENTS" =~ ^[0-9]+$ && "$DURATION" =~ ^[0-9]+$ && "$WARMUP" =~ ^[0-9]+$ ]] || die "numbers only"

if [[ -z "${PORTICO_BIN:-}" ]]; then
  [[ "${SKIP_BUILD:-}" == 1 ]] || cargo build --release -p portico >&2
  PORTICO_BIN="$CARGO_TARGET_DIR/release/portico"
fi
WORK=$(mktemp -d /tmp/portico-auth-bench.XXXXXX)
cleanup() { [[ -n "${SERVER_PID:-}" ]] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
[[ "$BACKEND" == sqlite ]] && unset PORTICO_DATABASE_URL
TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
export PORTICO_ADMIN_TOKEN="$TOKEN" PORTICO_DATA_DIR="$WORK/data" PORTICO_LISTEN=127.0.0.1:0
export PORTICO_RATE_PER_IP=0 PORTICO_RATE_PER_CLIENT=0

log "loading $PATIENTS demo patients"
"$PORTICO_BIN" demo --patients "$PATIENTS" --no-serve >"$WORK/demo.out" 2>&1 || { tail "$WORK/demo.out" >&2; die "demo failed"; }
"$PORTICO_BIN" serve >"$WORK/server.out" 2>"$WORK/server.err" </dev/null &
SERVER_PID=$!
BASE=""
for _ in $(seq 1 300); do
  BASE=$(grep -oE '^portico listening on http://[^ ]+' "$WORK/server.out" 2>/dev/null | head -n1 | sed 's/^portico listening on //' || true)
  [[ -n "$BASE" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "server exited"
  sleep 0.2
done
[[ -n "$BASE" ]] || die "server did not listen"
# An access token for the patient, as a SMART app would hold (issued by the operator CLI
# against the same database while the server runs).
ACCESS=$("$PORTICO_BIN" token issue --patient pt-00001 --scope "patient/*.rs" 2>/dev/null | tail -n 1)
PATH_READ=/fhir/Patient/pt-00001
for t in "$TOKEN" "$ACCESS"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $t" "$BASE$PATH_READ")
  [[ "$code" == 200 ]] || die "sanity read -> $code"
done
run() {  # run NAME TOKEN -> req/s
  local name=$1 tok=$2
  ((WARMUP > 0)) && wrk -t2 -c16 -d"${WARMUP}s" -s "$ROOT/bench/same_read.lua" "$BASE" -- "$PATH_READ" "$tok" >/dev/null
  wrk -t2 -c16 -d"${DURATION}s" --latency -s "$ROOT/bench/same_read.lua" "$BASE" -- "$PATH_READ" "$tok" >"$WORK/$name.txt"
  grep -q "Non-2xx" "$WORK/$name.txt" && die "$name: non-2xx responses"
  awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$WORK/$name.txt"
}
A1=$(run admin1 "$TOKEN"); O1=$(run oauth1 "$ACCESS"); A2=$(run admin2 "$TOKEN"); O2=$(run oauth2 "$ACCESS")
awk -v a1="$A1" -v o1="$O1" -v a2="$A2" -v o2="$O2" -v b="$BACKEND" 'BEGIN {
  printf "\n## auth cost on reads (%s): admin token %d / %d req/s, OAuth access token %d / %d req/s\n", b, a1, a2, o1, o2
  printf "ratio (access token / admin token, mean of the two interleaved pairs): %.2f\n", (o1 + o2) / (a1 + a2) }'
