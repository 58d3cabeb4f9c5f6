"""SMART App Launch (standalone, public client) with SMART's own Python client,
`fhirclient` (pinned in requirements.txt), against the running portico binary.

fhirclient finds the OAuth endpoints only in `/fhir/metadata` (the `oauth-uris`
extension). It sends PKCE (S256) from version 4.4.0 on; earlier versions (≤ 4.3.2)
send no `code_challenge`, which portico refuses (test_client_without_pkce_is_refused).

The "browser" part — sign-in and approval pages — is driven over HTTP with the form
fields docs/AUTH.md documents (smart_helpers.PortalBrowser); the redirect to the app is
captured, never followed, and handed to `FHIRClient.handle_callback`.
"""

from __future__ import annotations

import urllib.parse as up

import fhirclient
import pytest
import requests
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException
from smart_helpers import PortalBrowser, jwt_claims_unverified, query_of, unique

SCOPE = "launch/patient openid fhirUser offline_access patient/*.read"


def _redirect_uri() -> str:
    # Never served: the test takes the code from portico's 303 instead.
    return "http://127.0.0.1:9/callback"


def _new_client(smart, app_id: str, redirect_uri: str | None = None) -> smart_client.FHIRClient:
    return smart_client.FHIRClient(
        settings={
            "app_id": app_id,
            "api_base": smart.fhir_url,
            "redirect_uri": redirect_uri or _redirect_uri(),
            "scope": SCOPE,
        }
    )


def _admin_get(smart, path: str) -> dict:
    r = requests.get(
        f"{smart.fhir_url}/{path}",
        headers={"Authorization": smart.auth_header, "Accept": "application/fhir+json"},
        timeout=30,
    )
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return r.json()


def _search(fc, params: dict) -> list:
    return list(Observation.where(struct=params).perform_resources_iter(fc.server))


@pytest.fixture(scope="module")
def app_id(smart) -> str:
    cid = unique("fhirclient-py")
    smart.cli.add_client(cid, _redirect_uri())
    return cid


@pytest.fixture(scope="module")
def launched(smart, app_id):
    """A FHIRClient that completed the standalone launch as the first demo patient."""
    user = smart.first("patient")
    fc = _new_client(smart, app_id)
    url = fc.authorize_url
    browser = PortalBrowser(smart.base_url)
    callback = browser.authorize_and_approve(url, user.username, user.password)
    assert callback.startswith(_redirect_uri() + "?"), callback
    fc.handle_callback(callback)
    return fc, user, url


def test_authorize_url_is_pkce_s256_with_aud(smart, launched):
    fc, _, url = launched
    assert fhirclient.__version__ == "4.4.0"
    parts = up.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{smart.base_url}/oauth2/authorize"
    q = query_of(url)
    assert q["response_type"] == "code"
    assert q["code_challenge_method"] == "S256"
    assert len(q["code_challenge"]) == 43
    assert q["aud"] == smart.fhir_url
    # fhirclient found the token endpoint in the CapabilityStatement's oauth-uris.
    assert fc.server.auth._token_uri == f"{smart.base_url}/oauth2/token"


def test_launch_context_names_the_patient_and_user(smart, launched):
    fc, user, _ = launched
    assert fc.ready
    assert fc.patient_id == user.patient
    ctx = fc.launch_context
    assert ctx["token_type"] == "Bearer"
    assert ctx["patient"] == user.patient
    assert ctx["fhirUser"] == f"{smart.fhir_url}/Patient/{user.patient}"
    # Every requested scope was granted, echoed as the app sent them (v1 `.read` kept).
    assert set(ctx["scope"].split()) == set(SCOPE.split())
    claims = jwt_claims_unverified(ctx["id_token"])
    assert claims["fhirUser"] == ctx["fhirUser"]
    assert claims["aud"] == fc.app_id
    assert claims["iss"] == smart.fhir_url
    # offline_access: a refresh token, kept by fhirclient for reauthorize().
    assert fc.server.auth.refresh_token


def test_patient_read_returns_the_launch_patient(smart, launched):
    fc, user, _ = launched
    patient = fc.patient
    assert patient is not None, "FHIRClient.patient could not read Patient/{id}"
    assert isinstance(patient, Patient)
    assert patient.id == user.patient
    admin = _admin_get(smart, f"Patient/{user.patient}")
    assert patient.name[0].family == admin["name"][0]["family"]
    assert fc.human_name(patient.name[0]) != "Unknown"


def test_observation_search_returns_only_the_patients_data(smart, launched):
    fc, user, _ = launched
    # _count=20: the iterator follows the searchset's next links with the same token.
    mine = _search(fc, {"patient": user.patient, "_count": "20"})
    assert mine, "the demo patient has observations"
    assert all(isinstance(o, Observation) for o in mine)
    assert {o.subject.reference for o in mine} == {f"Patient/{user.patient}"}
    expected = _admin_get(smart, f"Observation?patient={user.patient}&_summary=count")["total"]
    assert len(mine) == expected

    # Without a patient parameter the scope still confines the search to the patient.
    everything = _search(fc, {"_count": "50"})
    assert {o.subject.reference for o in everything} == {f"Patient/{user.patient}"}
    assert len(everything) == expected


def test_other_patients_are_invisible(smart, launched):
    fc, user, _ = launched
    others = sorted({u.patient for u in smart.users.values() if u.patient and u.patient != user.patient})
    assert others
    for other in others:
        with pytest.raises(FHIRNotFoundException):
            Patient.read(other, fc.server)
        found = _search(fc, {"patient": other})
        assert found == []


def test_reauthorize_rotates_the_refresh_token(smart, launched):
    fc, user, _ = launched
    auth = fc.server.auth
    old_access, old_refresh = auth.access_token, auth.refresh_token
    assert fc.reauthorize() is True
    assert auth.access_token and auth.access_token != old_access
    assert auth.refresh_token and auth.refresh_token != old_refresh, "refresh tokens rotate"
    assert fc.launch_context["patient"] == user.patient
    # The new access token works through the client.
    assert Patient.read(user.patient, fc.server).id == user.patient
    # The used refresh token is spent.
    r = requests.post(
        f"{smart.base_url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": old_refresh, "client_id": fc.app_id},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_grant"


def test_client_without_pkce_is_refused(smart, app_id):
    """What fhirclient ≤ 4.3.2 sends (no code_challenge): portico redirects back with
    invalid_request, and fhirclient's callback handling raises with the description."""
    fc = _new_client(smart, app_id)
    parts = up.urlsplit(fc.authorize_url)
    q = [(k, v) for k, v in up.parse_qsl(parts.query) if not k.startswith("code_challenge")]
    legacy = up.urlunsplit(parts._replace(query=up.urlencode(q)))
    r = requests.get(legacy, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    back = r.headers["Location"]
    assert back.startswith(_redirect_uri() + "?")
    assert query_of(back)["error"] == "invalid_request"
    assert query_of(back)["state"] == fc.server.auth.auth_state
    with pytest.raises(Exception, match="PKCE"):
        fc.handle_callback(back)


def test_unregistered_redirect_uri_stops_at_an_error_page(smart, app_id):
    fc = _new_client(smart, app_id, redirect_uri="http://127.0.0.1:9/elsewhere")
    r = requests.get(fc.authorize_url, allow_redirects=False, timeout=30)
    assert r.status_code == 400
    assert "Location" not in r.headers, "a redirect-URI mismatch must never redirect"
    assert r.headers["Content-Type"].startswith("text/html")
    assert "has not registered" in r.text
