"""`atb trace` on the real Kafka broker: every step of a high-risk request, from Kafka and from the audit store."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from atb.cli import app
from atb.sdk import AgentClient, ApproverClient, BrokerClient
from atb.trace.audit import audit_records
from atb.trace.timeline import build_timeline, read_request, resolve_request_id
from atb_identity import bundle_path, ensure_svid
from contracts import AccountableParty, BrokerDecision, ContractualNecessity, Decision, Topic, VoteChoice, topic_name
from tests.e2e.audit_sync import stored
from tests.e2e.conftest import RunningStack
from tests.waits import events

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/trace-bot"
LEG = ContractualNecessity(
    ref="MSA-1",
    description="Change vendor",
    jurisdiction="EU",
    accountable_party=AccountableParty(type="employee", id="emp-200"),
)


@pytest.fixture
def running_stack(module_stack: RunningStack) -> RunningStack:
    return module_stack


async def _high_risk_request(stack: RunningStack) -> tuple[str, str]:
    svid = ensure_svid(stack.state_dir, AGENT)
    async with AgentClient(
        svid=svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace
    ) as agent:
        request_id = await agent.request_poa("sap.vendor.change", "sap:vendor/V-7", leg=LEG, params={"iban": "X"})
        for name in ("dave", "alice", "bob"):  # dave is emp-200: refused as self-approval
            user = ensure_svid(stack.state_dir, f"spiffe://atb.local/user/{name}")
            async with ApproverClient(svid=user, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace) as voter:
                await voter.vote(await voter.approval_required(request_id), VoteChoice.APPROVE)
        issued = await agent.await_poa(request_id, timeout=60)
    broker_url = stack.stack.broker_url()
    async with BrokerClient(svid=svid, bundle_path=bundle_path(stack.state_dir), base_url=broker_url) as broker:
        for _ in range(2):  # the second one is a replay
            answer = await broker.authorize(
                "sap.vendor.change",
                "sap:vendor/V-7",
                request_id=request_id,
                tenant="acme",
                poa=issued.token,
                params={"iban": "X"},
                execute=False,
            )
        assert answer.decision is Decision.DENY
    return request_id, issued.jti


async def _both_decisions(stack: RunningStack, request_id: str) -> None:
    """The broker's outbox relay publishes right after answering: wait for both decisions on Kafka."""
    await events(
        stack.kafka_bootstrap,
        [topic_name(Topic.BROKER_DECISIONS, stack.namespace)],
        lambda e: isinstance(e.payload, BrokerDecision) and e.payload.request_id == request_id,
        count=2,
        what=f"both broker decisions of {request_id}",
    )


async def test_trace_shows_every_step_with_votes_verdicts_and_latencies(running_stack: RunningStack) -> None:
    request_id, jti = await _high_risk_request(running_stack)
    assert await resolve_request_id(running_stack.kafka_bootstrap, jti, running_stack.namespace) == request_id
    await _both_decisions(running_stack, request_id)
    steps = build_timeline(await read_request(running_stack.kafka_bootstrap, request_id, running_stack.namespace))
    kinds = [s.kind for s in steps]
    for expected in ("requested", "approval required", "vote", "quorum reached", "PoA issued", "broker decision"):
        assert expected in kinds, (expected, kinds)
    assert kinds.index("requested") < kinds.index("approval required") < kinds.index("quorum reached")
    assert kinds.index("quorum reached") < kinds.index("PoA issued") < kinds.index("broker decision")
    votes = [s.summary for s in steps if s.kind == "vote"]
    assert any("dave" in v and "refused: self_approval" in v for v in votes), votes
    assert sum("counted" in v for v in votes) == 2, votes
    assert all("via cli" in v for v in votes)
    decisions = [s.summary for s in steps if s.kind == "broker decision"]
    assert decisions[0].startswith("allow")
    assert decisions[1].startswith("deny: poa_single_use_replay_blocked")
    poa = next(s for s in steps if s.kind == "PoA issued")
    assert poa.details["claims"]["jti"] == jti
    assert "token" not in json.dumps(poa.details)  # claims, never the token
    assert all(s.since_previous_ms >= 0 for s in steps)
    assert steps[-1].since_start_ms > 0
    audits = {s.kind for s in steps}
    for audit_type in (
        "audit: approval_self_vote_refused",
        "audit: poa_issued_dual_control",
        "audit: poa_single_use_replay_blocked",
    ):
        assert audit_type in audits


async def test_trace_cli_json_and_the_audit_store_source(
    running_stack: RunningStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id, jti = await _high_risk_request(running_stack)
    monkeypatch.setenv("ATB_KAFKA_BOOTSTRAP_SERVERS", running_stack.kafka_bootstrap)
    monkeypatch.setenv("ATB_TOPIC_NAMESPACE", running_stack.namespace)
    await stored(
        running_stack.kafka_bootstrap,
        running_stack.namespace,
        running_stack.db_url,
        Topic.BROKER_DECISIONS,
        lambda e: isinstance(e.payload, BrokerDecision) and e.payload.request_id == request_id,
        count=2,
        what=f"both broker decisions of {request_id}",
    )
    rows = await asyncio.to_thread(audit_records, running_stack.db_url, request_id)
    assert sum(r.payload is not None and type(r.payload).__name__ == "BrokerDecision" for r in rows) == 2
    assert rows
    assert all(r.origin == "audit store" and r.checkpoint for r in rows)
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["trace", jti, "--json", "--audit-db", running_stack.db_url]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["request_id"] == request_id
    kinds = [s["kind"] for s in doc["steps"]]
    assert "PoA issued" in kinds
    assert kinds.count("broker decision") == 2
    # Found on Kafka and in the store: each event once, with where the store keeps it.
    ids = [s["event_id"] for s in doc["steps"]]
    assert len(ids) == len(set(ids))
    assert any("leaf" in str(s["details"].get("checkpoint", "")) for s in doc["steps"])
    unknown = await asyncio.to_thread(CliRunner().invoke, app, ["trace", "req-does-not-exist"])
    assert unknown.exit_code == 2
