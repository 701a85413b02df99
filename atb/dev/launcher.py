"""The dev stack as a whole: `ensure_infra`, `stop_infra`, `infra_status`, `ensure_tools`.

`ensure_infra` is idempotent: what already runs (our pidfile, same config, ready)
is left alone, what is missing is built and started, and the catalogue topics are
ensured in the default namespace. Tools are checked up front so a fresh machine
gets one line naming everything to install. A file lock in the state folder keeps
two launchers (a `make` and a pytest session, say) from racing.

It does not start the ATB services; those are separate ManagedProcesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from atb.dev.config import DevConfig
from atb.dev.errors import ProcessStartError
from atb.dev.kafka import kafka_process, kafka_ready, prepare_storage, server_log, start_error_hint
from atb.dev.opa import opa_process, opa_ready
from atb.dev.ports import port_free, require_free_ports
from atb.dev.procs import ManagedProcess
from atb.dev.toolchain import build_opa, jars_fresh, opa_fresh, require_java, require_tools, resolve_kafka_jars
from atb.dev.topics import ensure_topics

__all__ = [
    "COMPONENTS",
    "ComponentStatus",
    "Infra",
    "ensure_infra",
    "ensure_tools",
    "infra_status",
    "stop_infra",
]

Progress = Callable[[str], None]

COMPONENTS: tuple[str, ...] = ("kafka", "opa")
_STOP_TIMEOUT_S = {"kafka": 30.0, "opa": 10.0}


@dataclass(frozen=True)
class Infra:
    """Where the running stack answers. `started` names what this very call started."""

    kafka_bootstrap: str
    opa_url: str
    started: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ComponentStatus:
    """One row of `atb dev status`."""

    name: str
    pid: int | None
    address: str
    state: str  # "ready", "not ready", "stopped", "stopped, port in use"
    log_files: tuple[Path, ...]


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _check(components: Collection[str]) -> None:
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; known: {list(COMPONENTS)}")


@asynccontextmanager
async def _locked(config: DevConfig) -> AsyncIterator[None]:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(config.state_dir / "launcher.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _ports(config: DevConfig, component: str) -> list[tuple[int, str]]:
    """The ports a component listens on, each with the variable that moves it."""
    if component == "kafka":
        return [(config.kafka_port, "ATB_KAFKA_PORT"), (config.controller_port, "ATB_KAFKA_CONTROLLER_PORT")]
    return [(config.opa_port, "ATB_OPA_PORT")]


def _needed_tools(config: DevConfig, components: Collection[str], *, to_run: bool = True) -> list[str]:
    """What must be on PATH: java to run Kafka, mvn and go only while their caches are cold."""
    tools: list[str] = []
    if "kafka" in components:
        tools += ["java"] if to_run else []
        tools += [] if jars_fresh(config) else ["mvn"]
    if "opa" in components and not opa_fresh(config):
        tools.append("go")
    return tools


async def ensure_tools(config: DevConfig | None = None, progress: Progress | None = None) -> tuple[Path, Path]:
    """Resolve the Kafka jars and build OPA if needed; returns (jars folder, opa binary)."""
    config = config or DevConfig.from_env()
    require_tools(_needed_tools(config, COMPONENTS, to_run=False))
    return await resolve_kafka_jars(config, progress), await build_opa(config, progress)


async def _start(proc: ManagedProcess, what: str, progress: Progress | None, ready_timeout: float) -> bool:
    """Start (or find ready) `proc`; say what happened."""
    started = await proc.start(ready_timeout)
    _say(progress, f"{what} {'started' if started else 'already running'} (pid {proc.pid})")
    return started


async def _ensure_kafka(config: DevConfig, progress: Progress | None, ready_timeout: float) -> bool:
    await resolve_kafka_jars(config, progress)
    proc = kafka_process(config, require_tools(["java"])["java"])
    if proc.running_argv not in (None, proc.argv):
        _say(progress, "Kafka config changed: restarting it")
        await proc.stop(_STOP_TIMEOUT_S["kafka"])
    if not proc.is_running():
        require_free_ports("kafka", _ports(config, "kafka"))
        await prepare_storage(config, require_java())
        _say(progress, f"starting Kafka on {config.kafka_bootstrap} (state in {config.kafka_dir})")
    try:
        return await _start(proc, f"Kafka at {config.kafka_bootstrap}", progress, ready_timeout)
    except ProcessStartError as exc:
        raise start_error_hint(config, exc) from exc


async def _ensure_opa(config: DevConfig, progress: Progress | None, ready_timeout: float) -> bool:
    proc = opa_process(config, await build_opa(config, progress))
    if proc.running_argv not in (None, proc.argv):
        _say(progress, "OPA config changed: restarting it")
        await proc.stop(_STOP_TIMEOUT_S["opa"])
    if not proc.is_running():
        require_free_ports("opa", _ports(config, "opa"))
        config.policy_dir.mkdir(parents=True, exist_ok=True)
        _say(progress, f"starting OPA on {config.opa_url} (policy {config.policy_dir})")
    return await _start(proc, f"OPA at {config.opa_url}", progress, ready_timeout)


async def ensure_infra(
    progress: Progress | None = None,
    *,
    config: DevConfig | None = None,
    components: Collection[str] = COMPONENTS,
    ready_timeout: float = 180.0,
) -> Infra:
    """Make Kafka (with the catalogue topics) and OPA run and answer; start only what is missing."""
    config = config or DevConfig.from_env()
    _check(components)
    require_tools(_needed_tools(config, components))  # everything missing, in one line, before any work
    started: set[str] = set()
    async with _locked(config):
        # Fail fast on a foreign listener, before building or starting anything.
        for name, proc in _processes(config).items():
            if name in components and not proc.is_running():
                require_free_ports(name, _ports(config, name))
        if "kafka" in components:
            if await _ensure_kafka(config, progress, ready_timeout):
                started.add("kafka")
            await ensure_topics(config.kafka_bootstrap)
        if "opa" in components and await _ensure_opa(config, progress, ready_timeout):
            started.add("opa")
    return Infra(config.kafka_bootstrap, config.opa_url, frozenset(started))


def _processes(config: DevConfig) -> dict[str, ManagedProcess]:
    """Handles for stop/status: only the pidfiles matter, so the argv is not resolved."""
    return {"kafka": kafka_process(config), "opa": opa_process(config)}


async def stop_infra(
    components: Collection[str] = COMPONENTS, *, config: DevConfig | None = None, grace: float | None = None
) -> list[str]:
    """Stop what `ensure_infra` started (SIGTERM, SIGKILL after `grace` seconds); returns the names stopped."""
    config = config or DevConfig.from_env()
    _check(components)
    stopped: list[str] = []
    async with _locked(config):
        for name, proc in reversed(_processes(config).items()):
            if name in components and await proc.stop(grace or _STOP_TIMEOUT_S[name]):
                stopped.append(name)
    return stopped


async def _answers(name: str, config: DevConfig) -> bool:
    check = kafka_ready(config.kafka_bootstrap) if name == "kafka" else opa_ready(config.opa_url)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5.0):
            return await check
    return False


async def infra_status(config: DevConfig | None = None) -> list[ComponentStatus]:
    """Pid, address, state and log files of each component."""
    config = config or DevConfig.from_env()
    rows = []
    for name, proc in _processes(config).items():
        pid = proc.pid
        if pid is not None:
            state = "ready" if await _answers(name, config) else "not ready"
        else:
            state = "stopped" if all(port_free(p) for p, _ in _ports(config, name)) else "stopped, port in use"
        address = config.kafka_bootstrap if name == "kafka" else config.opa_url
        logs = (proc.log_path, server_log(config)) if name == "kafka" else (proc.log_path,)
        rows.append(ComponentStatus(name, pid, address, state, logs))
    return rows
