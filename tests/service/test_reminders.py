"""Reminders and escalation over the bus, by the test's clock: each exactly once, across a restart of approvals.

The shipped policy data: a high request (pending one hour) is reminded at 30 and
48 minutes, and escalated to security at 48 minutes while its quorum is missing.
"""

from __future__ import annotations

from contracts import QuorumReached
from contracts.approval_events import ApprovalEscalated, ReminderDue
from tests.service.bus import Bus
from tests.service.look import audits, kinds, one, outcomes, poas, required
from tests.service.world import World

HIGH = "iam.role.assign"


async def test_reminders_and_the_escalation_are_sent_once_even_across_a_restart(bus: Bus, world: World) -> None:
    await bus.attach(world.approvals()[1])
    _, record = world.request("req-remind", HIGH)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-remind")
    await bus.publish([world.vote(asked, "alice")[1]])
    await bus.settle()

    world.clock.advance(30 * 60 - 1)
    await bus.tick()
    assert kinds(await outcomes(bus, "req-remind")) == ["ApprovalRequired"]
    world.clock.advance(1)
    await bus.tick()
    await bus.tick()  # due once: the state on the changelog says it was sent
    events = await outcomes(bus, "req-remind")
    assert kinds(events) == ["ApprovalRequired", "ReminderDue"]
    first = one(events, ReminderDue)
    assert (first.reminder, first.of, first.missing, first.deadline) == (1, 2, 1, asked.deadline)

    await bus.detach("approvals")
    await bus.attach(world.approvals()[1])  # a new instance reads the changelog back
    await bus.tick()
    assert kinds(await outcomes(bus, "req-remind")) == ["ApprovalRequired", "ReminderDue"]

    world.clock.advance(18 * 60)
    await bus.tick()
    await bus.tick()
    events = await outcomes(bus, "req-remind")
    assert kinds(events) == ["ApprovalRequired", "ReminderDue", "ReminderDue", "ApprovalEscalated"]
    assert [e.reminder for e in events if isinstance(e, ReminderDue)] == [1, 2]
    escalation = one(events, ApprovalEscalated)
    assert (escalation.escalate_to, escalation.missing) == (("security",), 1)

    await bus.publish([world.vote(asked, "carol")[1]])  # security, told by the escalation, brings the quorum
    await bus.settle()
    world.clock.advance(20 * 60)
    await bus.tick()
    events = await outcomes(bus, "req-remind")
    assert kinds(events) == ["ApprovalRequired", "ReminderDue", "ReminderDue", "ApprovalEscalated", "QuorumReached"]
    assert sorted(v.approver_id for v in one(events, QuorumReached).votes) == ["alice", "carol"]
    assert [a for a in await audits(bus, "req-remind") if a[0] in ("approval_reminder_sent", "approval_escalated")] == [
        ("approval_reminder_sent", "info"),
        ("approval_reminder_sent", "info"),
        ("approval_escalated", "info"),
    ]


async def test_an_escalation_group_not_otherwise_eligible_brings_the_quorum_from_the_escalation_point_on(
    bus: Bus, world: World
) -> None:
    """The policy escalates high to security, which it does not make eligible: carol counts only once escalated."""
    world.opa._policy["tiers"]["high"]["eligible_groups"] = ["manager", "compliance"]
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer()[1])
    _, record = world.request("req-esc-elig", HIGH)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-esc-elig")
    assert asked.eligible_groups == ("manager", "compliance")
    await bus.publish([world.vote(asked, "alice")[1], world.vote(asked, "carol", vote_id="carol-early")[1]])
    await bus.settle()
    assert ("approval_vote_refused", "denied") in await audits(bus, "req-esc-elig")  # carol: not_eligible yet
    assert "QuorumReached" not in kinds(await outcomes(bus, "req-esc-elig"))

    world.clock.advance(48 * 60)  # the escalation point
    await bus.tick()
    assert one(await outcomes(bus, "req-esc-elig"), ApprovalEscalated).escalate_to == ("security",)
    await bus.publish([world.vote(asked, "carol", vote_id="carol-escalated")[1]])
    await bus.settle()
    quorum = one(await outcomes(bus, "req-esc-elig"), QuorumReached)
    assert sorted(v.approver_id for v in quorum.votes) == ["alice", "carol"]
    [poa] = await poas(bus, "req-esc-elig")  # the issuer's re-check accepts carol's escalated vote
    assert poa.tier.value == "high"
