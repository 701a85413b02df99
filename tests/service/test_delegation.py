"""Delegation over the bus: approvals counts a delegate's vote as the delegator's, the issuer re-checks it.

Grants and votes carry real proofs (the delegator's SVID signs the grant, the
delegate's the vote). A payment needs a manager and a compliance officer: alice
(manager) is out of office and lets dave (manager) vote in her place.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import jwt

from atb_identity import sign_envelope
from atb_runtime import Outgoing
from contracts import (
    ApprovalRequired,
    CountedVote,
    Envelope,
    QuorumReached,
    RequestDenied,
    Tier,
    VoteChoice,
    encode_envelope,
    make_envelope,
)
from contracts.approval_events import DelegationGranted, DelegationRevoked, VoteOnBehalf
from tests.service.bus import Bus
from tests.service.look import audit_events, kinds, one, outcomes, poas, required
from tests.service.world import APPROVALS, ISSUER, World, approver_id

PAYMENT = "sap.payment.execute"


def _grant(
    world: World,
    delegator: str = "alice",
    delegate: str = "dave",
    *,
    minutes: int = 60,
    tiers: tuple[Tier, ...] = (Tier.HIGH,),
    signer: str | None = None,
    delegation_id: str = "dlg-alice-1",
) -> str:
    """A DelegationGranted signed by `signer` (the delegator unless told), as the exact envelope text."""
    now = world.clock.now()
    grant = DelegationGranted(
        delegation_id=delegation_id,
        delegator=approver_id(delegator),
        delegate=approver_id(delegate),
        tiers=tiers,
        not_before=now,
        until=now + timedelta(minutes=minutes),
        granted_at=now,
    )
    by = approver_id(signer or delegator)
    return encode_envelope(sign_envelope(make_envelope(grant, source=by), world.svid(by))).decode()


def _on_behalf(world: World, asked: ApprovalRequired, delegate: str, delegator: str, grant: str) -> Outgoing:
    vote = VoteOnBehalf(
        request_id=asked.request_id,
        vote_id=f"vote-{delegate}-for-{delegator}-{uuid.uuid4().hex[:6]}",
        approver_id=approver_id(delegate),
        on_behalf_of=approver_id(delegator),
        choice=VoteChoice.APPROVE,
        request_digest=asked.request_digest,
        channel="cli",
        cast_at=world.clock.now(),
        delegation_event=grant,
    )
    return world.signed(vote, approver_id(delegate))


async def _ask(bus: Bus, world: World, request_id: str, accountable: str = "emp-900") -> ApprovalRequired:
    for sut in (world.approvals()[1], world.issuer()[1]):
        await bus.attach(sut)
    _, record = world.request(request_id, PAYMENT, resource="sap:invoice/4711", accountable=accountable)
    await bus.publish([record])
    await bus.settle()
    return await required(bus, request_id)


async def _refusals(bus: Bus, request_id: str) -> list[str]:
    return [e.reason.split(":")[0] for e in await audit_events(bus, request_id) if e.audit_type.endswith("refused")]


async def test_a_delegate_votes_in_place_of_the_delegator_and_the_poa_says_so(bus: Bus, world: World) -> None:
    asked = await _ask(bus, world, "req-dlg-1")
    await bus.publish([_on_behalf(world, asked, "dave", "alice", _grant(world))])
    await bus.publish([world.vote(asked, "bob")[1]])
    await bus.settle()

    events = await outcomes(bus, "req-dlg-1")
    assert kinds(events) == ["ApprovalRequired", "QuorumReached"]
    counted = {(v.approver_id, v.approver_type) for v in one(events, QuorumReached).votes}
    assert counted == {("alice", "manager"), ("bob", "compliance")}
    [poa] = await poas(bus, "req-dlg-1")
    dual = jwt.decode(poa.token, options={"verify_signature": False})["leg"]["dual_control"]["approvers"]
    assert {(a["id"], a.get("delegate")) for a in dual} == {("alice", approver_id("dave")), ("bob", None)}


async def test_delegate_and_delegator_both_voting_count_once(bus: Bus, world: World) -> None:
    asked = await _ask(bus, world, "req-dlg-2")
    await bus.publish([world.vote(asked, "alice")[1]])
    await bus.publish([_on_behalf(world, asked, "dave", "alice", _grant(world))])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-dlg-2")) == ["ApprovalRequired"]  # alice once: no compliance yet
    assert await _refusals(bus, "req-dlg-2") == ["duplicate"]

    await bus.publish([world.vote(asked, "bob")[1]])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-dlg-2")) == ["ApprovalRequired", "QuorumReached"]


async def test_a_delegate_approving_their_own_request_is_refused(bus: Bus, world: World) -> None:
    asked = await _ask(bus, world, "req-dlg-3", accountable="emp-200")  # emp-200 is dave
    await bus.publish([_on_behalf(world, asked, "dave", "alice", _grant(world))])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-dlg-3")) == ["ApprovalRequired"]
    assert [e.audit_type for e in await audit_events(bus, "req-dlg-3")][-1] == "approval_self_vote_refused"


async def test_a_vote_after_the_delegation_window_is_refused(bus: Bus, world: World) -> None:
    asked = await _ask(bus, world, "req-dlg-4")
    grant = _grant(world, minutes=10)
    world.clock.advance(11 * 60)
    await bus.publish([_on_behalf(world, asked, "dave", "alice", grant)])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-dlg-4")) == ["ApprovalRequired"]
    assert await _refusals(bus, "req-dlg-4") == ["delegation_not_in_force"]


async def test_a_revoked_delegation_no_longer_counts(bus: Bus, world: World) -> None:
    """Only the delegator revokes: a revocation dave signs is ignored, also one naming himself as the delegator of
    alice's delegation id; alice's applies from its time on."""
    service, sut = world.approvals()
    for attached in (sut, world.issuer()[1]):
        await bus.attach(attached)
    asked: list[ApprovalRequired] = []
    for request_id in ("req-dlg-5a", "req-dlg-5b"):
        _, record = world.request(request_id, PAYMENT, resource="sap:invoice/4711")
        await bus.publish([record])
        await bus.settle()
        asked.append(await required(bus, request_id))
    grant = _grant(world)
    revoked = DelegationRevoked(
        delegation_id="dlg-alice-1",
        delegator=approver_id("alice"),
        revoked_by=approver_id("alice"),
        revoked_at=world.clock.now(),
    )
    by_dave = revoked.model_copy(update={"revoked_by": approver_id("dave")})
    service.note_delegation(_signed_envelope(world, by_dave, "dave"))
    # dave, proven as himself, revoking "his own" delegation with alice's delegation id: ends nothing of alice's.
    as_his_own = revoked.model_copy(update={"delegator": approver_id("dave"), "revoked_by": approver_id("dave")})
    service.note_delegation(_signed_envelope(world, as_his_own, "dave"))
    await bus.publish([_on_behalf(world, asked[0], "dave", "alice", grant)])
    await bus.settle()
    assert [e.audit_type for e in await audit_events(bus, "req-dlg-5a")][-1] == "approval_vote_counted"

    service.note_delegation(_signed_envelope(world, revoked, "alice"))
    world.clock.advance(1)
    await bus.publish([_on_behalf(world, asked[1], "dave", "alice", grant)])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-dlg-5b")) == ["ApprovalRequired"]
    assert await _refusals(bus, "req-dlg-5b") == ["delegation_not_in_force"]


def _signed_envelope(world: World, payload: DelegationRevoked, name: str) -> Envelope:
    by = approver_id(name)
    return sign_envelope(make_envelope(payload, source=by), world.svid(by))


async def test_a_grant_not_signed_by_its_delegator_is_refused(bus: Bus, world: World) -> None:
    asked = await _ask(bus, world, "req-dlg-6")
    forged = _grant(world, signer="dave")  # dave grants himself alice's place
    await bus.publish([_on_behalf(world, asked, "dave", "alice", forged)])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-dlg-6")) == ["ApprovalRequired"]
    assert await _refusals(bus, "req-dlg-6") == ["delegation_invalid"]


async def test_the_issuer_refuses_forged_on_behalf_evidence(bus: Bus, world: World) -> None:
    """A quorum proven by approvals' SVID whose on-behalf vote carries a grant dave signed himself: no PoA."""
    asked = await _ask(bus, world, "req-dlg-7")
    request, record = world.request("req-dlg-7b", PAYMENT, resource="sap:invoice/4711")
    await bus.publish([record])
    await bus.settle()
    asked_b = await required(bus, "req-dlg-7b")
    assert asked.request_id != asked_b.request_id
    now = world.clock.now()
    texts = []
    for out in (
        _on_behalf(world, asked_b, "dave", "alice", _grant(world, signer="dave")),
        world.vote(asked_b, "bob")[1],
    ):
        assert out.value is not None
        texts.append(out.value.decode())
    assert record.value is not None
    forged = QuorumReached(
        request_id="req-dlg-7b",
        tier=Tier.HIGH,
        required_approvals=2,
        request_digest=asked_b.request_digest,
        poa_ttl_seconds=120,
        request=request,
        request_event=record.value.decode(),
        votes=(
            CountedVote(
                approver_id="alice",
                approver_type="manager",
                approver_groups=("manager",),
                vote_digest=_digest(texts[0]),
                cast_at=now,
                vote_event=texts[0],
            ),
            CountedVote(
                approver_id="bob",
                approver_type="compliance",
                approver_groups=("compliance",),
                vote_digest=_digest(texts[1]),
                cast_at=now,
                vote_event=texts[1],
            ),
        ),
        decided_at=now,
    )
    await bus.publish([world.signed(forged, APPROVALS)])
    await bus.settle()
    denials = [e for e in await outcomes(bus, "req-dlg-7b") if isinstance(e, RequestDenied)]
    assert [(d.code, d.denied_by) for d in denials] == [("delegation_invalid", ISSUER)]
    assert await poas(bus, "req-dlg-7b") == []


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


async def test_the_console_revokes_on_the_delegators_behalf_and_no_other_attester_does(bus: Bus, world: World) -> None:
    """The console (a passkey announcer) may publish alice's revocation: it only takes power away. The chat
    service's is ignored; the console's applies from its time on."""
    service, sut = world.approvals()
    for attached in (sut, world.issuer()[1]):
        await bus.attach(attached)
    asked: list[ApprovalRequired] = []
    for request_id in ("req-dlg-8a", "req-dlg-8b"):
        _, record = world.request(request_id, PAYMENT, resource="sap:invoice/4711")
        await bus.publish([record])
        await bus.settle()
        asked.append(await required(bus, request_id))
    grant = _grant(world, delegation_id="dlg-alice-8")
    revoked = DelegationRevoked(
        delegation_id="dlg-alice-8",
        delegator=approver_id("alice"),
        revoked_by=approver_id("alice"),
        revoked_at=world.clock.now(),
    )
    for name in ("chat", "console"):
        by = f"spiffe://atb.local/svc/{name}"
        envelope = sign_envelope(make_envelope(revoked, source=by), world.svid(by))
        service.note_delegation(envelope)
        if name == "chat":  # not remembered: dave's vote still counts
            await bus.publish([_on_behalf(world, asked[0], "dave", "alice", grant)])
            await bus.settle()
            assert [e.audit_type for e in await audit_events(bus, "req-dlg-8a")][-1] == "approval_vote_counted"
    world.clock.advance(1)
    await bus.publish([_on_behalf(world, asked[1], "dave", "alice", grant)])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-dlg-8b")) == ["ApprovalRequired"]
    assert await _refusals(bus, "req-dlg-8b") == ["delegation_not_in_force"]
