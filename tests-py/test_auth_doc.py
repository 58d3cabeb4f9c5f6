"""docs/AUTH.md's curl walk-through, run exactly as written (the block between the
`walkthrough:start` and `walkthrough:end` markers) against the demo server, with `portico`
on PATH. Keeps the operator's copy-and-paste instructions true."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "AUTH.md"


def _walkthrough() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- walkthrough:start -->\s*```sh\n(.*?)```\s*<!-- walkthrough:end -->", text, re.S)
    assert m, "docs/AUTH.md has no walkthrough block"
    return m.group(1)


def test_curl_walkthrough_runs_as_documented(smart, tmp_path):
    missing = [tool for tool in ("bash", "curl", "openssl", "jq", "sed", "awk") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the walk-through needs {', '.join(missing)} on PATH", pytrace=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "portico").symlink_to(smart.cli.binary)
    env = dict(smart.cli.env)
    env.update(
        BASE=smart.base_url,
        PORTICO_DATA_DIR=str(smart.data_dir),
        PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    p = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _walkthrough()],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    out = p.stdout
    assert p.returncode == 0, f"exit {p.returncode}\n--- stdout\n{out}\n--- stderr\n{p.stderr}"
    user = smart.users["luis.taylor"]
    assert f"{smart.base_url}/oauth2/approve?req=" in out
    assert "http://127.0.0.1:9/callback?code=" in out
    # jq's pretty output of the token response's context.
    objects = [json.loads(o) for o in re.findall(r"^\{.*?^\}", out, re.S | re.M)]
    token_ctx = objects[0]
    assert token_ctx["patient"] == user.patient and token_ctx["expires_in"] == 900
    assert token_ctx["fhirUser"] == f"{smart.fhir_url}/Patient/{user.patient}"
    assert objects[1]["id"] == user.patient
    assert {"active": True, "scope": token_ctx["scope"], "patient": user.patient} in objects
    assert f'"Patient/{user.patient}"' in out
    assert "revoke: 200" in out
    assert "after revocation: 401" in out
