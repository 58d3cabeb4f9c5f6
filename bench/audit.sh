#!/usr/bin/env bash
# What the audit trail costs the read benchmark: bench/run.sh's `GET /fhir/Patient/{id}`
# figure with each audit append mode, interleaved round by round so that every ratio
# compares runs made minutes apart on the same machine (see ARCHITECTURE.md, "Audit trail").
#
#   PATIENTS=300 DURATION=15 WARMUP=3 bench/audit.sh
#   BACKEND=postgres PORTICO_DATABASE_URL=postgres://portico:portico@127.0.0.1:5432/portico_bench \
#     RESET_DB='su postgres -c "dropdb --if-exists portico_bench && createdb -O portico portico_bench"' \
#     bench/audit.sh
#
# Environment (defaults): MODES="off direct batched deferred" ROUNDS=2, plus bench/run.sh's own
#   (PATIENTS, DURATION, WARMUP, BACKEND, PORTICO_BIN, SKIP_BUILD …; the search figure is
#   skipped). RESET_DB: a command run before every run (PostgreSQL needs an empty database).
# "off" in MODES measures reads without their audit records: the script builds the server
# with the `bench-audit-off` feature (PORTICO_BENCH_AUDIT_OFF then drops read records; never
# a default, never shipped) into its own target dir and uses that one binary for every mode,
# so all figures come from one binary.
# Prints a markdown table: req/s, p50, p99 per run, and each mode's share of "off" when
# measured.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODES=${MODES:-off direct batched deferred}
ROUNDS=${ROUNDS:-2}
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && ((ROUNDS >= 1 && ROUNDS <= 10)) || { echo "ROUNDS must be 1..10" >&2; exit 1; }
for m in $MODES; do
  [[ "$m" =~ ^(off|direct|batched|deferred)$ ]] || { echo "unknown mode $m" >&2; exit 1; }
done
# Its own target dir: the feature must not leak into the release binary people run.
BENCH_TARGET_DIR=${BENCH_TARGET_DIR:-/var/tmp/portico-bench-target}
if [[ -z "${PORTICO_BIN:-}" && "${SKIP_BUILD:-}" != 1 ]]; then
  CARGO_TARGET_DIR=$BENCH_TARGET_DIR cargo build --release -p portico --features bench-audit-off >&2
fi
export SKIP_BUILD=1 SEARCH=0
export PORTICO_BIN="${PORTICO_BIN:-$BENCH_TARGET_DIR/release/portico}"

declare -A RPS=()
rows=""
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    if [[ -n "${RESET_DB:-}" ]]; then
      bash -c "$RESET_DB" >&2
    fi
    out=$(mktemp)
    if [[ "$mode" == off ]]; then
      PORTICO_BENCH_AUDIT_OFF=1 bench/run.sh >"$out"
    else
      PORTICO_AUDIT_APPEND=$mode bench/run.sh >"$out"
    fi
    line=$(grep -F '`GET /fhir/Patient/{id}`' "$out")
    rm -f "$out"
    rps=$(awk -F'|' '{ print $3 }' <<<"$line" | grep -oE '[0-9,]+' | head -n 1 | tr -d ,)
    p50=$(awk -F'|' '{ gsub(/ /, "", $4); print $4 }' <<<"$line")
    p99=$(awk -F'|' '{ gsub(/ /, "", $5); print $5 }' <<<"$line")
    RPS[$round,$mode]=$rps
    rows+="| $round | $mode | $rps | $p50 | $p99 |"$'\n'
    echo "[audit bench] round $round, $mode: $rps req/s (p50 $p50, p99 $p99)" >&2
  done
done

echo
echo "## audit append modes — ${BACKEND:-sqlite}, ${PATIENTS:-1000} patients, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores"
echo
echo "| round | mode | GET /fhir/Patient/{id} req/s | p50 | p99 |"
echo "|---|---|---|---|---|"
printf '%s' "$rows"
if [[ " $MODES " == *" off "* ]]; then
  echo
  echo "| round | mode | throughput vs off (same round) | cost |"
  echo "|---|---|---|---|"
  for round in $(seq 1 "$ROUNDS"); do
    off=${RPS[$round,off]}
    for mode in $MODES; do
      [[ "$mode" == off ]] && continue
      awk -v r="$round" -v m="$mode" -v a="${RPS[$round,$mode]}" -v o="$off" \
        'BEGIN { printf "| %s | %s | %.1f %% | %.1f %% |\n", r, m, 100 * a / o, 100 - 100 * a / o }'
    done
  done
fi
