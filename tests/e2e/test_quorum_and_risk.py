"""Quorum by groups and risk from parameters, end to end on the real Kafka and OPA (docs/quorum-and-risk.md).

(a) A high-risk payment needs one manager and one compliance approver: two
managers are not a quorum for approvals, a forged quorum of two managers is
refused by the issuer, and PoAs whose dual-control approvers do not make the
composition are refused by the broker. Manager + compliance gets a PoA the
broker allows.

(b) A payment of 1,000,000 cents or more is critical (ticket, security and
compliance approvers), a smaller one high; without an amount it is critical
(fail closed); the broker re-derives the tier from the presented parameters
and refuses a PoA signed for a lower one.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import jwt
import pytest

from atb.sdk import AgentClient, ApproverClient, PoaDeniedError
from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Publisher, outgoing_envelope
from atb_runtime.readback import read_committed
from audit_sink.adapters.db import StoredEvent
from contracts import (
    AccountableParty,
    ApprovalRequired,
    ContractualNecessity,
    CountedVote,
    Decision,
    EventPayload,
    IssuanceRequested,
    JsonObject,
    PoaClaims,
    QuorumReached,
    Tier,
    Topic,
    VoteCast,
    VoteChoice,
    decode_envelope,
    make_envelope,
    payload_of,
    topic_name,
)
from contracts.reasons import ReasonCode
from issuer.adapters.keyring import SigningKeyRing
from issuer.adapters.signer import PoaSigner
from tests.e2e.audit_sync import audit_rows, stored_raw
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
# emp-300 is nobody in config/approvers.json: every approver may vote.
LEG = ContractualNecessity(
    ref="MSA-777",
    description="Pay an invoice",
    jurisdiction="EU",
    accountable_party=AccountableParty(type="employee", id="emp-300"),
)
CRITICAL_LEG = LEG.model_copy(update={"ticket_ref": "CHG-2026"})
SMALL: JsonObject = {"amount_cents": 120_000, "currency": "EUR"}
LARGE: JsonObject = {"amount_cents": 2_500_000, "currency": "EUR"}


@pytest.fixture
def stack(module_stack: RunningStack) -> RunningStack:
    return module_stack


def _agent(stack: RunningStack) -> AgentClient:
    return AgentClient(
        svid=ensure_svid(stack.state_dir, AGENT),
        tenant="acme",
        bootstrap=stack.kafka_bootstrap,
        namespace=stack.namespace,
    )


async def _vote(stack: RunningStack, name: str, request_id: str) -> tuple[ApprovalRequired, VoteCast]:
    svid = ensure_svid(stack.state_dir, f"spiffe://atb.local/user/{name}")
    async with ApproverClient(svid=svid, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace) as approver:
        required = await approver.approval_required(request_id)
        return required, await approver.vote(required, VoteChoice.APPROVE)


async def _audits(stack: RunningStack, request_id: str, audit_type: str, want: int = 1) -> list[StoredEvent]:
    return await audit_rows(stack.kafka_bootstrap, stack.namespace, stack.db_url, request_id, audit_type, want=want)


async def _outcomes(stack: RunningStack, request_id: str) -> list[str]:
    """Every outcome of the request on atb.approvals.outcomes, read to the topic's end."""
    payloads = await read_committed(stack.kafka_bootstrap, topic_name(Topic.OUTCOMES, stack.namespace))
    return [type(p).__name__ for p in payloads if getattr(p, "request_id", None) == request_id]


async def _raw_event(stack: RunningStack, kind: type[EventPayload], needle: str) -> str:
    return await stored_raw(stack.kafka_bootstrap, stack.namespace, stack.db_url, kind, needle)


def _forge(stack: RunningStack, token: str, **changes: object) -> str:
    """The token's claims changed and signed with the issuer's own key: what a compromised issuer could mint."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(changes, jti=f"forged-{uuid.uuid4().hex}")
    ring = SigningKeyRing.ensure(stack.state_dir / "issuer" / "keys")
    return PoaSigner(ring.current(datetime.now(UTC))).sign(PoaClaims.model_validate(claims))


def _codes(decision: object) -> set[ReasonCode]:
    return {r.code for r in getattr(decision, "reasons", ())}


async def test_two_managers_are_not_a_quorum_manager_and_compliance_are(stack: RunningStack) -> None:
    async with _agent(stack) as agent:
        request_id = await agent.request_poa("sap.payment.execute", "sap:invoice/q1", leg=LEG, params=SMALL)
        required, _ = await _vote(stack, "alice", request_id)
        assert (required.tier, required.required_approvals) == (Tier.HIGH, 2)
        assert [(e.group, e.count) for e in required.composition.all_of] == [("manager", 1), ("compliance", 1)]
        await _vote(stack, "dave", request_id)
        # Both managers counted (the audit notes are written with the state, in one transaction) ...
        assert len(await _audits(stack, request_id, "approval_vote_counted", want=2)) == 2
        # ... and no quorum: the outcomes topic, read to its end, holds only the ApprovalRequired.
        assert await _outcomes(stack, request_id) == ["ApprovalRequired"]
        await _vote(stack, "bob", request_id)
        issued = await agent.await_poa(request_id, timeout=30)
        claims = jwt.decode(issued.token, options={"verify_signature": False})
        approvers = {a["id"]: a["type"] for a in claims["leg"]["dual_control"]["approvers"]}
        # Each counted approver is in the group the quorum assigned; dave, the second manager, counts as extra.
        assert approvers == {"alice": "manager", "bob": "compliance", "dave": "manager"}

        # The broker checks the evidence against the composition: PoAs signed with the issuer's
        # key whose approvers do not make it are refused (and spend nothing).
        leg = claims["leg"]
        managers = {
            **leg,
            "dual_control": {
                **leg["dual_control"],
                "approvers": [a for a in leg["dual_control"]["approvers"] if a["id"] != "bob"],
            },
        }
        mislabelled = {
            **leg,
            "dual_control": {
                **leg["dual_control"],
                "approvers": [
                    {**a, "type": "compliance"} if a["id"] == "dave" else a
                    for a in leg["dual_control"]["approvers"]
                    if a["id"] != "bob"
                ],
            },
        }
        for forged, code in (
            (_forge(stack, issued.token, leg=managers), ReasonCode.COMPOSITION_NOT_MET),
            (_forge(stack, issued.token, leg=mislabelled), ReasonCode.APPROVER_GROUP_MISMATCH),
        ):
            denied = await agent.invoke(
                "sap.payment.execute", "sap:invoice/q1", poa=forged, request_id=request_id, params=SMALL
            )
            assert denied.decision is Decision.DENY
            assert _codes(denied) == {code}, denied.reasons
        allowed = await agent.invoke(
            "sap.payment.execute", "sap:invoice/q1", poa=issued.token, request_id=request_id, params=SMALL
        )
    assert allowed.decision is Decision.ALLOW, allowed.reasons
    assert allowed.action_tier is Tier.HIGH


async def test_the_issuer_refuses_a_forged_quorum_of_two_managers(stack: RunningStack) -> None:
    """A compromised approvals service announces a quorum of two real manager votes: the issuer re-checks."""
    async with _agent(stack) as agent:
        request_id = await agent.request_poa("sap.payment.execute", "sap:invoice/q2", leg=LEG, params=SMALL)
        required, alice = await _vote(stack, "alice", request_id)
        _, dave = await _vote(stack, "dave", request_id)
        request_event = await _raw_event(stack, IssuanceRequested, request_id)
        request = payload_of(decode_envelope(request_event.encode()))
        assert isinstance(request, IssuanceRequested)
        counted = []
        for principal, vote in (("alice", alice), ("dave", dave)):
            text = await _raw_event(stack, VoteCast, vote.vote_id)
            counted.append(
                CountedVote(
                    approver_id=principal,
                    approver_type="manager",
                    approver_groups=("manager",),
                    vote_digest="sha256:" + hashlib.sha256(text.encode()).hexdigest(),
                    cast_at=datetime.now(UTC),
                    vote_event=text,
                )
            )
        forged = QuorumReached(
            request_id=request_id,
            tier=Tier.HIGH,
            required_approvals=2,
            request_digest=required.request_digest,
            poa_ttl_seconds=120,
            request=request,
            request_event=request_event,
            votes=tuple(counted),
            decided_at=datetime.now(UTC),
        )
        approvals = ensure_svid(stack.state_dir, "spiffe://atb.local/svc/approvals")
        envelope = sign_envelope(make_envelope(forged, source=str(approvals.spiffe_id)), approvals)
        async with Publisher(stack.kafka_bootstrap, "forger") as publisher:
            await publisher.publish([outgoing_envelope(envelope, topic_name(forged.topic, stack.namespace))])
        with pytest.raises(PoaDeniedError) as refused:
            await agent.await_poa(request_id, timeout=30)
    assert "issuer re-check failed" in str(refused.value)
    rows = await _audits(stack, request_id, "poa_issuance_refused")
    assert any(b"composition_not_met" in r.raw for r in rows), [r.raw[:300] for r in rows]


async def test_a_large_payment_needs_critical_approval_a_small_one_high(stack: RunningStack) -> None:
    async with _agent(stack) as agent:
        small = await agent.request_poa("sap.payment.execute", "sap:invoice/r1", leg=CRITICAL_LEG, params=SMALL)
        large = await agent.request_poa("sap.payment.execute", "sap:invoice/r2", leg=CRITICAL_LEG, params=LARGE)
        unknown = await agent.request_poa(
            "sap.payment.execute", "sap:invoice/r3", leg=CRITICAL_LEG, params={"currency": "EUR"}
        )
        svid = ensure_svid(stack.state_dir, "spiffe://atb.local/user/carol")
        async with ApproverClient(svid=svid, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace) as carol:
            asked = {r: await carol.approval_required(r) for r in (small, large, unknown)}
        assert (asked[small].tier, asked[small].ticket_required) == (Tier.HIGH, False)
        assert (asked[large].tier, asked[large].ticket_required) == (Tier.CRITICAL, True)
        assert set(asked[large].eligible_groups) == {"security", "compliance"}
        assert asked[unknown].tier is Tier.CRITICAL  # no amount: the highest tier a payment can have

        # Critical: a manager may not approve it; security and compliance do.
        await _vote(stack, "alice", large)
        refused = await _audits(stack, large, "approval_vote_refused")
        assert any(b"tier_not_allowed" in r.raw for r in refused)
        await _vote(stack, "carol", large)
        await _vote(stack, "bob", large)
        issued = await agent.await_poa(large, timeout=30)
        claims = jwt.decode(issued.token, options={"verify_signature": False})
        assert claims["tier"] == "critical"
        assert claims["exp"] - claims["iat"] <= 60

        # The broker re-derives the tier from the presented amount: the same evidence signed as
        # high is refused for this amount (the amount is bound into the digest, so it is this one).
        as_high = await agent.invoke(
            "sap.payment.execute",
            "sap:invoice/r2",
            poa=_forge(stack, issued.token, tier="high"),
            request_id=large,
            params=LARGE,
        )
        assert as_high.decision is Decision.DENY
        assert ReasonCode.TIER_TOO_LOW in _codes(as_high), as_high.reasons
        assert as_high.action_tier is Tier.CRITICAL
        allowed = await agent.invoke(
            "sap.payment.execute", "sap:invoice/r2", poa=issued.token, request_id=large, params=LARGE
        )
    assert allowed.decision is Decision.ALLOW, allowed.reasons
    assert allowed.action_tier is Tier.CRITICAL
