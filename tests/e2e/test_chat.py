"""Slack approvals end to end: the chat service as a real process, Slack as a local stand-in.

The chat service posts cards through slack_sdk to the stand-in (which records every
call), and receives signed clicks over HTTP; its votes go through the real Kafka
broker to the approvals service, and the issuer signs the PoA.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from sqlalchemy import select

from atb.dev.slack_standin import SlackClicker, SlackStandIn, click_body, signed_headers
from atb.dev.stack import DEFAULT_SERVICES, ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb.sdk import AgentClient, ApproverClient, PoaDeniedError
from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Publisher, outgoing_envelope
from atb_runtime.readback import read_committed
from audit_sink.adapters.db import audit_events, make_engine
from chat.adapters.secret import dev_secret_path, read_secret
from contracts import (
    AccountableParty,
    ApprovalRequired,
    AuditEvent,
    ContractualNecessity,
    DeadLetter,
    LegitimateInterest,
    Tier,
    Topic,
    VoteCast,
    VoteChoice,
    make_envelope,
    spec_for,
    topic_name,
)
from tests.chat_forgeries import forgeries
from tests.e2e.audit_sync import caught_up
from tests.e2e.conftest import RunningStack
from tests.waits import events, records, until

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
ALICE, BOB, CAROL, DAVE = "UALICE01", "UBOB0002", "UCAROL03", "UDAVE004"
HIGH_LEG = ContractualNecessity(
    ref="MSA-12345", jurisdiction="EU", accountable_party=AccountableParty(type="employee", id="emp-200")
)  # emp-200 is dave
MEDIUM_LEG = LegitimateInterest(
    ref="LI-7", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-300")
)


class ChatStack:
    def __init__(self, running: RunningStack, standin: SlackStandIn, clicker: SlackClicker) -> None:
        self.running = running
        self.standin = standin
        self.clicker = clicker


@pytest.fixture(scope="module")
async def chat(
    kafka_bootstrap: str, opa_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ChatStack]:
    ns = f"c{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    state = tmp_path_factory.mktemp("chat")
    db_url = f"sqlite:///{state / 'audit.db'}"
    standin = SlackStandIn()
    await standin.start()
    config = StackConfig(
        kafka_bootstrap, opa_url, state, namespace=ns, audit_db_url=db_url, slack_api_url=standin.api_url
    )
    stack = ServiceStack(config, services=(*DEFAULT_SERVICES, "chat"))
    await stack.start(ready_timeout=90)
    try:
        clicker = SlackClicker(stack.interactions_url, read_secret(dev_secret_path(state)))
        yield ChatStack(RunningStack(stack, ns, state, db_url, kafka_bootstrap), standin, clicker)
    finally:
        await stack.stop()
        await standin.stop()
        await delete_topics(kafka_bootstrap, ns)


def _agent(chat: ChatStack) -> AgentClient:
    svid = ensure_svid(chat.running.state_dir, AGENT)
    return AgentClient(
        svid=svid, tenant="acme", bootstrap=chat.running.kafka_bootstrap, namespace=chat.running.namespace
    )


async def _card(chat: ChatStack, request_id: str, want: int = 1, contains: str = "") -> list[tuple[str, str, Any]]:
    """The stand-in's cards for the request, once `want` of them contain `contains`.

    The stand-in records what chat posts and notifies no one: polled (tests/waits.py).
    """

    async def cards() -> list[tuple[str, str, Any]]:
        return [c for c in chat.standin.cards_for(request_id) if contains in str(c[2])]

    return await until(
        cards, lambda found: len(found) >= want, timeout=30, what=f"{want} card(s) for {request_id} with {contains!r}"
    )


async def _audit_count(chat: ChatStack, audit_type: str, needle: str = "", want: int = 1, also: str = "") -> int:
    """How many such audit events the audit store holds, once `want` are on Kafka and the sink has caught up.

    With `want=0` the count proves a negative: the sink has read everything committed before.
    """
    running = chat.running
    kind, wanted, more = f'"audit_type":"{audit_type}"'.encode(), needle.encode(), also.encode()

    def matches(raw: bytes) -> bool:
        return kind in raw and wanted in raw and more in raw

    if want:
        await records(
            running.kafka_bootstrap,
            [topic_name(Topic.AUDIT, running.namespace)],
            lambda r: r.value is not None and matches(r.value),
            count=want,
            what=f"{want} x {audit_type} with {needle!r} {also!r}",
        )
    await caught_up(running.kafka_bootstrap, running.namespace, running.db_url)
    engine = make_engine(running.db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(audit_events.c.raw).where(audit_events.c.event_type == AuditEvent.event_type))
        return sum(1 for (raw,) in rows if matches(raw))


async def test_two_slack_clicks_approve_a_high_risk_request(chat: ChatStack) -> None:
    async with _agent(chat) as agent:
        request_id = await agent.request_poa(
            "sap.payment.execute", "sap:invoice/77", leg=HIGH_LEG, params={"amount_cents": 990000}
        )
        cards = await _card(chat, request_id, want=4)
        # The channel, and each eligible approver directly; never dave, the accountable party.
        assert sorted(ch for ch, _, _ in cards) == ["CATBAPPROVA", f"D{ALICE}", f"D{BOB}", f"D{CAROL}"]
        assert "990000" in str(cards[0][2]["blocks"])

        status, answer = await chat.clicker.click(DAVE, request_id, "atb_approve")
        assert (status, answer["error"]) == (200, "self_approval")
        status, answer = await chat.clicker.click("UMALLORY", request_id, "atb_approve")
        assert (status, answer["error"]) == (200, "unknown_user")

        body = click_body(user_id=ALICE, request_id=request_id, action_id="atb_approve")
        headers = signed_headers(chat.clicker.secret, body)
        status, answer = await chat.clicker.post(body, headers)
        assert (status, answer["principal"]) == (200, "alice")
        for _ in range(5):  # the same signed click, replayed
            assert (await chat.clicker.post(body, headers))[0] == 409
        status, answer = await chat.clicker.click(ALICE, request_id, "atb_approve")  # a second, fresh click
        assert answer["error"] == "duplicate"
        # alice again through her own SVID: approvals counts each person once, whatever the channel.
        alice = ApproverClient(
            svid=ensure_svid(chat.running.state_dir, "spiffe://atb.local/user/alice"),
            bootstrap=chat.running.kafka_bootstrap,
            namespace=chat.running.namespace,
        )
        async with alice:
            await alice.vote(await alice.approval_required(request_id), VoteChoice.APPROVE)
        assert await _card(chat, request_id, want=4, contains="1 of 2")
        with pytest.raises(TimeoutError):
            await agent.await_poa(request_id, timeout=3)

        status, answer = await chat.clicker.click(BOB, request_id, "atb_approve")
        assert (status, answer["principal"]) == (200, "bob")
        issued = await agent.await_poa(request_id, timeout=30)
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert sorted(a["id"] for a in claims["leg"]["dual_control"]["approvers"]) == ["alice", "bob"]
    assert len(await _card(chat, request_id, want=4, contains="PoA issued")) == 4
    assert chat.standin.calls_of("chat.update")
    ephemeral = [c.args for c in chat.standin.calls_of("chat.postEphemeral")]
    assert any(e["user"] == DAVE and "accountable party" in e["text"] for e in ephemeral)
    assert await _audit_count(chat, "chat_vote_refused", "self_approval") >= 1
    assert await _audit_count(chat, "approval_vote_refused", "duplicate") >= 1
    assert await _audit_count(chat, "chat_vote_cast", request_id, want=2) == 2


async def test_forged_and_replayed_clicks_are_rejected_and_299_seconds_is_accepted(chat: ChatStack) -> None:
    async with _agent(chat) as agent:
        request_id = await agent.request_poa("crm.contact.update", "crm:contact/5", leg=MEDIUM_LEG)
        await _card(chat, request_id, want=1)
        body = click_body(user_id=CAROL, request_id=request_id, action_id="atb_approve")
        corpus = forgeries(chat.clicker.secret, body, math.ceil(time.time()))
        statuses = [(await chat.clicker.post(f.body, f.headers))[0] for f in corpus]
        assert statuses == [401] * len(corpus)

        valid = signed_headers(chat.clicker.secret, body, int(time.time()) - 299)  # 299 s old: accepted
        status, answer = await chat.clicker.post(body, valid)
        assert (status, answer.get("principal")) == (200, "carol")
        # The same click again: within the window the trigger_id gives it away (409); past it, the clock (401).
        # Signed 299 s ago, it leaves the window within a second: which of the two answers comes first depends
        # on how fast the machine is, so only the re-signed replays below pin the trigger_id's 409.
        replays = [(await chat.clicker.post(body, valid))[0] for _ in range(10)]
        assert set(replays) <= {401, 409}
        fresh = signed_headers(chat.clicker.secret, body)  # same click, re-signed now: still its trigger_id
        replays += [(await chat.clicker.post(body, fresh))[0] for _ in range(20)]
        assert replays[10:] == [409] * 20
        assert len(corpus) + len(replays) >= 300
        issued = await agent.await_poa(request_id, timeout=30)
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims["leg"]["approval"]["approver_id"] == "carol"
    assert await _audit_count(chat, "chat_interaction_rejected", want=len(corpus) + 30) >= len(corpus) + 30
    assert await _audit_count(chat, "chat_vote_cast", request_id) == 1


async def test_garbage_is_a_clear_400_and_the_service_keeps_running(chat: ChatStack) -> None:
    for body in (b"payload=%7Bnot json", b"\xff\xfe\x00", b"payload=%5B1%2C2%5D", b"a=b&c=d"):
        status, answer = await chat.clicker.post(body, signed_headers(chat.clicker.secret, body))
        assert status == 400, answer
    async with (
        aiohttp.ClientSession() as session,
        session.post(chat.running.stack.interactions_url, data=b"x" * 100_000) as response,
    ):
        assert response.status == 413
    assert await _audit_count(chat, "chat_interaction_rejected", "bad_body") >= 2
    assert chat.running.stack.processes["chat"].is_running()


async def test_critical_cannot_be_approved_from_chat(chat: ChatStack) -> None:
    leg = HIGH_LEG.model_copy(update={"ticket_ref": "CHG-4711"})
    async with _agent(chat) as agent:
        request_id = await agent.request_poa("iam.admin.grant", "iam:role/admin", leg=leg, params={"user": "x"})
        cards = await _card(chat, request_id, want=1, contains="atb vote")
        assert "atb_approve" not in str(cards[0][2]["blocks"])
        status, answer = await chat.clicker.click(BOB, request_id, "atb_approve")
        assert (status, answer["error"]) == (200, "tier_requires_cli")
    assert await _audit_count(chat, "chat_vote_refused", "tier_requires_cli") >= 1


async def test_a_vote_attested_by_a_service_that_is_not_a_configured_attester_is_refused(chat: ChatStack) -> None:
    async with _agent(chat) as agent:
        request_id = await agent.request_poa("crm.contact.update", "crm:contact/6", leg=MEDIUM_LEG)
        cards = await _card(chat, request_id, want=1)
        assert cards
        alice = ApproverClient(
            svid=ensure_svid(chat.running.state_dir, "spiffe://atb.local/user/alice"),
            bootstrap=chat.running.kafka_bootstrap,
            namespace=chat.running.namespace,
        )
        async with alice:
            required = await alice.approval_required(request_id)
        # A real SVID of the trust domain, but of a service approvals does not list in ATB_VOTE_ATTESTERS.
        teams = ensure_svid(chat.running.state_dir, "spiffe://atb.local/svc/teams")
        vote = VoteCast(
            request_id=request_id,
            vote_id="vote-teams-1",
            approver_id=f"slack:{ALICE}",
            choice=VoteChoice.APPROVE,
            request_digest=required.request_digest,
            channel="teams",
            cast_at=datetime.now(UTC),
        )
        envelope = sign_envelope(make_envelope(vote, source=str(teams.spiffe_id)), teams)
        async with Publisher(chat.running.kafka_bootstrap, "teams") as publisher:
            await publisher.publish([outgoing_envelope(envelope, topic_name(vote.topic, chat.running.namespace))])
        with pytest.raises(PoaDeniedError):  # fail closed: no PoA from an unproven vote
            await agent.await_poa(request_id, timeout=30)
    assert await _audit_count(chat, "identity_proof_rejected", "svc/teams") >= 1
    assert await _audit_count(chat, "approval_vote_counted", request_id, want=0) == 0


async def _atb(chat: ChatStack, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "ATB_STATE_DIR": str(chat.running.state_dir),
        "ATB_KAFKA_BOOTSTRAP_SERVERS": chat.running.kafka_bootstrap,
        "ATB_TOPIC_NAMESPACE": chat.running.namespace,
        "COLUMNS": "250",
    }
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "atb"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_critical_is_approved_with_atb_vote_and_listed_by_atb_pending(chat: ChatStack) -> None:
    leg = HIGH_LEG.model_copy(update={"ticket_ref": "CHG-1234"})
    code, out = await _atb(chat, "vote", "req-nothing", "approve", "--as", "erin")
    assert code == 2
    assert "atb pki issue spiffe://atb.local/user/erin" in out
    for name in ("bob", "carol"):
        assert (await _atb(chat, "pki", "issue", f"spiffe://atb.local/user/{name}"))[0] == 0
    async with _agent(chat) as agent:
        request_id = await agent.request_poa("iam.admin.grant", "iam:role/admin", leg=leg, params={"user": "y"})
        await _card(chat, request_id, want=1)
        code, out = await _atb(chat, "pending", "--as", "bob")
        assert code == 0, out
        assert request_id in out
        code, out = await _atb(chat, "vote", request_id, "approve", "--as", "bob", "--reason", "CHG-1234 approved")
        assert code == 0, out
        assert "spiffe://atb.local/user/bob voted approve" in out
        assert request_id not in (await _atb(chat, "pending", "--as", "bob"))[1]  # bob has voted
        assert (await _atb(chat, "vote", request_id, "approve", "--as", "carol"))[0] == 0
        issued = await agent.await_poa(request_id, timeout=30)
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert sorted(a["id"] for a in claims["leg"]["dual_control"]["approvers"]) == ["bob", "carol"]
    assert await _card(chat, request_id, want=1, contains="PoA issued")


async def test_an_approval_required_not_proven_by_approvals_gets_no_card_but_a_dead_letter(chat: ChatStack) -> None:
    running = chat.running
    request_id = f"forged-{secrets.token_hex(4)}"
    forged = ApprovalRequired(
        request_id=request_id,
        tier=Tier.MEDIUM,
        required_approvals=1,
        eligible_groups=("finance",),
        ticket_required=False,
        deadline=datetime.now(UTC) + timedelta(minutes=5),
        request_digest="sha256:" + "c" * 64,
        agent_id=AGENT,
        action="crm.contact.update",
        resource="crm:contact/9",
        accountable_party_id="emp-300",
    )
    # A real SVID of the trust domain (the agent's), but not the approvals service's.
    envelope = sign_envelope(make_envelope(forged, source=AGENT), ensure_svid(running.state_dir, AGENT))
    async with Publisher(running.kafka_bootstrap, "forger") as publisher:
        await publisher.send_and_wait([outgoing_envelope(envelope, topic_name(Topic.OUTCOMES, running.namespace))])

    dlq = topic_name(Topic.DLQ, running.namespace)

    def chats(p: object) -> bool:
        return isinstance(p, DeadLetter) and p.request_id == request_id and p.consumer.startswith("chat-cards@")

    await events(running.kafka_bootstrap, [dlq], lambda e: chats(e.payload), what="chat's dead letter")
    letters = [
        p
        for p in await read_committed(running.kafka_bootstrap, dlq, range(spec_for(Topic.DLQ).partitions))
        if chats(p) and isinstance(p, DeadLetter)
    ]
    assert [lt.consumer for lt in letters] == ["chat-cards@0"]
    # Chat's refusal (the gateway's request views refuse the same forgery under their own name).
    assert await _audit_count(chat, "identity_proof_rejected", request_id, also='"consumer":"chat-cards@0"') == 1
    # The follower decides before it hands a batch to the cards: once lettered, never shown.
    assert chat.standin.cards_for(request_id) == []
