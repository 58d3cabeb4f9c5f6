# Helpers shared by the bench scripts (`source "$ROOT/bench/lib.sh"`).

# wait_listening OUT PID: print the base URL a starting `portico` wrote to OUT ("portico
# listening on …"), waiting up to 15 minutes (a demo import comes first); fail if PID exits
# before that.
wait_listening() {
  local out=$1 pid=$2 base="" i
  for i in $(seq 1 1800); do
    base=$(grep -oE '^portico listening on http://[^ ]+' "$out" 2>/dev/null | head -n 1 | sed 's/^portico listening on //; s#/$##' || true)
    [[ -n "$base" ]] && { echo "$base"; return 0; }
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

# whole_numbers VAR…: exit with a message unless each named variable holds a whole number.
whole_numbers() {
  local v
  for v in "$@"; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "$v must be a whole number" >&2; exit 1; }
  done
}

# audit_bench_binary: exit with a message unless PORTICO_BIN names an executable portico
# (built with --features bench-audit-off, which the audit benchmarks need).
audit_bench_binary() {
  [[ -x "${PORTICO_BIN:-}" ]] || { echo "PORTICO_BIN must name a portico binary built with --features bench-audit-off" >&2; exit 1; }
}

# append_mode: exit with a message unless MODE names an audit append mode.
append_mode() {
  [[ "$MODE" =~ ^(direct|batched|deferred)$ ]] || { echo "MODE must be direct, batched or deferred" >&2; exit 1; }
}

# one_server_scratch NAME: a scratch directory in $WORK and a random admin token in $TOKEN;
# at exit the server whose process id the script keeps in $PID (if any) is stopped and
# $WORK removed.
one_server_scratch() {
  WORK=$(mktemp -d -t "portico-$1.XXXXXX")
  PID=
  TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  trap one_server_cleanup EXIT
}
one_server_cleanup() {
  [[ -n "$PID" ]] && { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
