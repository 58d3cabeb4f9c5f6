"""Bulk `$export` with a third-party client, untouched: SMART Fetch (`smart-fetch bulk`, the
SMART Health IT project's client) authenticates as a backend service (private_key_jwt,
RS384), kicks off a system-level `$export`, polls with `Retry-After`, downloads every file and
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


def test_smart_fetch_runs_a_system_export_end_to_end(smart, tmp_path):
    """(Not `--group`: smart-fetch asks only for `system/<type>.read` of the exported types,
    and portico's gate decides the Group read like any other — without a Group scope the
    Group is not found. `Group/{id}/$export` is covered by the Rust tests.)"""
    from fhir.resources import construct_fhir_element  # R4 models in 6.2.2

    r = requests.get(f"{smart.fhir_url}/Patient?_count=1000&_elements=id",
                     headers={"Authorization": smart.auth_header}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    patients = {e["resource"]["id"] for e in r.json().get("entry", [])}
    assert patients, "demo data holds patients"
    cid, key = _backend_client(smart, tmp_path)
    out = tmp_path / "export"
    cmd = [
        _smart_fetch(), "bulk",
        "--fhir-url", smart.fhir_url,
        "--smart-client-id", cid,
        "--smart-key", str(key),
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
            assert ref.split("/")[-1] in patients, f"{name}: {ref} is no known patient"
    assert count > 0 and "Patient" in seen_types and "Observation" in seen_types, (count, seen_types)
    exported_patients = {res["id"] for _, res in _lines(out) if res["resourceType"] == "Patient"}
    assert exported_patients == patients, "every patient exactly as the server holds them"

    # The client DELETEd the status URL at the end: the server keeps no files of it.
    exports = smart.data_dir / "exports"
    leftovers = [p for p in exports.iterdir()] if exports.exists() else []
    assert not any(d.is_dir() and any(d.iterdir()) for d in leftovers), leftovers
