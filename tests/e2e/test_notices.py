"""Reminders, escalation and outcome notifications end to end, on the real broker.

The stack's approvals and issuer cap every pending window at 12 s
(ATB_MAX_PENDING_SECONDS), so the shipped policy's reminders (50 %, 80 %) and
escalation to security (80 %) of a high request come due within seconds. The
chat service is a real process talking to the Slack and Teams stand-ins; the
issuer delivers outcome callbacks to a local HTTPS receiver it is told to trust.

- Each reminder and the escalation reach each approver who has not voted, by
  Slack DM and Teams message, once: after a SIGKILL and restart of chat (which
  reads the topics from the start again) nothing is sent twice.
- The escalation group's vote brings the quorum; the outcome is POSTed to the
  agent's callback, signed with a key the issuer publishes, and the accountable
  party is told in chat.
- A callback whose host is not on the allowlist is never called, and audited.
- An outcome callback survives a SIGKILL of the issuer in the middle of its
  retries (the receiver answering 503): the restarted issuer reads the PoA back
  from where its callbacks were committed and delivers it, with the same
  delivery id.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from atb.dev.slack_standin import SlackStandIn
from atb.dev.stack import DEFAULT_SERVICES, ServiceStack, StackConfig
from atb.dev.teams_standin import TeamsStandIn
from atb.dev.topics import delete_topics, ensure_topics
from atb.dev.webhook_receiver import WebhookReceiver, issuer_keys, verify
from atb.sdk import AgentClient, ApproverClient
from atb_identity import ensure_svid
from contracts import AccountableParty, LegitimateInterest, VoteChoice
from tests.e2e.audit_sync import audit_count
from tests.waits import until

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
BOB = "spiffe://atb.local/user/bob"
PENDING_S = 12
LEG = LegitimateInterest(
    ref="LI-N", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-200")
)
SLACK = {"alice": "UALICE01", "bob": "UBOB0002", "carol": "UCAROL03", "dave": "UDAVE004"}
TEAMS = {
    "bob": "b0b00000-0000-4000-8000-000000000002",
    "carol": "ca201000-0000-4000-8000-000000000003",
    "dave": "da7e0000-0000-4000-8000-000000000004",
}


@dataclass
class NoticeStack:
    stack: ServiceStack
    namespace: str
    state: Path
    db_url: str
    bootstrap: str
    slack: SlackStandIn
    teams: TeamsStandIn
    receiver: WebhookReceiver


@pytest.fixture(scope="module")
async def notices(
    kafka_bootstrap: str, opa_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[NoticeStack]:
    ns = f"n{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    state = tmp_path_factory.mktemp("notices")
    db_url = f"sqlite:///{state / 'audit.db'}"
    slack, teams, receiver = SlackStandIn(), TeamsStandIn(), WebhookReceiver(state / "webhook")
    for part in (slack, teams, receiver):
        await part.start()
    env = {**teams.env(), **receiver.env(), "ATB_MAX_PENDING_SECONDS": str(PENDING_S)}
    config = StackConfig(
        kafka_bootstrap, opa_url, state, namespace=ns, audit_db_url=db_url, slack_api_url=slack.api_url, extra_env=env
    )
    stack = ServiceStack(config, services=(*DEFAULT_SERVICES, "chat"))
    await stack.start(ready_timeout=90)
    try:
        yield NoticeStack(stack, ns, state, db_url, kafka_bootstrap, slack, teams, receiver)
    finally:
        await stack.stop()
        for part in (slack, teams, receiver):
            await part.stop()
        await delete_topics(kafka_bootstrap, ns)


def _slack_dms(n: NoticeStack, request_id: str) -> list[tuple[str, str]]:
    """(user, first words) of each text-only Slack message about the request, in order."""
    out = []
    for (channel, _), message in list(n.slack.messages.items()):
        text = str(message.get("text") or "")
        if channel.startswith("D") and not message.get("blocks") and request_id in text:
            out.append((channel.removeprefix("D"), text.split(":", 1)[0]))
    return out


def _teams_dms(n: NoticeStack, request_id: str) -> list[tuple[str, str]]:
    return [
        (user, text.split(":", 1)[0])
        for user in TEAMS.values()
        for text in n.teams.direct_messages(user)
        if request_id in text
    ]


async def _until(what: Callable[[], bool], timeout: float, why: str) -> None:
    """Wait for a recorded call the stand-ins are sent (they record; nothing to subscribe to)."""

    async def seen() -> bool:
        return what()

    await until(seen, bool, timeout=timeout, what=why)


async def _audits(n: NoticeStack, audit_type: str, needle: str, want: int) -> int:
    return await audit_count(n.bootstrap, n.namespace, n.db_url, audit_type, needle, want=want)


async def test_reminders_and_escalation_reach_each_approver_once_and_the_escalation_brings_the_quorum(
    notices: NoticeStack,
) -> None:
    n = notices
    svid = ensure_svid(n.state, AGENT)
    async with AgentClient(svid=svid, tenant="acme", bootstrap=n.bootstrap, namespace=n.namespace) as agent:
        request_id = await agent.request_poa("iam.role.assign", "iam:role/x", leg=LEG, callback_url=n.receiver.url)
        approvers = {name: ensure_svid(n.state, f"spiffe://atb.local/user/{name}") for name in ("alice", "carol")}
        async with ApproverClient(svid=approvers["alice"], bootstrap=n.bootstrap, namespace=n.namespace) as alice:
            await alice.vote(await alice.approval_required(request_id), VoteChoice.APPROVE)

        # Both reminder points and the escalation pass (at 6 s and 9.6 s).
        def escalated() -> bool:
            return (SLACK["carol"], "Escalated to security") in _slack_dms(n, request_id)

        await _until(escalated, 3 * PENDING_S, "the escalation's Slack DM to carol")
        await _until(
            lambda: (TEAMS["carol"], "Escalated to security") in _teams_dms(n, request_id), 30, "the Teams escalation"
        )
        async with ApproverClient(svid=approvers["carol"], bootstrap=n.bootstrap, namespace=n.namespace) as carol:
            await carol.vote(await carol.approval_required(request_id), VoteChoice.APPROVE)
        poa = await agent.await_poa(request_id, timeout=30)

    # The outcome callback: signed with a key the issuer publishes.
    delivery = await n.receiver.wait_for(request_id, timeout=30)
    assert delivery.outcome["outcome"] == "issued"
    assert delivery.outcome["jti"] == poa.jti
    assert delivery.delivery_id == f"dlv-{request_id}-issued"
    jwks = f"http://127.0.0.1:{n.stack.ops_ports['issuer']}/.well-known/jwks.json"
    assert verify(delivery, await issuer_keys(jwks)) is None
    tampered = type(delivery)(delivery.delivery_id, delivery.signature, delivery.body.replace(b"issued", b"denied"))
    assert verify(tampered, await issuer_keys(jwks)) == "bad signature"
    assert await _audits(n, "outcome_notification_delivered", request_id, 1) == 1

    # dave, the accountable party, is told in chat.
    told = (SLACK["dave"], f"Request {request_id} (iam.role.assign on iam")
    await _until(lambda: told in _slack_dms(n, request_id), 30, "dave's outcome DM")

    # Kill chat and start it again: it reads every topic from the start and sends nothing twice. Once dave is
    # told of a later request's outcome, the restarted chat has read past everything above.
    assert await n.stack.kill("chat")
    await n.stack.restart("chat", ready_timeout=60)
    async with AgentClient(svid=svid, tenant="acme", bootstrap=n.bootstrap, namespace=n.namespace) as agent:
        later = await agent.request_poa("crm.contact.update", "crm:contact/2", leg=LEG)  # medium
        async with ApproverClient(svid=ensure_svid(n.state, BOB), bootstrap=n.bootstrap, namespace=n.namespace) as bob:
            await bob.vote(await bob.approval_required(later), VoteChoice.DENY, reason="not needed")
    await _until(lambda: any(user == SLACK["dave"] for user, _ in _slack_dms(n, later)), 30, "the later outcome DM")

    slack = Counter(_slack_dms(n, request_id))
    teams = Counter(_teams_dms(n, request_id))
    # Only the latest reminder that came due is sent (no burst of stale ones after a delay), so a slow timer
    # may send "Reminder 2 of 2" alone; each message at most once, the escalation exactly once.
    assert all(count == 1 for count in slack.values()), slack
    assert all(count == 1 for count in teams.values()), teams
    assert slack[told] == 1
    assert slack[(SLACK["carol"], "Escalated to security")] == 1
    assert teams[(TEAMS["carol"], "Escalated to security")] == 1
    reminded = {user for (user, words) in slack if words.startswith("Reminder")}
    assert reminded == {SLACK["bob"], SLACK["carol"]}  # not alice, who voted; not dave, the accountable party
    sent = await _audits(n, "chat_notice_sent", request_id, len(slack) + len(teams))
    assert sent == len(slack) + len(teams)


async def test_a_callback_off_the_allowlist_is_never_called_and_is_audited(notices: NoticeStack) -> None:
    n = notices
    svid = ensure_svid(n.state, AGENT)
    async with AgentClient(svid=svid, tenant="acme", bootstrap=n.bootstrap, namespace=n.namespace) as agent:
        request_id = await agent.request_poa(
            "crm.contact.read", "crm:contact/1", leg=LEG, callback_url="https://attacker.example/hook"
        )
        await agent.await_poa(request_id, timeout=30)
    assert await _audits(n, "outcome_notification_refused", request_id, 1) == 1
    raw = json.dumps([d.outcome for d in n.receiver.deliveries])
    assert request_id not in raw


async def test_a_callback_is_delivered_after_a_sigkill_of_the_issuer_in_the_middle_of_its_retries(
    notices: NoticeStack,
) -> None:
    n = notices
    svid = ensure_svid(n.state, AGENT)
    n.receiver.status = 503  # the agent's receiver is down: the issuer retries, with backoff
    try:
        async with AgentClient(svid=svid, tenant="acme", bootstrap=n.bootstrap, namespace=n.namespace) as agent:
            hook = n.receiver.url
            request_id = await agent.request_poa("crm.contact.read", "crm:contact/7", leg=LEG, callback_url=hook)
            poa = await agent.await_poa(request_id, timeout=30)
        refused = await n.receiver.wait_for(request_id, timeout=30)  # the first attempt, answered 503
        assert await n.stack.kill("issuer")  # in the middle of the retries: nothing of them is kept in memory
        tried = sum(1 for d in n.receiver.deliveries if d.outcome.get("request_id") == request_id)
    finally:
        n.receiver.status = 200
    await n.stack.restart("issuer", ready_timeout=60)

    # The restarted issuer reads the PoA back from its callbacks' committed offset and delivers it.
    delivered = await n.receiver.wait_for(request_id, timeout=60, nth=tried + 1)
    assert delivered.outcome["outcome"] == "issued"
    assert delivered.outcome["jti"] == poa.jti
    assert delivered.delivery_id == refused.delivery_id == f"dlv-{request_id}-issued"
    jwks = f"http://127.0.0.1:{n.stack.ops_ports['issuer']}/.well-known/jwks.json"
    assert verify(delivered, await issuer_keys(jwks)) is None
    assert await _audits(n, "outcome_notification_delivered", request_id, 1) == 1
