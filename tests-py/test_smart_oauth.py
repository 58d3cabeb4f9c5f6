"""portico's OAuth 2.0 / SMART App Launch authorization server, end to end over HTTP:
every behaviour docs/AUTH.md promises an integrator, checked against the running binary.

Tokens and id_tokens are checked with PyJWT against the server's own JWKS; client
assertions (private_key_jwt) are made with PyJWT + cryptography. Known server defects
were `xfail(strict=True)` with the exact request and response in the reason until fixed;
none is left.
"""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from smart_helpers import (
    TIMEOUT,
    PortalBrowser,
    authorize_url,
    exchange_code,
    jwt_claims_unverified,
    parse_page,
    pkce_pair,
    query_of,
    token_request,
    totp_code,
    unique,
)

REDIRECT = "http://127.0.0.1:9/callback"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def app(smart) -> str:
    cid = unique("public")
    smart.cli.add_client(cid, REDIRECT)
    return cid


@pytest.fixture(scope="module")
def other_app(smart) -> str:
    cid = unique("other")
    smart.cli.add_client(cid, REDIRECT)
    return cid


@pytest.fixture(scope="module")
def confidential(smart) -> tuple[str, str]:
    cid = unique("confidential")
    out = smart.cli.run(
        "client", "add", "--id", cid, "--name", "Confidential", "--redirect-uri", REDIRECT, "--secret"
    ).stdout
    secret = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("client_secret"))
    return cid, secret.strip()


@pytest.fixture
def new_patient_user(smart):
    """A fresh patient user (no TOTP) linked to the second demo patient, for tests that
    change or end things."""

    def make(password: str = "correct-horse-battery-1"):
        username = unique("user").lower()
        patient = sorted(u.patient for u in smart.users.values() if u.patient)[1]
        smart.cli.run(
            "user", "add", "--username", username, "--role", "patient", "--patient", patient,
            env_extra={"PORTICO_NEW_PASSWORD": password},
        )
        return username, password, patient

    return make


def flow(smart, client_id: str, username: str, password: str, scope: str, browser=None, **approve_kw):
    """Authorize → sign in → approve; returns (browser, verifier, redirect query)."""
    verifier, challenge = pkce_pair()
    br = browser or PortalBrowser(smart.base_url)
    url = authorize_url(smart.base_url, client_id, REDIRECT, scope, challenge)
    if browser is not None and br.cookie("portico-session"):
        first = br.open_authorize(url)
        assert first.status_code == 303, first.text[:300]
        done = br.approve(br.get(first.headers["Location"]), **approve_kw)
        loc = done.headers["Location"]
    else:
        loc = br.authorize_and_approve(url, username, password, **approve_kw)
    assert loc.startswith(REDIRECT + "?"), loc
    return br, verifier, query_of(loc)


def tokens(smart, client_id: str, user, scope: str, **kw) -> dict:
    """A token response for `user` (None with a signed-in `browser=`)."""
    username, password = (user.username, user.password) if user is not None else (None, None)
    _, verifier, q = flow(smart, client_id, username, password, scope, **kw)
    r = exchange_code(smart.base_url, client_id, REDIRECT, q["code"], verifier)
    assert r.status_code == 200, r.text
    return r.json()


def fhir(smart, path: str, token: str) -> requests.Response:
    return requests.get(
        f"{smart.fhir_url}/{path}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
        timeout=TIMEOUT,
    )


def admin(smart, path: str) -> dict:
    r = fhir(smart, path, smart.token)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def patient_user(smart, i: int = 0):
    return sorted((u for u in smart.users.values() if u.role == "patient"), key=lambda u: u.patient)[i]


# --------------------------------------------------------------------------- discovery


def test_discovery_documents_agree(smart):
    root = requests.get(f"{smart.base_url}/.well-known/smart-configuration", timeout=TIMEOUT)
    under_fhir = requests.get(f"{smart.fhir_url}/.well-known/smart-configuration", timeout=TIMEOUT)
    assert root.status_code == under_fhir.status_code == 200
    doc = root.json()
    assert doc == under_fhir.json()
    b = smart.base_url
    assert doc["issuer"] == smart.fhir_url
    assert doc["authorization_endpoint"] == f"{b}/oauth2/authorize"
    assert doc["token_endpoint"] == f"{b}/oauth2/token"
    assert doc["revocation_endpoint"] == f"{b}/oauth2/revoke"
    assert doc["introspection_endpoint"] == f"{b}/oauth2/introspect"
    assert doc["userinfo_endpoint"] == f"{b}/oauth2/userinfo"
    assert doc["jwks_uri"] == f"{b}/oauth2/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    for cap in ("launch-standalone", "launch-ehr", "client-public", "client-confidential-asymmetric",
                "context-standalone-patient", "permission-v1", "permission-v2", "sso-openid-connect"):
        assert cap in doc["capabilities"]
    assert "registration_endpoint" not in doc  # dynamic registration is off by default
    oidc = requests.get(f"{b}/.well-known/openid-configuration", timeout=TIMEOUT).json()
    assert oidc == doc

    cs = requests.get(f"{smart.fhir_url}/metadata", timeout=TIMEOUT).json()
    ext = cs["rest"][0]["security"]["extension"][0]
    assert ext["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris == {
        "authorize": f"{b}/oauth2/authorize",
        "token": f"{b}/oauth2/token",
        "revoke": f"{b}/oauth2/revoke",
        "introspect": f"{b}/oauth2/introspect",
        "userinfo": f"{b}/oauth2/userinfo",
    }


def test_id_token_verifies_against_the_jwks(smart, app):
    user = patient_user(smart)
    nonce = uuid.uuid4().hex
    verifier, challenge = pkce_pair()
    br = PortalBrowser(smart.base_url)
    url = authorize_url(smart.base_url, app, REDIRECT, "launch/patient openid fhirUser patient/*.rs", challenge,
                        nonce=nonce)
    q = query_of(br.authorize_and_approve(url, user.username, user.password))
    t = exchange_code(smart.base_url, app, REDIRECT, q["code"], verifier).json()
    jwks = jwt.PyJWKClient(f"{smart.base_url}/oauth2/jwks")
    key = jwks.get_signing_key_from_jwt(t["id_token"])
    assert jwt.get_unverified_header(t["id_token"])["alg"] == "RS256"
    claims = jwt.decode(t["id_token"], key.key, algorithms=["RS256"], audience=app, issuer=smart.fhir_url)
    assert claims["fhirUser"] == f"{smart.fhir_url}/Patient/{user.patient}" == t["fhirUser"]
    assert claims["nonce"] == nonce
    assert claims["preferred_username"] == user.username
    assert claims["amr"] == ["pwd"] and "acr" not in claims
    assert claims["exp"] - claims["iat"] == t["expires_in"] == 900
    assert "refresh_token" not in t, "no offline_access/online_access: no refresh token"


# --------------------------------------------------------------------------- /oauth2/authorize


@pytest.mark.parametrize(
    "change, error",
    [
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"aud": "https://elsewhere.example/fhir"}, "invalid_request"),
        ({"aud": None}, "invalid_request"),
        ({"response_type": "token"}, "invalid_request"),
        ({"scope": "openid fhirUser"}, "invalid_scope"),
        ({"scope": "patient/Observation.rs?code=1234-5"}, "invalid_scope"),
        ({"scope": "patient/observation.rs"}, "invalid_scope"),
        ({"scope": "system/*.rs"}, "invalid_scope"),  # not in the client's registration
    ],
)
def test_bad_requests_go_back_to_the_app_with_an_error(smart, app, change, error):
    _, challenge = pkce_pair()
    url = authorize_url(smart.base_url, app, REDIRECT, "patient/*.rs", challenge)
    parts = requests.models.PreparedRequest()
    q = query_of(url)
    for k, v in change.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = v
    parts.prepare_url(f"{smart.base_url}/oauth2/authorize", q)
    r = requests.get(parts.url, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 303, r.text[:300]
    back = query_of(r.headers["Location"])
    assert r.headers["Location"].startswith(REDIRECT + "?")
    assert back["error"] == error, back
    assert back["state"] == q["state"]
    assert back["error_description"]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"redirect_uri": "http://127.0.0.1:9/other"}, "has not registered"),
        ({"redirect_uri": REDIRECT + "/"}, "has not registered"),  # exact match only
        ({"redirect_uri": None}, "redirect_uri is missing"),
        ({"client_id": "no-such-client"}, "not registered"),
        ({"client_id": None}, "client_id is missing"),
    ],
)
def test_untrusted_client_or_redirect_shows_an_error_page(smart, app, change, words):
    _, challenge = pkce_pair()
    q = query_of(authorize_url(smart.base_url, app, REDIRECT, "patient/*.rs", challenge))
    for k, v in change.items():
        if v is None:
            q.pop(k)
        else:
            q[k] = v
    r = requests.get(f"{smart.base_url}/oauth2/authorize", params=q, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 400
    assert "Location" not in r.headers
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    _, text = parse_page(r.text)
    assert "This request cannot continue" in text and words in text


def test_repeated_parameter_is_an_error_page(smart, app):
    _, challenge = pkce_pair()
    url = authorize_url(smart.base_url, app, REDIRECT, "patient/*.rs", challenge) + "&state=again"
    r = requests.get(url, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 400 and "Location" not in r.headers
    assert "given more than once" in r.text


# --------------------------------------------------------------------------- login page


def test_login_page_cookies_headers_and_fields(smart, app):
    _, challenge = pkce_pair()
    br = PortalBrowser(smart.base_url)
    page = br.open_authorize(authorize_url(smart.base_url, app, REDIRECT, "patient/*.rs", challenge))
    assert page.status_code == 200
    h = page.headers
    assert h["Cache-Control"] == "no-store"
    assert h["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert h["Referrer-Policy"] == "no-referrer"
    set_cookie = h["Set-Cookie"]
    assert set_cookie.startswith("portico-login=")
    for attr in ("Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=3600"):
        assert attr in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP
    forms, text = parse_page(page.text)
    (form,) = forms
    assert form.action == "/oauth2/login" and form.method == "post"
    names = [(a.get("type"), a.get("name")) for a in form.inputs]
    assert names == [("hidden", "csrf"), ("hidden", "req"), ("text", "username"), ("password", "password")]
    assert form.hidden()["csrf"] == br.cookie("portico-login")
    assert form.hidden()["req"]
    assert f"Test app {app}" in text


def test_login_csrf_is_double_submit(smart, app):
    user = patient_user(smart)
    _, challenge = pkce_pair()
    br = PortalBrowser(smart.base_url)
    page = br.open_authorize(authorize_url(smart.base_url, app, REDIRECT, "patient/*.rs", challenge))
    form = parse_page(page.text)[0][0]
    data = {**form.hidden(), "username": user.username, "password": user.password}
    # A wrong csrf field.
    r = br.post_form("/oauth2/login", {**data, "csrf": "x" * 43})
    assert r.status_code == 403 and "expired" in r.text
    # The right field without the cookie (another browser).
    r = requests.post(f"{smart.base_url}/oauth2/login", data=data, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 403
    assert "portico-session" not in r.headers.get("Set-Cookie", "")


def test_wrong_password_shows_the_login_page_again(smart, app):
    user = patient_user(smart)
    _, challenge = pkce_pair()
    br = PortalBrowser(smart.base_url)
    page = br.open_authorize(authorize_url(smart.base_url, app, REDIRECT, "patient/*.rs", challenge))
    req = parse_page(page.text)[0][0].hidden()["req"]
    r = br.login(page, user.username, "not-the-password")
    assert r.status_code == 401
    forms, text = parse_page(r.text)
    assert "The username or password is not right." in text
    assert forms[0].hidden()["req"] == req, "the pending request survives a failed sign-in"
    assert forms[0].hidden()["csrf"] == br.cookie("portico-login"), "a fresh double-submit pair"
    # …and the next attempt with the right password continues to the approval page.
    r = br.login(r, user.username, user.password)
    assert r.status_code == 303 and r.headers["Location"].startswith("/oauth2/approve?req=")


def test_successful_login_sets_the_session_cookie(smart, app):
    user = patient_user(smart)
    _, challenge = pkce_pair()
    br = PortalBrowser(smart.base_url)
    page = br.open_authorize(authorize_url(smart.base_url, app, REDIRECT, "patient/*.rs", challenge))
    r = br.login(page, user.username.upper(), user.password)  # usernames are case-insensitive
    assert r.status_code == 303
    cookies = r.raw.headers.getlist("Set-Cookie")
    session = next(c for c in cookies if c.startswith("portico-session="))
    for attr in ("Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=43200"):
        assert attr in session
    assert any(c.startswith("portico-login=;") and "Max-Age=0" in c for c in cookies)
    # Signed in: the next authorization request skips the login page.
    _, challenge = pkce_pair()
    again = br.open_authorize(authorize_url(smart.base_url, app, REDIRECT, "patient/*.rs", challenge))
    assert again.status_code == 303 and again.headers["Location"].startswith("/oauth2/approve?req=")


def test_portal_sign_in_without_a_request(smart):
    user = patient_user(smart)
    br = PortalBrowser(smart.base_url)
    page = br.get("/oauth2/login")
    assert page.status_code == 200
    assert parse_page(page.text)[0][0].hidden()["req"] == ""
    r = br.login(page, user.username, user.password)
    assert r.status_code == 200 and "Signed in" in r.text
    me = br.get("/api/portal/me").json()
    assert me["username"] == user.username and me["role"] == "patient"


# --------------------------------------------------------------------------- approval page


def test_approval_page_lists_each_scope_as_a_ticked_box(smart, app):
    user = patient_user(smart)
    _, challenge = pkce_pair()
    br = PortalBrowser(smart.base_url)
    scope = "launch/patient openid fhirUser offline_access patient/Observation.rs patient/Condition.read"
    page = br.open_authorize(authorize_url(smart.base_url, app, REDIRECT, scope, challenge))
    approval = br.approval_page(br.login(page, user.username, user.password))
    forms, text = parse_page(approval.text)
    (form,) = forms
    assert form.action == "/oauth2/approve" and form.method == "post"
    assert set(form.hidden()) == {"csrf", "req"}
    assert form.hidden()["csrf"] == br.get("/api/portal/me").json()["csrf"], "the session's CSRF token"
    # openid and fhirUser share one box whose value holds both tokens.
    assert form.values_of("checkbox", "scope") == [
        "launch/patient", "openid fhirUser", "offline_access", "patient/Observation.rs", "patient/Condition.read"
    ]
    assert [v for _, v in form.checked("checkbox")] == form.values_of("checkbox", "scope")
    assert form.values_of("radio", "patient") == [], "a patient user is not asked whose record"
    assert [(b["name"], b["value"]) for b in form.buttons] == [("decision", "approve"), ("decision", "deny")]
    assert "Know who you are" in text


def test_unticked_scopes_are_not_granted(smart, app):
    user = patient_user(smart)
    t = tokens(smart, app, user, "launch/patient openid fhirUser offline_access patient/*.rs",
               keep_scopes={"patient/*.rs"})
    assert t["scope"] == "patient/*.rs"
    assert "refresh_token" not in t and "id_token" not in t and "fhirUser" not in t
    assert t["patient"] == user.patient, "a patient/ scope fixes the patient context even without launch/patient"


def test_unticking_every_data_scope_is_access_denied(smart, app):
    user = patient_user(smart)
    _, _, q = flow(smart, app, user.username, user.password, "openid fhirUser patient/*.rs",
                   keep_scopes={"openid fhirUser"})
    assert q["error"] == "access_denied"
    assert "No access was chosen" in q["error_description"]


def test_deny_goes_back_with_access_denied(smart, app):
    user = patient_user(smart)
    _, _, q = flow(smart, app, user.username, user.password, "patient/*.rs", decision="deny")
    assert q["error"] == "access_denied" and q["state"]
    assert "code" not in q


def test_approval_needs_the_session_csrf_token(smart, app):
    user = patient_user(smart)
    _, challenge = pkce_pair()
    br = PortalBrowser(smart.base_url)
    page = br.open_authorize(authorize_url(smart.base_url, app, REDIRECT, "patient/*.rs", challenge))
    approval = br.approval_page(br.login(page, user.username, user.password))
    form = parse_page(approval.text)[0][0]
    data = {**form.hidden(), "csrf": "forged", "scope": "patient/*.rs", "decision": "approve"}
    r = br.post_form("/oauth2/approve", data)
    assert r.status_code == 403 and "Location" not in r.headers
    # Without a session at all.
    r = requests.post(f"{smart.base_url}/oauth2/approve", data={**data, "csrf": form.hidden()["csrf"]},
                      allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 401 and "Location" not in r.headers


def test_caregiver_chooses_whose_record(smart, app):
    carer = smart.first("caregiver")
    assert len(carer.related_to) >= 2
    _, challenge = pkce_pair()
    br = PortalBrowser(smart.base_url)
    page = br.open_authorize(authorize_url(smart.base_url, app, REDIRECT, "launch/patient patient/*.rs", challenge))
    approval = br.approval_page(br.login(page, carer.username, carer.password))
    form = parse_page(approval.text)[0][0]
    assert form.values_of("radio", "patient") == list(carer.related_to)
    assert form.checked("radio") == [("patient", carer.related_to[0])], "the first is preselected"

    chosen, other = carer.related_to[1], carer.related_to[0]
    t = tokens(smart, app, carer, "launch/patient fhirUser patient/*.rs", patient=chosen)
    assert t["patient"] == chosen
    assert t["need_patient_banner"] is True
    assert t["fhirUser"].startswith(f"{smart.fhir_url}/RelatedPerson/")
    assert fhir(smart, f"Patient/{chosen}", t["access_token"]).status_code == 200
    assert fhir(smart, f"Patient/{other}", t["access_token"]).status_code == 404
    bundle = fhir(smart, "Observation?_count=100", t["access_token"]).json()
    assert {e["resource"]["subject"]["reference"] for e in bundle.get("entry", [])} <= {f"Patient/{chosen}"}


def test_caregiver_cannot_choose_an_unlinked_patient(smart, app):
    carer = smart.first("caregiver")
    stranger = next(u.patient for u in smart.users.values() if u.patient and u.patient not in carer.related_to)
    _, _, q = flow(smart, app, carer.username, carer.password, "launch/patient patient/*.rs", patient=stranger)
    assert q["error"] == "access_denied"


# --------------------------------------------------------------------------- /oauth2/token


def test_code_exchange_response(smart, app):
    user = patient_user(smart)
    _, verifier, q = flow(smart, app, user.username, user.password,
                          "launch/patient openid fhirUser offline_access patient/*.rs")
    r = exchange_code(smart.base_url, app, REDIRECT, q["code"], verifier)
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    t = r.json()
    assert set(t) == {"access_token", "token_type", "expires_in", "scope", "refresh_token", "id_token",
                      "patient", "fhirUser"}
    assert t["token_type"] == "Bearer" and t["expires_in"] == 900
    assert t["patient"] == user.patient
    assert "need_patient_banner" not in t, "false is omitted"
    assert fhir(smart, f"Patient/{user.patient}", t["access_token"]).status_code == 200


def test_code_is_single_use_and_replay_revokes_the_grant(smart, app):
    user = patient_user(smart)
    _, verifier, q = flow(smart, app, user.username, user.password, "patient/*.rs")
    first = exchange_code(smart.base_url, app, REDIRECT, q["code"], verifier)
    assert first.status_code == 200
    replay = exchange_code(smart.base_url, app, REDIRECT, q["code"], verifier)
    assert replay.status_code == 400
    assert replay.json() == {
        "error": "invalid_grant",
        "error_description": "The authorization code is invalid, expired or already used.",
    }
    r = fhir(smart, f"Patient/{user.patient}", first.json()["access_token"])
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="portico", error="invalid_token"'


@pytest.mark.parametrize("what", ["verifier", "no verifier", "redirect_uri", "client"])
def test_code_is_bound_and_a_mismatch_consumes_it(smart, app, other_app, what):
    user = patient_user(smart)
    _, verifier, q = flow(smart, app, user.username, user.password, "patient/*.rs")
    args = {"client_id": app, "redirect_uri": REDIRECT, "verifier": verifier}
    if what == "verifier":
        args["verifier"] = pkce_pair()[0]
    elif what == "no verifier":
        bad = token_request(smart.base_url, {"grant_type": "authorization_code", "code": q["code"],
                                             "redirect_uri": REDIRECT, "client_id": app})
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant", bad.text
        good = exchange_code(smart.base_url, app, REDIRECT, q["code"], verifier)
        assert good.status_code == 400, "the failed attempt used the code up"
        return
    elif what == "redirect_uri":
        args["redirect_uri"] = REDIRECT + "?x=1"
    else:
        args["client_id"] = other_app
    bad = exchange_code(smart.base_url, args["client_id"], args["redirect_uri"], q["code"], args["verifier"])
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    good = exchange_code(smart.base_url, app, REDIRECT, q["code"], verifier)
    assert good.status_code == 400, "the failed attempt used the code up"


def test_token_endpoint_errors(smart, app):
    b = smart.base_url
    r = token_request(b, {"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT,
                          "code_verifier": "y"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["WWW-Authenticate"] == 'Basic realm="portico"'
    r = token_request(b, {"grant_type": "password", "client_id": app})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = token_request(b, {"client_id": app})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = token_request(b, {"grant_type": "authorization_code", "client_id": app, "code": "x"})
    assert r.status_code == 400 and r.json()["error_description"] == "redirect_uri is required"
    r = requests.post(f"{b}/oauth2/token", data="grant_type=a&grant_type=b&client_id=" + app,
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=TIMEOUT)
    assert r.status_code == 400 and "more than once" in r.json()["error_description"]
    # A public client presenting a secret is not authenticated.
    r = token_request(b, {"grant_type": "refresh_token", "refresh_token": "x", "client_id": app,
                          "client_secret": "s"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_confidential_client_authenticates_with_its_secret(smart, confidential):
    cid, secret = confidential
    user = patient_user(smart)
    _, verifier, q = flow(smart, cid, user.username, user.password, "patient/*.rs offline_access")
    form = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier}
    r = token_request(smart.base_url, {**form, "client_id": cid})
    assert r.status_code == 401, "a confidential client cannot act as a public one"
    _, verifier, q = flow(smart, cid, user.username, user.password, "patient/*.rs offline_access")
    form.update(code=q["code"], code_verifier=verifier)
    r = token_request(smart.base_url, form, auth=(cid, secret))  # client_secret_basic
    assert r.status_code == 200, r.text
    refresh = r.json()["refresh_token"]
    r = token_request(smart.base_url, {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": cid,
                                       "client_secret": secret})  # client_secret_post
    assert r.status_code == 200, r.text
    r = token_request(smart.base_url, {"grant_type": "refresh_token", "refresh_token": r.json()["refresh_token"]},
                      auth=(cid, "wrong"))
    assert r.status_code == 401


# --------------------------------------------------------------------------- refresh


def _refresh(smart, client_id, refresh_token, **extra):
    return token_request(smart.base_url, {"grant_type": "refresh_token", "refresh_token": refresh_token,
                                          "client_id": client_id, **extra})


def test_refresh_rotates_and_reuse_revokes_the_family(smart, app):
    user = patient_user(smart)
    t0 = tokens(smart, app, user, "launch/patient openid fhirUser offline_access patient/*.rs")
    r = _refresh(smart, app, t0["refresh_token"])
    assert r.status_code == 200, r.text
    t1 = r.json()
    assert t1["refresh_token"] != t0["refresh_token"] and t1["access_token"] != t0["access_token"]
    assert t1["patient"] == user.patient and t1["scope"] == t0["scope"] and "id_token" in t1
    # Within the grace window (1 s here) a reuse is taken for a concurrent refresh:
    # refused, but nothing is revoked.
    r = _refresh(smart, app, t0["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert fhir(smart, f"Patient/{user.patient}", t1["access_token"]).status_code == 200
    # After it, reuse means theft: the whole grant ends.
    time.sleep(1.2)
    r = _refresh(smart, app, t0["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert fhir(smart, f"Patient/{user.patient}", t1["access_token"]).status_code == 401
    assert _refresh(smart, app, t1["refresh_token"]).status_code == 400


def test_refresh_cannot_widen_scope_or_cross_clients(smart, app, other_app):
    user = patient_user(smart)
    t = tokens(smart, app, user, "offline_access patient/Observation.rs")
    r = _refresh(smart, app, t["refresh_token"], scope="offline_access patient/*.rs")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = _refresh(smart, other_app, t["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert _refresh(smart, app, t["refresh_token"]).status_code == 200, "the failed attempts spent nothing"


def test_online_access_also_gets_a_refresh_token(smart, app):
    t = tokens(smart, app, patient_user(smart), "online_access patient/*.rs")
    assert t["refresh_token"]
    assert _refresh(smart, app, t["refresh_token"]).status_code == 200


def test_public_client_refresh_without_client_id(smart, app):
    t = tokens(smart, app, patient_user(smart), "offline_access patient/*.rs")
    r = token_request(smart.base_url, {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]})
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- revoke / introspect / userinfo


def test_revoking_a_refresh_token_ends_the_grant(smart, app, other_app):
    user = patient_user(smart)
    t = tokens(smart, app, user, "offline_access patient/*.rs")
    # Another client's revocation is answered 200 and does nothing.
    r = requests.post(f"{smart.base_url}/oauth2/revoke", data={"token": t["refresh_token"], "client_id": other_app},
                      timeout=TIMEOUT)
    assert r.status_code == 200
    assert fhir(smart, f"Patient/{user.patient}", t["access_token"]).status_code == 200
    r = requests.post(f"{smart.base_url}/oauth2/revoke", data={"token": t["refresh_token"], "client_id": app},
                      timeout=TIMEOUT)
    assert r.status_code == 200 and r.text == ""
    assert r.headers["Cache-Control"] == "no-store"
    assert fhir(smart, f"Patient/{user.patient}", t["access_token"]).status_code == 401
    assert _refresh(smart, app, t["refresh_token"]).status_code == 400
    # Unknown tokens: 200 too.
    r = requests.post(f"{smart.base_url}/oauth2/revoke", data={"token": "nonsense", "client_id": app},
                      timeout=TIMEOUT)
    assert r.status_code == 200
    # Without client authentication: 401.
    r = requests.post(f"{smart.base_url}/oauth2/revoke", data={"token": "nonsense"}, timeout=TIMEOUT)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_revoking_an_access_token_ends_only_it(smart, app):
    user = patient_user(smart)
    t = tokens(smart, app, user, "offline_access patient/*.rs")
    r = requests.post(f"{smart.base_url}/oauth2/revoke", data={"token": t["access_token"], "client_id": app},
                      timeout=TIMEOUT)
    assert r.status_code == 200
    assert fhir(smart, f"Patient/{user.patient}", t["access_token"]).status_code == 401
    r = _refresh(smart, app, t["refresh_token"])
    assert r.status_code == 200
    assert fhir(smart, f"Patient/{user.patient}", r.json()["access_token"]).status_code == 200


def test_introspection(smart, app, other_app):
    user = patient_user(smart)
    t = tokens(smart, app, user, "launch/patient fhirUser patient/*.rs")
    url = f"{smart.base_url}/oauth2/introspect"
    as_operator = requests.post(url, data={"token": t["access_token"]},
                                headers={"Authorization": smart.auth_header}, timeout=TIMEOUT)
    assert as_operator.status_code == 200
    v = as_operator.json()
    assert v["active"] is True and v["client_id"] == app and v["scope"] == t["scope"]
    assert v["token_type"] == "Bearer" and v["patient"] == user.patient
    assert v["username"] == user.username and v["sub"]
    assert v["fhirUser"] == f"Patient/{user.patient}"  # relative here (absolute in the token response)
    assert isinstance(v["exp"], int) and isinstance(v["iat"], int)
    as_client = requests.post(url, data={"token": t["access_token"], "client_id": app}, timeout=TIMEOUT).json()
    assert as_client == v
    as_other = requests.post(url, data={"token": t["access_token"], "client_id": other_app}, timeout=TIMEOUT)
    assert as_other.json() == {"active": False}
    assert requests.post(url, data={"token": "nope", "client_id": app}, timeout=TIMEOUT).json() == {"active": False}
    anonymous = requests.post(url, data={"token": t["access_token"]}, timeout=TIMEOUT)
    assert anonymous.status_code == 401


def test_userinfo(smart, app):
    user = patient_user(smart)
    t = tokens(smart, app, user, "openid fhirUser patient/*.rs")
    for method in ("GET", "POST"):
        r = requests.request(method, f"{smart.base_url}/oauth2/userinfo",
                             headers={"Authorization": f"Bearer {t['access_token']}"}, timeout=TIMEOUT)
        assert r.status_code == 200
        info = r.json()
        assert info["preferred_username"] == user.username and info["sub"]
        assert info["fhirUser"] == f"{smart.fhir_url}/Patient/{user.patient}"
    no_openid = tokens(smart, app, user, "patient/*.rs")
    r = requests.get(f"{smart.base_url}/oauth2/userinfo",
                     headers={"Authorization": f"Bearer {no_openid['access_token']}"}, timeout=TIMEOUT)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"


# --------------------------------------------------------------------------- scopes at the FHIR API


def test_category_narrowed_scope(smart, app):
    user = patient_user(smart)
    t = tokens(smart, app, user, "launch/patient patient/Observation.rs?category=laboratory")
    assert t["scope"] == "launch/patient patient/Observation.rs?category=laboratory"
    got = fhir(smart, "Observation?_count=500", t["access_token"]).json()
    cats = {c["code"] for e in got.get("entry", []) for cat in e["resource"].get("category", [])
            for c in cat.get("coding", [])}
    assert got.get("entry") and cats == {"laboratory"}
    labs = admin(smart, f"Observation?patient={user.patient}&category=laboratory&_summary=count")["total"]
    assert len(got["entry"]) == labs
    vitals = admin(smart, f"Observation?patient={user.patient}&category=vital-signs&_count=1")["entry"]
    vital_id = vitals[0]["resource"]["id"]
    assert fhir(smart, f"Observation/{vital_id}", t["access_token"]).status_code == 404
    lab_id = got["entry"][0]["resource"]["id"]
    assert fhir(smart, f"Observation/{lab_id}", t["access_token"]).status_code == 200
    # Other types are outside the scope altogether.
    assert fhir(smart, f"Patient/{user.patient}", t["access_token"]).status_code in (403, 404)
    assert fhir(smart, "Condition", t["access_token"]).status_code == 403


def test_v2_letters_read_without_search(smart, app):
    user = patient_user(smart)
    t = tokens(smart, app, user, "launch/patient patient/Patient.r")
    assert fhir(smart, f"Patient/{user.patient}", t["access_token"]).status_code == 200
    assert fhir(smart, "Patient", t["access_token"]).status_code == 403


def test_write_needs_a_write_scope(smart, app):
    user = patient_user(smart)
    t = tokens(smart, app, user, "launch/patient patient/*.rs")
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": f"Patient/{user.patient}"}}
    r = requests.post(f"{smart.fhir_url}/Observation", json=body, timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {t['access_token']}",
                               "Content-Type": "application/fhir+json"})
    assert r.status_code == 403, r.text


# --------------------------------------------------------------------------- backend services


def _jwks_client(smart):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    rj = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    rj.update(kid="rsa-1", alg="RS384", use="sig")
    ej = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    ej.update(kid="ec-1", alg="ES384", use="sig")
    path = smart.data_dir.parent / f"jwks-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps({"keys": [rj, ej]}))
    cid = unique("backend")
    smart.cli.run("client", "add", "--id", cid, "--name", "Backend", "--scope", "system/*.rs", "--jwks", str(path))
    return cid, {"RS384": (rsa_key, "rsa-1"), "ES384": (ec_key, "ec-1")}


def _assertion(smart, cid, key, alg, kid, **claims):
    now = int(time.time())
    body = {"iss": cid, "sub": cid, "aud": f"{smart.base_url}/oauth2/token", "exp": now + 240, "iat": now,
            "jti": uuid.uuid4().hex}
    body.update(claims)
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


@pytest.fixture(scope="module")
def backend(smart):
    return _jwks_client(smart)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_client_credentials_with_private_key_jwt(smart, backend, alg):
    cid, keys = backend
    key, kid = keys[alg]
    form = {"grant_type": "client_credentials", "scope": "system/Observation.rs",
            "client_assertion_type": JWT_BEARER, "client_assertion": _assertion(smart, cid, key, alg, kid)}
    r = token_request(smart.base_url, form)
    assert r.status_code == 200, r.text
    t = r.json()
    assert set(t) == {"access_token", "token_type", "expires_in", "scope"}
    assert t["scope"] == "system/Observation.rs"
    got = fhir(smart, "Observation?_count=5", t["access_token"])
    assert got.status_code == 200 and got.json()["entry"]
    assert fhir(smart, "Patient", t["access_token"]).status_code == 403
    # The same assertion again: its jti was used.
    again = token_request(smart.base_url, form)
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "change",
    [
        {"alg": "RS256"},
        {"aud": "https://elsewhere.example/oauth2/token"},
        {"exp_in": 3600},  # longer than 5 minutes
        {"exp_in": -10},
        {"iss": "someone-else"},
        {"kid": "unknown"},
    ],
)
def test_bad_client_assertions_are_refused(smart, backend, change):
    cid, keys = backend
    key, kid = keys["RS384"]
    alg = change.get("alg", "RS384")
    claims = {}
    if "aud" in change:
        claims["aud"] = change["aud"]
    if "exp_in" in change:
        claims["exp"] = int(time.time()) + change["exp_in"]
    if "iss" in change:
        claims["iss"] = change["iss"]
    assertion = _assertion(smart, cid, key, alg, change.get("kid", kid), **claims)
    r = token_request(smart.base_url, {"grant_type": "client_credentials", "scope": "system/*.rs", "client_id": cid,
                                       "client_assertion_type": JWT_BEARER, "client_assertion": assertion})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text


def test_client_credentials_grants_only_system_scopes(smart, backend, app):
    cid, keys = backend
    key, kid = keys["ES384"]
    r = token_request(smart.base_url, {"grant_type": "client_credentials", "scope": "patient/*.rs",
                                       "client_assertion_type": JWT_BEARER,
                                       "client_assertion": _assertion(smart, cid, key, "ES384", kid)})
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = token_request(smart.base_url, {"grant_type": "client_credentials", "scope": "system/*.rs", "client_id": app})
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


# --------------------------------------------------------------------------- the account, step-up


def _signed_in(smart, username, password) -> tuple[PortalBrowser, str]:
    br = PortalBrowser(smart.base_url, user_agent=f"pytest-{uuid.uuid4().hex[:6]}")
    r = br.login(br.get("/oauth2/login"), username, password)
    assert r.status_code == 200, r.text[:300]
    return br, br.get("/api/portal/me").json()["csrf"]


def _api(br: PortalBrowser, method: str, path: str, csrf: str | None = None, body=None) -> requests.Response:
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    return br.http.request(method, f"{br.base}{path}", json=body, headers=headers, timeout=TIMEOUT)


def test_step_up_challenge_and_totp(smart, app, new_patient_user):
    username, password, patient = new_patient_user()
    br, csrf = _signed_in(smart, username, password)
    me = br.get("/api/portal/me").json()
    assert me["totpEnrolled"] is False and me["stepUp"] == {"fresh": False, "until": None}
    assert me["patients"][0]["patient"] == patient and me["actingFor"] == patient

    # Enrol TOTP: propose a secret, then confirm it with a code (no step-up needed yet).
    assert _api(br, "POST", "/api/portal/totp", None, {}).status_code == 403, "CSRF header required"
    proposal = _api(br, "POST", "/api/portal/totp", csrf, {}).json()
    assert proposal["otpauthUri"].startswith("otpauth://totp/portico:")
    secret = proposal["secret"]
    r = _api(br, "POST", "/api/portal/totp", csrf, {"secret": secret, "code": "000000"})
    assert r.status_code == 400
    # The previous step's code (accepted: ±1 step), so the step-up below never reuses it.
    r = _api(br, "POST", "/api/portal/totp", csrf, {"secret": secret, "code": totp_code(secret, time.time() - 30)})
    assert r.status_code == 204, r.text

    # A grant made before step-up: its id_token says password only.
    t = tokens(smart, app, None, "openid fhirUser offline_access patient/*.rs", browser=br)
    assert jwt_claims_unverified(t["id_token"])["amr"] == ["pwd"]

    # A sensitive action without a fresh step-up: 403 with the RFC 9470 challenge.
    change = {"current": password, "new": "a-brand-new-passphrase-2"}
    r = _api(br, "POST", "/api/portal/password", csrf, change)
    assert r.status_code == 403
    assert r.headers["WWW-Authenticate"] == (
        'Bearer realm="portico", error="insufficient_user_authentication", acr_values="urn:portico:acr:totp"'
    )
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "POST /api/portal/step-up" in r.json()["issue"][0]["diagnostics"]

    assert _api(br, "POST", "/api/portal/step-up", csrf, {"code": "123456"}).status_code in (403,)
    r = _api(br, "POST", "/api/portal/step-up", csrf, {"code": totp_code(secret)})
    assert r.status_code == 200
    assert r.json()["stepUp"]["fresh"] is True and r.json()["stepUp"]["until"]
    assert br.get("/api/portal/me").json()["stepUp"]["fresh"] is True

    # An approval after step-up carries it into the id_token.
    t2 = tokens(smart, app, None, "openid fhirUser patient/*.rs", browser=br)
    claims = jwt_claims_unverified(t2["id_token"])
    assert claims["acr"] == "urn:portico:acr:totp" and claims["amr"] == ["pwd", "otp"]
    assert isinstance(claims["stepup_time"], int)

    # Now the password change goes through; every grant of the user ends, this session stays.
    r = _api(br, "POST", "/api/portal/password", csrf, change)
    assert r.status_code == 204, r.text
    assert fhir(smart, f"Patient/{patient}", t["access_token"]).status_code == 401
    assert _refresh(smart, app, t["refresh_token"]).status_code == 400
    assert br.get("/api/portal/me").status_code == 200
    old = PortalBrowser(smart.base_url)
    assert old.login(old.get("/oauth2/login"), username, password).status_code == 401
    assert old.login(old.get("/oauth2/login"), username, change["new"]).status_code == 200


def test_a_totp_code_is_accepted_once(smart, new_patient_user):
    username, password, _ = new_patient_user()
    br, csrf = _signed_in(smart, username, password)
    secret = _api(br, "POST", "/api/portal/totp", csrf, {}).json()["secret"]
    enrol = {"secret": secret, "code": totp_code(secret, time.time() - 30)}  # the previous step's code
    assert _api(br, "POST", "/api/portal/totp", csrf, enrol).status_code == 204
    # Stay inside one 30 s step for both uses.
    if time.time() % 30 > 25:
        time.sleep(30 - time.time() % 30 + 0.2)
    code = totp_code(secret)
    assert _api(br, "POST", "/api/portal/step-up", csrf, {"code": code}).status_code == 200
    assert _api(br, "POST", "/api/portal/step-up", csrf, {"code": code}).status_code == 403


def test_portal_api_takes_sessions_not_app_tokens(smart, app):
    user = patient_user(smart)
    t = tokens(smart, app, user, "openid fhirUser patient/*.rs")
    r = requests.get(f"{smart.base_url}/api/portal/me", headers={"Authorization": f"Bearer {t['access_token']}"},
                     timeout=TIMEOUT)
    assert r.status_code == 401
    assert requests.get(f"{smart.base_url}/api/portal/me", timeout=TIMEOUT).status_code == 401


def test_connected_apps_and_devices(smart, app, new_patient_user):
    username, password, patient = new_patient_user()
    br, csrf = _signed_in(smart, username, password)
    t1 = tokens(smart, app, None, "offline_access patient/*.rs", browser=br)
    t2 = tokens(smart, app, None, "patient/Observation.rs", browser=br)
    apps = br.get("/api/portal/apps").json()["apps"]
    assert {a["scope"] for a in apps} == {"offline_access patient/*.rs", "patient/Observation.rs"}
    for a in apps:
        assert a["app"] == app and a["name"] == f"Test app {app}" and a["patient"] == patient
        assert a["access"] and a["connected"] and a["device"]
    # Disconnect one app: its tokens stop at once; the other keeps working.
    gone = next(a for a in apps if a["scope"] == "patient/Observation.rs")
    assert _api(br, "DELETE", f"/api/portal/apps/{gone['id']}").status_code == 403, "CSRF header required"
    assert _api(br, "DELETE", f"/api/portal/apps/{gone['id']}", csrf).status_code == 204
    assert fhir(smart, f"Observation?patient={patient}", t2["access_token"]).status_code == 401
    assert fhir(smart, f"Patient/{patient}", t1["access_token"]).status_code == 200
    assert [a["id"] for a in br.get("/api/portal/apps").json()["apps"]] == [a["id"] for a in apps if a is not gone]
    assert _api(br, "DELETE", "/api/portal/apps/no-such-grant", csrf).status_code == 404

    # Devices: the browser's portal session is one; the app's grants from this browser
    # are another (user, app, user agent).
    devices = br.get("/api/portal/devices").json()["devices"]
    (current,) = [d for d in devices if d["current"]]
    assert current["app"] == "portal" and current["userAgent"] == br.http.headers["User-Agent"]
    assert current["revoked"] is None and current["wipe"] is False
    (app_device,) = [d for d in devices if d["app"] == app]
    assert app_device["id"] == next(a["device"] for a in apps if a is not gone)
    assert app_device["userAgent"] == br.http.headers["User-Agent"] and not app_device["current"]
    # Revoking the app's device ends every grant made on it, and marks it for wipe.
    assert _api(br, "DELETE", f"/api/portal/devices/{app_device['id']}", csrf).status_code == 204
    assert fhir(smart, f"Patient/{patient}", t1["access_token"]).status_code == 401
    assert _refresh(smart, app, t1["refresh_token"]).status_code == 400
    assert br.get("/api/portal/me").status_code == 200, "the portal session is another device"
    listed = {d["id"]: d for d in br.get("/api/portal/devices").json()["devices"]}
    assert listed[app_device["id"]]["revoked"] and listed[app_device["id"]]["wipe"] is True
    # Revoking the current (portal) device signs this browser out.
    assert _api(br, "DELETE", f"/api/portal/devices/{current['id']}", csrf).status_code == 204
    assert br.get("/api/portal/me").status_code == 401
    assert _api(br, "DELETE", "/api/portal/devices/no-such-device", csrf).status_code in (401, 403)


def test_ehr_launch_from_the_portal(smart, app):
    carer = smart.first("caregiver")
    br, csrf = _signed_in(smart, carer.username, carer.password)
    target = carer.related_to[1]
    r = _api(br, "POST", "/api/portal/launch", csrf, {"patient": target})
    assert r.status_code == 200
    launch = r.json()["launch"]
    assert _api(br, "POST", "/api/portal/launch", csrf, {"patient": "pt-nope"}).status_code == 404
    verifier, challenge = pkce_pair()
    url = authorize_url(smart.base_url, app, REDIRECT, "launch patient/*.rs", challenge, launch=launch)
    first = br.open_authorize(url)
    assert first.status_code == 303
    approval = br.get(first.headers["Location"])
    assert parse_page(approval.text)[0][0].values_of("radio", "patient") == [], "the launch fixed the patient"
    q = query_of(br.approve(approval).headers["Location"])
    t = exchange_code(smart.base_url, app, REDIRECT, q["code"], verifier).json()
    assert t["patient"] == target and t["scope"] == "launch patient/*.rs"
    # A tampered launch context is refused back to the app.
    _, challenge = pkce_pair()
    bad = br.open_authorize(authorize_url(smart.base_url, app, REDIRECT, "launch patient/*.rs", challenge,
                                          launch=launch[:-4] + "AAAA"))
    assert bad.status_code == 303 and query_of(bad.headers["Location"])["error"] == "invalid_request"


def test_logout_ends_the_session(smart):
    user = patient_user(smart)
    br, csrf = _signed_in(smart, user.username, user.password)
    assert br.post_form("/oauth2/logout", {"csrf": "wrong"}).status_code == 403
    r = br.post_form("/oauth2/logout", {"csrf": csrf})
    assert r.status_code == 200 and "Signed out" in r.text
    assert "portico-session=;" in r.headers["Set-Cookie"] and "Max-Age=0" in r.headers["Set-Cookie"]
    assert br.get("/api/portal/me").status_code == 401


# --------------------------------------------------------------------------- operator tokens (CLI)


def test_token_issue_for_a_user_under_a_registered_client(smart, app):
    user = patient_user(smart)
    out = smart.cli.run("token", "issue", "--user", user.username, "--client", app, "--scope",
                        "patient/*.rs").stdout.splitlines()
    assert out[0] == "scope: patient/*.rs" and out[1] == f"patient: {user.patient}" and out[2] == "expires_in: 900"
    token = out[-1]
    assert fhir(smart, f"Patient/{user.patient}", token).status_code == 200
    other = patient_user(smart, 1).patient
    assert fhir(smart, f"Patient/{other}", token).status_code == 404


def test_token_issue_for_a_patient(smart):
    pid = patient_user(smart).patient
    token = smart.cli.run("token", "issue", "--patient", pid, "--scope", "patient/*.rs").stdout.splitlines()[-1]
    assert fhir(smart, f"Patient/{pid}", token).status_code == 200


def test_token_issue_for_a_patient_under_a_registered_client(smart, app):
    pid = patient_user(smart).patient
    token = smart.cli.run("token", "issue", "--patient", pid, "--client", app, "--scope",
                          "patient/*.rs").stdout.splitlines()[-1]
    assert fhir(smart, f"Patient/{pid}", token).status_code == 200


def test_token_issue_for_a_user_with_the_default_client(smart):
    user = patient_user(smart)
    token = smart.cli.run("token", "issue", "--user", user.username, "--scope", "patient/*.rs").stdout.splitlines()[-1]
    assert fhir(smart, f"Patient/{user.patient}", token).status_code == 200
