"""Settings every service shares (pydantic-settings, `ATB_` environment variables).

Each knob has a default that works on one machine with `atb dev up`.
"""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CommonSettings", "default_state_dir"]


def default_state_dir() -> Path:
    """`<repo>/.state` when run from a checkout, else `~/.atb`."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "contracts").is_dir():
            return parent / ".state"
    return Path.home() / ".atb"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATB_", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    opa_url: str = "http://127.0.0.1:18181"
    topic_namespace: str = ""
    state_dir: Path = default_state_dir()
    trust_domain: str = "atb.local"
    instance: str = "0"
    """Names this process among the instances of its service (its static group membership, its logs,
    /healthz). `auto` takes the host name, which differs per container: replicas of one service block
    (`docker-compose up --scale`, a Kubernetes Deployment) then need no setting of their own."""
    ops_port: int = 0
    """Port of /healthz and /metrics; 0 disables the endpoint."""
    ops_host: str = "127.0.0.1"
    """Address /healthz and /metrics bind to (0.0.0.0 in a container, for scraping)."""
    identity_check_s: float = Field(default=10.0, ge=0, le=3600)
    """How often the SVID and trust-bundle files are checked for a renewal (SPIRE rewrites them); 0: never."""

    @field_validator("instance")
    @classmethod
    def _instance_name(cls, value: str) -> str:
        name = socket.gethostname() if value == "auto" else value
        if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"ATB_INSTANCE must be 1-64 letters, digits, '-', '_' or '.', or `auto`, not {value!r}")
        return name
