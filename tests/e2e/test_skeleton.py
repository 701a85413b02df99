"""The walking skeleton over the real broker, OPA and four service processes.

A low-risk request flows: approvals auto-approves → issuer signs an Ed25519 PoA →
broker allows it → the audit sink stores every event of the request exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from atb.sdk import AgentClient
from atb_identity import ensure_svid
from atb_runtime import Incoming, Outgoing, Publisher, dead_letter
from audit_sink.adapters.db import AuditStore, StoredEvent, make_engine
from contracts import AccountableParty, DeadLetter, Decision, LegitimateInterest, Tier, Topic, topic_name
from contracts.reasons import ReasonCode
from tests.e2e.audit_sync import caught_up, stored
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/test-bot"
LEG = LegitimateInterest(
    ref="LI-2024-001",
    jurisdiction="US",
    accountable_party=AccountableParty(type="employee", id="emp-100"),
)


def _agent(stack: RunningStack, agent_id: str = AGENT) -> AgentClient:
    svid = ensure_svid(stack.state_dir, agent_id)
    return AgentClient(svid=svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace)


async def _audit_rows(stack: RunningStack, request_id: str) -> list[StoredEvent]:
    """Every stored row of the request, once the sink has read to the end: a duplicate would be there."""
    await caught_up(stack.kafka_bootstrap, stack.namespace, stack.db_url)
    return await asyncio.to_thread(AuditStore(make_engine(stack.db_url), "reader").for_request, request_id)


async def test_low_risk_request_flows_end_to_end(running_stack: RunningStack) -> None:
    async with _agent(running_stack) as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/1", leg=LEG, params={"f": ["name"]})
        issued = await agent.await_poa(request_id, timeout=60)
        decision = await agent.invoke(
            "crm.contact.read", "crm:contact/1", poa=issued.token, request_id=request_id, params={"f": ["name"]}
        )

    # The PoA verifies with the issuer's own key, which was generated into the state folder.
    kid = jwt.get_unverified_header(issued.token)["kid"]
    key = load_pem_private_key((running_stack.state_dir / "issuer" / "keys" / f"{kid}.pem").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    claims = jwt.decode(
        issued.token,
        key.public_key(),
        algorithms=["EdDSA"],
        audience="spiffe://atb.local/svc/broker",
        issuer="spiffe://atb.local/svc/issuer",
    )
    assert jwt.get_unverified_header(issued.token)["typ"] == "poa+jwt"
    assert claims["sub"] == AGENT
    assert claims["act"] == "crm.contact.read"
    assert claims["exp"] - claims["iat"] <= 300
    assert issued.tier is Tier.LOW
    assert decision.decision is Decision.ALLOW, decision.reasons
    assert decision.jti == claims["jti"]

    rows = await _audit_rows(running_stack, request_id)
    # The audit store keeps the PoA event without its bearer token, only the token's hash.
    stored_poa = next(row for row in rows if row.event_type == "atb.poa.issued.v1")
    assert issued.token.encode() not in stored_poa.raw
    assert issued.token_sha256.encode() in stored_poa.raw
    types = Counter(row.event_type for row in rows)
    assert types == Counter(
        {
            "atb.poa.issuance_requested.v1": 1,
            "atb.approvals.quorum_reached.v1": 1,
            "atb.approvals.request_state.v1": 1,
            "atb.poa.issued.v1": 1,
            "atb.broker.action_requested.v1": 1,
            "atb.broker.decision.v2": 1,
            "atb.audit.event.v1": 3,
        }
    ), types


async def test_a_different_action_with_the_same_poa_is_denied(running_stack: RunningStack) -> None:
    async with _agent(running_stack) as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/1", leg=LEG)
        issued = await agent.await_poa(request_id, timeout=60)
        other_resource = await agent.invoke(
            "crm.contact.read", "crm:contact/2", poa=issued.token, request_id=request_id
        )
        forged = await agent.invoke(
            "crm.contact.read", "crm:contact/1", poa=issued.token[:-4] + "AAAA", request_id=request_id
        )
        missing = await agent.invoke("crm.contact.read", "crm:contact/1", poa=None, request_id=request_id)
    assert other_resource.decision is Decision.DENY
    assert ReasonCode.RESOURCE_MISMATCH in other_resource.codes, other_resource.reasons
    assert forged.decision is Decision.DENY
    assert {ReasonCode.BAD_SIGNATURE, ReasonCode.INVALID_TOKEN} & set(forged.codes), forged.reasons
    assert missing.decision is Decision.DENY
    assert missing.codes == (ReasonCode.POA_REQUIRED,), missing.reasons


async def test_poison_request_is_dead_lettered_and_the_consumer_continues(running_stack: RunningStack) -> None:
    ns = running_stack.namespace
    requests = topic_name(Topic.POA_REQUESTS, ns)
    async with Publisher(running_stack.kafka_bootstrap, "test-poison") as publisher:
        await publisher.publish(
            [
                _raw(requests, b"poison-1", b"{not json"),
                _raw(requests, b"poison-2", b'{"specversion":"1.0","unknown":1}'),
            ]
        )
    async with _agent(running_stack) as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/9", leg=LEG)
        issued = await agent.await_poa(request_id, timeout=60)
    assert issued.request_id == request_id

    # Approvals (the requests topic's consumer group) letters each once; the gateway's
    # follower letters what it cannot read too (docs/hostile-input.md), under its own name.
    await stored(
        running_stack.kafka_bootstrap,
        ns,
        running_stack.db_url,
        Topic.DLQ,
        lambda e: (
            isinstance(e.payload, DeadLetter)
            and e.payload.consumer == "approvals"
            and e.payload.original_key in ("poison-1", "poison-2")
        ),
        count=2,
        what="approvals dead-lettering both poison records",
    )
    store = AuditStore(make_engine(running_stack.db_url), "reader")
    letters: list[tuple[str, StoredEvent]] = [
        (key, row)
        for key in ("poison-1", "poison-2")
        for row in await asyncio.to_thread(store.for_request, key)
        if row.event_type == DeadLetter.event_type and b'"consumer":"approvals"' in row.raw
    ]
    assert sorted(key for key, _row in letters) == ["poison-1", "poison-2"]
    assert all(row.topic == topic_name(Topic.DLQ, ns) for _key, row in letters)
    raw = b"".join(row.raw for _key, row in letters)
    assert b"invalid_envelope" in raw


def _raw(topic: str, key: bytes, value: bytes) -> Outgoing:
    return Outgoing(topic=topic, key=key, value=value, headers=())


def test_dead_letter_keeps_the_original_bytes() -> None:
    record = Incoming(topic="atb.poa.requests", partition=2, offset=41, key=b"k", value=b"\x00bad")
    letter, audit_record = dead_letter(
        record, consumer="approvals", error_code="invalid_envelope", reason="x", source="spiffe://a/b", namespace=""
    )
    assert letter.topic == "atb.dlq"
    assert letter.value is not None
    assert b"AGJhZA==" in letter.value  # base64 of the original bytes
    assert ("atb-dlq-original-offset", b"41") in letter.headers
    assert audit_record.topic == "atb.audit"
