"""The approvals service over the bus: the scenarios of tests/e2e/test_approvals.py, in memory, by the test's clock.

Each test asserts the exact outcomes and audit events of its request, so a
missing, extra or reordered event fails it.
"""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY

from approvals.settings import ApprovalsSettings
from atb_runtime.partitioning import partition_for
from contracts import QuorumReached, RequestDenied, RequestExpired, Tier, Topic, VoteChoice
from tests.service.bus import Bus, MemoryBus
from tests.service.clock import Clock
from tests.service.conftest import ON_BOTH_BUSES
from tests.service.look import audits, dead_letters, kinds, one, outcomes, required
from tests.service.world import AGENT, OTHER_AGENT, World, approver_id

LOW, MEDIUM, HIGH, CRITICAL = "crm.contact.read", "crm.contact.update", "iam.role.assign", "iam.admin.grant"


async def _start(bus: Bus, world: World) -> None:
    _, sut = world.approvals()
    await bus.attach(sut)


@ON_BOTH_BUSES
async def test_low_risk_reaches_quorum_at_once_with_no_votes(bus: Bus, world: World) -> None:
    await _start(bus, world)
    request, record = world.request("req-low", LOW)
    await bus.publish([record])
    await bus.settle()

    events = await outcomes(bus, "req-low")
    assert kinds(events) == ["QuorumReached"]
    quorum = one(events, QuorumReached)
    assert (quorum.tier, quorum.required_approvals, quorum.votes) == (Tier.LOW, 0, ())
    assert quorum.request == request
    assert await audits(bus, "req-low") == [("approval_quorum_reached", "success")]


async def test_medium_risk_needs_one_approver_who_is_not_the_requester(bus: Bus, world: World) -> None:
    await _start(bus, world)
    _, record = world.request("req-med", MEDIUM)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-med")
    assert (asked.tier, asked.required_approvals) == (Tier.MEDIUM, 1)
    assert asked.deadline == world.clock.now() + timedelta(seconds=3600)

    await bus.publish([world.vote(asked, "alice")[1]])
    await bus.settle()

    events = await outcomes(bus, "req-med")
    assert kinds(events) == ["ApprovalRequired", "QuorumReached"]
    assert [v.approver_id for v in one(events, QuorumReached).votes] == ["alice"]
    assert await audits(bus, "req-med") == [
        ("approval_required", "info"),
        ("approval_vote_counted", "success"),
        ("approval_quorum_reached", "success"),
    ]


@ON_BOTH_BUSES
async def test_high_risk_needs_two_distinct_people_and_refuses_self_approval(bus: Bus, world: World) -> None:
    """alice is the accountable party (emp-101 is one of her identities): her vote is refused; a repeat counts once."""
    await _start(bus, world)
    _, record = world.request("req-high", HIGH, accountable="emp-101")
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-high")
    assert (asked.tier, asked.required_approvals) == (Tier.HIGH, 2)

    await bus.publish([world.vote(asked, "alice")[1]])  # self-approval
    await bus.publish([world.vote(asked, "bob")[1]])
    await bus.publish([world.vote(asked, "bob", vote_id="vote-bob-again")[1]])  # the same person again
    await bus.settle()
    assert kinds(await outcomes(bus, "req-high")) == ["ApprovalRequired"]

    await bus.publish([world.vote(asked, "carol")[1]])
    await bus.settle()
    events = await outcomes(bus, "req-high")
    assert kinds(events) == ["ApprovalRequired", "QuorumReached"]
    assert sorted(v.approver_id for v in one(events, QuorumReached).votes) == ["bob", "carol"]
    assert [t for t, _ in await audits(bus, "req-high")] == [
        "approval_required",
        "approval_self_vote_refused",
        "approval_vote_counted",
        "approval_vote_refused",
        "approval_vote_counted",
        "approval_quorum_reached",
    ]


async def test_the_agent_cannot_approve_its_own_request(bus: Bus, world: World) -> None:
    await _start(bus, world)
    _, record = world.request("req-own", MEDIUM)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-own")
    own_vote = world.vote(asked, "alice")[0].model_copy(update={"approver_id": AGENT})
    await bus.publish([world.signed(own_vote, AGENT)])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-own")) == ["ApprovalRequired"]
    assert [t for t, _ in await audits(bus, "req-own")] == ["approval_required", "approval_vote_refused"]


async def test_one_deny_denies_even_after_an_approval(bus: Bus, world: World) -> None:
    await _start(bus, world)
    _, record = world.request("req-deny", HIGH)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-deny")
    await bus.publish([world.vote(asked, "alice")[1], world.vote(asked, "bob", VoteChoice.DENY)[1]])
    await bus.publish([world.vote(asked, "carol")[1]])  # too late: the request is closed
    await bus.settle()
    events = await outcomes(bus, "req-deny")
    assert kinds(events) == ["ApprovalRequired", "RequestDenied"]
    assert one(events, RequestDenied).code == "denied_by_approver"


async def test_a_vote_for_another_digest_does_not_count(bus: Bus, world: World) -> None:
    await _start(bus, world)
    _, record = world.request("req-digest", MEDIUM)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-digest")
    await bus.publish([world.vote(asked, "alice", digest="sha256v2:" + "0" * 64)[1]])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-digest")) == ["ApprovalRequired"]
    assert [t for t, _ in await audits(bus, "req-digest")] == ["approval_required", "approval_vote_refused"]


async def test_without_quorum_the_request_expires_at_its_deadline_by_the_service_clock(
    bus: Bus, world: World, clock: Clock
) -> None:
    await _start(bus, world)
    _, record = world.request("req-exp", HIGH)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-exp")
    await bus.publish([world.vote(asked, "alice")[1]])
    await bus.settle()

    clock.advance(3599)
    await bus.tick()  # the shipped policy's last reminder and escalation, not sent before: sent now (once)
    reminded = ["ApprovalRequired", "ReminderDue", "ApprovalEscalated"]
    assert kinds(await outcomes(bus, "req-exp")) == reminded

    clock.advance(2)
    await bus.tick()
    await bus.publish([world.vote(asked, "bob")[1]])  # after the deadline: refused, no quorum
    await bus.settle()
    events = await outcomes(bus, "req-exp")
    assert kinds(events) == [*reminded, "RequestExpired"]
    expired = one(events, RequestExpired)
    assert (expired.approvals_counted, expired.required_approvals) == (1, 2)
    assert expired.deadline == asked.deadline


async def test_a_vote_before_its_request_is_held_then_counted(bus: Bus, world: World) -> None:
    """The vote arrives first (another partition's lag, a fast approver): held, then counted on the request."""
    await _start(bus, world)
    request, record = world.request("req-early", MEDIUM)
    await bus.publish([world.vote(request, "alice")[1]])
    await bus.settle()
    assert await outcomes(bus, "req-early") == []
    await bus.publish([record])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-early")) == ["ApprovalRequired", "QuorumReached"]
    assert [t for t, _ in await audits(bus, "req-early")] == [
        "approval_vote_held",
        "approval_required",
        "approval_vote_counted",
        "approval_quorum_reached",
    ]


@ON_BOTH_BUSES
async def test_garbage_and_forgeries_are_dead_lettered_and_a_bad_vote_fails_its_request_closed(
    bus: Bus, world: World
) -> None:
    await _start(bus, world)
    _, record = world.request("req-forged", MEDIUM)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-forged")
    requests = world.topic(Topic.POA_REQUESTS)
    votes = world.topic(Topic.VOTES)

    # Not an event at all, keyed by a request id, on its key's partition.
    await bus.publish_raw(Topic.POA_REQUESTS, b"req-junk", b"{not json", partition_for(b"req-junk", 3))
    # A request on another partition than its key's.
    _, misplaced = world.request("req-misplaced", LOW)
    home = partition_for(b"req-misplaced", 3)
    await bus.publish_raw(Topic.POA_REQUESTS, misplaced.key, misplaced.value, (home + 1) % 3)
    # A request that claims an agent its proof does not prove.
    forged = world.signed(world.request("req-impostor", LOW)[0], OTHER_AGENT)
    # bob signs a vote that claims to be alice's: the request fails closed.
    alice_vote = world.vote(asked, "alice")[0]
    await bus.publish([forged, world.signed(alice_vote, approver_id("bob"))])
    await bus.settle()

    letters = sorted(await dead_letters(bus), key=lambda letter: (letter[1], letter[2]))
    assert [(c, t, code) for c, t, _, code in letters] == sorted(
        [
            ("approvals", requests, "invalid_envelope"),
            ("approvals", requests, "wrong_partition"),
            ("approvals", requests, "claim_not_proven"),
            ("approvals", votes, "claim_not_proven"),
        ],
        key=lambda letter: letter[1],
    )
    assert await outcomes(bus, "req-junk") == []
    assert await outcomes(bus, "req-misplaced") == []
    assert await outcomes(bus, "req-impostor") == []
    events = await outcomes(bus, "req-forged")
    assert kinds(events) == ["ApprovalRequired", "RequestDenied"]
    assert one(events, RequestDenied).code == "vote_unverifiable"


@ON_BOTH_BUSES
async def test_a_restarted_instance_restores_its_state_and_judges_each_request_once(bus: Bus, world: World) -> None:
    await _start(bus, world)
    _, record = world.request("req-restart", HIGH)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-restart")
    await bus.publish([world.vote(asked, "alice")[1]])
    await bus.settle()

    await bus.detach("approvals")
    _, again = world.approvals()
    await bus.attach(again)  # reads the changelog back for its partitions
    await bus.publish([record])  # the request replayed: no second judgement
    await bus.publish([world.vote(asked, "bob")[1]])
    await bus.settle()
    events = await outcomes(bus, "req-restart")
    assert kinds(events) == ["ApprovalRequired", "QuorumReached"]
    assert sorted(v.approver_id for v in one(events, QuorumReached).votes) == ["alice", "bob"]
    assert ("approval_duplicate_request", "denied") in await audits(bus, "req-restart")


async def test_a_chat_attested_vote_counts_for_the_person_behind_the_slack_id(bus: Bus, world: World) -> None:
    await _start(bus, world)
    _, record = world.request("req-slack", MEDIUM)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-slack")
    await bus.publish([world.vote(asked, "alice", via_chat="UALICE01")[1]])
    await bus.settle()
    events = await outcomes(bus, "req-slack")
    assert kinds(events) == ["ApprovalRequired", "QuorumReached"]
    assert [v.approver_id for v in one(events, QuorumReached).votes] == ["alice"]


async def test_critical_needs_a_ticket_and_votes_chat_may_not_vouch_for(bus: Bus, world: World) -> None:
    await _start(bus, world)
    _, unticketed = world.request("req-crit-no-ticket", CRITICAL)
    _, record = world.request("req-crit", CRITICAL, ticket="CHG-4711")
    await bus.publish([unticketed, record])
    await bus.settle()
    refused = await outcomes(bus, "req-crit-no-ticket")
    assert kinds(refused) == ["RequestDenied"]
    assert one(refused, RequestDenied).code == "ticket_required"

    asked = await required(bus, "req-crit")
    assert (asked.tier, asked.required_approvals, asked.ticket_required) == (Tier.CRITICAL, 2, True)
    # A compromised chat service vouching for bob and carol: chat may not vouch for critical.
    await bus.publish(
        [world.vote(asked, "bob", via_chat="UBOB0002")[1], world.vote(asked, "carol", via_chat="UCAROL03")[1]]
    )
    await bus.settle()
    assert kinds(await outcomes(bus, "req-crit")) == ["ApprovalRequired"]
    assert [t for t, _ in await audits(bus, "req-crit")] == [
        "approval_required",
        "approval_vote_refused",
        "approval_vote_refused",
    ]
    # alice may not approve critical at all; bob and carol with their own SVIDs may.
    await bus.publish([world.vote(asked, "alice")[1], world.vote(asked, "bob")[1], world.vote(asked, "carol")[1]])
    await bus.settle()
    events = await outcomes(bus, "req-crit")
    assert kinds(events) == ["ApprovalRequired", "QuorumReached"]
    assert sorted(v.approver_id for v in one(events, QuorumReached).votes) == ["bob", "carol"]


async def test_a_request_for_another_tenant_is_denied_at_intake(bus: Bus, world: World) -> None:
    await _start(bus, world)
    request, _ = world.request("req-tenant", LOW)
    foreign = request.model_copy(update={"tenant": "globex"})
    await bus.publish([world.signed(foreign, AGENT)])
    await bus.settle()
    events = await outcomes(bus, "req-tenant")
    assert kinds(events) == ["RequestDenied"]
    assert one(events, RequestDenied).code == "tenant_not_allowed"


async def test_with_the_policy_unreachable_a_request_waits_and_is_judged_once_it_answers(
    bus: Bus, world: World
) -> None:
    """Fail closed (docs/architecture.md §6.7): nothing is decided without the policy, nothing is lost either."""
    assert isinstance(bus, MemoryBus)
    await _start(bus, world)
    world.opa.down = True
    _, record = world.request("req-opa-down", MEDIUM)
    await bus.publish([record])
    await bus.settle()
    assert (await outcomes(bus, "req-opa-down"), await dead_letters(bus)) == ([], [])
    assert bus.given_back("approvals") == 1

    world.opa.down = False
    await bus.settle()
    assert kinds(await outcomes(bus, "req-opa-down")) == ["ApprovalRequired"]


def _pending(tier: Tier) -> float | None:
    return REGISTRY.get_sample_value("atb_approvals_pending_requests", {"tier": tier.value})


async def test_the_pending_gauge_counts_the_open_requests_of_each_tier_until_they_close(
    bus: Bus, world: World, clock: Clock
) -> None:
    await _start(bus, world)
    _, medium = world.request("req-gauge-med", MEDIUM)
    _, high = world.request("req-gauge-high", HIGH)
    _, low = world.request("req-gauge-low", LOW)
    await bus.publish([medium, high, low])
    await bus.settle()
    assert [_pending(t) for t in Tier] == [0, 1, 1, 0]

    await bus.publish([world.vote(await required(bus, "req-gauge-med"), "alice")[1]])
    await bus.settle()
    assert [_pending(t) for t in Tier] == [0, 0, 1, 0]

    clock.advance(3601)
    await bus.tick()
    assert kinds(await outcomes(bus, "req-gauge-high"))[-1] == "RequestExpired"
    assert [_pending(t) for t in Tier] == [0, 0, 0, 0]


async def _tombstones(bus: Bus, request_id: str) -> int:
    changelog = await bus.records(Topic.APPROVALS_STATE)
    return sum(1 for r in changelog if r.key == request_id.encode() and r.value is None)


async def test_a_closed_request_is_forgotten_once_after_its_retention_and_not_before(
    bus: Bus, world: World, clock: Clock
) -> None:
    service, sut = world.approvals()
    await bus.attach(sut)
    retention = ApprovalsSettings(state_dir=world.state).closed_retention_seconds
    _, early = world.request("req-forget-1", LOW)
    await bus.publish([early])
    await bus.settle()
    clock.advance(retention / 2)
    _, late = world.request("req-forget-2", LOW)
    await bus.publish([late])
    await bus.settle()
    assert service.open_requests == 2

    clock.advance(retention / 2 - 1)
    await bus.tick()
    assert (await _tombstones(bus, "req-forget-1"), service.open_requests) == (0, 2)

    clock.advance(2)
    await bus.tick()
    await bus.tick()
    assert (await _tombstones(bus, "req-forget-1"), await _tombstones(bus, "req-forget-2")) == (1, 0)
    assert service.open_requests == 1

    clock.advance(retention / 2)
    await bus.tick()
    assert (await _tombstones(bus, "req-forget-1"), await _tombstones(bus, "req-forget-2")) == (1, 1)
    assert service.open_requests == 0


async def test_votes_orphaned_for_a_request_that_never_came_leave_nothing_held_after_the_retention(
    bus: Bus, world: World, clock: Clock
) -> None:
    service, sut = world.approvals()
    await bus.attach(sut)
    settings = ApprovalsSettings(state_dir=world.state)
    request, _record = world.request("req-never", MEDIUM)
    await bus.publish([world.vote(request, "alice")[1]])
    await bus.settle()
    assert service.open_requests == 1

    clock.advance(settings.vote_hold_seconds + 1)
    await bus.tick()
    assert [t for t, _ in await audits(bus, "req-never")] == ["approval_vote_held", "approval_vote_orphaned"]
    assert (await _tombstones(bus, "req-never"), service.open_requests) == (0, 1)

    clock.advance(settings.closed_retention_seconds - 1)
    await bus.tick()
    assert (await _tombstones(bus, "req-never"), service.open_requests) == (0, 1)
    clock.advance(2)
    await bus.tick()
    assert (await _tombstones(bus, "req-never"), service.open_requests) == (1, 0)
