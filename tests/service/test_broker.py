"""The broker's Kafka way in over the bus, with PoAs the real issuer signed for the real approvals' quorums.

Mirrors tests/e2e/test_broker.py's decision scenarios: every presentation gets
exactly one decision, with its reason codes, and one audit event; by the test's
clock, so expiry is reached by advancing it.
"""

from __future__ import annotations

import pytest

from atb_runtime.partitioning import partition_for
from contracts import Decision, IssuanceRequested, PoaIssued, Topic
from contracts.reasons import ReasonCode
from tests.service.bus import Bus
from tests.service.clock import Clock
from tests.service.conftest import ON_BOTH_BUSES
from tests.service.look import audits, dead_letters, decisions, poas, required
from tests.service.world import OTHER_AGENT, World

MEDIUM = "crm.contact.update"


async def _poa(bus: Bus, world: World, request_id: str, action: str = MEDIUM) -> tuple[IssuanceRequested, PoaIssued]:
    """A PoA the way an agent gets one: request, alice approves (medium), the issuer signs."""
    for sut in (world.approvals()[1], world.issuer()[1], world.broker()[1]):
        await bus.attach(sut)
    request, record = world.request(request_id, action)
    await bus.publish([record])
    await bus.settle()
    if action == MEDIUM:
        await bus.publish([world.vote(await required(bus, request_id), "alice")[1]])
        await bus.settle()
    [poa] = await poas(bus, request_id)
    return request, poa


async def _verdicts(bus: Bus, request_id: str) -> list[tuple[str, Decision, tuple[ReasonCode, ...]]]:
    return [(d.action_id, d.decision, d.codes) for d in await decisions(bus, request_id)]


@ON_BOTH_BUSES
async def test_a_valid_poa_is_allowed_once_and_its_replay_is_blocked(bus: Bus, world: World) -> None:
    request, poa = await _poa(bus, world, "req-b-once")
    await bus.publish([world.action(poa, request, action_id="act-1")[1]])
    await bus.settle()
    await bus.publish([world.action(poa, request, action_id="act-2")[1]])
    await bus.settle()
    assert await _verdicts(bus, "req-b-once") == [
        ("act-1", Decision.ALLOW, (ReasonCode.POA_VALID,)),
        ("act-2", Decision.DENY, (ReasonCode.POA_SINGLE_USE_REPLAY_BLOCKED,)),
    ]
    assert [a for a in await audits(bus, "req-b-once") if a[0].startswith(("broker_", "poa_single"))] == [
        ("broker_action_allowed", "success"),
        ("poa_single_use_replay_blocked", "denied"),
    ]


async def test_an_expired_poa_is_denied_and_not_spent(bus: Bus, world: World, clock: Clock) -> None:
    request, poa = await _poa(bus, world, "req-b-exp")
    clock.advance(300 + 10 + 1)  # lifetime of a medium PoA, plus the broker's leeway
    await bus.publish([world.action(poa, request, action_id="act-late")[1]])
    await bus.settle()
    assert await _verdicts(bus, "req-b-exp") == [("act-late", Decision.DENY, (ReasonCode.EXPIRED,))]


async def test_just_inside_the_leeway_the_poa_still_works(bus: Bus, world: World, clock: Clock) -> None:
    request, poa = await _poa(bus, world, "req-b-leeway")
    clock.advance(300 + 9)
    await bus.publish([world.action(poa, request, action_id="act-in-time")[1]])
    await bus.settle()
    assert await _verdicts(bus, "req-b-leeway") == [("act-in-time", Decision.ALLOW, (ReasonCode.POA_VALID,))]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"action": "crm.lead.create"}, ReasonCode.ACTION_MISMATCH),
        ({"resource": "crm:contact/43"}, ReasonCode.RESOURCE_MISMATCH),
        ({"params": {"reason": "something else"}}, ReasonCode.DIGEST_MISMATCH),
    ],
)
async def test_a_presentation_that_differs_from_what_was_approved_is_denied(
    bus: Bus, world: World, change: dict[str, object], code: ReasonCode
) -> None:
    request, poa = await _poa(bus, world, "req-b-bind")
    presented, _ = world.action(poa, request, action_id="act-changed")
    await bus.publish([world.signed(presented.model_copy(update=change), request.agent_id)])
    await bus.settle()
    [(action_id, decision, codes)] = await _verdicts(bus, "req-b-bind")
    assert (action_id, decision) == ("act-changed", Decision.DENY)
    assert code in codes
    # Denied before the spent store: the untouched presentation is still allowed.
    await bus.publish([world.action(poa, request, action_id="act-right")[1]])
    await bus.settle()
    assert (await _verdicts(bus, "req-b-bind"))[1] == ("act-right", Decision.ALLOW, (ReasonCode.POA_VALID,))


async def test_a_copied_token_is_useless_to_another_agent(bus: Bus, world: World) -> None:
    request, poa = await _poa(bus, world, "req-b-copy")
    await bus.publish([world.action(poa, request, action_id="act-thief", agent=OTHER_AGENT)[1]])
    await bus.settle()
    [(_, decision, codes)] = await _verdicts(bus, "req-b-copy")
    assert decision is Decision.DENY
    # Another subject, another certificate, and the v2 digest covers the agent too.
    assert set(codes) == {ReasonCode.SUB_MISMATCH, ReasonCode.CNF_MISMATCH, ReasonCode.DIGEST_MISMATCH}


async def test_a_revoked_poa_is_denied(bus: Bus, world: World) -> None:
    request, poa = await _poa(bus, world, "req-b-rev")
    world.revoke(poa)
    await bus.publish([world.action(poa, request, action_id="act-revoked")[1]])
    await bus.settle()
    assert await _verdicts(bus, "req-b-rev") == [("act-revoked", Decision.DENY, (ReasonCode.POA_REVOKED,))]
    assert ("poa_revoked_presented", "denied") in await audits(bus, "req-b-rev")


async def test_a_forged_token_and_no_token_are_denied_with_their_reasons(bus: Bus, world: World) -> None:
    request, poa = await _poa(bus, world, "req-b-forged")
    head, body, signature = poa.token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    await bus.publish([world.action(poa, request, action_id="act-forged", token=f"{head}.{body}.{flipped}")[1]])
    await bus.publish([world.action(None, request, action_id="act-none")[1]])
    await bus.settle()
    assert await _verdicts(bus, "req-b-forged") == [
        ("act-forged", Decision.DENY, (ReasonCode.BAD_SIGNATURE,)),
        ("act-none", Decision.DENY, (ReasonCode.POA_REQUIRED,)),
    ]


async def test_policy_unavailable_denies_without_spending(bus: Bus, world: World) -> None:
    request, poa = await _poa(bus, world, "req-b-opa")
    world.opa.down = True
    await bus.publish([world.action(poa, request, action_id="act-opa-down")[1]])
    await bus.settle()
    world.opa.down = False
    await bus.publish([world.action(poa, request, action_id="act-opa-up")[1]])
    await bus.settle()
    assert await _verdicts(bus, "req-b-opa") == [
        ("act-opa-down", Decision.DENY, (ReasonCode.POLICY_UNAVAILABLE,)),
        ("act-opa-up", Decision.ALLOW, (ReasonCode.POA_VALID,)),
    ]


@ON_BOTH_BUSES
async def test_garbage_on_the_actions_topic_is_dead_lettered(bus: Bus, world: World) -> None:
    await bus.attach(world.broker()[1])
    home = partition_for(b"req-b-junk", 3)
    await bus.publish_raw(Topic.BROKER_ACTIONS, b"req-b-junk", b"\x00\x01 not an event", home)
    await bus.publish_raw(Topic.BROKER_ACTIONS, b"req-b-junk", b"\x00\x01 not an event", (home + 1) % 3)
    await bus.settle()
    assert sorted((c, code) for c, _, _, code in await dead_letters(bus)) == [
        ("broker", "invalid_envelope"),
        ("broker", "wrong_partition"),
    ]
    assert await decisions(bus, "req-b-junk") == []
