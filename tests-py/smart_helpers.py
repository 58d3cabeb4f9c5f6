"""Helpers for the SMART / OAuth suites: a cookie-keeping "browser" that fills in
portico's sign-in and approval forms exactly as docs/AUTH.md describes them, PKCE,
the operator CLI, and JWT utilities (PyJWT) for id_tokens and client assertions.

Nothing here follows a redirect to an app's redirect URI: the code is taken from the
`Location` header of portico's 303, as an app's callback would receive it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import time
import urllib.parse as up
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import requests

TIMEOUT = 30


# --------------------------------------------------------------------------- HTML forms


@dataclass
class Form:
    """One <form> of a page: its action, method and controls, in document order."""

    action: str
    method: str
    inputs: list[dict] = field(default_factory=list)  # attrs of <input>
    buttons: list[dict] = field(default_factory=list)  # attrs of <button>

    def hidden(self) -> dict[str, str]:
        return {a["name"]: a.get("value", "") for a in self.inputs if a.get("type") == "hidden"}

    def checked(self, kind: str) -> list[tuple[str, str]]:
        """(name, value) of the checkboxes or radios (`kind`) ticked by default."""
        return [(a["name"], a.get("value", "on")) for a in self.inputs if a.get("type") == kind and "checked" in a]

    def values_of(self, kind: str, name: str) -> list[str]:
        return [a.get("value", "") for a in self.inputs if a.get("type") == kind and a.get("name") == name]


class _FormParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.text: list[str] = []

        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag == "form":
            self.forms.append(Form(action=a.get("action", ""), method=a.get("method", "get").lower()))
        elif tag == "input" and self.forms:
            self.forms[-1].inputs.append(a)
        elif tag == "button" and self.forms:
            self.forms[-1].buttons.append(a)

    def handle_endtag(self, tag):
        if tag in ("style", "script", "title") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if data.strip() and not self._skip:
            self.text.append(data.strip())


def parse_page(html: str) -> tuple[list[Form], str]:
    """The forms of a page and its visible text (joined with spaces)."""
    p = _FormParser()
    p.feed(html)
    return p.forms, " ".join(p.text)


# --------------------------------------------------------------------------- PKCE / URLs


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def query_of(url: str) -> dict[str, str]:
    return dict(up.parse_qsl(up.urlsplit(url).query, keep_blank_values=True))


def authorize_url(base: str, client_id: str, redirect_uri: str, scope: str, challenge: str | None, **extra) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": uuid.uuid4().hex,
        "aud": f"{base}/fhir",
    }
    if challenge is not None:
        params["code_challenge"] = challenge
        params["code_challenge_method"] = "S256"
    params.update({k: v for k, v in extra.items() if v is not None})
    return f"{base}/oauth2/authorize?{up.urlencode(params)}"


# --------------------------------------------------------------------------- the "browser"


class PortalBrowser:
    """A user agent with a cookie jar that signs in and approves through portico's pages."""

    def __init__(self, base: str, user_agent: str | None = None):
        self.base = base.rstrip("/")
        self.http = requests.Session()
        if user_agent:
            self.http.headers["User-Agent"] = user_agent
        self.last: requests.Response | None = None

    def _abs(self, url: str) -> str:
        return up.urljoin(self.base + "/", url)

    def get(self, url: str) -> requests.Response:
        self.last = self.http.get(self._abs(url), allow_redirects=False, timeout=TIMEOUT)
        return self.last

    def post_form(self, url: str, data) -> requests.Response:
        self.last = self.http.post(self._abs(url), data=data, allow_redirects=False, timeout=TIMEOUT)
        return self.last

    def cookie(self, name: str) -> str | None:
        return self.http.cookies.get(name)

    # -- steps

    def open_authorize(self, url: str) -> requests.Response:
        """GET /oauth2/authorize: the login page (200), or a 303 to the approval page when
        already signed in, or an error page / error redirect."""
        return self.get(url)

    def login(self, page: requests.Response, username: str, password: str) -> requests.Response:
        """Fill in and submit the login form of `page` (fields csrf, req, username, password)."""
        forms, _ = parse_page(page.text)
        form = next(f for f in forms if f.action == "/oauth2/login")
        data = {**form.hidden(), "username": username, "password": password}
        return self.post_form(form.action, data)

    def approval_page(self, login_response: requests.Response) -> requests.Response:
        assert login_response.status_code == 303, (login_response.status_code, login_response.text[:500])
        loc = login_response.headers["Location"]
        assert loc.startswith("/oauth2/approve?req="), loc
        return self.get(loc)

    def approve(
        self,
        page: requests.Response,
        decision: str = "approve",
        keep_scopes=None,
        patient: str | None = None,
    ) -> requests.Response:
        """Submit the approval form of `page`: the hidden fields, the scope checkboxes left
        ticked (all by default, or those in `keep_scopes`), the patient radio (the default
        one unless `patient` is given) and the pressed button's `decision`."""
        forms, _ = parse_page(page.text)
        form = next(f for f in forms if f.action == "/oauth2/approve")
        data = list(form.hidden().items())
        for name, value in form.checked("checkbox"):
            if keep_scopes is None or value in keep_scopes:
                data.append((name, value))
        radios = form.values_of("radio", "patient")
        if radios:
            data.append(("patient", patient if patient is not None else form.checked("radio")[0][1]))
        data.append(("decision", decision))
        return self.post_form(form.action, data)

    def authorize_and_approve(self, url: str, username: str, password: str, **approve_kw) -> str:
        """The whole standalone flow from the authorize URL to the app's redirect (returned,
        not followed): login page, sign-in, approval page, approve."""
        page = self.open_authorize(url)
        assert page.status_code == 200, (page.status_code, page.headers.get("Location"), page.text[:500])
        approval = self.approval_page(self.login(page, username, password))
        assert approval.status_code == 200, approval.text[:500]
        done = self.approve(approval, **approve_kw)
        assert done.status_code == 303, (done.status_code, done.text[:500])
        return done.headers["Location"]


# --------------------------------------------------------------------------- token endpoint


def token_request(base: str, data: dict, auth=None) -> requests.Response:
    return requests.post(f"{base}/oauth2/token", data=data, auth=auth, timeout=TIMEOUT)


def exchange_code(base: str, client_id: str, redirect_uri: str, code: str, verifier: str) -> requests.Response:
    return token_request(
        base,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": client_id,
        },
    )


def jwt_claims_unverified(token: str) -> dict:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})


# --------------------------------------------------------------------------- operator CLI


@dataclass
class Cli:
    """`portico` subcommands against the running server's data dir (same SQLite file)."""

    binary: Path
    env: dict

    def run(self, *args: str, env_extra: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(self.env)
        env.update(env_extra or {})
        p = subprocess.run(
            [str(self.binary), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"portico {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def add_client(self, client_id: str, redirect_uri: str | None = None, scope: str | None = None, *extra: str):
        args = ["client", "add", "--id", client_id, "--name", f"Test app {client_id}"]
        if redirect_uri:
            args += ["--redirect-uri", redirect_uri]
        if scope:
            args += ["--scope", scope]
        return self.run(*args, *extra)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(pred, timeout: float = 5.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") in ("1", "true", "yes")


# --------------------------------------------------------------------------- TOTP


def totp_code(secret_b32: str, at: float | None = None) -> str:
    """RFC 6238 code (SHA-1, 6 digits, 30 s) — what an authenticator app shows."""
    import hmac
    import struct

    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // 30)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"
