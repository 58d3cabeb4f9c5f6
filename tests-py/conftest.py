"""Start a real portico binary for the third-party client suite.

The binary comes from ``PORTICO_BIN``; without it, ``$CARGO_TARGET_DIR/debug/portico``
(``CARGO_TARGET_DIR`` defaults to the team's shared target dir, then the repo's ``target/``).
The server gets a fresh temporary data dir (SQLite), a random admin token and
``PORTICO_LISTEN=127.0.0.1:0``; the base URL is read from its
``portico listening on http://HOST:PORT`` stdout line.

Set ``PORTICO_PYTEST_DATABASE_URL`` to run the suite against another database
(passed to the server as ``PORTICO_DATABASE_URL``); by default any
``PORTICO_DATABASE_URL`` in the caller's environment is *not* inherited.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
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


@pytest.fixture(scope="session")
def portico(tmp_path_factory) -> Portico:
    binary = _find_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"portico binary not found or not executable at {binary}.\n"
            "Build it first (`cargo build -p portico`, or run scripts/test), "
            "or point PORTICO_BIN at it.",
            pytrace=False,
        )

    work = tmp_path_factory.mktemp("portico")
    data_dir = work / "data"
    data_dir.mkdir()
    log_path = work / "server.log"
    token = secrets.token_hex(24)

    env = dict(os.environ)
    env.pop("PORTICO_DATABASE_URL", None)
    env.update(
        PORTICO_LISTEN="127.0.0.1:0",
        PORTICO_DATA_DIR=str(data_dir),
        PORTICO_ADMIN_TOKEN=token,
    )
    if os.environ.get("PORTICO_PYTEST_DATABASE_URL"):
        env["PORTICO_DATABASE_URL"] = os.environ["PORTICO_PYTEST_DATABASE_URL"]

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
    try:
        yield server
    finally:
        stop()


@pytest.fixture(scope="session")
def client(portico: Portico) -> SyncFHIRClient:
    return SyncFHIRClient(
        portico.fhir_url,
        authorization=portico.auth_header,
        requests_config={"timeout": 30},
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failing test, attach the tail of the server's log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "portico" in getattr(item, "funcargs", {}):
        server = item.funcargs["portico"]
        report.sections.append(("portico server log (tail)", server.log_tail()))
