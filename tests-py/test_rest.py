"""FHIR R4 REST API of portico, driven by a third-party client (fhirpy).

Where fhirpy has no public API for a FHIR feature (If-Match, history, whole-system
transaction) the call still goes through fhirpy's client (`execute` / `_do_request`),
so the request building, auth header and error mapping are the library's. A few exact
status codes that fhirpy folds together (404 vs 410) are additionally checked with
plain `requests`.

fhirpy's error mapping: 401 -> AuthorizationError, 403 -> ForbiddenError,
404/410 -> ResourceNotFound, 412 -> MultipleResourcesFound, other 4xx/5xx ->
OperationOutcome.
"""

from __future__ import annotations

import itertools
import json
import uuid

import pytest
import requests
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import (
    AuthorizationError,
    BaseFHIRError,
    MultipleResourcesFound,
    ResourceNotFound,
)
from fhirpy.base.utils import parse_pagination_url

IDENT_SYSTEM = "urn:portico:test:mrn"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _uid() -> str:
    return uuid.uuid4().hex[:16]


def _new_patient(client: SyncFHIRClient, family: str = "Tester", mrn: str | None = None):
    patient = client.resource(
        "Patient",
        identifier=[{"system": IDENT_SYSTEM, "value": mrn or _uid()}],
        name=[{"family": family, "given": ["Pat"]}],
        gender="female",
        birthDate="1980-02-03",
    )
    patient.save()
    assert patient.id, "create must return the stored resource with its id"
    return patient


def _observation(client: SyncFHIRClient, patient_id: str, i: int, category: str = "laboratory"):
    return client.resource(
        "Observation",
        status="final",
        category=[{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
        code={"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
        subject={"reference": f"Patient/{patient_id}"},
        effectiveDateTime=f"2024-01-{(i % 28) + 1:02d}T08:{i % 60:02d}:00Z",
        valueQuantity={
            "value": 4.0 + i / 10,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
    )


def _version(resource) -> str:
    meta = resource.get("meta") or {}
    version = meta.get("versionId")
    assert version, f"resource has no meta.versionId: {json.dumps(dict(resource))[:300]}"
    return str(version)


def _raw_get(portico, path: str, token: str | None = "default") -> requests.Response:
    headers = {"Accept": "application/fhir+json"}
    if token == "default":
        headers["Authorization"] = portico.auth_header
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(f"{portico.fhir_url}/{path}", headers=headers, timeout=30)


def test_healthz(portico):
    r = requests.get(f"{portico.base_url}/healthz", timeout=10)
    assert r.status_code == 200


def test_create_read_patient(client, portico):
    mrn = _uid()
    created = _new_patient(client, family="Created", mrn=mrn)
    assert created.resourceType == "Patient"
    v1 = _version(created)

    fetched = client.reference("Patient", created.id).to_resource()
    assert fetched.id == created.id
    assert fetched["name"][0]["family"] == "Created"
    assert fetched["birthDate"] == "1980-02-03"
    assert _version(fetched) == v1

    # The read carries the version as a weak ETag (FHIR http.html#versioning).
    raw = _raw_get(portico, f"Patient/{created.id}")
    assert raw.status_code == 200
    assert raw.headers.get("ETag") == f'W/"{v1}"'

    # Token search on identifier finds exactly this patient.
    found = client.resources("Patient").search(identifier=f"{IDENT_SYSTEM}|{mrn}").fetch_all()
    assert [p.id for p in found] == [created.id]


def test_search_paging_follows_next_links(client):
    patient = _new_patient(client, family="Paging")
    created_ids = set()
    for i in range(25):
        obs = _observation(client, patient.id, i)
        obs.save()
        assert obs.id
        created_ids.add(obs.id)
    # Noise that the category filter must exclude.
    for i in range(3):
        _observation(client, patient.id, i, category="vital-signs").save()

    search = (
        client.resources("Observation")
        .search(patient=patient.id, category="laboratory")
        .limit(10)
    )

    # Walk the pages by hand through Bundle.link[next], bounded.
    seen: list[str] = []
    pages = 0
    bundle = search.fetch_raw()
    while True:
        pages += 1
        assert bundle["resourceType"] == "Bundle"
        assert bundle.get("type") == "searchset"
        matches = [
            e["resource"]
            for e in bundle.get("entry", [])
            if (e.get("search") or {}).get("mode", "match") == "match"
        ]
        assert len(matches) <= 10, f"page {pages} has {len(matches)} matches for _count=10"
        if "total" in bundle:
            assert bundle["total"] == 25
        seen.extend(r["id"] for r in matches)
        next_url = next(
            (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"),
            None,
        )
        if not next_url:
            break
        assert pages < 10, "next links do not terminate"
        path, params = parse_pagination_url(next_url)
        bundle = client.execute(path, method="get", params=params)

    assert pages == 3, f"25 results at _count=10 should be 3 pages, got {pages}"
    assert len(seen) == len(set(seen)), "an id was returned on more than one page"
    assert set(seen) == created_ids

    # fhirpy's own iterator follows the same links (bounded in case they loop).
    via_iter = [r.id for r in itertools.islice(search, 100)]
    assert sorted(via_iter) == sorted(created_ids)


def test_update_with_if_match(client, portico):
    patient = _new_patient(client, family="Before")
    v1 = _version(patient)
    path = f"Patient/{patient.id}"

    body = patient.serialize()
    body["name"] = [{"family": "After", "given": ["Pat"]}]
    updated, status = client._do_request(
        "put", path, data=body, extra_headers={"If-Match": f'W/"{v1}"'}, returning_status=True
    )
    assert status == 200
    v2 = str(updated["meta"]["versionId"])
    assert v2 != v1
    assert updated["name"][0]["family"] == "After"

    stale = dict(body, name=[{"family": "Stale", "given": ["Pat"]}])
    with pytest.raises(MultipleResourcesFound):  # fhirpy's exception for HTTP 412
        client._do_request("put", path, data=stale, extra_headers={"If-Match": f'W/"{v1}"'})

    current = client.get("Patient", patient.id)
    assert current["name"][0]["family"] == "After"
    assert str(current["meta"]["versionId"]) == v2


def test_history_and_vread(client):
    patient = _new_patient(client, family="V1")
    v1 = _version(patient)
    patient["name"] = [{"family": "V2", "given": ["Pat"]}]
    patient.save()
    v2 = _version(patient)
    assert v2 != v1

    history = client.execute(f"Patient/{patient.id}/_history", method="get")
    assert history["resourceType"] == "Bundle"
    assert history["type"] == "history"
    versions = [str(e["resource"]["meta"]["versionId"]) for e in history["entry"]]
    assert versions == [v2, v1], "history lists every version, newest first"

    old = client.execute(f"Patient/{patient.id}/_history/{v1}", method="get")
    assert old["name"][0]["family"] == "V1"
    assert str(old["meta"]["versionId"]) == v1


def test_delete_then_read_is_gone(client, portico):
    patient = _new_patient(client, family="Doomed")
    client.delete("Patient", patient.id)

    with pytest.raises(ResourceNotFound):
        client.get("Patient", patient.id)
    # fhirpy maps 404 and 410 alike; FHIR says a deleted resource reads as 410 Gone.
    assert _raw_get(portico, f"Patient/{patient.id}").status_code == 410

    with pytest.raises(ResourceNotFound):
        client.get("Patient", f"never-existed-{_uid()}")


def test_transaction_bundle(client):
    pid, oid = f"tx-{_uid()}", f"tx-{_uid()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"{client.url}/Patient/{pid}",
                "resource": {"resourceType": "Patient", "id": pid, "gender": "male"},
                "request": {"method": "PUT", "url": f"Patient/{pid}"},
            },
            {
                "fullUrl": f"{client.url}/Observation/{oid}",
                "resource": {
                    "resourceType": "Observation",
                    "id": oid,
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                },
                "request": {"method": "PUT", "url": f"Observation/{oid}"},
            },
        ],
    }
    # An absolute URL makes fhirpy post to the base itself (no trailing slash).
    response = client.execute(client.url, method="post", data=bundle)
    assert response["resourceType"] == "Bundle"
    assert response["type"] == "transaction-response"
    assert len(response["entry"]) == 2
    for entry in response["entry"]:
        assert entry["response"]["status"].split()[0] in ("200", "201")

    assert client.get("Patient", pid)["gender"] == "male"
    assert client.get("Observation", oid)["subject"]["reference"] == f"Patient/{pid}"


def test_transaction_is_atomic(client):
    good, bad = f"tx-{_uid()}", f"tx-{_uid()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": good},
                "request": {"method": "PUT", "url": f"Patient/{good}"},
            },
            {
                # Body id differs from the URL id: the spec requires a 400 for this entry.
                "resource": {"resourceType": "Patient", "id": f"{bad}-other"},
                "request": {"method": "PUT", "url": f"Patient/{bad}"},
            },
        ],
    }
    with pytest.raises(BaseFHIRError):
        client.execute(client.url, method="post", data=bundle)
    with pytest.raises(ResourceNotFound):
        client.get("Patient", good)


def test_missing_or_wrong_token_is_401_operation_outcome(portico):
    anonymous = SyncFHIRClient(portico.fhir_url, requests_config={"timeout": 30})
    with pytest.raises(AuthorizationError) as err:
        anonymous.resources("Patient").limit(1).fetch()
    outcome = json.loads(str(err.value))
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome.get("issue"), "OperationOutcome needs at least one issue"

    wrong = SyncFHIRClient(
        portico.fhir_url, authorization="Bearer not-the-token", requests_config={"timeout": 30}
    )
    with pytest.raises(AuthorizationError):
        wrong.get("Patient", "anything")

    raw = _raw_get(portico, "Patient", token=None)
    assert raw.status_code == 401
    assert raw.headers.get("WWW-Authenticate", "").lower().startswith("bearer")
