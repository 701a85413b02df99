"""Readiness that cannot lie (README "Readiness"): real service processes, real ports.

- A service that cannot bind a port exits at once with status 71 and one log line
  naming the port; `ServiceStack.start` reports that exit at once.
- A foreign process answering 200 on a port is never taken for readiness: the
  stack's ports cannot be taken by anyone else, and an answer from another pid
  does not count.
- `/healthz` names the service, the instance, the pid and the ports it serves;
  after a kill and a restart the stack finds the new process on the same ports.

Everything waits on events (a line from a process, an exit, an HTTP answer), not on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from atb.dev.errors import ProcessStartError
from atb.dev.procs import ManagedProcess
from atb.dev.stack import ServiceStack, StackConfig, healthz_ready
from atb_identity import init_ca

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

EXIT_PORT_UNAVAILABLE = 71

# A process that is not ours: it tries to listen on a port (0: any) like any aiohttp service would, says
# on stdout whether it could, and then answers every GET /healthz with 200 and its own pid.
_FOREIGN = """
import asyncio, json, os, sys
from aiohttp import web

async def main(port):
    app = web.Application()
    async def healthz(_request):
        return web.json_response({"status": "ok", "service": "foreign", "pid": os.getpid()})
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    except OSError as exc:
        print("failed", exc.errno, flush=True)
        return
    print("listening", runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"""


class Foreign:
    def __init__(self, proc: asyncio.subprocess.Process, port: int | None) -> None:
        self.proc = proc
        self.port = port
        """The port it serves; None when it could not bind the one it was given."""


@asynccontextmanager
async def foreign_server(port: int = 0) -> AsyncIterator[Foreign]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FOREIGN, str(port), stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        assert line[:1] in (["listening"], ["failed"]), line
        yield Foreign(proc, int(line[1]) if line[0] == "listening" else None)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _healthz(port: int) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status, await response.json()


def _config(kafka_bootstrap: str, opa_url: str, state: Path, namespace: str, **kw: Any) -> StackConfig:
    return StackConfig(kafka_bootstrap, opa_url, state, namespace=namespace, **kw)


async def test_a_taken_port_makes_the_service_exit_71_at_once_with_one_line_naming_it(
    kafka_bootstrap: str, opa_url: str, namespace: str, tmp_path: Path
) -> None:
    """`faststream run` itself, no supervisor: the exit status and the log line are the service's own."""
    init_ca(tmp_path, "atb.local")
    async with foreign_server() as foreign:
        assert foreign.port is not None
        env = {
            **os.environ,
            "ATB_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "ATB_OPA_URL": opa_url,
            "ATB_TOPIC_NAMESPACE": namespace,
            "ATB_STATE_DIR": str(tmp_path),
            "ATB_GATEWAY_PORT": str(foreign.port),
            "ATB_OPS_PORT": str(foreign.port),
            "ATB_EXIT_WITH_PARENT": str(os.getpid()),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "faststream",
            "run",
            "gateway.main:app",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == EXIT_PORT_UNAVAILABLE, output.decode()[-2000:]
    naming = [line for line in output.decode().splitlines() if f"127.0.0.1:{foreign.port}" in line]
    assert len(naming) == 1, output.decode()[-2000:]
    line = json.loads(naming[0])  # a JSON log line (ATB_LOG_FORMAT's default)
    assert line["log.level"] == "critical"
    assert f"cannot bind the gateway port 127.0.0.1:{foreign.port}: address already in use" in line["message"]


async def test_a_fixed_port_answered_by_a_foreign_process_fails_the_start_at_once(
    kafka_bootstrap: str, opa_url: str, namespace: str, tmp_path: Path
) -> None:
    """The gateway's ops port is fixed (as in production) and a foreign process answers 200 on it."""
    async with foreign_server() as foreign:
        assert foreign.port is not None
        config = _config(kafka_bootstrap, opa_url, tmp_path, namespace, extra_env={"ATB_OPS_PORT": str(foreign.port)})
        stack = ServiceStack(config, services=("gateway",))
        assert stack.ops_ports["gateway"] == foreign.port
        began = time.monotonic()
        try:
            with pytest.raises(ProcessStartError) as raised:
                await stack.start(ready_timeout=120)
            took = time.monotonic() - began
            assert stack.processes["gateway"].returncode == EXIT_PORT_UNAVAILABLE
        finally:
            await stack.stop()
    message = str(raised.value)
    assert "gateway exited while starting (status 71)" in message
    assert f"cannot bind the ops port 127.0.0.1:{foreign.port}: address already in use" in message  # the log tail
    assert took < 60, f"reported after {took:.0f}s: the exit must be reported when it happens, not at the timeout"


async def test_no_foreign_process_can_take_a_port_the_stack_picked(
    kafka_bootstrap: str, opa_url: str, namespace: str, tmp_path: Path
) -> None:
    """The finding: ports picked by bind-and-release could be taken before the service bound them, and the
    taker's 200 counted as the service's readiness. A foreign process gets none of the stack's ports now."""
    stack = ServiceStack(_config(kafka_bootstrap, opa_url, tmp_path, namespace), services=("gateway",))
    try:
        for port in (stack.ops_ports["gateway"], stack.gateway_port):
            async with foreign_server(port) as foreign:
                assert foreign.port is None, f"a foreign process took port {port} from the stack"
        await stack.start(ready_timeout=90)
        status, body = await _healthz(stack.ops_ports["gateway"])
        assert status == 200
        assert body["pid"] == stack.processes["gateway"].pid
    finally:
        await stack.stop()


async def test_an_answer_from_another_pid_is_not_readiness(tmp_path: Path) -> None:
    """The stack's ready check: a process that is alive but does not serve, while another answers 200."""
    async with foreign_server() as foreign:
        assert foreign.port is not None
        sleeper = ManagedProcess(
            "sleeper",
            # The process under test only has to be alive and not serve: its sleep is all it does.
            [sys.executable, "-c", "import time; time.sleep(600)"],
            None,
            log_path=tmp_path / "sleeper.log",
            pid_path=tmp_path / "sleeper.pid",
            ready=lambda: healthz_ready(sleeper, {"ops": foreign.port or 0}),
        )
        try:
            with pytest.raises(ProcessStartError) as raised:
                await sleeper.start(ready_timeout=3)
        finally:
            await sleeper.stop()
    assert f"port {foreign.port} is answered by pid {foreign.proc.pid}, not by sleeper" in str(raised.value)


async def test_a_process_that_exits_while_starting_is_reported_at_once_with_its_log(tmp_path: Path) -> None:
    async def never() -> bool:
        await asyncio.Event().wait()  # a check that hangs (a port nobody answers on): the exit must still show
        return False

    quitter = ManagedProcess(
        "quitter",
        [sys.executable, "-c", "import sys; print('cannot go on', flush=True); sys.exit(3)"],
        None,
        log_path=tmp_path / "quitter.log",
        pid_path=tmp_path / "quitter.pid",
        ready=never,
    )
    began = time.monotonic()
    with pytest.raises(ProcessStartError) as raised:
        await quitter.start(ready_timeout=120)
    assert time.monotonic() - began < 30
    assert "quitter exited while starting (status 3)" in str(raised.value)
    assert "cannot go on" in str(raised.value)


# The main thread ends first and another thread exits the process a moment later: for that moment /proc
# shows the process as a zombie while waitpid has no status yet (the window a Python service's exit opens).
_LEADER_FIRST = """
import ctypes, os, threading, time
threading.Thread(target=lambda: (time.sleep(1.0), os._exit(71))).start()
print('main thread leaving', flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


async def test_an_exit_seen_before_its_status_is_reported_with_the_status(tmp_path: Path) -> None:
    """The finding: the start was reported as failed with no status, and `returncode` stayed None."""

    async def never() -> bool:
        await asyncio.Event().wait()
        return False

    leader = ManagedProcess(
        "leader",
        [sys.executable, "-c", _LEADER_FIRST],
        None,
        log_path=tmp_path / "leader.log",
        pid_path=tmp_path / "leader.pid",
        ready=never,
    )
    with pytest.raises(ProcessStartError) as raised:
        await leader.start(ready_timeout=120)
    assert "leader exited while starting (status 71)" in str(raised.value)
    assert "main thread leaving" in str(raised.value)
    assert leader.returncode == 71


async def test_healthz_names_the_process_and_a_restart_is_found_on_the_same_ports(
    kafka_bootstrap: str, opa_url: str, namespace: str, tmp_path: Path
) -> None:
    stack = ServiceStack(_config(kafka_bootstrap, opa_url, tmp_path, namespace), services=("gateway",))
    ops, gateway = stack.ops_ports["gateway"], stack.gateway_port
    try:
        await stack.start(ready_timeout=90)
        first = stack.processes["gateway"].pid
        status, body = await _healthz(ops)
        assert status == 200
        assert body == {
            "status": "ok",
            "service": "gateway",
            "instance": "0",
            "pid": first,
            "ports": {"ops": ops, "gateway": gateway},
        }

        assert await stack.kill("gateway")
        await stack.restart("gateway", ready_timeout=90)
        second = stack.processes["gateway"].pid
        assert second is not None
        assert second != first
        assert (stack.ops_ports["gateway"], stack.gateway_port) == (ops, gateway)
        status, body = await _healthz(ops)
        assert (status, body["pid"], body["ports"]) == (200, second, {"ops": ops, "gateway": gateway})
        # The gateway's HTTPS port is served by the new process too (a TLS listener accepts).
        _reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
        writer.close()
        await writer.wait_closed()

        # After a graceful stop (SIGTERM, waited for): found again, still the same ports.
        assert await stack.processes["gateway"].stop()
        await stack.restart("gateway", ready_timeout=90)
        third = stack.processes["gateway"].pid
        assert third not in (None, first, second)
        status, body = await _healthz(ops)
        assert (status, body["pid"], body["ports"]) == (200, third, {"ops": ops, "gateway": gateway})
    finally:
        await stack.stop()
