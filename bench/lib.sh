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
