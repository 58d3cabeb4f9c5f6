"""`portico serve` terminating TLS itself: HTTPS with TLS 1.2+ only, the `__Host-` session
cookie, and a renewed certificate picked up without a restart.

Certificates are made here with the `cryptography` package (a throwaway CA-less
self-signed pair per test); the client verifies against exactly that certificate.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import _find_binary

LISTEN_RE = re.compile(r"^portico listening on (https://\S+?)/?\s*$")


def make_cert(directory: Path, common_name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    # Write next to the final names, then rename: the server never sees half a file.
    tmp_c, tmp_k = directory / "cert.tmp", directory / "key.tmp"
    tmp_c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp_k.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.replace(tmp_k, key_path)
    os.replace(tmp_c, cert_path)
    return cert_path, key_path


@pytest.fixture
def tls_server():
    work = Path(tempfile.mkdtemp(prefix="portico-tls-"))
    cert, key = make_cert(work, "first")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTICO_")}
    env.update(
        PORTICO_LISTEN="127.0.0.1:0",
        PORTICO_DATA_DIR=str(work / "data"),
        PORTICO_ADMIN_TOKEN=secrets.token_hex(16),
        PORTICO_TLS_CERT_FILE=str(cert),
        PORTICO_TLS_KEY_FILE=str(key),
        PORTICO_TLS_RELOAD_SECS="1",
        PORTICO_ARGON2_MEMORY_KIB="64",
        PORTICO_ARGON2_ITERATIONS="1",
        RUST_LOG="warn",
    )
    proc = subprocess.Popen(
        [str(_find_binary()), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    base = None
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = LISTEN_RE.match(line.strip())
        if m:
            base = m.group(1)
            break
    assert base, "the server did not report an https:// listening address"
    yield base, work, env["PORTICO_ADMIN_TOKEN"]
    proc.terminate()
    proc.wait(timeout=30)


def peer_common_name(base: str, cafile: Path) -> str:
    host, port = base.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_serves_https_with_tls12_or_newer_only(tls_server):
    base, work, token = tls_server
    r = requests.get(f"{base}/fhir/metadata", verify=str(work / "cert.pem"), timeout=10)
    assert r.status_code == 200
    assert r.json()["resourceType"] == "CapabilityStatement"
    # Links and discovery name the https origin.
    conf = requests.get(f"{base}/.well-known/smart-configuration", verify=str(work / "cert.pem"), timeout=10).json()
    assert conf["token_endpoint"].startswith("https://")
    host, port = base.removeprefix("https://").rsplit(":", 1)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            with old.wrap_socket(raw, server_hostname=host):
                pass
    modern = ssl.create_default_context(cafile=str(work / "cert.pem"))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with modern.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_plain_http_to_the_tls_port_gets_no_answer(tls_server):
    base, _, _ = tls_server
    with pytest.raises(requests.exceptions.RequestException):
        r = requests.get(base.replace("https://", "http://") + "/fhir/metadata", timeout=5)
        # A TLS server may answer garbage or close; it must never serve the resource.
        assert "CapabilityStatement" not in r.text
        raise requests.exceptions.ConnectionError("answered without TLS")


def test_sign_in_cookie_is_host_prefixed_and_secure_under_tls(tls_server):
    base, work, _ = tls_server
    r = requests.get(f"{base}/oauth2/login", verify=str(work / "cert.pem"), timeout=10)
    assert r.status_code == 200
    cookie = r.headers.get("set-cookie", "")
    assert cookie.startswith("__Host-portico-login="), cookie
    assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie


def test_a_renewed_certificate_is_served_without_a_restart(tls_server):
    base, work, _ = tls_server
    assert peer_common_name(base, work / "cert.pem") == "first"
    time.sleep(1.1)  # a different modification time
    make_cert(work, "second")
    deadline = time.time() + 20
    seen = None
    while time.time() < deadline:
        try:
            seen = peer_common_name(base, work / "cert.pem")
        except ssl.SSLError:
            seen = None
        if seen == "second":
            break
        time.sleep(0.5)
    assert seen == "second", "the new certificate was not picked up"
