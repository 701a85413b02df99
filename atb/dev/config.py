"""Where the local stack lives and which ports it listens on, read from the environment.

Defaults put everything under the repository (`.state/`, `.cache/`, both
git-ignored) and on loopback ports that do not collide with the usual 9092/8181.
This module only reads the environment; it starts nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HOST", "DevConfig", "repo_root"]

HOST = "127.0.0.1"

_DEFAULT_KAFKA_PORT = 19092
_DEFAULT_CONTROLLER_PORT = 19093
_DEFAULT_OPA_PORT = 18181


def repo_root() -> Path:
    """The checkout this package lives in (atb/dev/config.py → three levels up)."""
    return Path(__file__).resolve().parents[2]


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{name}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


def _dir(env: Mapping[str, str], name: str, default: Path) -> Path:
    raw = env.get(name, "").strip()
    return Path(raw).expanduser().resolve() if raw else default


@dataclass(frozen=True)
class DevConfig:
    """Paths and ports of one local stack. Two configs with different state dirs and ports are independent."""

    repo: Path
    state_dir: Path
    cache_dir: Path
    kafka_port: int
    controller_port: int
    opa_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DevConfig:
        """Read `ATB_STATE_DIR`, `ATB_CACHE_DIR`, `ATB_KAFKA_PORT`, `ATB_KAFKA_CONTROLLER_PORT`, `ATB_OPA_PORT`."""
        env = os.environ if env is None else env
        repo = repo_root()
        return cls(
            repo=repo,
            state_dir=_dir(env, "ATB_STATE_DIR", repo / ".state"),
            cache_dir=_dir(env, "ATB_CACHE_DIR", repo / ".cache"),
            kafka_port=_port(env, "ATB_KAFKA_PORT", _DEFAULT_KAFKA_PORT),
            controller_port=_port(env, "ATB_KAFKA_CONTROLLER_PORT", _DEFAULT_CONTROLLER_PORT),
            opa_port=_port(env, "ATB_OPA_PORT", _DEFAULT_OPA_PORT),
        )

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def opa_url(self) -> str:
        return f"http://{HOST}:{self.opa_port}"

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def opa_dir(self) -> Path:
        return self.state_dir / "opa"

    @property
    def jars_dir(self) -> Path:
        return self.cache_dir / "kafka-jars"

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    @property
    def policy_dir(self) -> Path:
        return self.repo / "opa" / "policy"
