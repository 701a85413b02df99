"""Teams in the chat service over the in-memory bus: Adaptive Cards follow the request, invokes become votes.

The real approvals and issuer services, the real chat store (SQLite), a
recording Bot Connector (`chat.ports.TeamsApi`) and invokes carrying tokens
the Teams stand-in signs (its OpenID metadata and keys served on 127.0.0.1,
checked by the real validator). The HTTP edge and the Bot Connector's REST
calls are tests/e2e/test_teams.py's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest

from atb.dev.teams_standin import TeamsStandIn, invoke_activity
from atb_runtime import DeadLetters
from atb_runtime.follow import follower_consumer
from chat.adapters.follower import FOLLOWED, OutcomeProofCheck
from chat.adapters.store import ChatStore
from chat.adapters.teams_auth import TokenValidator
from chat.service import Answer, ChatService
from chat.settings import ChatSettings
from chat.teams_service import TeamsService
from contracts import JsonObject, Topic
from tests.service.bus import Bus, BusPublisher, MemoryBus
from tests.service.clock import Clock
from tests.service.look import audits, kinds, outcomes, poas
from tests.service.world import CHAT, SLACK_SECRET, World

HIGH = "sap.payment.execute"
ALICE, BOB, CAROL, DAVE = (
    "a11ce000-0000-4000-8000-000000000001",
    "b0b00000-0000-4000-8000-000000000002",
    "ca201000-0000-4000-8000-000000000003",
    "da7e0000-0000-4000-8000-000000000004",
)
CONVERSATION = "19:approvals@thread.tacv2"
SERVICE_URL = "https://smba.example/emea/"


@dataclass
class RecordingTeams:
    """`chat.ports.TeamsApi` in memory: each card by activity id, every call in order."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)
    cards: dict[str, JsonObject] = field(default_factory=dict)
    directs: list[tuple[str, str]] = field(default_factory=list)
    """(Entra object id, text) of each direct message."""

    async def post(self, service_url: str, conversation_id: str, card: JsonObject) -> str:
        activity_id = f"act-{len(self.cards) + 1}"
        self.calls.append(("post", service_url, conversation_id))
        self.cards[activity_id] = card
        return activity_id

    async def update(self, service_url: str, conversation_id: str, activity_id: str, card: JsonObject) -> None:
        self.calls.append(("update", service_url, activity_id))
        self.cards[activity_id] = card

    async def direct(self, service_url: str, tenant_id: str, user_id: str, text: str) -> str:
        self.directs.append((user_id, text))
        return f"dm-{len(self.directs)}"


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[TeamsStandIn]:
    teams = TeamsStandIn()
    await teams.start()
    try:
        yield teams
    finally:
        await teams.stop()


async def _chat(bus: Bus, world: World, standin: TeamsStandIn) -> tuple[MemoryBus, ChatService, RecordingTeams]:
    """As chat/main.py wires it with Teams on (and no Slack token)."""
    assert isinstance(bus, MemoryBus), "chat's card follower runs on the in-memory bus"
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer()[1])
    settings = ChatSettings(
        topic_namespace=world.namespace,
        kafka_bootstrap_servers=world.bootstrap,
        state_dir=world.state,
        teams_app_id=standin.app_id,
        teams_service_url=SERVICE_URL,
        teams_conversation_id=CONVERSATION,
    )
    store = ChatStore(settings.db_url())
    recording = RecordingTeams()
    publish = BusPublisher(bus)
    validator = TokenValidator(standin.app_id, standin.metadata_url)
    teams = TeamsService(settings, world.directory, store, recording, publish, world.svid(CHAT), validator)
    chat = ChatService(settings, world.directory, store, None, publish, world.svid(CHAT), SLACK_SECRET, teams=teams)
    consumer = follower_consumer("chat", "cards", settings.instance)
    bus.follow(
        consumer,
        FOLLOWED,
        chat.on_events,
        check=OutcomeProofCheck(
            world.bundle, settings.outcome_producers, source=CHAT, namespace=world.namespace, consumer=consumer
        ),
        dead=DeadLetters(consumer, CHAT, world.namespace),
    )
    return bus, chat, recording


async def _invoke(chat: ChatService, standin: TeamsStandIn, aad: str, request_id: str, verb: str, **kw: Any) -> Answer:
    activity = invoke_activity(aad_object_id=aad, request_id=request_id, verb=verb, service_url=SERVICE_URL, **kw)
    token = standin.sign_token(service_url=SERVICE_URL)
    return await chat.handle_activity({"Authorization": f"Bearer {token}"}, json.dumps(activity).encode())


def _atb(answer: Answer) -> dict[str, Any]:
    """ATB's result beside the invoke response."""
    result = answer.body["atb"]
    assert isinstance(result, dict)
    return result


async def test_two_teams_approvals_issue_a_poa_and_the_card_follows(
    bus: Bus, world: World, standin: TeamsStandIn
) -> None:
    bus, chat, recording = await _chat(bus, world, standin)
    _, record = world.request("req-t-high", HIGH, accountable="emp-200")  # dave is the accountable party
    await bus.publish([record])
    await bus.settle()
    assert recording.calls == [("post", SERVICE_URL, CONVERSATION)]
    [activity_id] = recording.cards

    refused = await _invoke(chat, standin, DAVE, "req-t-high", "atb_approve")
    assert _atb(refused)["error"] == "self_approval"
    first = await _invoke(chat, standin, ALICE, "req-t-high", "atb_approve")
    assert _atb(first)["principal"] == "alice"
    await bus.settle()
    assert "1 of 2 — alice" in str(recording.cards[activity_id])
    assert kinds(await outcomes(bus, "req-t-high")) == ["ApprovalRequired"]

    second = await _invoke(chat, standin, BOB, "req-t-high", "atb_approve")
    assert _atb(second)["principal"] == "bob"
    await bus.settle()
    assert kinds(await outcomes(bus, "req-t-high")) == ["ApprovalRequired", "QuorumReached"]
    [poa] = await poas(bus, "req-t-high")
    claims = jwt.decode(poa.token, options={"verify_signature": False})
    assert sorted(a["id"] for a in claims["leg"]["dual_control"]["approvers"]) == ["alice", "bob"]
    assert "PoA issued" in str(recording.cards[activity_id])
    assert "actions" not in recording.cards[activity_id]
    assert [c[0] for c in recording.calls].count("post") == 1
    assert [user for user, text in recording.directs if "was approved" in text] == [DAVE]  # the accountable party
    chat_audits = sorted(t for t, _ in await audits(bus, "req-t-high") if t.startswith("chat_"))
    assert chat_audits == ["chat_notice_sent", "chat_vote_cast", "chat_vote_cast", "chat_vote_refused"]


async def test_reminders_and_the_escalation_are_teams_direct_messages_once(
    bus: Bus, world: World, standin: TeamsStandIn, clock: Clock
) -> None:
    bus, chat, recording = await _chat(bus, world, standin)
    _, record = world.request("req-t-remind", "iam.role.assign", accountable="emp-200")
    await bus.publish([record])
    await bus.settle()
    assert _atb(await _invoke(chat, standin, ALICE, "req-t-remind", "atb_approve"))["principal"] == "alice"
    await bus.settle()
    clock.advance(48 * 60)  # both reminder points passed: only the latest is sent; and the escalation
    await bus.tick()
    await bus.settle()
    await bus.settle()
    reminded = sorted(user for user, text in recording.directs if text.startswith("Reminder 2 of 2"))
    escalated = [user for user, text in recording.directs if text.startswith("Escalated to security")]
    assert (reminded, escalated) == (sorted([BOB, CAROL]), [CAROL])
    await bus.publish([record])  # a redelivered request and its events change nothing
    await bus.settle()
    assert len(recording.directs) == 3


async def test_a_forged_token_is_no_vote(bus: Bus, world: World, standin: TeamsStandIn) -> None:
    bus, chat, _ = await _chat(bus, world, standin)
    _, record = world.request("req-t-forged", HIGH)
    await bus.publish([record])
    await bus.settle()
    activity = invoke_activity(
        aad_object_id=ALICE, request_id="req-t-forged", verb="atb_approve", service_url=SERVICE_URL
    )
    token = standin.sign_token(service_url=SERVICE_URL, audience="another-bot")
    answer = await chat.handle_activity({"Authorization": f"Bearer {token}"}, json.dumps(activity).encode())
    assert (answer.status, answer.body["error"]) == (401, "wrong_audience")
    await bus.settle()
    assert await bus.records(Topic.VOTES) == []
