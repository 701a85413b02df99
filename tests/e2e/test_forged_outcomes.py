"""Forged outcomes and PoAs written to the topics: the gateway's views refuse and audit them, the SDK ignores them.

Whoever can write to `atb.approvals.outcomes` or `atb.poa.issued` can write a
QuorumReached, a RequestDenied or a PoaIssued. Only the approvals service's
proof makes an outcome, and only the issuer's makes a PoA or an issuer's denial
(atb_runtime/proofs.py): the gateway dead-letters and audits anything else as
`identity_proof_rejected` and `GET /requests/{id}` does not report it; the SDK's
waiters skip it and say so when they time out. The genuine flow still works.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from atb.sdk import AgentClient, ApproverClient, GatewayClient, PoaTimeoutError
from atb_identity import bundle_path, ensure_svid, sign_envelope
from atb_runtime import Publisher, outgoing_envelope
from atb_runtime.readback import StoredEvent, read_events
from contracts import (
    AccountableParty,
    ApprovalRequired,
    AuditEvent,
    ContractualNecessity,
    DeadLetter,
    Envelope,
    EventPayload,
    IssuanceRequested,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    Tier,
    Topic,
    VoteChoice,
    encode_envelope,
    make_envelope,
    topic_name,
)
from tests.e2e.conftest import RunningStack
from tests.waits import events

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/test-bot"
LEG = ContractualNecessity(
    ref="MSA-9",
    description="Update a contact",
    jurisdiction="EU",
    accountable_party=AccountableParty(type="employee", id="emp-300"),
)
VIEWS = "gateway-views@0"


@pytest.fixture
def stack(module_stack: RunningStack) -> RunningStack:
    return module_stack


async def _wait_for(
    stack: RunningStack, topic: Topic, want: Callable[[StoredEvent], bool], count: int, timeout: float = 60.0
) -> list[StoredEvent]:
    """Every matching event on the topic, read to its end once `count` are committed (the records that prove the
    reader saw them), so that one too many shows."""
    name = topic_name(topic, stack.namespace)
    await events(stack.kafka_bootstrap, [name], want, count=count, timeout=timeout, what=f"{count} on {topic.value}")
    return [e for e in await read_events(stack.kafka_bootstrap, [name]) if want(e)]


async def _publish(stack: RunningStack, *envelopes: Envelope) -> None:
    def topic(envelope: Envelope) -> str:
        return topic_name(
            Topic.POA_ISSUED if envelope.type == PoaIssued.event_type else Topic.OUTCOMES, stack.namespace
        )

    async with Publisher(stack.kafka_bootstrap, "forger") as publisher:
        await publisher.send_and_wait([outgoing_envelope(e, topic(e)) for e in envelopes])


def _forgeries(stack: RunningStack, request: IssuanceRequested, request_event: str) -> list[Envelope]:
    """A QuorumReached signed by the agent, a RequestDenied with no proof, a PoaIssued signed by the agent."""
    now = datetime.now(UTC).replace(microsecond=0)
    agent = ensure_svid(stack.state_dir, AGENT)
    quorum = QuorumReached(
        request_id=request.request_id,
        tier=Tier.MEDIUM,
        required_approvals=1,
        request_digest="sha256:" + "a" * 64,
        poa_ttl_seconds=300,
        request=request,
        request_event=request_event,
        decided_at=now,
    )
    denied = RequestDenied(
        request_id=request.request_id,
        code="deny_vote",
        reason="forged",
        denied_by="spiffe://atb.local/svc/approvals",
        decided_at=now,
    )
    token = "eyJhbGciOiJFZERTQSJ9.eyJmb3JnZWQiOnRydWV9.c2ln"
    poa = PoaIssued(
        request_id=request.request_id,
        jti=f"forged-{secrets.token_hex(4)}",
        kid="k-forged",
        agent_id=AGENT,
        action=request.action,
        tier=Tier.MEDIUM,
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
        token=token,
        token_sha256="sha256:" + hashlib.sha256(token.encode()).hexdigest(),
    )
    # A valid proof by a party of the trust domain that may not state these; no proof at all.
    return [
        sign_envelope(make_envelope(quorum, source=AGENT), agent),
        make_envelope(denied, source="spiffe://atb.local/svc/approvals"),
        sign_envelope(make_envelope(poa, source=AGENT), agent),
    ]


def _about(request_id: str, types: tuple[type[EventPayload], ...] = (DeadLetter,)) -> Callable[[StoredEvent], bool]:
    return lambda e: isinstance(e.payload, types) and getattr(e.payload, "request_id", None) == request_id


async def test_forged_outcomes_and_poas_are_refused_by_the_gateway_and_ignored_by_the_sdk(stack: RunningStack) -> None:
    svid = ensure_svid(stack.state_dir, AGENT)
    async with GatewayClient(
        svid=svid, bundle_path=bundle_path(stack.state_dir), base_url=stack.stack.gateway_url
    ) as gw:
        request_id = await gw.request_poa("crm.contact.update", "crm:contact/77", tenant="acme", leg=LEG)
        required = await _wait_for(stack, Topic.OUTCOMES, _about(request_id, (ApprovalRequired,)), 1)
        assert required, "no ApprovalRequired"
        [asked] = await _wait_for(stack, Topic.POA_REQUESTS, _about(request_id, (IssuanceRequested,)), 1)
        assert isinstance(asked.payload, IssuanceRequested)

        await _publish(stack, *_forgeries(stack, asked.payload, encode_envelope(asked.envelope).decode()))

        # The gateway's view read all three (its dead letters say so), refused them and audited each.
        letters = await _wait_for(
            stack, Topic.DLQ, lambda e: _about(request_id)(e) and getattr(e.payload, "consumer", "") == VIEWS, 3
        )
        assert sorted(e.payload.original_topic for e in letters if isinstance(e.payload, DeadLetter)) == sorted(
            [topic_name(Topic.OUTCOMES, stack.namespace)] * 2 + [topic_name(Topic.POA_ISSUED, stack.namespace)]
        )
        audits = await _wait_for(
            stack,
            Topic.AUDIT,
            lambda e: (
                _about(request_id, (AuditEvent,))(e)
                and isinstance(e.payload, AuditEvent)
                and e.payload.audit_type == "identity_proof_rejected"
                and e.payload.details.get("consumer") == VIEWS
            ),
            3,
        )
        assert len(audits) == 3
        status = await gw.status(request_id)
        assert (status.status, status.poa) == ("approval_required", None)

    # The SDK: the forged denial and PoA are ignored (neither raised nor returned), and said so.
    async with AgentClient(svid=svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace) as a:
        with pytest.raises(PoaTimeoutError) as waited:
            await a.await_poa(request_id, timeout=5)
        assert len(waited.value.ignored) == 2, waited.value.ignored
        assert "ignored 2 whose proof did not hold" in str(waited.value)

        # The genuine flow: the approvals service's ApprovalRequired, a vote, the issuer's PoA.
        carol = ensure_svid(stack.state_dir, "spiffe://atb.local/user/carol")
        async with ApproverClient(svid=carol, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace) as voter:
            await voter.vote(await voter.approval_required(request_id), VoteChoice.APPROVE)
        issued = await a.await_poa(request_id, timeout=60)
        assert not issued.jti.startswith("forged-")


async def test_an_approval_required_not_proven_by_approvals_is_not_handed_to_the_approver(
    stack: RunningStack,
) -> None:
    request_id = f"forged-{secrets.token_hex(4)}"
    forged = ApprovalRequired(
        request_id=request_id,
        tier=Tier.MEDIUM,
        required_approvals=1,
        eligible_groups=("security",),
        ticket_required=False,
        deadline=datetime.now(UTC) + timedelta(minutes=5),
        request_digest="sha256:" + "c" * 64,
        agent_id=AGENT,
        action="crm.contact.update",
        resource="crm:contact/9",
        accountable_party_id="emp-300",
    )
    envelope = sign_envelope(make_envelope(forged, source=AGENT), ensure_svid(stack.state_dir, AGENT))
    await _publish(stack, envelope)
    carol = ensure_svid(stack.state_dir, "spiffe://atb.local/user/carol")
    async with ApproverClient(svid=carol, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace) as voter:
        with pytest.raises(PoaTimeoutError) as waited:
            await voter.approval_required(request_id, timeout=5)
    assert len(waited.value.ignored) == 1
    assert f"{AGENT} may not publish" in waited.value.ignored[0]
