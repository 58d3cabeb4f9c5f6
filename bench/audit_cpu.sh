#!/usr/bin/env bash
# What the audit trail costs a read in CPU time rather than in req/s: on this shared 2-core VM
# the req/s of bench/audit.sh moves with other people's builds more than with the audit, while
# CPU time per request moves less. For each mode: start `portico demo`, warm up, run
# `wrk -t2 -c16` on `GET /fhir/Patient/{id}` and read the server's user + system time (and,
# on PostgreSQL, that of the database's backends) before and after. The database column only
# counts backends alive at both readings (a connection the pool replaced in between is lost),
# so it can come out wrong either way: treat it as indicative.
#
#   PORTICO_BIN=<release portico built with --features bench-audit-off> bench/audit_cpu.sh
#   MODES="off deferred flush250" ROUNDS=2 bench/audit_cpu.sh
#   BACKEND=postgres PORTICO_DATABASE_URL=postgres://… RESET_DB='…' bench/audit_cpu.sh
#
# Modes: off (PORTICO_BENCH_AUDIT_OFF=1), build (read records are built, then dropped:
# PORTICO_BENCH_AUDIT_BUILD_ONLY=1), direct, batched, deferred, flushN (deferred with
# PORTICO_AUDIT_FLUSH_MS=N). Environment (defaults): PATIENTS=300 DURATION=12 WARMUP=3
# ROUNDS=1 MODES="off deferred". RESET_DB: a command run before every run (PostgreSQL needs an
# empty database). BY_THREAD=1: also the server CPU per request by thread name (tokio workers,
# sqlx's one thread per SQLite connection — the busiest of those is the audit appender's).
# Prints one line per run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
source "$ROOT/bench/lib.sh"
PATIENTS=${PATIENTS:-300}
DURATION=${DURATION:-12}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-1}
MODES=${MODES:-off deferred}
BACKEND=${BACKEND:-sqlite}
audit_bench_binary
whole_numbers PATIENTS DURATION WARMUP ROUNDS
((DURATION >= 1 && DURATION <= 600 && ROUNDS >= 1 && ROUNDS <= 10 && PATIENTS >= 1)) || { echo "bad DURATION/ROUNDS/PATIENTS" >&2; exit 1; }
case "$BACKEND" in
  sqlite) unset PORTICO_DATABASE_URL ;;
  postgres) [[ "${PORTICO_DATABASE_URL:-}" == postgres* ]] || { echo "BACKEND=postgres needs PORTICO_DATABASE_URL" >&2; exit 1; } ;;
  *) echo "BACKEND must be sqlite or postgres" >&2; exit 1 ;;
esac

TCK=$(getconf CLK_TCK)
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU ticks of the database's backends (PostgreSQL), 0 on SQLite.
db_cpu() {
  [[ "$BACKEND" == postgres ]] || { echo 0; return; }
  local s=0 p
  for p in $(psql "$PORTICO_DATABASE_URL" -Atc "select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()" 2>/dev/null); do
    s=$((s + $(cpu_of "$p" | cut -d. -f1)))
  done
  echo "$s"
}

# "tid name ticks" for each thread of process $1 (digits dropped from the name, so sqlx's
# connection workers group together).
threads_of() {
  local f
  for f in /proc/"$1"/task/*/stat; do
    sed -E 's/^([0-9]+) \(([^)]*)\) /\1\t\2\t/' "$f" 2>/dev/null
  done | awk -F'\t' '{ split($3, a, " "); n = $2; gsub(/[0-9]+$/, "", n); gsub(/ /, "_", n); print $1, n, a[12] + a[13] }'
}

WORK=""
PID=""
cleanup() {
  if [[ -n "$PID" ]]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  [[ -n "$WORK" ]] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT

run() {  # run MODE
  local mode=$1
  local -a env=()
  case "$mode" in
    off) env=(PORTICO_BENCH_AUDIT_OFF=1) ;;
    build) env=(PORTICO_BENCH_AUDIT_BUILD_ONLY=1) ;;
    direct|batched|deferred) env=(PORTICO_AUDIT_APPEND="$mode") ;;
    flush[0-9]*) env=(PORTICO_AUDIT_APPEND=deferred PORTICO_AUDIT_FLUSH_MS="${mode#flush}") ;;
    *) echo "unknown mode $mode" >&2; exit 1 ;;
  esac
  [[ -n "${RESET_DB:-}" ]] && bash -c "$RESET_DB" >&2
  WORK=$(mktemp -d -t portico-audit-cpu.XXXXXX)
  local token
  token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  env PORTICO_RATE_PER_IP=0 PORTICO_RATE_PER_CLIENT=0 PORTICO_ADMIN_TOKEN="$token" \
    PORTICO_DATA_DIR="$WORK/data" PORTICO_LISTEN=127.0.0.1:0 "${env[@]}" \
    "$PORTICO_BIN" demo --patients "$PATIENTS" >"$WORK/out" 2>"$WORK/err" </dev/null &
  PID=$!
  local base
  base=$(wait_listening "$WORK/out" "$PID") || { tail -n 20 "$WORK/err" >&2; echo "the server did not start" >&2; exit 1; }
  export PORTICO_ADMIN_TOKEN=$token PATIENTS
  # The demo import's dirty pages would otherwise be written back during the measured run,
  # slowing the audit's own writes (and only theirs: off mode writes nothing).
  sync
  ((WARMUP > 0)) && wrk -t2 -c16 -d"${WARMUP}s" -s "$ROOT/bench/read.lua" "$base" >/dev/null
  local s0 d0 out s1 d1
  s0=$(cpu_of "$PID"); d0=$(db_cpu)
  local t0=""
  [[ -n "${BY_THREAD:-}" ]] && t0=$(threads_of "$PID")
  out=$(wrk -t2 -c16 -d"${DURATION}s" --timeout 10s -s "$ROOT/bench/read.lua" "$base")
  # Deferred records still queued are committed within the flush interval: count that too.
  sleep 0.5
  s1=$(cpu_of "$PID"); d1=$(db_cpu)
  awk -v m="$mode" -v b="$BACKEND" -v s="$((${s1%.*} - ${s0%.*}))" -v d="$((d1 - d0))" -v t="$TCK" \
    -v n="$(awk '/requests in/ { print $1 }' <<<"$out")" -v r="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")" \
    -v bad="$(awk '/Non-2xx/ { print $NF }' <<<"$out")" -v ld="$(cut -d' ' -f1 /proc/loadavg)" \
    'BEGIN { printf "%s %-10s %6d req/s  server CPU %6.1f us/request  database CPU %6.1f us/request  (non-2xx %d, load %s)\n",
             b, m, r, s / t * 1e6 / n, d / t * 1e6 / n, bad + 0, ld }'
  if [[ -n "${BY_THREAD:-}" ]]; then
    # Ticks during the run by thread name, and the busiest thread of each name. A thread that
    # started during the run counts from zero; one that ended is lost.
    awk -v t="$TCK" -v n="$(awk '/requests in/ { print $1 }' <<<"$out")" \
      'NR == FNR { before[$1] = $3; next }
       { x = $3 - before[$1]; d[$2] += x; if (x > top[$2]) top[$2] = x }
       END { for (k in d) if (d[k] > 0)
               printf "    %-16s %6.1f us/request (busiest thread %.1f)\n", k, d[k] / t * 1e6 / n, top[k] / t * 1e6 / n }' \
      <(echo "$t0") <(threads_of "$PID")
  fi
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
  PID=""
  rm -rf "$WORK"; WORK=""
}

for round in $(seq 1 "$ROUNDS"); do
  for m in $MODES; do run "$m"; done
done
