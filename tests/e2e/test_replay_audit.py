"""`atb replay audit` on the real broker: a rebuild from Kafka matches the live store, and finds a DBA's edits."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from typer.testing import CliRunner

from atb.cli import app
from atb.sdk import AgentClient
from atb_identity import ensure_svid
from contracts import AccountableParty, BrokerDecision, LegitimateInterest, Topic, topic_name
from tests.e2e.audit_sync import caught_up
from tests.e2e.conftest import RunningStack
from tests.waits import events

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

LEG = LegitimateInterest(ref="LI-1", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-1"))


def _replay(stack: RunningStack, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, object]:
    monkeypatch.setenv("ATB_KAFKA_BOOTSTRAP_SERVERS", stack.kafka_bootstrap)
    monkeypatch.setenv("ATB_TOPIC_NAMESPACE", stack.namespace)
    monkeypatch.setenv("ATB_STATE_DIR", str(stack.state_dir))
    result = CliRunner().invoke(app, ["replay", "audit", "--live-db", stack.db_url, "--json", "--quiet", *args])
    assert result.exit_code in (0, 3), result.output
    start = result.output.index("{")
    doc: dict[str, object] = json.loads(result.output[start : result.output.rindex("}") + 1])
    return doc


async def test_a_rebuilt_range_is_identical_and_tampering_shows(
    running_stack: RunningStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    svid = ensure_svid(running_stack.state_dir, "spiffe://atb.local/agent/replay-bot")
    async with AgentClient(
        svid=svid, tenant="acme", bootstrap=running_stack.kafka_bootstrap, namespace=running_stack.namespace
    ) as agent:
        requests = []
        for i in range(5):
            request_id = await agent.request_poa("crm.contact.read", f"crm:contact/{i}", leg=LEG)
            issued = await agent.await_poa(request_id, timeout=60)
            await agent.invoke("crm.contact.read", f"crm:contact/{i}", poa=issued.token, request_id=request_id)
            requests.append(request_id)
    # The broker's outbox publishes the decisions after answering: awaited on Kafka, then the
    # sink caught up with everything committed so far, so the live store is complete.
    await events(
        running_stack.kafka_bootstrap,
        [topic_name(Topic.BROKER_DECISIONS, running_stack.namespace)],
        lambda e: isinstance(e.payload, BrokerDecision) and e.payload.request_id in requests,
        count=len(requests),
        what="the five broker decisions",
    )
    await caught_up(running_stack.kafka_bootstrap, running_stack.namespace, running_stack.db_url)
    doc = await asyncio.to_thread(_replay, running_stack, monkeypatch)
    assert doc["identical"], doc
    assert isinstance(doc["compared"], int)
    assert doc["compared"] > 40

    # A DBA bypasses the append-only triggers: deletes one row, edits another's bytes.
    path = running_stack.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')
        victims = conn.execute(
            'SELECT topic, partition, "offset" FROM audit_events WHERE topic LIKE ? ORDER BY seq LIMIT 2',
            ("%broker.decisions",),
        ).fetchall()
        (t1, p1, o1), (t2, p2, o2) = victims
        conn.execute('DELETE FROM audit_events WHERE topic = ? AND partition = ? AND "offset" = ?', (t1, p1, o1))
        conn.execute(
            "UPDATE audit_events SET raw = CAST(replace(CAST(raw AS TEXT), '\"allow\"', '\"deny!\"') AS BLOB) "
            'WHERE topic = ? AND partition = ? AND "offset" = ?',
            (t2, p2, o2),
        )
    tampered = await asyncio.to_thread(_replay, running_stack, monkeypatch)
    assert not tampered["identical"]
    assert tampered["missing"] == [f"{t1}:{p1}:{o1}"]
    assert tampered["different"] == [{"record": f"{t2}:{p2}:{o2}", "fields": ["raw"]}]
    assert tampered["extra"] == []
