#!/usr/bin/env bash
# Latency of single writes, one after another: N `POST /fhir/Patient` on one keep-alive
# connection to a fresh `portico demo` server (SQLite, the configured durability), then the
# median, p90 and mean. Each write commits its transaction (and, on a SQLite file store,
# the audit file's, which chains its record) before it is answered, so this is the figure
# a change to the write path's commits moves. Compare two binaries by alternating runs.
#
#   PORTICO_BIN=target/release/portico bench/write_latency.sh
#   N=1000 PATIENTS=20 PORTICO_BIN=… bench/write_latency.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
source "$ROOT/bench/lib.sh"
N=${N:-400}
PATIENTS=${PATIENTS:-20}
[[ -x "${PORTICO_BIN:-}" ]] || { echo "PORTICO_BIN must name a portico binary" >&2; exit 1; }
whole_numbers N PATIENTS
((N >= 10 && N <= 100000 && PATIENTS >= 1)) || { echo "N must be 10..100000 and PATIENTS at least 1" >&2; exit 1; }

one_server_scratch write-latency
unset PORTICO_DATABASE_URL
PORTICO_ADMIN_TOKEN=$TOKEN PORTICO_RATE_PER_IP=0 PORTICO_RATE_PER_CLIENT=0 PORTICO_DATA_DIR="$WORK/data" \
  PORTICO_LISTEN=127.0.0.1:0 "$PORTICO_BIN" demo --patients "$PATIENTS" >"$WORK/out" 2>"$WORK/err" </dev/null &
PID=$!
BASE=$(wait_listening "$WORK/out" "$PID") || { tail -n 20 "$WORK/err" >&2; echo "the server did not start" >&2; exit 1; }

python3 - "$BASE" "$TOKEN" "$N" <<'PY'
import http.client, json, statistics, sys, time, urllib.parse

base, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
url = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(url.hostname, url.port)
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/fhir+json"}
body = json.dumps({"resourceType": "Patient", "name": [{"family": "WriteLatency"}]})
ms = []
for _ in range(n):
    start = time.perf_counter()
    conn.request("POST", "/fhir/Patient", body, headers)
    resp = conn.getresponse()
    resp.read()
    ms.append((time.perf_counter() - start) * 1000)
    if resp.status != 201:
        sys.exit(f"POST /fhir/Patient answered {resp.status}")
ms.sort()
print(f"writes {n}: median {ms[n // 2]:.2f} ms, p90 {ms[int(n * 0.9)]:.2f} ms, mean {statistics.mean(ms):.2f} ms")
PY
