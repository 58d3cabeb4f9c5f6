"""Rate limits, sign-in lockout and web-session timeouts, on a server of their own
(`throttled`: the default sign-in/token limit of 60 a minute per address with a burst
of 6, lockout after 3 failed sign-ins, sessions idle-expiring after 2 s)."""

from __future__ import annotations

import time

import pytest
import requests
from smart_helpers import TIMEOUT, PortalBrowser, parse_page


@pytest.fixture(scope="module")
def server(throttled):
    return throttled


def test_lockout_after_failed_sign_ins(server):
    user = next(u for u in server.users.values() if u.role == "clinician")
    br = PortalBrowser(server.base_url)
    page = br.get("/oauth2/login")
    for _ in range(2):
        page = br.login(page, user.username, "wrong-password")
        assert page.status_code == 401
    locked = br.login(page, user.username, "wrong-password")
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 60  # 15 minutes by default
    assert "Too many failed attempts" in parse_page(locked.text)[1]
    # The right password does not get through while locked.
    again = br.login(locked, user.username, user.password)
    assert again.status_code == 429
    assert "portico-session" not in again.headers.get("Set-Cookie", "")


def test_idle_session_expires(server):
    user = next(u for u in server.users.values() if u.role == "patient")
    br = PortalBrowser(server.base_url)
    r = br.login(br.get("/oauth2/login"), user.username, user.password)
    assert r.status_code == 200, r.text[:300]
    assert br.get("/api/portal/me").status_code == 200
    time.sleep(1.2)
    assert br.get("/api/portal/me").status_code == 200, "activity keeps the session alive"
    time.sleep(2.5)
    assert br.get("/api/portal/me").status_code == 401


def test_token_endpoint_is_rate_limited_per_address(server):
    statuses = []
    throttled = None
    for _ in range(30):
        r = requests.post(f"{server.base_url}/oauth2/token", data={"grant_type": "client_credentials"},
                          timeout=TIMEOUT)
        statuses.append(r.status_code)
        if r.status_code == 429:
            throttled = r
            break
    assert throttled is not None, f"no 429 after {len(statuses)} requests: {statuses}"
    assert statuses.count(401) >= 1, "requests under the limit reach the endpoint"
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.headers["Content-Type"].startswith("application/fhir+json")
    issue = throttled.json()["issue"][0]
    assert issue["code"] == "throttled"
    # Other paths have their own, larger allowance.
    assert requests.get(f"{server.base_url}/.well-known/smart-configuration", timeout=TIMEOUT).status_code == 200
