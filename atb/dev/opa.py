"""The OPA server of the dev stack: `opa run --server --watch` over `opa/policy`, or bundle mode.

Default (`--watch`): OPA reloads the policy and its data when a file in the
folder changes, so editing `poa.rego` needs no restart.

Bundle mode (opt-in, `ATB_OPA_CONFIG_FILE=<file>` or `config_file=`): OPA runs
with that configuration instead of the folder: it polls a signed bundle from a
bundle store and verifies its signature, as in production (docs/policy.md;
`atb policy opa-config` writes the file, `atb policy serve` serves the store).
A refused bundle is logged at level error, which this process keeps.

Readiness is OPA's own `GET /health` (it answers before any bundle is active:
an OPA without a bundle has no decision, and ATB fails closed on that). This
module does not evaluate policies; the services do.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from atb.dev.config import HOST, DevConfig
from atb.dev.procs import ManagedProcess

__all__ = ["OPA_CONFIG_ENV", "opa_process", "opa_ready"]

OPA_CONFIG_ENV = "ATB_OPA_CONFIG_FILE"
"""Set to an OPA configuration file to run the dev OPA in bundle mode instead of `--watch`."""


async def opa_ready(url: str) -> bool:
    """True when `GET <url>/health` answers 200."""
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(f"{url}/health") as response:
        return response.status == 200


def _config_file_from_env() -> Path | None:
    raw = os.environ.get(OPA_CONFIG_ENV, "").strip()
    return Path(raw).expanduser().resolve() if raw else None


def opa_process(config: DevConfig, opa: Path | None = None, *, config_file: Path | None = None) -> ManagedProcess:
    """The OPA server as a ManagedProcess: `--watch` over the policy folder, or bundle mode with `config_file`."""
    config_file = config_file or _config_file_from_env()
    argv = [
        str(opa or config.bin_dir / "opa"),
        "run",
        "--server",
        "--addr",
        f"{HOST}:{config.opa_port}",
        "--log-level",
        "error",
        "--disable-telemetry",
    ]
    if config_file is None:
        argv += ["--watch", str(config.policy_dir)]
    else:
        argv += ["--config-file", str(config_file)]
    url = config.opa_url

    async def ready() -> bool:
        return await opa_ready(url)

    return ManagedProcess(
        "opa",
        argv,
        env=None,
        log_path=config.opa_dir / "opa.log",
        pid_path=config.opa_dir / "opa.pid",
        ready=ready,
    )
