"""The chat service over the in-memory bus: cards from followed outcomes, votes from signed Slack clicks.

Mirrors tests/e2e/test_chat.py with the real approvals and issuer services,
the real chat store (SQLite), a recording Slack (`chat.ports.SlackApi`) and
clicks signed as Slack signs them (`atb.dev.slack_standin`). The HTTP edge is
not here: the clicks go to `ChatService.handle_interaction`, which the
endpoint calls; what only a process and a socket show stays in tests/e2e.
"""

from __future__ import annotations

import jwt

from atb.dev.slack_standin import click_body, signed_headers
from chat.service import Answer, ChatService
from contracts import ApprovalRequired, AuditEvent, Topic
from contracts.reasons import ReasonCode
from tests.service.bus import Bus, MemoryBus, events_of
from tests.service.clock import Clock
from tests.service.look import audits, dead_letters, kinds, outcomes, poas, required
from tests.service.world import AGENT, SLACK_SECRET, RecordingSlack, World

HIGH, CRITICAL = "sap.payment.execute", "iam.admin.grant"
ALICE, BOB, CAROL, DAVE = "UALICE01", "UBOB0002", "UCAROL03", "UDAVE004"


async def _chat(bus: Bus, world: World) -> tuple[MemoryBus, ChatService, RecordingSlack]:
    assert isinstance(bus, MemoryBus), "chat's card follower runs on the in-memory bus"
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer()[1])
    slack = RecordingSlack()
    return bus, world.chat(bus, slack), slack


async def _click(
    chat: ChatService, clock: Clock, user: str, request_id: str, action: str = "atb_approve", *, age_s: int = 0
) -> Answer:
    body = click_body(user_id=user, request_id=request_id, action_id=action)
    return await chat.handle_interaction(signed_headers(SLACK_SECRET, body, int(clock.time()) - age_s), body)


async def test_two_slack_clicks_approve_a_high_risk_request(bus: Bus, world: World, clock: Clock) -> None:
    bus, chat, slack = await _chat(bus, world)
    _, record = world.request("req-c-high", HIGH, accountable="emp-200")  # dave acts as the accountable party
    await bus.publish([record])
    await bus.settle()
    # The channel, and each eligible approver directly; never dave, the accountable party.
    assert sorted(where for method, where, _ in slack.calls if method == "post") == [
        "CATBAPPROVA",
        f"D{ALICE}",
        f"D{BOB}",
        f"D{CAROL}",
    ]

    refused = await _click(chat, clock, DAVE, "req-c-high")
    assert (refused.status, refused.body["error"]) == (200, "self_approval")
    stranger = await _click(chat, clock, "UMALLORY", "req-c-high")
    assert (stranger.status, stranger.body["error"]) == (200, "unknown_user")

    body = click_body(user_id=ALICE, request_id="req-c-high", action_id="atb_approve")
    headers = signed_headers(SLACK_SECRET, body, int(clock.time()))
    first = await chat.handle_interaction(headers, body)
    assert (first.status, first.body["principal"]) == (200, "alice")
    replays = [await chat.handle_interaction(headers, body) for _ in range(3)]  # the same signed click again
    assert [(r.status, r.body["error"]) for r in replays] == [(409, "replay")] * 3
    again = await _click(chat, clock, ALICE, "req-c-high")  # a second, fresh click
    assert again.body["error"] == "duplicate"
    await bus.settle()
    assert kinds(await outcomes(bus, "req-c-high")) == ["ApprovalRequired"]

    second = await _click(chat, clock, BOB, "req-c-high")
    assert (second.status, second.body["principal"]) == (200, "bob")
    await bus.settle()
    assert kinds(await outcomes(bus, "req-c-high")) == ["ApprovalRequired", "QuorumReached"]
    [poa] = await poas(bus, "req-c-high")
    claims = jwt.decode(poa.token, options={"verify_signature": False})
    assert sorted(a["id"] for a in claims["leg"]["dual_control"]["approvers"]) == ["alice", "bob"]
    # Every card now shows the PoA; none was posted twice.
    cards = [card for card in slack.cards.values() if card.blocks]  # not the outcome's text message to dave
    assert len(cards) == 4
    assert all("PoA issued" in str(card.blocks) for card in cards)
    chat_audits = [t for t, _ in await audits(bus, "req-c-high") if t.startswith("chat_")]
    assert sorted(chat_audits) == sorted(
        # ... and the outcome's direct message to dave, the accountable party
        [
            "chat_vote_refused",
            "chat_vote_refused",
            "chat_vote_cast",
            "chat_vote_refused",
            "chat_vote_cast",
            "chat_notice_sent",
        ]
    )


async def test_forged_stale_and_replayed_clicks_are_rejected_and_299_seconds_is_accepted(
    bus: Bus, world: World, clock: Clock
) -> None:
    bus, chat, _ = await _chat(bus, world)
    _, record = world.request("req-c-forged", HIGH)
    await bus.publish([record])
    await bus.settle()

    body = click_body(user_id=ALICE, request_id="req-c-forged", action_id="atb_approve")
    forged = await chat.handle_interaction(signed_headers(b"not the secret", body, int(clock.time())), body)
    stale = await _click(chat, clock, ALICE, "req-c-forged", age_s=301)
    assert [(forged.status, forged.body["error"]), (stale.status, stale.body["error"])] == [
        (401, "bad_signature"),
        (401, "stale_timestamp"),
    ]
    late = await _click(chat, clock, ALICE, "req-c-forged", age_s=299)
    assert (late.status, late.body["principal"]) == (200, "alice")
    rejected = [
        e.details["status"]
        for e in events_of(await bus.records(Topic.AUDIT))
        if isinstance(e, AuditEvent) and e.audit_type == "chat_interaction_rejected"
    ]
    assert rejected == [401, 401]
    assert [t for t, _ in await audits(bus, "req-c-forged") if t.startswith("chat_")] == ["chat_vote_cast"]


async def test_critical_cannot_be_approved_from_chat(bus: Bus, world: World, clock: Clock) -> None:
    bus, chat, _ = await _chat(bus, world)
    _, record = world.request("req-c-crit", CRITICAL, ticket="CHG-4711")
    await bus.publish([record])
    await bus.settle()
    answer = await _click(chat, clock, BOB, "req-c-crit")
    assert (answer.status, answer.body["ok"], answer.body["error"]) == (200, False, ReasonCode.TIER_REQUIRES_CLI)
    await bus.settle()
    assert kinds(await outcomes(bus, "req-c-crit")) == ["ApprovalRequired"]
    assert await bus.records(Topic.VOTES) == []


async def test_with_a_console_high_is_approved_there_and_a_chat_approve_is_refused(
    bus: Bus, world: World, clock: Clock
) -> None:
    """ATB_CONSOLE_URL set: the high card's Approve opens the console's page; an approve click casts no vote."""
    assert isinstance(bus, MemoryBus), "chat's card follower runs on the in-memory bus"
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer()[1])
    slack = RecordingSlack()
    chat = world.chat(bus, slack, console_url="https://console.example")
    _, record = world.request("req-c-stepup", HIGH)
    await bus.publish([record])
    await bus.settle()
    card = next(iter(slack.cards.values()))
    buttons = [e for b in card.blocks if b.get("type") == "actions" for e in b["elements"]]  # type: ignore[union-attr]
    assert buttons[0]["url"] == "https://console.example/requests/req-c-stepup"  # type: ignore[index,call-overload]
    for action in ("atb_step_up", "atb_approve"):  # the link's own click, and a stale or forged approve
        answer = await _click(chat, clock, ALICE, "req-c-stepup", action)
        assert (answer.status, answer.body["error"]) == (200, ReasonCode.STEP_UP_REQUIRED)
    await bus.settle()
    assert await bus.records(Topic.VOTES) == []
    refusals = [t for t, _ in await audits(bus, "req-c-stepup") if t == "chat_vote_refused"]
    assert len(refusals) == 2


async def test_an_approval_required_not_proven_by_approvals_gets_no_card_but_a_dead_letter(
    bus: Bus, world: World
) -> None:
    bus, _, slack = await _chat(bus, world)
    _, record = world.request("req-c-real", HIGH)
    await bus.publish([record])
    await bus.settle()
    genuine = await required(bus, "req-c-real")
    posted = list(slack.calls)
    forged = ApprovalRequired.model_validate(genuine.model_dump() | {"request_id": "req-c-fake"})
    await bus.publish([world.signed(forged, AGENT)])  # proven, but not by the approvals service
    await bus.settle()
    assert slack.calls == posted
    assert [(c, code) for c, _, _, code in await dead_letters(bus)] == [("chat-cards@0", "claim_not_proven")]
    assert [t for t, _ in await audits(bus, "req-c-fake")] == ["event_dead_lettered", "identity_proof_rejected"]
