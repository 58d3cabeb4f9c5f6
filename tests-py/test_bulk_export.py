"""Bulk `$export` with a third-party client, untouched: SMART Fetch (`smart-fetch bulk`, the
SMART Health IT project's client) authenticates as a backend service (private_key_jwt,
RS384), kicks off `Group/{id}/$export`, polls with `Retry-After`, downloads every file and
DELETEs the status URL. Every NDJSON line it saved is then validated independently with
the `fhir.resources` R4 models (6.2.2, the last release with R4 as its default)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

TIMEOUT = 30


def _smart_fetch() -> str:
    exe = Path(sys.executable).parent / "smart-fetch"
    if exe.is_file():
        return str(exe)
    found = shutil.which("smart-fetch")
    if not found:
        pytest.fail("smart-fetch is not installed (pip install -r tests-py/requirements.txt)", pytrace=False)
    return found


def _put(smart, resource: dict) -> None:
    r = requests.put(
        f"{smart.fhir_url}/{resource['resourceType']}/{resource['id']}",
        json=resource,
        headers={"Authorization": smart.auth_header, "Content-Type": "application/fhir+json"},
        timeout=TIMEOUT,
    )
    assert r.status_code in (200, 201), r.text


def _backend_client(smart, work: Path) -> tuple[str, Path]:
    """A backend service with an RS384 key; smart-fetch gets the private JWKS."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid="bulk-1", alg="RS384", use="sig")
    private = json.loads(RSAAlgorithm.to_jwk(key))
    private.update(kid="bulk-1", alg="RS384", use="sig", key_ops=["sign"])
    (work / "public.jwks").write_text(json.dumps({"keys": [public]}))
    key_path = work / "private.jwks"
    key_path.write_text(json.dumps({"keys": [private]}))
    cid = f"bulk-{uuid.uuid4().hex[:6]}"
    smart.cli.run("client", "add", "--id", cid, "--name", "Bulk client", "--scope", "system/*.rs system/*.read",
                  "--jwks", str(work / "public.jwks"))
    return cid, key_path


def _lines(folder: Path):
    for f in sorted(folder.iterdir()):
        if f.name.endswith(".ndjson.gz"):
            text = gzip.decompress(f.read_bytes()).decode()
        elif f.name.endswith(".ndjson") and not f.name.startswith("log"):
            text = f.read_text()
        else:
            continue
        for line in text.splitlines():
            if line.strip():
                yield f.name, json.loads(line)


def test_smart_fetch_runs_a_group_export_end_to_end(smart, tmp_path):
    from fhir.resources import construct_fhir_element  # R4 models in 6.2.2

    patients = [u.patient for u in smart.users.values() if u.role == "patient"][:2]
    assert patients, "demo users include patients"
    group_id = f"g-{uuid.uuid4().hex[:8]}"
    _put(smart, {"resourceType": "Group", "id": group_id, "type": "person", "actual": True,
                 "member": [{"entity": {"reference": f"Patient/{p}"}} for p in patients]})
    cid, key = _backend_client(smart, tmp_path)
    out = tmp_path / "export"
    cmd = [
        _smart_fetch(), "bulk",
        "--fhir-url", smart.fhir_url,
        "--smart-client-id", cid,
        "--smart-key", str(key),
        "--group", group_id,
        "--type", "Patient,Observation,Condition,Immunization",
        "--no-default-filters",
        "--no-compression",
        str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"smart-fetch failed:\n{run.stdout}\n{run.stderr}"

    seen_types = set()
    count = 0
    for name, resource in _lines(out):
        rt = resource["resourceType"]
        # Independent validation: the R4 model must accept every line as it is.
        construct_fhir_element(rt, resource)
        seen_types.add(rt)
        count += 1
        if rt == "Patient":
            assert resource["id"] in patients, name
        elif "subject" in resource or "patient" in resource:
            ref = (resource.get("subject") or resource.get("patient"))["reference"]
            assert ref.split("/")[-1] in patients, f"{name}: {ref} is not a group member"
    assert count > 0 and "Patient" in seen_types and "Observation" in seen_types, (count, seen_types)

    # The client DELETEd the status URL at the end: the server keeps no files of it.
    exports = smart.data_dir / "exports"
    leftovers = [p for p in exports.iterdir()] if exports.exists() else []
    assert not any(d.is_dir() and any(d.iterdir()) for d in leftovers), leftovers
