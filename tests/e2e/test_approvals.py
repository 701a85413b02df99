"""Approvals on the real broker: quorum, self-approval, deny, deadline, held votes, forged votes.

The services run as processes; agents and approvers use real SVIDs from the dev CA.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb.sdk import AgentClient, ApproverClient, PoaDeniedError
from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Outgoing, Publisher, outgoing_envelope
from audit_sink.adapters.db import StoredEvent
from broker.adapters.keys import KeyRing as KeyRing_
from broker.adapters.verify import PoaVerifier
from contracts import (
    AccountableParty,
    ApprovalRequired,
    ContractualNecessity,
    CountedVote,
    Decision,
    DigestFields,
    IssuanceRequested,
    LegitimateInterest,
    QuorumReached,
    Tier,
    VoteCast,
    VoteChoice,
    decode_envelope,
    encode_envelope,
    make_envelope,
    payload_of,
    request_digest,
    topic_name,
)
from issuer.adapters.announce import publish_keys
from issuer.adapters.keyring import SigningKeyRing
from tests.e2e.audit_sync import audit_rows, stored_raw
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
USERS = {name: f"spiffe://atb.local/user/{name}" for name in ("alice", "bob", "carol", "dave")}
# dave's HR id is emp-200 (config/approvers.json): he is the accountable party below.
HIGH_LEG = ContractualNecessity(
    ref="MSA-12345",
    description="Pay invoice 4711",
    jurisdiction="EU",
    accountable_party=AccountableParty(type="employee", id="emp-200"),
)
MEDIUM_LEG = LegitimateInterest(
    ref="LI-7", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-300")
)


@pytest.fixture
def running_stack(module_stack: RunningStack) -> RunningStack:
    return module_stack


def _agent(stack: RunningStack) -> AgentClient:
    svid = ensure_svid(stack.state_dir, AGENT)
    return AgentClient(svid=svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace)


def _approver(stack: RunningStack, name: str) -> ApproverClient:
    svid = ensure_svid(stack.state_dir, USERS[name])
    return ApproverClient(svid=svid, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace)


async def _audits(stack: RunningStack, request_id: str, audit_type: str, want: int = 1) -> list[StoredEvent]:
    return await audit_rows(stack.kafka_bootstrap, stack.namespace, stack.db_url, request_id, audit_type, want=want)


async def test_high_risk_needs_two_distinct_approvers_and_refuses_self_approval(running_stack: RunningStack) -> None:
    async with _agent(running_stack) as agent:
        request_id = await agent.request_poa(
            "sap.payment.execute", "sap:invoice/4711", leg=HIGH_LEG, params={"amount_cents": 120000}
        )
        async with _approver(running_stack, "dave") as dave:
            required = await dave.approval_required(request_id)
            assert required.tier is Tier.HIGH
            assert required.required_approvals == 2
            await dave.vote(required, VoteChoice.APPROVE)  # the accountable party himself
        async with _approver(running_stack, "alice") as alice:
            await alice.vote(required, VoteChoice.APPROVE)
            await alice.vote(required, VoteChoice.APPROVE)  # again: counts once
        assert await _audits(running_stack, request_id, "approval_self_vote_refused")
        assert await _audits(running_stack, request_id, "approval_vote_counted")
        # Still waiting: dave refused, alice once.
        with pytest.raises(TimeoutError):
            await agent.await_poa(request_id, timeout=2)
        async with _approver(running_stack, "bob") as bob:
            await bob.vote(required, VoteChoice.APPROVE)
        issued = await agent.await_poa(request_id, timeout=30)
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    approvers = claims["leg"]["dual_control"]["approvers"]
    assert claims["leg"]["dual_control"]["required"] is True
    assert sorted(a["id"] for a in approvers) == ["alice", "bob"]
    assert {a["type"] for a in approvers} == {"manager", "compliance"}
    assert claims["exp"] - claims["iat"] <= 120  # the policy's short TTL for high


async def test_one_deny_denies(running_stack: RunningStack) -> None:
    async with _agent(running_stack) as agent:
        request_id = await agent.request_poa("crm.contact.update", "crm:contact/9", leg=MEDIUM_LEG)
        async with _approver(running_stack, "carol") as carol:
            required = await carol.approval_required(request_id)
            assert required.tier is Tier.MEDIUM
            await carol.vote(required, VoteChoice.DENY, reason="not this quarter")
        with pytest.raises(PoaDeniedError) as denied:
            await agent.await_poa(request_id, timeout=30)
    assert "carol" in str(denied.value)
    # A vote after the outcome does not count, and is audited.
    async with _approver(running_stack, "alice") as alice:
        await alice.vote(required, VoteChoice.APPROVE)
    rows = await _audits(running_stack, request_id, "approval_vote_refused")
    assert any(b"after_outcome" in r.raw for r in rows)


async def test_a_vote_for_another_digest_does_not_count(running_stack: RunningStack) -> None:
    async with _agent(running_stack) as agent:
        request_id = await agent.request_poa("crm.contact.update", "crm:contact/10", leg=MEDIUM_LEG)
        async with _approver(running_stack, "alice") as alice:
            required = await alice.approval_required(request_id)
            wrong = required.model_copy(update={"request_digest": "sha256:" + "0" * 64})
            await alice.vote(wrong, VoteChoice.APPROVE)
        rows = await _audits(running_stack, request_id, "approval_vote_refused")
        assert any(b"digest_mismatch" in r.raw for r in rows)
        with pytest.raises(TimeoutError):
            await agent.await_poa(request_id, timeout=2)


async def test_a_vote_before_its_request_is_held_and_counted(running_stack: RunningStack) -> None:
    request_id = f"req-early-{time.monotonic_ns()}"
    agent_svid = ensure_svid(running_stack.state_dir, AGENT)
    async with _agent(running_stack) as agent:
        # The approver saw the digest out of band (e.g. a ticket): the vote arrives first.
        fields = DigestFields(
            request_id=request_id,
            agent_id=str(agent_svid.spiffe_id),
            tenant="acme",
            target_tenant=None,
            action="crm.contact.update",
            resource="crm:contact/11",
            params={},
            leg=MEDIUM_LEG,
            cnf=agent_svid.thumbprint(),
        )
        digest = request_digest(fields)
        early = ApprovalRequired(
            request_id=request_id,
            tier=Tier.MEDIUM,
            required_approvals=1,
            eligible_groups=("manager",),
            ticket_required=False,
            deadline=datetime.now(UTC),
            request_digest=digest,
            agent_id=str(agent_svid.spiffe_id),
            action="crm.contact.update",
            resource="crm:contact/11",
            accountable_party_id="emp-300",
        )
        async with _approver(running_stack, "alice") as alice:
            await alice.vote(early, VoteChoice.APPROVE)
        assert await _audits(running_stack, request_id, "approval_vote_held")
        await agent.request_poa("crm.contact.update", "crm:contact/11", leg=MEDIUM_LEG, request_id=request_id)
        issued = await agent.await_poa(request_id, timeout=30)
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims["leg"]["approval"]["approver_id"] == "alice"


async def test_a_forged_vote_is_dead_lettered_and_its_request_fails_closed(running_stack: RunningStack) -> None:
    async with _agent(running_stack) as agent:
        request_id = await agent.request_poa("crm.contact.update", "crm:contact/12", leg=MEDIUM_LEG)
        async with _approver(running_stack, "alice") as alice:
            required = await alice.approval_required(request_id)
        # Mallory signs with her own SVID but claims to be alice.
        mallory = ensure_svid(running_stack.state_dir, "spiffe://atb.local/user/mallory")
        forged = VoteCast(
            request_id=request_id,
            vote_id="vote-forged",
            approver_id=USERS["alice"],
            choice=VoteChoice.APPROVE,
            request_digest=required.request_digest,
            channel="cli",
            cast_at=datetime.now(UTC),
        )
        envelope = sign_envelope(make_envelope(forged, source=str(mallory.spiffe_id)), mallory)
        topic = topic_name(forged.topic, running_stack.namespace)
        async with Publisher(running_stack.kafka_bootstrap, "mallory") as publisher:
            await publisher.publish([outgoing_envelope(envelope, topic)])
            await publisher.publish([Outgoing(topic=topic, key=request_id.encode(), value=b"{garbage")])
        with pytest.raises(PoaDeniedError) as denied:
            await agent.await_poa(request_id, timeout=30)
    assert "could not be verified" in str(denied.value)
    assert await _audits(running_stack, request_id, "identity_proof_rejected")


async def test_a_request_without_quorum_expires_at_its_deadline(
    kafka_bootstrap: str, opa_url: str, tmp_path: Path
) -> None:
    ns = f"x{time.monotonic_ns() % 10**8:08d}."
    await ensure_topics(kafka_bootstrap, ns)
    stack = ServiceStack(
        StackConfig(
            kafka_bootstrap,
            opa_url,
            tmp_path,
            namespace=ns,
            audit_db_url=f"sqlite:///{tmp_path / 'audit.db'}",
            extra_env={"ATB_MAX_PENDING_SECONDS": "2"},
        ),
        services=("approvals", "issuer"),
    )
    await stack.start(ready_timeout=90)
    try:
        svid = ensure_svid(tmp_path, AGENT)
        async with AgentClient(svid=svid, tenant="acme", bootstrap=kafka_bootstrap, namespace=ns) as agent:
            request_id = await agent.request_poa("crm.contact.update", "crm:contact/13", leg=MEDIUM_LEG)
            with pytest.raises(PoaDeniedError) as expired:
                await agent.await_poa(request_id, timeout=30)
        assert "deadline" in str(expired.value)
    finally:
        await stack.stop()
        await delete_topics(kafka_bootstrap, ns)


@pytest.mark.parametrize("forgery", ["unsigned", "tier_mismatch", "quorum_short"])
async def test_the_issuer_refuses_a_forged_quorum(running_stack: RunningStack, forgery: str) -> None:
    """Neither a Kafka writer nor a compromised approvals service can mint a PoA (docs/architecture.md §6.1).

    `unsigned`: the quorum carries no proof by the approvals service → dead letter.
    The others are signed with the approvals service's own SVID (as if it were
    compromised): the issuer's independent re-check still refuses them.
    """
    async with _agent(running_stack) as agent:
        request_id = await agent.request_poa(
            "sap.payment.execute", f"sap:invoice/{forgery}", leg=HIGH_LEG, params={"amount_cents": 120000}
        )
        async with _approver(running_stack, "alice") as alice:
            required = await alice.approval_required(request_id)
            vote = await alice.vote(required, VoteChoice.APPROVE)
        request_event = await _request_event(running_stack, request_id)
        vote_event = await _vote_event(running_stack, vote.vote_id)
        request = payload_of(decode_envelope(request_event.encode()))
        assert isinstance(request, IssuanceRequested)
        counted = CountedVote(
            approver_id="alice",
            approver_type="manager",
            vote_digest="sha256:" + hashlib.sha256(vote_event.encode()).hexdigest(),
            cast_at=datetime.now(UTC),
            vote_event=vote_event,
        )
        forged = QuorumReached(
            request_id=request_id,
            tier=Tier.LOW if forgery == "tier_mismatch" else Tier.HIGH,
            required_approvals=0 if forgery == "tier_mismatch" else 1,
            request_digest=required.request_digest,
            poa_ttl_seconds=60,
            request=request,
            request_event=request_event,
            votes=() if forgery == "tier_mismatch" else (counted,),
            decided_at=datetime.now(UTC),
        )
        approvals_id = "spiffe://atb.local/svc/approvals"
        envelope = make_envelope(forged, source=approvals_id)
        if forgery != "unsigned":
            envelope = sign_envelope(envelope, ensure_svid(running_stack.state_dir, approvals_id))
        async with Publisher(running_stack.kafka_bootstrap, "forger") as publisher:
            await publisher.publish([outgoing_envelope(envelope, topic_name(forged.topic, running_stack.namespace))])
        if forgery == "unsigned":
            assert await _audits(running_stack, request_id, "identity_proof_rejected")
            with pytest.raises(TimeoutError):
                await agent.await_poa(request_id, timeout=3)
            return
        with pytest.raises(PoaDeniedError) as refused:
            await agent.await_poa(request_id, timeout=30)
    assert "issuer re-check failed" in str(refused.value)
    rows = await _audits(running_stack, request_id, "poa_issuance_refused")
    expected = "tier_mismatch" if forgery == "tier_mismatch" else "too_few_required"
    assert any(expected.encode() in r.raw for r in rows), [r.raw[:300] for r in rows]


async def _request_event(stack: RunningStack, request_id: str) -> str:
    return await stored_raw(stack.kafka_bootstrap, stack.namespace, stack.db_url, IssuanceRequested, request_id)


async def _vote_event(stack: RunningStack, vote_id: str) -> str:
    return await stored_raw(stack.kafka_bootstrap, stack.namespace, stack.db_url, VoteCast, vote_id)


async def test_key_rotation_has_no_gap_for_either_verifier(running_stack: RunningStack) -> None:
    """Rotate the signing key mid-stream: tokens of both keys verify, from atb.keys and from the JWKS."""
    stack = running_stack
    async with _agent(stack) as agent:
        first = await agent.request_poa("crm.contact.read", "crm:contact/r1", leg=MEDIUM_LEG)
        old = await agent.await_poa(first, timeout=30)
        ring = SigningKeyRing.ensure(stack.state_dir / "issuer" / "keys")
        entry = ring.rotate(datetime.now(UTC), activation_delay=timedelta(seconds=2))
        await publish_keys(
            ring.published(datetime.now(UTC)),
            bootstrap=stack.kafka_bootstrap,
            namespace=stack.namespace,
            issuer="spiffe://atb.local/svc/issuer",
            svid=ensure_svid(stack.state_dir, "spiffe://atb.local/svc/issuer"),
        )
        # The old token still works at the broker while the new key is not active yet ...
        allowed = await agent.invoke("crm.contact.read", "crm:contact/r1", poa=old.token, request_id=first)
        assert allowed.decision is Decision.ALLOW, allowed.reasons
        # The rotation is a scheduled change: what the test waits for is the activation time itself.
        await asyncio.sleep(max(0.0, (entry.activate_at - datetime.now(UTC)).total_seconds()))
        second = await agent.request_poa("crm.contact.read", "crm:contact/r2", leg=MEDIUM_LEG)
        new = await agent.await_poa(second, timeout=30)
        assert jwt.get_unverified_header(new.token)["kid"] == entry.key.kid != old.kid
        # ... and the new one works as soon as it signs.
        allowed = await agent.invoke("crm.contact.read", "crm:contact/r2", poa=new.token, request_id=second)
        assert allowed.decision is Decision.ALLOW, allowed.reasons
    # A verifier fed only by the issuer's JWKS accepts both tokens too.
    jwks_keys = KeyRing_(stack.kafka_bootstrap, stack.namespace)
    port = stack.stack.ops_ports["issuer"]
    assert await jwks_keys.load_jwks(f"http://127.0.0.1:{port}/.well-known/jwks.json") >= 2
    verifier = PoaVerifier(jwks_keys, audience="spiffe://atb.local/svc/broker", issuer="spiffe://atb.local/svc/issuer")
    assert verifier.verify(old.token).jti == old.jti
    assert verifier.verify(new.token).jti == new.jti


async def test_a_chat_attested_vote_cannot_approve_a_critical_request(running_stack: RunningStack) -> None:
    """Even a compromised chat service cannot approve critical: approvals limits what each attester vouches for."""
    chat = ensure_svid(running_stack.state_dir, "spiffe://atb.local/svc/chat")
    leg = HIGH_LEG.model_copy(update={"ticket_ref": "CHG-4711"})
    async with _agent(running_stack) as agent:
        request_id = await agent.request_poa("iam.admin.grant", "iam:role/admin", leg=leg, params={"user": "x"})
        async with _approver(running_stack, "carol") as carol:
            required = await carol.approval_required(request_id)
        assert required.tier is Tier.CRITICAL
        topic = topic_name(VoteCast.topic, running_stack.namespace)
        async with Publisher(running_stack.kafka_bootstrap, "chat-compromised") as publisher:
            for slack_id in ("slack:UALICE01", "slack:UBOB0002"):
                vote = VoteCast(
                    request_id=request_id,
                    vote_id=f"vote-{slack_id}",
                    approver_id=slack_id,
                    choice=VoteChoice.APPROVE,
                    request_digest=required.request_digest,
                    channel="slack",
                    cast_at=datetime.now(UTC),
                )
                envelope = sign_envelope(make_envelope(vote, source=str(chat.spiffe_id)), chat)
                await publisher.publish([outgoing_envelope(envelope, topic)])
        refused = await _audits(running_stack, request_id, "approval_vote_refused", want=2)
        assert len(refused) == 2
        assert all(b"attester_tier" in r.raw for r in refused)
        with pytest.raises(TimeoutError):
            await agent.await_poa(request_id, timeout=3)


async def test_the_issuer_refuses_chat_attested_votes_on_a_critical_quorum(running_stack: RunningStack) -> None:
    """A compromised approvals service counting chat-attested votes for a critical request: the issuer says no."""
    chat = ensure_svid(running_stack.state_dir, "spiffe://atb.local/svc/chat")
    leg = HIGH_LEG.model_copy(update={"ticket_ref": "CHG-4711"})
    async with _agent(running_stack) as agent:
        request_id = await agent.request_poa("iam.admin.grant", "iam:role/admin", leg=leg, params={"user": "y"})
        async with _approver(running_stack, "carol") as carol:
            required = await carol.approval_required(request_id)
        request_event = await _request_event(running_stack, request_id)
        request = payload_of(decode_envelope(request_event.encode()))
        assert isinstance(request, IssuanceRequested)
        counted = []
        for principal, slack_id, kind in (
            ("alice", "slack:UALICE01", "manager"),
            ("bob", "slack:UBOB0002", "compliance"),
        ):
            vote = VoteCast(
                request_id=request_id,
                vote_id=f"vote-{principal}",
                approver_id=slack_id,
                choice=VoteChoice.APPROVE,
                request_digest=required.request_digest,
                channel="slack",
                cast_at=datetime.now(UTC),
            )
            text = encode_envelope(sign_envelope(make_envelope(vote, source=str(chat.spiffe_id)), chat)).decode()
            counted.append(
                CountedVote(
                    approver_id=principal,
                    approver_type=kind,
                    vote_digest="sha256:" + hashlib.sha256(text.encode()).hexdigest(),
                    cast_at=datetime.now(UTC),
                    vote_event=text,
                )
            )
        forged = QuorumReached(
            request_id=request_id,
            tier=Tier.CRITICAL,
            required_approvals=2,
            request_digest=required.request_digest,
            poa_ttl_seconds=60,
            request=request,
            request_event=request_event,
            votes=tuple(counted),
            decided_at=datetime.now(UTC),
        )
        approvals_id = "spiffe://atb.local/svc/approvals"
        envelope = sign_envelope(
            make_envelope(forged, source=approvals_id), ensure_svid(running_stack.state_dir, approvals_id)
        )
        async with Publisher(running_stack.kafka_bootstrap, "forger") as publisher:
            await publisher.publish([outgoing_envelope(envelope, topic_name(forged.topic, running_stack.namespace))])
        with pytest.raises(PoaDeniedError):
            await agent.await_poa(request_id, timeout=30)
    rows = await _audits(running_stack, request_id, "poa_issuance_refused")
    assert any(b"attester_tier" in r.raw for r in rows), [r.raw[:300] for r in rows]
