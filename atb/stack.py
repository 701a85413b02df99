"""Run the ATB services as separate processes (`faststream run <pkg>.main:app`).

Used by `atb demo`, `atb dev up --services`, the end-to-end tests and the
benchmarks. Each service gets its own pidfile and log file under the state
folder, its own `/healthz` port (readiness), and the same `ATB_*` settings.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from atb.dev.procs import ManagedProcess
from atb_identity import init_ca

__all__ = ["DEFAULT_SERVICES", "SERVICES", "ServiceStack", "StackConfig"]

SERVICES: dict[str, str] = {
    "gateway": "gateway.main:app",
    "approvals": "approvals.main:app",
    "issuer": "issuer.main:app",
    "broker": "broker.main:app",
    "audit-sink": "audit_sink.main:app",
    "chat": "chat.main:app",
}
DEFAULT_SERVICES = ("gateway", "approvals", "issuer", "broker", "audit-sink")
"""chat is opt-in (`services=(*DEFAULT_SERVICES, "chat")`): it talks to a Slack API (`StackConfig.slack_api_url`)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class StackConfig:
    kafka_bootstrap: str
    opa_url: str
    state_dir: Path
    namespace: str = ""
    audit_db_url: str = ""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    gateway_port: int = 0
    """HTTPS port of the AgentAuth gateway; 0 picks a free one."""
    trust_domain: str = "atb.local"
    exit_with_parent: bool = True
    """Services shut down when the process that started them dies (tests, demo)."""
    slack_api_url: str = ""
    """Slack Web API base URL for the chat service (the local stand-in in tests and the demo)."""
    chat_port: int = 0
    """Port of the chat service's POST /slack/interactions; 0 picks a free one."""

    def run_dir(self) -> Path:
        return self.state_dir / "services" / (self.namespace.rstrip(".") or "default")


class ServiceStack:
    """The four services of one namespace, started and stopped together."""

    def __init__(self, config: StackConfig, services: tuple[str, ...] = DEFAULT_SERVICES) -> None:
        self.config = config
        self.gateway_port = config.gateway_port or _free_port()
        self.broker_ports: dict[str, int] = {}
        """HTTPS (mTLS) port of `POST /v1/authorize` per broker process name."""
        self.chat_port = config.chat_port or _free_port()
        self.processes: dict[str, ManagedProcess] = {}
        self.ops_ports: dict[str, int] = {name: _free_port() for name in services}
        for name in services:
            self.processes[name] = self._process(name, self.ops_ports[name])

    def add_replica(self, name: str, instance: str, env: Mapping[str, str] | None = None) -> str:
        """Another process of a service (same group, same state), named `<name>-<instance>`; not started.

        `env` overrides settings of this process only (a broker with another OPA, say).
        """
        replica = f"{name}-{instance}"
        self.ops_ports[replica] = _free_port()
        self.processes[replica] = self._process(name, self.ops_ports[replica], instance, replica, env or {})
        return replica

    def broker_url(self, name: str = "broker") -> str:
        return f"https://127.0.0.1:{self.broker_ports[name]}"

    def _service_env(self, name: str, process_name: str) -> dict[str, str]:
        if name != "broker":
            return {}
        self.broker_ports[process_name] = _free_port()
        env = {"ATB_BROKER_PORT": str(self.broker_ports[process_name])}
        if "issuer" in self.ops_ports:
            env["ATB_JWKS_URL"] = f"http://127.0.0.1:{self.ops_ports['issuer']}/.well-known/jwks.json"
        return env

    def _process(
        self,
        name: str,
        port: int,
        instance: str = "0",
        process_name: str = "",
        env_overrides: Mapping[str, str] | None = None,
    ) -> ManagedProcess:
        process_name = process_name or name
        cfg = self.config
        env = {
            **os.environ,
            "ATB_KAFKA_BOOTSTRAP_SERVERS": cfg.kafka_bootstrap,
            "ATB_OPA_URL": cfg.opa_url,
            "ATB_TOPIC_NAMESPACE": cfg.namespace,
            "ATB_STATE_DIR": str(cfg.state_dir),
            "ATB_OPS_PORT": str(port),
            "ATB_INSTANCE": instance,
            "ATB_GATEWAY_PORT": str(self.gateway_port),
            "ATB_TRUST_DOMAIN": cfg.trust_domain,
            "ATB_CHAT_PORT": str(self.chat_port),
            # The stand-in accepts any bot token; a real workspace's token comes from the environment.
            **(
                {"ATB_SLACK_API_URL": cfg.slack_api_url, "ATB_SLACK_BOT_TOKEN": "xoxb-local"}
                if cfg.slack_api_url
                else {}
            ),
            **({"ATB_EXIT_WITH_PARENT": str(os.getpid())} if cfg.exit_with_parent else {}),
            **({"ATB_AUDIT_DB_URL": cfg.audit_db_url} if cfg.audit_db_url else {}),
            **self._service_env(name, process_name),
            **cfg.extra_env,
            **(env_overrides or {}),
        }
        run_dir = cfg.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)

        async def ready() -> bool:
            return await _healthy(port)

        return ManagedProcess(
            process_name,
            [sys.executable, "-m", "faststream", "run", SERVICES[name]],
            env,
            log_path=run_dir / f"{process_name}.log",
            pid_path=run_dir / f"{process_name}.pid",
            ready=ready,
        )

    async def start(self, ready_timeout: float = 60.0) -> None:
        """Start every service (in parallel) and wait until each answers /healthz.

        A leftover process of an earlier run (same pidfile) is stopped first: its
        ops port is not this run's.
        """
        await self.stop()
        # The dev CA must exist before services load its bundle (created once, not by
        # several services racing each other).
        init_ca(self.config.state_dir, self.config.trust_domain)
        await asyncio.gather(*(proc.start(ready_timeout) for proc in self.processes.values()))

    @property
    def gateway_url(self) -> str:
        return f"https://127.0.0.1:{self.gateway_port}"

    @property
    def interactions_url(self) -> str:
        return f"http://127.0.0.1:{self.chat_port}/slack/interactions"

    async def stop(self, timeout: float = 10.0) -> None:
        await asyncio.gather(*(proc.stop(timeout) for proc in self.processes.values()))

    async def kill(self, name: str, wait_s: float = 10.0) -> bool:
        """SIGKILL one service (fault injection) and wait until it is gone."""
        proc = self.processes[name]
        if not proc.kill():
            return False
        deadline = time.monotonic() + wait_s
        while proc.is_running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} survived SIGKILL for {wait_s:.0f}s")
            await asyncio.sleep(0.05)
        return True

    async def restart(self, name: str, ready_timeout: float = 60.0) -> None:
        await self.processes[name].start(ready_timeout)

    def logs(self) -> dict[str, Path]:
        return {name: proc.log_path for name, proc in self.processes.items()}


async def _healthy(port: int) -> bool:
    try:
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
