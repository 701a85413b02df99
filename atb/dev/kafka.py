"""The single-node KRaft broker of the dev stack: config, storage format, process, readiness.

The broker runs from the jars in `<cache>/kafka-jars` (see toolchain.py) with its
state under `<state>/kafka/`: `server.properties` rendered from
`infra/kafka-server.properties`, the data in `data/`, the cluster id in
`cluster.id`, log4j2 output in `logs/server.log` and the JVM's own stdout/stderr
in `kafka.log`. Creating topics is topics.py's job, not this module's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from pathlib import Path
from string import Template

from atb.dev.config import HOST, DevConfig
from atb.dev.errors import ProcessStartError
from atb.dev.procs import ManagedProcess
from atb.dev.toolchain import jars_stamp, run_logged
from atb.dev.topics import admin_client

__all__ = ["HEAP", "kafka_process", "kafka_ready", "prepare_storage", "render_config", "server_log", "start_error_hint"]

HEAP = ("-Xms256m", "-Xmx768m")  # two cores, shared with the services: stay well under 1 GB


def _template(config: DevConfig) -> Path:
    return config.repo / "infra" / "kafka-server.properties"


def _log4j(config: DevConfig) -> Path:
    return config.repo / "infra" / "log4j2.properties"


def _props(config: DevConfig) -> Path:
    return config.kafka_dir / "server.properties"


def _data(config: DevConfig) -> Path:
    return config.kafka_dir / "data"


def server_log(config: DevConfig) -> Path:
    """The broker's own log (log4j2, INFO and up)."""
    return config.kafka_dir / "logs" / "server.log"


def render_config(config: DevConfig) -> str:
    """`infra/kafka-server.properties` with the ports and data folder of this stack filled in."""
    return Template(_template(config).read_text()).substitute(
        kafka_port=config.kafka_port,
        controller_port=config.controller_port,
        data_dir=_data(config),
    )


def _digest(config: DevConfig) -> str:
    """A digest of everything the broker reads at start: a change means a restart."""
    digest = hashlib.sha256(render_config(config).encode())
    digest.update(_log4j(config).read_bytes())
    digest.update(jars_stamp(config).encode())
    return digest.hexdigest()[:16]


def _write_config(config: DevConfig) -> None:
    text = render_config(config)
    path = _props(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _cluster_id(config: DevConfig) -> str:
    """The stack's cluster id, made once (Kafka's format: 16 random bytes, base64url, no padding)."""
    path = config.kafka_dir / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    cluster_id = "-"
    while cluster_id.startswith("-"):  # Kafka's own random ids never start with '-' (it reads as an option)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cluster_id + "\n")
    return cluster_id


def _classpath(config: DevConfig) -> str:
    return f"{config.jars_dir}/*"


async def prepare_storage(config: DevConfig, java: str) -> None:
    """Write server.properties and format the data folder on first start (static voters: no --standalone)."""
    _write_config(config)
    if (_data(config) / "meta.properties").exists():
        return
    await run_logged(
        [
            java,
            *HEAP,
            "-cp",
            _classpath(config),
            f"-Dlog4j2.configurationFile={_log4j(config)}",
            f"-Dkafka.logs.dir={server_log(config).parent}",
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            _cluster_id(config),
            "-c",
            str(_props(config)),
        ],
        config.kafka_dir / "format.log",
    )


async def kafka_ready(bootstrap: str) -> bool:
    """True when the broker answers a metadata request and knows itself as a live broker."""
    host, _, port = bootstrap.rpartition(":")
    _, writer = await asyncio.open_connection(host, int(port))  # cheap first: no client log noise while down
    writer.close()
    await writer.wait_closed()
    async with admin_client(bootstrap, request_timeout_ms=5_000) as admin:
        cluster = await admin.describe_cluster()
    return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) >= 0


def kafka_process(config: DevConfig, java: str = "java") -> ManagedProcess:
    """The broker as a ManagedProcess (start it after `prepare_storage`); a config change changes the argv."""
    digest = _digest(config) if _template(config).exists() else "?"
    bootstrap = f"{HOST}:{config.kafka_port}"
    argv = [
        java,
        *HEAP,
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Datb.config={digest}",  # so that `up` restarts a broker started with another config
        f"-Dlog4j2.configurationFile={_log4j(config)}",
        f"-Dkafka.logs.dir={server_log(config).parent}",
        "-cp",
        _classpath(config),
        "kafka.Kafka",
        str(_props(config)),
    ]

    async def ready() -> bool:
        return await kafka_ready(bootstrap)

    return ManagedProcess(
        "kafka",
        argv,
        env=None,
        log_path=config.kafka_dir / "kafka.log",
        pid_path=config.kafka_dir / "kafka.pid",
        ready=ready,
    )


def start_error_hint(config: DevConfig, exc: ProcessStartError) -> ProcessStartError:
    """The same error, also pointing at the broker's server.log."""
    return ProcessStartError(f"{exc}; broker log: {server_log(config)}")
