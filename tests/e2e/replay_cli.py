"""Run `atb replay ...` as the operator does: a separate process, with the stack's settings."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ATB = str(Path(sys.executable).parent / "atb")


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def atb_replay(*args: str, bootstrap: str, namespace: str, state_dir: Path, opa_url: str = "") -> CliRun:
    env = {
        **os.environ,
        "ATB_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ATB_TOPIC_NAMESPACE": namespace,
        "ATB_STATE_DIR": str(state_dir),
        "COLUMNS": "200",
        **({"ATB_OPA_URL": opa_url} if opa_url else {}),
    }
    proc = await asyncio.create_subprocess_exec(
        ATB, "replay", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return CliRun(proc.returncode, out.decode(), err.decode())
