"""Approvals → issuer → broker over one bus, with real signatures: in memory, and on the real Kafka broker.

The same test body runs on both buses (`ON_BOTH_BUSES`): in memory it is part of
the hermetic tier; marked `kafka`, the three services run on the transactional
processor (Kafka transactions, fencing, state read back from Kafka) in a fresh
namespace of the dev stack's broker.
"""

from __future__ import annotations

from contracts import Decision, QuorumReached, Tier
from contracts.reasons import ReasonCode
from tests.service.bus import Bus
from tests.service.conftest import ON_BOTH_BUSES
from tests.service.look import audits, decisions, kinds, one, outcomes, poas, required
from tests.service.world import World

HIGH = "sap.payment.execute"


@ON_BOTH_BUSES
async def test_a_high_risk_request_from_request_to_one_action(bus: Bus, world: World) -> None:
    # A manager and a compliance officer: what a payment needs, whichever way the policy composes groups.
    # Upstream first: `settle` checks the services in the order they were attached.
    for sut in (world.approvals()[1], world.issuer()[1], world.broker()[1]):
        await bus.attach(sut)

    request, record = world.request("req-chain-1", HIGH, resource="sap:invoice/4711")
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-chain-1")
    assert (asked.tier, asked.required_approvals) == (Tier.HIGH, 2)

    await bus.publish([world.vote(asked, "alice")[1]])
    await bus.publish([world.vote(asked, "bob")[1]])
    await bus.settle()
    events = await outcomes(bus, "req-chain-1")
    assert kinds(events) == ["ApprovalRequired", "QuorumReached"]
    assert sorted(v.approver_id for v in one(events, QuorumReached).votes) == ["alice", "bob"]
    [poa] = await poas(bus, "req-chain-1")
    assert (poa.tier, poa.action, poa.agent_id) == (Tier.HIGH, HIGH, request.agent_id)

    await bus.publish([world.action(poa, request, action_id="act-chain-1")[1]])
    await bus.settle()
    await bus.publish([world.action(poa, request, action_id="act-chain-2")[1]])
    await bus.settle()
    assert [(d.action_id, d.decision, d.codes, d.jti) for d in await decisions(bus, "req-chain-1")] == [
        ("act-chain-1", Decision.ALLOW, (ReasonCode.POA_VALID,), poa.jti),
        ("act-chain-2", Decision.DENY, (ReasonCode.POA_SINGLE_USE_REPLAY_BLOCKED,), poa.jti),
    ]
    assert sorted(await audits(bus, "req-chain-1")) == sorted(
        [
            ("approval_required", "info"),
            ("approval_vote_counted", "success"),
            ("approval_vote_counted", "success"),
            ("approval_quorum_reached", "success"),
            ("poa_issued_dual_control", "success"),
            ("broker_action_allowed", "success"),
            ("poa_single_use_replay_blocked", "denied"),
        ]
    )
