"""`atb demo` end to end, as `make demo` runs it: it exits 0 and shows what it promises.

Run as a developer runs it: the repository's state folder, the session's Kafka
and OPA (the demo finds them running and leaves them so). Beside the walking skeleton, dual control,
`atb vote` and Teams, it must show a reminder reaching approvers, an escalation
that brings the quorum, and the outcome delivered to a local HTTPS webhook with
a signature that checks against the issuer's published key.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.opa]


async def test_the_demo_shows_a_reminder_an_escalation_that_brings_the_quorum_and_a_delivered_callback(
    kafka_bootstrap: str, opa_url: str
) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "atb"),
        "demo",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=420)
    shown = out.decode()
    assert proc.returncode == 0, shown[-4000:]
    for line in (
        "reminder → bob: Slack DM and a Teams message",
        "reminder → carol: Slack DM and a Teams message",
        "escalation → carol (security)",
        "Quorum reached with carol, who was told by the escalation: PoA issued (tier high)",
        "Outcome callback delivered to the local HTTPS receiver",
        '"outcome": "issued"',
        "ATB-Signature verified with the issuer's published key",
        "dave (emp-200, the accountable party) is told in Slack",
    ):
        assert line in shown, line
