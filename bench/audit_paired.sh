#!/usr/bin/env bash
# What the audit trail costs a read, measured side by side: one server without read audit
# records (PORTICO_BENCH_AUDIT_OFF=1) and one with them (PORTICO_AUDIT_APPEND=$MODE) run at
# the same time, each under its own `wrk -t1 -c8` on `GET /fhir/Patient/{id}`, and each
# round reads both servers' CPU time per request over the same seconds. On this shared VM
# the CPU per request of one server moves by ±30 % from run to run with other people's
# load; two servers measured in the same seconds see the same neighbours, so their ratio
# moves far less than either figure (bench/audit_cpu.sh measures one server at a time).
#
#   PORTICO_BIN=<release portico built with --features bench-audit-off> bench/audit_paired.sh
#   MODE=batched ROUNDS=10 DURATION=10 bench/audit_paired.sh
#
# The cost printed is the throughput a CPU-bound server loses: 1 − (CPU per request off ÷
# CPU per request on). Environment (defaults): MODE=deferred PATIENTS=300 ROUNDS=8
# DURATION=8 WARMUP=3. Prints one line per round, then the median and the spread.
#
# CONTROL=1 keeps read records on in both servers: the "cost" it prints is the method's own
# bias and spread (2026-11-29: median 1.9 % over 4 rounds, from −1.6 to 12.8 %), which a
# difference between two builds must exceed to mean anything.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
source "$ROOT/bench/lib.sh"
MODE=${MODE:-deferred}
PATIENTS=${PATIENTS:-300}
ROUNDS=${ROUNDS:-8}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-3}
audit_bench_binary
append_mode
whole_numbers PATIENTS DURATION WARMUP ROUNDS
((DURATION >= 1 && DURATION <= 600 && ROUNDS >= 1 && ROUNDS <= 50 && PATIENTS >= 1)) || { echo "bad DURATION/ROUNDS/PATIENTS" >&2; exit 1; }

WORK=$(mktemp -d -t portico-audit-paired.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
export PORTICO_ADMIN_TOKEN=$TOKEN PATIENTS
unset PORTICO_DATABASE_URL

start() {  # start NAME ENV=VALUE… : prints the base URL once the server listens
  local name=$1 pid base
  shift
  env PORTICO_RATE_PER_IP=0 PORTICO_RATE_PER_CLIENT=0 PORTICO_DATA_DIR="$WORK/$name" PORTICO_LISTEN=127.0.0.1:0 "$@" \
    "$PORTICO_BIN" demo --patients "$PATIENTS" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null &
  pid=$!
  base=$(wait_listening "$WORK/$name.out" "$pid") || {
    kill "$pid" 2>/dev/null; tail -n 20 "$WORK/$name.err" >&2; echo "the $name server did not start" >&2; exit 1
  }
  echo "$pid $base"
}
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
requests() { awk '/requests in/ { print $1 }' "$1"; }

# Started one after the other: each imports the demo data first.
if [[ "${CONTROL:-0}" == 1 ]]; then
  LABEL=control OFF_ENV=(PORTICO_AUDIT_APPEND="$MODE")
else
  LABEL=off OFF_ENV=(PORTICO_BENCH_AUDIT_OFF=1)
fi
read -r OFF_PID OFF_URL < <(start off "${OFF_ENV[@]}") || true
[[ -n "${OFF_URL:-}" ]] || exit 1
PIDS=("$OFF_PID")
read -r ON_PID ON_URL < <(start on PORTICO_AUDIT_APPEND="$MODE") || true
[[ -n "${ON_URL:-}" ]] || exit 1
PIDS+=("$ON_PID")
# The imports' dirty pages would otherwise be written back during the measured rounds.
sync
load() {  # load SECONDS : both servers at once, each wrk's output in $WORK/{off,on}.wrk
  wrk -t1 -c8 -d"$1s" --timeout 10s -s "$ROOT/bench/read.lua" "$OFF_URL" >"$WORK/off.wrk" &
  local a=$!
  wrk -t1 -c8 -d"$1s" --timeout 10s -s "$ROOT/bench/read.lua" "$ON_URL" >"$WORK/on.wrk" &
  local b=$!
  wait "$a" "$b"
}
((WARMUP > 0)) && load "$WARMUP"

costs=()
for round in $(seq 1 "$ROUNDS"); do
  o0=$(cpu_of "$OFF_PID"); n0=$(cpu_of "$ON_PID")
  load "$DURATION"
  # Deferred records still queued are committed within the flush interval: count that too.
  sleep 0.5
  o1=$(cpu_of "$OFF_PID"); n1=$(cpu_of "$ON_PID")
  for f in off on; do
    grep -q 'Non-2xx' "$WORK/$f.wrk" && { echo "the $f server answered errors:" >&2; cat "$WORK/$f.wrk" >&2; exit 1; }
  done
  line=$(awk -v r="$round" -v m="$MODE" -v l="$LABEL" -v oc="$((${o1%.*} - ${o0%.*}))" -v nc="$((${n1%.*} - ${n0%.*}))" \
    -v on="$(requests "$WORK/off.wrk")" -v nn="$(requests "$WORK/on.wrk")" -v t="$(getconf CLK_TCK)" -v d="$DURATION" \
    'BEGIN { a = oc / t * 1e6 / on; b = nc / t * 1e6 / nn;
             printf "round %d: %s %6.0f req/s %6.1f us/request | %s %6.0f req/s %6.1f us/request | cost %5.1f %%\n",
                    r, l, on / d, a, m, nn / d, b, (1 - a / b) * 100 }')
  echo "$line"
  costs+=("$(grep -oE 'cost +-?[0-9.]+' <<<"$line" | awk '{ print $2 }')")
done
printf '%s\n' "${costs[@]}" | sort -g | awk -v m="$MODE" '{ c[NR] = $1 }
  END { med = (NR % 2) ? c[(NR + 1) / 2] : (c[NR / 2] + c[NR / 2 + 1]) / 2;
        printf "%s: audit cost median %.1f %% over %d rounds (min %.1f, max %.1f)\n", m, med, NR, c[1], c[NR] }'
