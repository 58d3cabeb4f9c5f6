#!/usr/bin/env python3
"""A fixed number of `GET /fhir/Patient/{id}` reads over random demo patients (the requests
of bench/read.lua, but counted rather than timed), on keep-alive connections, one thread
each. Exits non-zero on any answer but 200.

    read_count.py BASE_URL REQUESTS CONNECTIONS PATIENTS   (token: PORTICO_ADMIN_TOKEN)
"""
import http.client
import os
import random
import sys
import threading
from urllib.parse import urlparse


def main() -> int:
    base, requests, connections, patients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    url = urlparse(base)
    headers = {"Authorization": "Bearer " + os.environ["PORTICO_ADMIN_TOKEN"], "Accept": "application/fhir+json"}
    failures = []

    def run(k: int, n: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        rnd = random.Random(k)
        for _ in range(n):
            conn.request("GET", "/fhir/Patient/pt-%05d" % rnd.randint(1, patients), headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                failures.append(answer.status)
                return

    share = [requests // connections + (1 if k < requests % connections else 0) for k in range(connections)]
    threads = [threading.Thread(target=run, args=(k, n)) for k, n in enumerate(share)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        print(f"answers other than 200: {failures[:5]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
