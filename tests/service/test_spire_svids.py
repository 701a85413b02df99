"""Approvals → issuer → broker with SPIRE's SVIDs: EC P-256 keys from a SPIRE-like CA, proofs in ES256.

Every service, the agent and the approvers hold X.509-SVIDs as a SPIRE server
issues them by default (tests/spire_support.py); the services trust only that
CA's bundle. The same body runs in memory and, marked `kafka`, on the real
broker. The PoA itself stays an Ed25519 JWT by the issuer's signing key, which
is not its SVID.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from contracts import Decision, Envelope, Tier, Topic, decode_envelope
from contracts.reasons import ReasonCode
from tests.service.bus import Bus, KafkaBus
from tests.service.clock import Clock
from tests.service.conftest import ON_BOTH_BUSES
from tests.service.look import audits, dead_letters, decisions, kinds, outcomes, poas, required
from tests.service.world import APPROVALS, BROKER, ISSUER, World, approver_id
from tests.spire_support import SpireCa

HIGH = "sap.payment.execute"
SIGNED_TOPICS = (Topic.POA_REQUESTS, Topic.VOTES, Topic.OUTCOMES, Topic.POA_ISSUED, Topic.BROKER_ACTIONS)


@pytest.fixture
def world(bus: Bus, clock: Clock, tmp_path: Path) -> Iterator[World]:
    bootstrap = bus.bootstrap if isinstance(bus, KafkaBus) else "memory.invalid:9092"
    built = World(tmp_path, clock, bus.namespace, bootstrap, spire=SpireCa.create(now=clock.now()))
    yield built
    built.close()


async def _envelopes(bus: Bus, topic: Topic) -> list[Envelope]:
    return [decode_envelope(r.value) for r in await bus.records(topic) if r.value is not None]


@ON_BOTH_BUSES
async def test_a_high_risk_request_runs_end_to_end_on_spire_ec_svids(bus: Bus, world: World) -> None:
    for service in (APPROVALS, ISSUER, BROKER):
        assert world.svid(service).alg == "ES256"
    assert world.svid(approver_id("alice")).leaf.issuer == world.bundle.roots[0].subject
    for sut in (world.approvals()[1], world.issuer()[1], world.broker()[1]):
        await bus.attach(sut)

    request, record = world.request("req-spire-1", HIGH, resource="sap:invoice/4711")
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-spire-1")
    assert (asked.tier, asked.required_approvals) == (Tier.HIGH, 2)
    await bus.publish([world.vote(asked, "alice")[1]])
    await bus.publish([world.vote(asked, "bob")[1]])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-spire-1")) == ["ApprovalRequired", "QuorumReached"]
    [poa] = await poas(bus, "req-spire-1")
    assert (poa.tier, poa.agent_id) == (Tier.HIGH, request.agent_id)
    # The PoA is the issuer's EdDSA JWT, bound to the agent's EC certificate.
    assert jwt.get_unverified_header(poa.token)["alg"] == "EdDSA"
    assert jwt.decode(poa.token, options={"verify_signature": False})["cnf"] == {
        "x5t#S256": world.svid(request.agent_id).thumbprint()
    }

    await bus.publish([world.action(poa, request, action_id="act-spire-1")[1]])
    await bus.settle()
    assert [(d.action_id, d.decision, d.codes) for d in await decisions(bus, "req-spire-1")] == [
        ("act-spire-1", Decision.ALLOW, (ReasonCode.POA_VALID,)),
    ]
    assert ("poa_issued_dual_control", "success") in await audits(bus, "req-spire-1")
    assert await dead_letters(bus) == []

    # Every proof on the way was an ES256 signature by an EC P-256 SVID.
    producers = set()
    for topic in SIGNED_TOPICS:
        for envelope in await _envelopes(bus, topic):
            assert envelope.proof is not None, (topic, envelope.type)
            assert envelope.proof.alg == "ES256", (topic, envelope.type, envelope.proof.alg)
            producers.add(envelope.source)
    assert {APPROVALS, ISSUER, request.agent_id, approver_id("alice"), approver_id("bob")} <= producers
