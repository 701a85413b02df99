"""Run the ATB services as separate processes (`faststream run <pkg>.main:app`).

Used by `atb demo`, the end-to-end tests and the benchmarks. Each service gets
its own pidfile and log file under the state folder, its own `/healthz` port
(readiness), and the same `ATB_*` settings.

Ports and readiness (README "Readiness"):

- Every port the stack picks (ops ports, the gateway's, the brokers', chat's) is
  bound by the stack's `PortAllocator` and kept bound for the stack's life; the
  service inherits that socket and serves on it (atb/dev/ports.py). No other
  process can take the port, and it stays the same across `kill`/`restart`.
  Ports given in `StackConfig` are bound by the service itself.
- A service that cannot bind a port exits at once with status 71 and one log
  line naming the port (`atb_runtime.ops`); `start` reports that exit at once,
  with the tail of the log, not after `ready_timeout`.
- A service is ready when `GET /healthz` on its ops port answers 200 from the
  very pid this stack started, listing every port the stack expects it to serve.
  An answer from any other process is not readiness.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from atb.dev.ports import PortAllocator
from atb.dev.procs import ManagedProcess
from atb_identity import init_ca
from atb_runtime.ops import LISTEN_FDS_ENV

__all__ = [
    "DEFAULT_SERVICES",
    "SCALABLE",
    "SERVICES",
    "NotReadyError",
    "ServiceStack",
    "StackConfig",
    "healthz_ready",
    "stop_recorded",
]

SERVICES: dict[str, str] = {
    "gateway": "gateway.main:app",
    "approvals": "approvals.main:app",
    "issuer": "issuer.main:app",
    "broker": "broker.main:app",
    "audit-sink": "audit_sink.main:app",
    "chat": "chat.main:app",
    "console": "console.main:app",
}
DEFAULT_SERVICES = ("gateway", "approvals", "issuer", "broker", "audit-sink")
SCALABLE = ("approvals", "issuer", "broker", "audit-sink")
"""Services that scale out as more instances of one consumer group (docs/scaling.md)."""
"""chat is opt-in (`services=(*DEFAULT_SERVICES, "chat")`): it talks to a Slack API (`StackConfig.slack_api_url`).
The console is opt-in too (`"console"`): a browser signs in to it with a passkey (docs/console.md)."""


class NotReadyError(Exception):
    """Why a /healthz answer is not the readiness of the process we started."""


@dataclass(frozen=True)
class StackConfig:
    kafka_bootstrap: str
    opa_url: str
    state_dir: Path
    namespace: str = ""
    audit_db_url: str = ""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Settings of one service's processes only, by service name (its own SVID files, say); over `extra_env`."""
    gateway_port: int = 0
    """HTTPS port of the AgentAuth gateway; 0 lets the stack allocate one (held, see the module docstring)."""
    trust_domain: str = "atb.local"
    exit_with_parent: bool = True
    """Services shut down when the process that started them dies (tests, demo)."""
    slack_api_url: str = ""
    """Slack Web API base URL for the chat service (the local stand-in in tests and the demo)."""
    chat_port: int = 0
    """Port of the chat service's POST /slack/interactions; 0 lets the stack allocate one."""
    witness: bool = False
    """Also run an `atb witness` for this stack's audit log; the audit sink submits every checkpoint to it."""

    def run_dir(self) -> Path:
        return self.state_dir / "services" / (self.namespace.rstrip(".") or "default")


class ServiceStack:
    """The four services of one namespace, started and stopped together."""

    def __init__(
        self, config: StackConfig, services: tuple[str, ...] = DEFAULT_SERVICES, *, instances: int = 1
    ) -> None:
        self.config = config
        self._ports = PortAllocator()
        """Holds every port the stack picked until `stop()`; services inherit the sockets."""
        self.gateway_port = config.gateway_port or self._ports.allocate()
        self.broker_ports: dict[str, int] = {}
        """HTTPS (mTLS) port of `POST /v1/authorize` per broker process name."""
        self.chat_port = config.chat_port or self._ports.allocate()
        self.console_port = self._ports.allocate() if "console" in services else 0
        self.processes: dict[str, ManagedProcess] = {}
        self.witness_port = self._ports.allocate() if config.witness else 0
        self.witness_vkey = self._witness_keys() if config.witness else ""
        """The witness's verifier key (`--witness-key` of `atb audit verify`)."""
        if config.witness:
            self.processes["witness"] = self._witness_process()
        self.ops_ports: dict[str, int] = {name: self._ports.allocate() for name in services}
        for name in services:
            self.processes[name] = self._process(name, self.ops_ports[name])
        if instances < 1:
            raise ValueError(f"instances must be at least 1, not {instances}")
        self.instances: dict[str, list[str]] = {name: [name] for name in services}
        """Process names per service: the first instance, then its replicas (`<name>-i<k>`)."""
        for name in services:
            if name in SCALABLE:
                self.instances[name] += [self.add_replica(name, f"i{k}") for k in range(1, instances)]

    def add_replica(self, name: str, instance: str, env: Mapping[str, str] | None = None) -> str:
        """Another process of a service (same group, same state), named `<name>-<instance>`; not started.

        `env` overrides settings of this process only (a broker with another OPA, say).
        """
        replica = f"{name}-{instance}"
        self.ops_ports[replica] = self._ports.allocate()
        self.processes[replica] = self._process(name, self.ops_ports[replica], instance, replica, env or {})
        return replica

    def broker_url(self, name: str = "broker") -> str:
        return f"https://127.0.0.1:{self.broker_ports[name]}"

    @property
    def witness_url(self) -> str:
        return f"http://127.0.0.1:{self.witness_port}"

    def _witness_dir(self) -> Path:
        # Its state is this stack's: a witness remembers the newest checkpoint per log origin, and
        # another stack's audit store (another namespace) is another log under the same origin.
        return self.config.run_dir() / "witness"

    def _witness_keys(self) -> str:
        """Create the audit log's key and the witness's key now: each side must know the other's at start."""
        from atb.witness.adapters.keys import load_or_create_cosigner
        from atb.witness.settings import WitnessSettings
        from audit_sink.adapters.signing import load_or_create_signer
        from audit_sink.settings import AuditSinkSettings

        sink = AuditSinkSettings(state_dir=self.config.state_dir)
        load_or_create_signer(sink.key_path(), sink.checkpoint_origin)
        witness = WitnessSettings(state_dir=self.config.state_dir, witness_state_dir=self._witness_dir())
        return str(load_or_create_cosigner(witness.key_path(), witness.witness_name).key)

    def _witness_process(self) -> ManagedProcess:
        cfg = self.config
        env = {**os.environ, "ATB_STATE_DIR": str(cfg.state_dir), **cfg.extra_env}
        held = self._ports.held([self.witness_port])
        env[LISTEN_FDS_ENV] = ",".join(map(str, held))
        argv = [sys.executable, "-m", "atb.witness", "serve", "--state-dir", str(self._witness_dir())]
        argv += ["--port", str(self.witness_port)]
        run_dir = cfg.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        url = self.witness_url

        async def ready() -> bool:
            # The witness serves only POST /add-checkpoint and GET of cosigned checkpoints: any HTTP
            # answer on its held socket means it is serving.
            try:
                timeout = aiohttp.ClientTimeout(total=1.0)
                async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
                    return response.status > 0
            except (aiohttp.ClientError, TimeoutError, OSError):
                return False

        return ManagedProcess(
            "witness",
            argv,
            env,
            log_path=run_dir / "witness.log",
            pid_path=run_dir / "witness.pid",
            ready=ready,
            pass_fds=held,
        )

    @property
    def console_url(self) -> str:
        """The console as a browser reaches it: `localhost` is the passkeys' relying party id."""
        return f"http://localhost:{self.console_port}"

    def _service_env(self, name: str, process_name: str) -> dict[str, str]:
        if name == "console":
            env = {
                "ATB_CONSOLE_PORT": str(self.console_port),
                "ATB_CONSOLE_RP_ID": "localhost",
                "ATB_CONSOLE_ORIGIN": self.console_url,
            }
            if self.config.audit_db_url:
                env["ATB_CONSOLE_AUDIT_DB_URL"] = self.config.audit_db_url
            return env
        if name == "audit-sink" and self.config.witness:
            return {"ATB_AUDIT_WITNESSES": json.dumps([{"url": self.witness_url, "vkey": self.witness_vkey}])}
        if name != "broker":
            return {}
        self.broker_ports[process_name] = self._ports.allocate()
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
            **cfg.service_env.get(name, {}),
            **(env_overrides or {}),
        }
        # The sites this process serves, by the name its /healthz reports them under (atb_runtime.ops).
        sites = {"ops": int(env["ATB_OPS_PORT"])}
        site_env = {
            "gateway": "ATB_GATEWAY_PORT",
            "broker": "ATB_BROKER_PORT",
            "chat": "ATB_CHAT_PORT",
            "console": "ATB_CONSOLE_PORT",
        }
        if name in site_env and int(env.get(site_env[name]) or 0):
            sites[name] = int(env[site_env[name]])
        self.ops_ports[process_name] = sites["ops"]  # ATB_OPS_PORT in extra_env / env fixes it
        held = self._ports.held(sites.values())
        env[LISTEN_FDS_ENV] = ",".join(map(str, held))
        run_dir = cfg.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)

        async def ready() -> bool:
            return await healthz_ready(process, sites)

        process = ManagedProcess(
            process_name,
            [sys.executable, "-m", "faststream", "run", SERVICES[name]],
            env,
            log_path=run_dir / f"{process_name}.log",
            pid_path=run_dir / f"{process_name}.pid",
            ready=ready,
            pass_fds=held,
        )
        return process

    async def start(self, ready_timeout: float = 60.0) -> None:
        """Start every service (in parallel) and wait until each is ready (the module docstring).

        A leftover process of an earlier run (same pidfile) is stopped first: its
        ops port is not this run's. Raises ProcessStartError as soon as a service
        exits, or when one is not ready in time; the others keep running (`stop()`).
        """
        self._check_open()
        await self._stop_processes()
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
        """Stop every service and release the stack's ports; the stack cannot be started again."""
        await self._stop_processes(timeout)
        self._ports.close()

    async def _stop_processes(self, timeout: float = 10.0) -> None:
        await asyncio.gather(*(proc.stop(timeout) for proc in self.processes.values()))

    def _check_open(self) -> None:
        if self._ports.closed:
            raise RuntimeError("this ServiceStack was stopped (its ports are released): make a new one")

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
        """Start `name` again (after `kill`): same ports, ready once the new pid answers."""
        self._check_open()
        await self.processes[name].start(ready_timeout)

    def logs(self) -> dict[str, Path]:
        return {name: proc.log_path for name, proc in self.processes.items()}


async def healthz_ready(process: ManagedProcess, sites: Mapping[str, int]) -> bool:
    """True when /healthz on the ops port is answered 200 by `process` itself, serving every one of `sites`.

    Raises NotReadyError when another process answers or a site is missing, so that a timeout says why.
    """
    port = sites["ops"]
    try:
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            status = response.status
            body = await response.json(content_type=None) if status in (200, 503) else None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return False
    expected = process.pid
    answered = body.get("pid") if isinstance(body, dict) else None
    if answered != expected:
        who = f"pid {answered}" if answered is not None else "a process that names no pid"
        raise NotReadyError(f"port {port} is answered by {who}, not by {process.name} (pid {expected})")
    if status != 200:
        return False
    served = body.get("ports") if isinstance(body, dict) else None
    missing = {site: p for site, p in sites.items() if not isinstance(served, dict) or served.get(site) != p}
    if missing:
        raise NotReadyError(f"{process.name} (pid {expected}) does not serve {missing} (it serves {served})")
    return True


async def stop_recorded(state_dir: Path, timeout: float = 10.0) -> list[str]:
    """Stop every service process recorded under `<state_dir>/services/` (started by any stack); returns their names.

    Each pidfile names its process by pid, start time and command line, so only a
    process we started is signalled, never one that reused its pid.
    """
    stopped: list[str] = []
    for pid_path in sorted((state_dir / "services").glob("*/*.pid")):
        name = pid_path.stem
        proc = ManagedProcess(name, ["recorded"], None, pid_path.with_suffix(".log"), pid_path)
        if await proc.stop(timeout):
            stopped.append(f"{pid_path.parent.name}/{name}")
    return stopped
