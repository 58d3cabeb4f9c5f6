"""Start a real portico binary for the third-party client suite.

The binary comes from ``PORTICO_BIN``; without it, ``$CARGO_TARGET_DIR/debug/portico``
(``CARGO_TARGET_DIR`` defaults to the team's shared target dir, then the repo's ``target/``).
The server gets a fresh temporary data dir (SQLite), a random admin token and
``PORTICO_LISTEN=127.0.0.1:0``; the base URL is read from its
``portico listening on http://HOST:PORT`` stdout line.

Set ``PORTICO_PYTEST_DATABASE_URL`` to run the suite against another database
(passed to the server as ``PORTICO_DATABASE_URL``); by default any
``PORTICO_DATABASE_URL`` in the caller's environment is *not* inherited.

The SMART / OAuth suites (``test_smart_*.py``) use ``smart``: another server on SQLite in
its own temp dir, loaded with ``portico demo --patients 3 --no-serve`` (demo users with
TOTP, see ``demo-users.txt``), cheap Argon2 settings and a raised sign-in rate limit;
``throttled`` is one with the default sign-in limit for the 429 tests.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fhirpy import SyncFHIRClient

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TARGET_DIR = "/var/tmp/portico-target"
LISTEN_RE = re.compile(r"^portico listening on (http://\S+?)/?\s*$")
STARTUP_TIMEOUT_S = float(os.environ.get("PORTICO_STARTUP_TIMEOUT", "60"))


def _find_binary() -> Path:
    explicit = os.environ.get("PORTICO_BIN")
    if explicit:
        return Path(explicit)
    candidates = []
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(Path(target) / "debug" / "portico")
    candidates.append(Path(DEFAULT_TARGET_DIR) / "debug" / "portico")
    candidates.append(REPO_ROOT / "target" / "debug" / "portico")
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


@dataclass(frozen=True)
class Portico:
    base_url: str  # e.g. http://127.0.0.1:43123
    fhir_url: str  # base_url + "/fhir"
    token: str
    log_path: Path
    process: subprocess.Popen

    @property
    def auth_header(self) -> str:
        return f"Bearer {self.token}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _pump(stream, sink, found: threading.Event, holder: list):
    """Copy the child's output into the log; note the listening line."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        sink.write(line)
        sink.flush()
        if not found.is_set():
            m = LISTEN_RE.match(line.strip())
            if m:
                holder.append(m.group(1))
                found.set()
    stream.close()


class ServerStart:
    """A started `portico serve` and how to stop it."""

    def __init__(self, server: Portico, stop):
        self.server = server
        self.stop = stop


def require_binary() -> Path:
    binary = _find_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"portico binary not found or not executable at {binary}.\n"
            "Build it first (`cargo build -p portico`, or run scripts/test), "
            "or point PORTICO_BIN at it.",
            pytrace=False,
        )
    return binary


def server_env(data_dir: Path, token: str, extra: dict | None = None, inherit_db: bool = True) -> dict:
    """The environment of a test server (and of CLI commands against its data dir)."""
    env = dict(os.environ)
    env.pop("PORTICO_DATABASE_URL", None)
    env.update(
        PORTICO_LISTEN="127.0.0.1:0",
        PORTICO_DATA_DIR=str(data_dir),
        PORTICO_ADMIN_TOKEN=token,
    )
    if inherit_db and os.environ.get("PORTICO_PYTEST_DATABASE_URL"):
        env["PORTICO_DATABASE_URL"] = os.environ["PORTICO_PYTEST_DATABASE_URL"]
    env.update(extra or {})
    return env


def start_server(binary: Path, work: Path, env: dict, token: str) -> ServerStart:
    """Start `portico serve` in `work` with `env`; wait for its listening line."""
    log_path = work / "server.log"
    proc = subprocess.Popen(
        [str(binary), "serve"],
        env=env,
        cwd=str(work),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own process group: stop() reaches any children too
    )
    found = threading.Event()
    holder: list[str] = []
    sink = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    pump = threading.Thread(target=_pump, args=(proc.stdout, sink, found, holder), daemon=True)
    pump.start()

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not found.is_set() and proc.poll() is None and time.monotonic() < deadline:
        found.wait(0.1)

    def signal_group(sig):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop():
        signal_group(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            signal_group(signal.SIGKILL)
            proc.wait(timeout=10)
        signal_group(signal.SIGKILL)  # leftovers of the group, if any
        pump.join(timeout=5)
        sink.close()

    if not found.is_set():
        rc = proc.poll()
        stop()
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        reason = (
            f"exited with status {rc}"
            if rc is not None
            else f"printed no 'portico listening on http://…' line within {STARTUP_TIMEOUT_S:.0f} s"
        )
        pytest.fail(
            f"portico ({binary} serve) {reason}.\n--- server output (last 40 lines) ---\n{tail}",
            pytrace=False,
        )

    base_url = holder[0].rstrip("/")
    server = Portico(
        base_url=base_url,
        fhir_url=base_url + "/fhir",
        token=token,
        log_path=log_path,
        process=proc,
    )
    return ServerStart(server, stop)


@pytest.fixture(scope="session")
def portico(tmp_path_factory) -> Portico:
    binary = require_binary()
    work = tmp_path_factory.mktemp("portico")
    data_dir = work / "data"
    data_dir.mkdir()
    token = secrets.token_hex(24)
    started = start_server(binary, work, server_env(data_dir, token), token)
    try:
        yield started.server
    finally:
        started.stop()


@pytest.fixture(scope="session")
def client(portico: Portico) -> SyncFHIRClient:
    return SyncFHIRClient(
        portico.fhir_url,
        authorization=portico.auth_header,
        requests_config={"timeout": 30},
    )


# ---------------------------------------------------------------------------------
# SMART / OAuth suites: a second server with demo data and demo users.


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str
    password: str
    totp_secret: str
    patient: str  # '' unless role patient
    practitioner: str
    related_to: tuple[str, ...]  # a caregiver's patients


@dataclass(frozen=True)
class SmartServer(Portico):
    """A portico with `portico demo --patients N` data and demo users, for the SMART and
    OAuth suites. ``cli`` runs `portico …` subcommands against the same data dir."""

    cli: object = None
    users: dict = field(default_factory=dict)  # username -> DemoUser
    data_dir: Path = None

    def first(self, role: str) -> DemoUser:
        return next(u for u in self.users.values() if u.role == role)


def read_demo_users(path: Path) -> dict:
    users = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        cols += [""] * (7 - len(cols))
        u = DemoUser(
            username=cols[0],
            role=cols[1],
            password=cols[2],
            totp_secret=cols[3],
            patient=cols[4],
            practitioner=cols[5],
            related_to=tuple(p for p in cols[6].split(",") if p),
        )
        users[u.username] = u
    return users


# Argon2id at the cost the tests can afford on a debug build; the login and token
# endpoints' per-address limit raised (the suite signs in many times from 127.0.0.1;
# the limit itself is tested on a server of its own); refresh-token reuse grace 1 s so
# reuse detection can be observed without a long sleep.
SMART_ENV = {
    "PORTICO_ARGON2_MEMORY_KIB": "256",
    "PORTICO_ARGON2_ITERATIONS": "1",
    "PORTICO_RATE_AUTH_PER_IP": "100000",
    "PORTICO_REFRESH_GRACE_SECS": "1",
}
DEMO_PATIENTS = 3


def _smart_server(tmp_path_factory, name: str, extra: dict) -> tuple[SmartServer, object]:
    from smart_helpers import Cli

    binary = require_binary()
    work = tmp_path_factory.mktemp(name)
    data_dir = work / "data"
    data_dir.mkdir()
    token = secrets.token_hex(24)
    # Always SQLite in its own temp dir: demo data must not leak into another suite's DB.
    env = server_env(data_dir, token, {**SMART_ENV, **extra}, inherit_db=False)
    cli = Cli(binary, env)
    cli.run("demo", "--patients", str(DEMO_PATIENTS), "--no-serve")
    users = read_demo_users(data_dir / "demo-users.txt")
    started = start_server(binary, work, env, token)
    s = started.server
    server = SmartServer(
        base_url=s.base_url,
        fhir_url=s.fhir_url,
        token=token,
        log_path=s.log_path,
        process=s.process,
        cli=cli,
        users=users,
        data_dir=data_dir,
    )
    return server, started.stop


@pytest.fixture(scope="session")
def smart(tmp_path_factory) -> SmartServer:
    server, stop = _smart_server(tmp_path_factory, "portico-smart", {})
    try:
        yield server
    finally:
        stop()


@pytest.fixture(scope="module")
def throttled(tmp_path_factory) -> SmartServer:
    """A server with the default sign-in/token rate limit (60 a minute per address,
    burst 6), a lockout after 3 failed sign-ins and a 2 s session idle timeout."""
    server, stop = _smart_server(
        tmp_path_factory,
        "portico-throttled",
        {"PORTICO_RATE_AUTH_PER_IP": "60", "PORTICO_LOCKOUT_THRESHOLD": "3", "PORTICO_SESSION_IDLE_SECS": "2"},
    )
    try:
        yield server
    finally:
        stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failing test, attach the tail of the server's log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name in ("portico", "smart", "throttled"):
            server = getattr(item, "funcargs", {}).get(name)
            if server is not None:
                report.sections.append((f"{name} server log (tail)", server.log_tail()))
