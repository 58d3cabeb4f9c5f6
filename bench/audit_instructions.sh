#!/usr/bin/env bash
# What the audit trail costs a read, counted in instructions: the same fixed number of
# `GET /fhir/Patient/{id}` reads served by one server without read audit records
# (PORTICO_BENCH_AUDIT_OFF=1) and one with them (PORTICO_AUDIT_APPEND=$MODE), each under
# valgrind's callgrind, which counts the user-space instructions every thread of the server
# executes while the reads are served. Unlike the CPU-time scripts (audit_paired.sh,
# audit_cpu.sh), the count is the same from run to run and does not move with the machine's
# load, so a change of a percent is visible; unlike them it leaves out the kernel (system
# calls, page cache, context switches), so it complements them and does not replace them.
#
#   PORTICO_BIN=<release portico built with --features bench-audit-off> bench/audit_instructions.sh
#
# Valgrind runs SHA-256 without the CPU's SHA instructions, so hashing counts for several
# times what it costs natively: the figures are given with and without it (the inclusive
# count of `sha2::sha256::compress256`). Under valgrind a server serves ~250 reads/s, so the
# flush interval is raised (FLUSH_MS) to keep commits about as large as at full speed
# natively (~300 records). REQUESTS is a multiple of the patient-index merge interval
# (8,192), so every run holds the same number of merges.
#
# Environment (defaults): MODE=deferred PATIENTS=300 REQUESTS=16384 CONNECTIONS=4
# FLUSH_MS=1000. Takes about 3 minutes plus the demo import.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
source "$ROOT/bench/lib.sh"
MODE=${MODE:-deferred}
PATIENTS=${PATIENTS:-300}
REQUESTS=${REQUESTS:-16384}
CONNECTIONS=${CONNECTIONS:-4}
FLUSH_MS=${FLUSH_MS:-1000}
audit_bench_binary
append_mode
whole_numbers PATIENTS REQUESTS CONNECTIONS FLUSH_MS
((PATIENTS >= 1 && REQUESTS >= 1 && CONNECTIONS >= 1 && FLUSH_MS >= 1 && FLUSH_MS <= 10000)) || { echo "bad PATIENTS/REQUESTS/CONNECTIONS/FLUSH_MS" >&2; exit 1; }
for tool in valgrind callgrind_control callgrind_annotate python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install valgrind python3)" >&2; exit 1; }
done

one_server_scratch audit-instructions
export PORTICO_ADMIN_TOKEN=$TOKEN PORTICO_RATE_PER_IP=0 PORTICO_RATE_PER_CLIENT=0 PORTICO_LISTEN=127.0.0.1:0
unset PORTICO_DATABASE_URL

# The demo data, imported once at full speed; each measured server starts on a copy.
PORTICO_DATA_DIR="$WORK/data" "$PORTICO_BIN" demo --patients "$PATIENTS" >"$WORK/demo.out" 2>"$WORK/demo.err" </dev/null &
PID=$!
wait_listening "$WORK/demo.out" "$PID" >/dev/null || { tail -n 20 "$WORK/demo.err" >&2; echo "the demo import failed" >&2; exit 1; }
kill -TERM "$PID"; wait "$PID" || true; PID=

count() {  # count NAME ENV=VALUE… : instructions while REQUESTS reads are served, and hashing's share
  local name=$1 base
  shift
  cp -a "$WORK/data" "$WORK/$name"
  env "$@" PORTICO_DATA_DIR="$WORK/$name" PORTICO_AUDIT_FLUSH_MS="$FLUSH_MS" \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/$name.cg" \
    "$PORTICO_BIN" serve >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null &
  PID=$!
  base=$(wait_listening "$WORK/$name.out" "$PID") || { tail -n 20 "$WORK/$name.err" >&2; echo "the $name server did not start" >&2; exit 1; }
  python3 "$ROOT/bench/read_count.py" "$base" 400 "$CONNECTIONS" "$PATIENTS" >&2  # warm-up, not counted
  sleep $((FLUSH_MS / 1000 + 2))
  callgrind_control -i on "$PID" >/dev/null 2>&1
  python3 "$ROOT/bench/read_count.py" "$base" "$REQUESTS" "$CONNECTIONS" "$PATIENTS" >&2
  # The last deferred commit comes within the flush interval.
  sleep $((FLUSH_MS / 1000 + 2))
  callgrind_control -i off "$PID" >/dev/null 2>&1
  kill -TERM "$PID"; wait "$PID" || true; PID=
  callgrind_annotate --inclusive=yes "$WORK/$name.cg"* 2>/dev/null | awk -v n="$REQUESTS" '
    /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
    /sha2::sha256::compress256 \[/ && !sha { gsub(",", "", $1); sha = $1 }
    END { printf "%.0f %.0f\n", total / n, sha / n }'
}

count off PORTICO_BENCH_AUDIT_OFF=1 >"$WORK/off.count"
count on PORTICO_AUDIT_APPEND="$MODE" >"$WORK/on.count"
read -r OFF_ALL OFF_SHA <"$WORK/off.count"
read -r ON_ALL ON_SHA <"$WORK/on.count"
awk -v oa="$OFF_ALL" -v os="$OFF_SHA" -v na="$ON_ALL" -v ns="$ON_SHA" -v m="$MODE" -v r="$REQUESTS" 'BEGIN {
  printf "%d reads each, user-space instructions a read:\n", r
  printf "  off %8d (SHA-256 %d) | %s %8d (SHA-256 %d)\n", oa, os, m, na, ns
  printf "  audit cost: %.1f %% of throughput; %.1f %% with SHA-256 left out of both\n",
         (1 - oa / na) * 100, (1 - (oa - os) / (na - ns)) * 100 }'
