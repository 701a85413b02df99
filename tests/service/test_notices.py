"""Reminders, escalations and outcomes as chat direct messages, over the in-memory bus, by the test's clock.

The real approvals and issuer services and the real chat store (SQLite) behind
a recording Slack. The shipped policy data: a high request (pending one hour) is
reminded at 30 and 48 minutes and escalated to security at 48 minutes; alice
(manager), bob (compliance) and carol (security) may approve it, dave
(emp-200) is its accountable party here. Each message goes out once, whatever
is redelivered or restarted; each is audited.
"""

from __future__ import annotations

from chat.service import ChatService
from contracts import QuorumReached, VoteChoice
from contracts.approval_events import ApprovalEscalated, ReminderDue
from tests.service.bus import Bus, MemoryBus
from tests.service.clock import Clock
from tests.service.look import audits, dead_letters, kinds, one, outcomes, poas, required
from tests.service.world import AGENT, RecordingSlack, World

HIGH = "iam.role.assign"
ALICE, BOB, CAROL, DAVE = "UALICE01", "UBOB0002", "UCAROL03", "UDAVE004"


def _dms(slack: RecordingSlack, starting: str) -> list[str]:
    """The users direct-messaged a text starting with `starting`, in order."""
    return [
        where.removeprefix("D") for method, where, text in slack.calls if method == "post" and text.startswith(starting)
    ]


async def _chat(bus: Bus, world: World) -> tuple[MemoryBus, ChatService, RecordingSlack]:
    assert isinstance(bus, MemoryBus), "chat's follower runs on the in-memory bus"
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer()[1])
    slack = RecordingSlack()
    return bus, world.chat(bus, slack), slack


async def test_reminders_and_the_escalation_reach_each_approver_who_has_not_voted_once(
    bus: Bus, world: World, clock: Clock
) -> None:
    bus, _chat_service, slack = await _chat(bus, world)
    _, record = world.request("req-n-1", HIGH, accountable="emp-200")
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-n-1")
    await bus.publish([world.vote(asked, "alice")[1]])
    await bus.settle()
    assert _dms(slack, "Reminder") == []

    clock.advance(30 * 60)
    await bus.tick()
    await bus.settle()
    assert kinds(await outcomes(bus, "req-n-1"))[-1] == "ReminderDue"
    # Every approver who may approve it and has not voted: not alice (voted), not dave (the accountable party).
    assert sorted(_dms(slack, "Reminder 1 of 2")) == [BOB, CAROL]

    await bus.detach("approvals")
    await bus.attach(world.approvals()[1])
    world.chat(bus, slack)  # a restarted chat (same store) reads every topic from the start again
    await bus.tick()
    await bus.settle()
    assert sorted(_dms(slack, "Reminder")) == [BOB, CAROL], "nothing is sent twice"

    clock.advance(18 * 60)
    await bus.tick()
    await bus.settle()
    events = await outcomes(bus, "req-n-1")
    assert one(events, ApprovalEscalated).escalate_to == ("security",)
    assert [e.reminder for e in events if isinstance(e, ReminderDue)] == [1, 2]
    assert sorted(_dms(slack, "Reminder 2 of 2")) == [BOB, CAROL]
    assert _dms(slack, "Escalated to security") == [CAROL]

    # carol, told by the escalation, brings the quorum; dave, the accountable party, is told the outcome.
    await bus.publish([world.vote(asked, "carol")[1]])
    await bus.settle()
    await bus.settle()
    assert sorted(v.approver_id for v in one(await outcomes(bus, "req-n-1"), QuorumReached).votes) == [
        "alice",
        "carol",
    ]
    assert await poas(bus, "req-n-1")
    assert _dms(slack, "Request req-n-1") == [DAVE]

    sent = [a for a in await audits(bus, "req-n-1") if a[0] == "chat_notice_sent"]
    assert len(sent) == 2 + 2 + 1 + 1  # two reminders to bob and carol, the escalation to carol, the outcome to dave


async def test_a_denial_tells_the_accountable_party_and_a_closed_request_is_not_reminded(
    bus: Bus, world: World, clock: Clock
) -> None:
    bus, _chat_service, slack = await _chat(bus, world)
    _, record = world.request("req-n-2", HIGH, accountable="emp-200")
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-n-2")
    await bus.publish([world.vote(asked, "bob", VoteChoice.DENY)[1]])
    await bus.settle()
    await bus.settle()
    assert _dms(slack, "Request req-n-2") == [DAVE]
    assert "was denied" in next(t for m, w, t in slack.calls if m == "post" and t.startswith("Request req-n-2"))

    clock.advance(50 * 60)
    await bus.tick()
    await bus.settle()
    assert _dms(slack, "Reminder") == []
    assert _dms(slack, "Escalated") == []


async def test_a_forged_reminder_messages_nobody_and_is_dead_lettered(bus: Bus, world: World, clock: Clock) -> None:
    bus, _chat_service, slack = await _chat(bus, world)
    _, record = world.request("req-n-3", HIGH, accountable="emp-200")
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-n-3")
    forged = ReminderDue(
        request_id="req-n-3",
        tier=asked.tier,
        reminder=1,
        of=2,
        missing=2,
        eligible_groups=asked.eligible_groups,
        request_digest=asked.request_digest,
        deadline=asked.deadline,
        sent_at=clock.now(),
    )
    await bus.publish([world.signed(forged, AGENT)])  # signed, but by the agent: only approvals may remind
    await bus.settle()
    assert _dms(slack, "Reminder") == []
    letters = [(consumer, code) for consumer, _, _, code in await dead_letters(bus) if consumer.startswith("chat-")]
    assert len(letters) == 1
