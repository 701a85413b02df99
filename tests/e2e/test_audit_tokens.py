"""A PoA issued, then presented to the broker on Kafka, through the whole stack: the audit store keeps
the token's digest, never the token, and the issuance is found by its audit name (issue 21)."""

from __future__ import annotations

import hashlib
import json

from atb.sdk import AgentClient
from atb_identity import ensure_svid
from audit_sink.adapters.db import make_engine
from audit_sink.adapters.ledger import iter_rows
from audit_sink.adapters.signing import load_verifier
from audit_sink.evidence import verify_store
from contracts import AccountableParty, ActionRequested, AuditEvent, BrokerDecision, Decision, LegitimateInterest
from tests.e2e.audit_sync import request_rows
from tests.e2e.conftest import RunningStack


async def test_a_presented_poa_is_stored_as_its_hash_only(running_stack: RunningStack) -> None:
    """A PoA issued, then presented to the broker on Kafka: the store keeps the token's digest, never the token,
    and the issuance is found by `event_type = 'poa_issued'` (issue 21)."""
    agent_id = "spiffe://atb.local/agent/finance-bot"
    leg = LegitimateInterest(
        ref="LI-2024-001", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-100")
    )
    svid = ensure_svid(running_stack.state_dir, agent_id)
    async with AgentClient(
        svid=svid, tenant="acme", bootstrap=running_stack.kafka_bootstrap, namespace=running_stack.namespace
    ) as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/42", leg=leg)
        issued = await agent.await_poa(request_id, timeout=60)
        decision = await agent.invoke("crm.contact.read", "crm:contact/42", poa=issued.token, request_id=request_id)
    assert decision.decision is Decision.ALLOW, decision.reasons
    url = running_stack.db_url
    # Both stored, and the sink caught up: the search for a token below covers everything committed so far.
    stack = (running_stack.kafka_bootstrap, running_stack.namespace, url)
    assert await request_rows(*stack, request_id, ActionRequested)
    assert await request_rows(*stack, request_id, BrokerDecision)

    rows = [row for _, row in iter_rows(make_engine(url))]
    token = issued.token.encode()
    assert not [row.event_type for row in rows if token in row.raw], "a bearer token is in the audit store"
    digest = "sha256:" + hashlib.sha256(token).hexdigest()
    presented = [row for row in rows if row.event_type == ActionRequested.event_type and row.request_id == request_id]
    assert [json.loads(row.raw)["data"]["poa"] for row in presented] == [digest]
    assert all(row.redacted and row.received_sha256 for row in presented)
    names = {row.audit_type for row in rows if row.request_id == request_id and row.event_type == AuditEvent.event_type}
    assert "poa_issued" in names
    assert "broker_action_allowed" in names
    report = verify_store(
        make_engine(url), load_verifier(str(running_stack.state_dir / "audit" / "checkpoint.key.pub"))
    )
    # Every row matches its leaf; the sink signs its first checkpoint within the minute.
    assert all(p.startswith("no signed checkpoint") for p in report.problems), report.problems
