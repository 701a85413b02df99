"""The issuer over the bus, fed by the real approvals service: a PoA only for a quorum it can prove itself.

Mirrors tests/e2e/test_approvals.py (forged quorums) and the exactly-one-PoA
argument of docs/architecture.md §6.2, in memory and by the test's clock.
"""

from __future__ import annotations

import hashlib

import jwt
import pytest

from atb_identity import cert_thumbprint
from atb_runtime import Outgoing, outgoing_envelope
from contracts import CountedVote, QuorumReached, RequestDenied, Tier, Topic, make_envelope
from tests.service.bus import Bus
from tests.service.clock import Clock
from tests.service.conftest import ON_BOTH_BUSES
from tests.service.look import audit_events, audits, dead_letters, kinds, one, outcomes, poas, quorum, required
from tests.service.world import AGENT, APPROVALS, ISSUER, World

LOW, HIGH, CRITICAL = "crm.contact.read", "sap.payment.execute", "iam.admin.grant"


async def _start(bus: Bus, world: World) -> None:
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer()[1])


async def _approved_high(bus: Bus, world: World, request_id: str) -> None:
    _, record = world.request(request_id, HIGH)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, request_id)
    await bus.publish([world.vote(asked, "alice")[1], world.vote(asked, "bob")[1]])
    await bus.settle()


async def test_a_low_risk_request_gets_one_poa_bound_to_the_agent_certificate(bus: Bus, world: World) -> None:
    await _start(bus, world)
    request, record = world.request("req-i-low", LOW)
    await bus.publish([record])
    await bus.settle()

    [poa] = await poas(bus, "req-i-low")
    key = world.issuer_key()
    claims = jwt.decode(
        poa.token,
        key.private.public_key(),
        algorithms=["EdDSA"],
        audience="spiffe://atb.local/svc/broker",
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    now = int(world.clock.time())
    assert {k: claims[k] for k in ("sub", "act", "res", "req_id", "tier", "iat", "exp")} == {
        "sub": AGENT,
        "act": LOW,
        "res": request.resource,
        "req_id": "req-i-low",
        "tier": "low",
        "iat": now,
        "exp": now + 300,
    }
    assert claims["cnf"] == {"x5t#S256": cert_thumbprint(world.svid(AGENT).leaf)}
    assert (poa.jti, poa.kid, poa.token_sha256) == (
        claims["jti"],
        key.kid,
        "sha256:" + hashlib.sha256(poa.token.encode()).hexdigest(),
    )
    assert ("poa_issued", "success") in await audits(bus, "req-i-low")


async def test_a_high_risk_quorum_gets_a_dual_control_poa_naming_both_approvers(bus: Bus, world: World) -> None:
    await _start(bus, world)
    await _approved_high(bus, world, "req-i-high")
    [poa] = await poas(bus, "req-i-high")
    claims = jwt.decode(poa.token, options={"verify_signature": False})
    assert claims["tier"] == "high"
    assert claims["exp"] - claims["iat"] == 120
    assert sorted(a["id"] for a in claims["leg"]["dual_control"]["approvers"]) == ["alice", "bob"]
    issued = [e for e in await audit_events(bus, "req-i-high") if e.audit_type == "poa_issued_dual_control"]
    assert [e.details["approver_ids"] for e in issued] == [["alice", "bob"]]


@ON_BOTH_BUSES
async def test_a_duplicate_quorum_gets_no_second_poa_even_after_a_restart(bus: Bus, world: World) -> None:
    await _start(bus, world)
    _, record = world.request("req-i-dup", LOW)
    await bus.publish([record])
    await bus.settle()
    outcome = [r for r in await bus.records(Topic.OUTCOMES) if r.key == b"req-i-dup"]
    assert len(outcome) == 1
    replay = outcome[0]

    again = Outgoing(topic=world.topic(Topic.OUTCOMES), key=b"req-i-dup", value=replay.value)
    await bus.publish([again])  # the same QuorumReached, delivered twice
    await bus.settle()
    await bus.detach("issuer")
    await bus.attach(world.issuer()[1])  # remembers, from atb.poa.issued, what it issued
    await bus.publish([again])
    await bus.settle()

    assert len(await poas(bus, "req-i-dup")) == 1
    assert [t for t, _ in await audits(bus, "req-i-dup") if t.startswith("poa_")] == [
        "poa_issued",
        "poa_duplicate_quorum_ignored",
        "poa_duplicate_quorum_ignored",
    ]


@pytest.mark.parametrize(
    ("forgery", "code"),
    [("tier_mismatch", "tier_mismatch"), ("quorum_short", "too_few_required"), ("invented_vote", "evidence_mismatch")],
)
async def test_a_compromised_approvals_service_cannot_mint_a_poa(
    bus: Bus, world: World, forgery: str, code: str
) -> None:
    """Quorums signed with the approvals service's own SVID from real parts, whose evidence does not hold.

    The request is real and alice's vote is real; the quorum claims what they do not make.
    """
    await _start(bus, world)
    request_id = f"req-f-{forgery}"
    request, record = world.request(request_id, HIGH)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, request_id)
    _, alice = world.vote(asked, "alice")
    await bus.publish([alice])
    await bus.settle()
    assert alice.value is not None
    assert record.value is not None
    vote_event = alice.value.decode()
    counted = CountedVote(
        approver_id="alice",
        approver_type="manager",
        vote_digest="sha256:" + hashlib.sha256(alice.value).hexdigest(),
        cast_at=world.clock.now(),
        vote_event=vote_event,
    )
    votes = {
        "tier_mismatch": (),
        "quorum_short": (counted,),
        # The same vote event again, claimed as carol's.
        "invented_vote": (counted, counted.model_copy(update={"approver_id": "carol", "approver_type": "security"})),
    }[forgery]
    forged = QuorumReached(
        request_id=request_id,
        tier=Tier.LOW if forgery == "tier_mismatch" else Tier.HIGH,
        required_approvals={"tier_mismatch": 0, "quorum_short": 1, "invented_vote": 2}[forgery],
        request_digest=asked.request_digest,
        poa_ttl_seconds=60,
        request=request,
        request_event=record.value.decode(),
        votes=votes,
        decided_at=world.clock.now(),
    )
    await bus.publish([world.signed(forged, APPROVALS)])
    await bus.settle()

    assert await poas(bus, request_id) == []
    assert kinds(await outcomes(bus, request_id)) == ["ApprovalRequired", "QuorumReached", "RequestDenied"]
    assert one(await outcomes(bus, request_id), RequestDenied).denied_by == ISSUER
    refused = [e for e in await audit_events(bus, request_id) if e.audit_type == "poa_issuance_refused"]
    assert [e.details["code"] for e in refused] == [code]


@ON_BOTH_BUSES
async def test_a_quorum_without_the_approvals_proof_is_dead_lettered(bus: Bus, world: World) -> None:
    await bus.attach(world.approvals()[1])
    await _approved_high(bus, world, "req-f-unsigned")
    genuine = await quorum(bus, "req-f-unsigned")
    await bus.attach(world.issuer()[1])  # sees the genuine quorum first: one PoA
    unsigned = genuine.model_copy(update={"request_id": "req-f-unsigned-2"})
    await bus.publish(
        [
            outgoing_envelope(make_envelope(unsigned, source=APPROVALS), world.topic(Topic.OUTCOMES)),
            world.signed(unsigned, AGENT),  # proven, but not by a quorum producer
        ]
    )
    await bus.settle()
    assert await poas(bus, "req-f-unsigned-2") == []
    issuer_letters = [(topic, code) for consumer, topic, _, code in await dead_letters(bus) if consumer == "issuer"]
    assert issuer_letters == [
        (world.topic(Topic.OUTCOMES), "missing_proof"),
        (world.topic(Topic.OUTCOMES), "claim_not_proven"),
    ]
    assert [t for t, _ in await audits(bus, "req-f-unsigned-2")] == [
        "event_dead_lettered",
        "identity_proof_rejected",
    ] * 2


async def test_a_stale_quorum_gets_no_poa(bus: Bus, world: World, clock: Clock) -> None:
    await bus.attach(world.approvals()[1])
    _, record = world.request("req-stale", LOW)
    await bus.publish([record])
    await bus.settle()
    clock.advance(11 * 60)  # the issuer was down for 11 minutes
    await bus.attach(world.issuer()[1])
    await bus.settle()
    assert await poas(bus, "req-stale") == []
    assert one(await outcomes(bus, "req-stale"), RequestDenied).code == "stale_quorum"


async def test_a_critical_poa_carries_the_ticket_and_lives_sixty_seconds(bus: Bus, world: World) -> None:
    await _start(bus, world)
    _, record = world.request("req-i-crit", CRITICAL, ticket="CHG-4711")
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-i-crit")
    await bus.publish([world.vote(asked, "bob")[1], world.vote(asked, "carol")[1]])
    await bus.settle()
    [poa] = await poas(bus, "req-i-crit")
    claims = jwt.decode(poa.token, options={"verify_signature": False})
    assert (claims["tier"], claims["leg"]["ticket_ref"], claims["exp"] - claims["iat"]) == ("critical", "CHG-4711", 60)


async def test_the_issuer_refuses_chat_attested_votes_on_a_critical_quorum(bus: Bus, world: World) -> None:
    """A compromised approvals service counting chat-attested votes for a critical request (tests/e2e twin)."""
    await _start(bus, world)
    request, record = world.request("req-i-chat", CRITICAL, ticket="CHG-4712")
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-i-chat")
    counted = []
    for name, slack, kind in (("bob", "UBOB0002", "compliance"), ("carol", "UCAROL03", "security")):
        _, vote = world.vote(asked, name, via_chat=slack)
        assert vote.value is not None
        counted.append(
            CountedVote(
                approver_id=name,
                approver_type=kind,
                vote_digest="sha256:" + hashlib.sha256(vote.value).hexdigest(),
                cast_at=world.clock.now(),
                vote_event=vote.value.decode(),
            )
        )
    assert record.value is not None
    forged = QuorumReached(
        request_id="req-i-chat",
        tier=Tier.CRITICAL,
        required_approvals=2,
        request_digest=asked.request_digest,
        poa_ttl_seconds=60,
        request=request,
        request_event=record.value.decode(),
        votes=tuple(counted),
        decided_at=world.clock.now(),
    )
    await bus.publish([world.signed(forged, APPROVALS)])
    await bus.settle()
    assert await poas(bus, "req-i-chat") == []
    refused = [e for e in await audit_events(bus, "req-i-chat") if e.audit_type == "poa_issuance_refused"]
    assert [e.details["code"] for e in refused] == ["attester_tier"]
