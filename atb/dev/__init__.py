"""The local launcher: Kafka (KRaft, from Maven Central jars) and OPA (built with go), no Docker.

Public API, used by `atb dev`, the demo and the test fixtures:

    ensure_infra(progress=None) -> Infra      start what is missing, ensure the topics
    stop_infra(components=...) -> [names]     stop what the launcher started
    infra_status() -> [ComponentStatus]
    ensure_topics(bootstrap, namespace="")    create the catalogue's topics in a namespace
    delete_topics(bootstrap, namespace)
    ManagedProcess                            the pidfile supervisor, reusable for services

Settings come from the environment (see DevConfig.from_env).
"""

from atb.dev.config import DevConfig
from atb.dev.errors import DevError, PortInUseError, ProcessStartError, ToolchainMissingError, ToolError
from atb.dev.launcher import COMPONENTS, ComponentStatus, Infra, ensure_infra, ensure_tools, infra_status, stop_infra
from atb.dev.procs import ManagedProcess, ReadyCheck
from atb.dev.topics import TopicSetupError, delete_topics, ensure_topics

__all__ = [
    "COMPONENTS",
    "ComponentStatus",
    "DevConfig",
    "DevError",
    "Infra",
    "ManagedProcess",
    "PortInUseError",
    "ProcessStartError",
    "ReadyCheck",
    "ToolError",
    "ToolchainMissingError",
    "TopicSetupError",
    "delete_topics",
    "ensure_infra",
    "ensure_tools",
    "ensure_topics",
    "infra_status",
    "stop_infra",
]
