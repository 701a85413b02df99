"""`atb doctor` on the real local stack (everything ok) and with everything pointed at closed ports (what to fix)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner, Result

from atb.cli import app
from atb.dev.procs import ManagedProcess
from atb.errors import ExitCode
from atb_identity import ca_paths, init_ca
from audit_sink.adapters.db import migrate
from issuer.adapters.keyring import SigningKeyRing

# A stand-in service: answers GET /healthz with 200 on ATB_OPS_PORT, as atb_runtime's ops server does.
HEALTHZ_SERVER = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["ATB_OPS_PORT"])), H).serve_forever()
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _checks(result: Result) -> dict[str, tuple[str, str]]:
    """check name → (mark, detail), from the report's lines."""
    rows = {}
    for line in result.stdout.splitlines():
        mark, _, rest = line.partition("  ")
        if mark.strip() in {"ok", "warn", "FAIL"}:
            name, _, detail = rest.strip().partition("  ")
            rows[name.strip()] = (mark.strip(), detail.strip())
    return rows


@pytest.fixture
def ready_state(tmp_path: Path) -> Path:
    """A state folder as the demo leaves it: dev CA, issuer keyring, migrated audit store."""
    state = tmp_path / "state"
    init_ca(state)
    SigningKeyRing.ensure(state / "issuer" / "keys")
    (state / "audit").mkdir(parents=True)
    migrate(f"sqlite:///{state / 'audit' / 'audit.db'}")
    return state


@pytest.fixture
async def service(ready_state: Path) -> AsyncIterator[ManagedProcess]:
    """One recorded service answering /healthz, as `atb demo --keep-running` leaves them."""
    port = _free_port()
    run_dir = ready_state / "services" / "default"
    proc = ManagedProcess(
        "gateway",
        [sys.executable, "-c", HEALTHZ_SERVER],
        {"ATB_OPS_PORT": str(port), "PATH": "/usr/bin:/bin"},
        log_path=run_dir / "gateway.log",
        pid_path=run_dir / "gateway.pid",
        ready=lambda: _healthy(port),
    )
    await proc.start(ready_timeout=30)
    yield proc
    await proc.stop()


async def _healthy(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_doctor_passes_on_the_running_stack(
    kafka_bootstrap: str, opa_url: str, namespace: str, ready_state: Path, service: ManagedProcess
) -> None:
    env = {
        "ATB_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ATB_OPA_URL": opa_url,
        "ATB_TOPIC_NAMESPACE": namespace,
        "ATB_STATE_DIR": str(ready_state),
        "ATB_AUDIT_DB_URL": "",
    }
    result = await _doctor(env)
    checks = _checks(result)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stderr == ""
    for name in ("python", "java", "kafka", "opa", "pki", "keys", "audit store", "default/gateway"):
        assert checks[name][0] == "ok", (name, checks[name])
    assert "policy atb.poa loaded" in checks["opa"][1]
    assert f"pid {service.pid}" in checks["default/gateway"][1]
    assert "checks pass" in result.stdout

    await service.stop()  # a recorded service that is gone is a warning, not a failure
    (ready_state / "services" / "default" / "gateway.pid").write_text(
        '{"pid": 999999, "start_ticks": 1, "cmdline": ["x"], "argv": ["x"]}'
    )
    again = await _doctor(env)
    assert again.exit_code == 0, again.stdout
    assert _checks(again)["default/gateway"][0] == "warn"


async def test_doctor_says_what_to_fix_with_everything_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {
        "ATB_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_free_port()}",
        "ATB_OPA_URL": f"http://127.0.0.1:{_free_port()}",
        "ATB_STATE_DIR": str(state),
        "ATB_AUDIT_DB_URL": f"postgresql+psycopg://atb@127.0.0.1:{_free_port()}/atb",
        "ATB_TOPIC_NAMESPACE": "",
    }
    cert, _ = ca_paths(state)
    cert.parent.mkdir(parents=True)
    cert.write_text("not a certificate")  # half a CA: no key
    result = await _doctor(env)
    checks = _checks(result)
    assert result.exit_code == ExitCode.FAILED, result.stdout + result.stderr
    assert checks["kafka"][0] == "FAIL"
    assert "atb dev up" in checks["kafka"][1]
    assert checks["opa"][0] == "FAIL"
    assert "ATB_OPA_URL" in checks["opa"][1]
    assert checks["audit store"][0] == "FAIL"
    assert "ATB_AUDIT_DB_URL" in checks["audit store"][1]
    assert checks["pki"][0] == "FAIL"
    assert "atb pki init" in checks["pki"][1]
    assert checks["keys"][0] == "warn"
    stderr = result.stderr.splitlines()
    assert stderr == [f"atb doctor: error: 4 check(s) failed: kafka, opa, pki, audit store {_SEE_ABOVE}"]
    assert "Traceback" not in result.stdout + result.stderr


_SEE_ABOVE = "(each line above says what to fix)"


async def _doctor(env: dict[str, str]) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, ["doctor"], env=env)
