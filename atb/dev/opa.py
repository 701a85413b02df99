"""The OPA server of the dev stack: `opa run --server --watch` over `opa/policy`.

`--watch` reloads the policy and its data when a file in the folder changes, so
editing `poa.rego` needs no restart. Readiness is OPA's own `GET /health`. This
module does not evaluate policies; the broker service does.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from atb.dev.config import HOST, DevConfig
from atb.dev.procs import ManagedProcess

__all__ = ["opa_process", "opa_ready"]


async def opa_ready(url: str) -> bool:
    """True when `GET <url>/health` answers 200."""
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(f"{url}/health") as response:
        return response.status == 200


def opa_process(config: DevConfig, opa: Path | None = None) -> ManagedProcess:
    """The OPA server as a ManagedProcess (the policy folder is created if missing)."""
    argv = [
        str(opa or config.bin_dir / "opa"),
        "run",
        "--server",
        "--addr",
        f"{HOST}:{config.opa_port}",
        "--log-level",
        "error",
        "--disable-telemetry",
        "--watch",
        str(config.policy_dir),
    ]
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
