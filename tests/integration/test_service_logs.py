"""A real service process's log when it cannot start: JSON lines with the schema (docs/observability.md).

No Kafka is needed: the gateway's build fails on a missing agent registry before it connects.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from atb_runtime.logs import REQUIRED_FIELDS


async def test_a_service_that_fails_to_start_says_why_in_one_json_line_and_exits_1(tmp_path: Path) -> None:
    """The real `faststream run` of a service whose build fails: every line JSON, the error in `error.*`."""
    env = {
        **os.environ,
        "ATB_STATE_DIR": str(tmp_path),
        "ATB_AGENT_REGISTRY_PATH": str(tmp_path / "missing" / "agents.json"),
        "ATB_GATEWAY_PORT": "0",
        "ATB_OPS_PORT": "0",
        "ATB_INSTANCE": "gw-7",
    }
    env.pop("ATB_LOG_FORMAT", None)  # the default
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "faststream",
        "run",
        "gateway.main:app",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, output.decode()[-2000:]
    lines = [json.loads(line) for line in output.decode().splitlines()]  # a line that is not JSON fails here
    for line in lines:
        assert set(REQUIRED_FIELDS) <= set(line), line
        assert (line["service.name"], line["service.instance"]) == ("gateway", "gw-7")
    (failed,) = [line for line in lines if line["log.level"] == "critical"]
    assert failed["message"] == "gateway failed to start; exiting"
    assert failed["error.type"] == "FileNotFoundError"
    assert "agents.json" in str(failed["error.message"])
    assert "Traceback" in str(failed["error.stack_trace"])
