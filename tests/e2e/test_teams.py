"""Teams approvals end to end: the chat service as a real process, Teams and the Bot Framework as a local stand-in.

The stand-in serves the OpenID metadata and the keys the chat service checks each
activity's bearer token against, issues the bot token, and records the Bot
Connector calls (card posts and updates). Votes go through the real Kafka broker
to the approvals service; the issuer signs the PoA.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from atb.dev.stack import DEFAULT_SERVICES, ServiceStack, StackConfig
from atb.dev.teams_standin import TeamsClicker, TeamsStandIn, invoke_activity
from atb.dev.topics import delete_topics, ensure_topics
from atb.sdk import AgentClient, ApproverClient, PoaDeniedError
from atb_identity import ensure_svid
from contracts import AccountableParty, ContractualNecessity, LegitimateInterest, VoteChoice
from tests.e2e.audit_sync import audit_count
from tests.e2e.conftest import RunningStack
from tests.teams_forgeries import teams_forgeries
from tests.waits import until

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
ALICE, BOB, CAROL, DAVE = (
    "a11ce000-0000-4000-8000-000000000001",
    "b0b00000-0000-4000-8000-000000000002",
    "ca201000-0000-4000-8000-000000000003",
    "da7e0000-0000-4000-8000-000000000004",
)
HIGH_LEG = ContractualNecessity(
    ref="MSA-12345", jurisdiction="EU", accountable_party=AccountableParty(type="employee", id="emp-200")
)  # emp-200 is dave
MEDIUM_LEG = LegitimateInterest(
    ref="LI-7", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-300")
)


class TeamsStack:
    def __init__(self, running: RunningStack, standin: TeamsStandIn, clicker: TeamsClicker) -> None:
        self.running = running
        self.standin = standin
        self.clicker = clicker


@pytest.fixture(scope="module")
async def teams(
    kafka_bootstrap: str, opa_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TeamsStack]:
    ns = f"t{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    state = tmp_path_factory.mktemp("teams")
    db_url = f"sqlite:///{state / 'audit.db'}"
    standin = TeamsStandIn()
    await standin.start()
    config = StackConfig(kafka_bootstrap, opa_url, state, namespace=ns, audit_db_url=db_url, extra_env=standin.env())
    stack = ServiceStack(config, services=(*DEFAULT_SERVICES, "chat"))
    await stack.start(ready_timeout=90)
    try:
        clicker = TeamsClicker(f"http://127.0.0.1:{stack.chat_port}/api/messages", standin)
        yield TeamsStack(RunningStack(stack, ns, state, db_url, kafka_bootstrap), standin, clicker)
    finally:
        await stack.stop()
        await standin.stop()
        await delete_topics(kafka_bootstrap, ns)


def _agent(teams: TeamsStack) -> AgentClient:
    svid = ensure_svid(teams.running.state_dir, AGENT)
    return AgentClient(
        svid=svid, tenant="acme", bootstrap=teams.running.kafka_bootstrap, namespace=teams.running.namespace
    )


async def _card(teams: TeamsStack, request_id: str, contains: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The stand-in's recorded cards of the request holding `contains`, once there is one (it records; no events)."""

    async def cards() -> list[tuple[str, dict[str, Any]]]:
        return [c for c in teams.standin.cards_for(request_id) if contains in str(c[1])]

    return await until(cards, bool, timeout=30, what=f"a Teams card of {request_id} with {contains!r}")


async def _audit_count(teams: TeamsStack, audit_type: str, needle: str = "", want: int = 1) -> int:
    running = teams.running
    return await audit_count(running.kafka_bootstrap, running.namespace, running.db_url, audit_type, needle, want=want)


async def test_two_teams_approvals_issue_a_high_risk_poa_and_the_card_follows(teams: TeamsStack) -> None:
    clicker = teams.clicker
    async with _agent(teams) as agent:
        request_id = await agent.request_poa(
            "sap.payment.execute", "sap:invoice/77", leg=HIGH_LEG, params={"amount_cents": 990000}
        )
        [(activity_id, card)] = await _card(teams, request_id)
        assert [a["verb"] for a in card["actions"] if a["type"] == "Action.Execute"] == ["atb_approve"]
        assert teams.standin.token_requests >= 1
        assert all(c.token for c in teams.standin.calls)

        status, answer = await clicker.click(DAVE, request_id, "atb_approve", reply_to_id=activity_id)
        assert (status, answer["atb"]["error"]) == (200, "self_approval")
        # Display-name spoofing: "alice" by name, but an object id the directory does not know.
        spoof = "00000000-0000-4000-8000-0000000bad01"
        status, answer = await clicker.click(spoof, request_id, "atb_approve", name="alice")
        assert (status, answer["atb"]["error"]) == (200, "unknown_user")
        status, answer = await clicker.click("", request_id, "atb_approve", name="alice")  # no object id at all
        assert (status, answer["atb"]["error"]) == (200, "unknown_user")
        status, answer = await clicker.click(BOB, request_id, "atb_deny")  # no reason
        assert (status, answer["atb"]["error"]) == (200, "reason_required")

        activity = invoke_activity(
            aad_object_id=ALICE, request_id=request_id, verb="atb_approve", service_url=teams.standin.service_url
        )
        token = teams.standin.sign_token()
        status, answer = await clicker.post(activity, token)
        assert (status, answer["atb"]["principal"]) == (200, "alice")
        for _ in range(5):  # the same activity, replayed with its token
            assert (await clicker.post(activity, token))[0] == 409
        status, answer = await clicker.click(ALICE, request_id, "atb_approve")  # a fresh activity: one vote each
        assert answer["atb"]["error"] == "duplicate"
        assert await _card(teams, request_id, contains="1 of 2 — alice")
        with pytest.raises(TimeoutError):
            await agent.await_poa(request_id, timeout=3)

        status, answer = await clicker.click(BOB, request_id, "atb_approve")
        assert (status, answer["atb"]["principal"]) == (200, "bob")
        issued = await agent.await_poa(request_id, timeout=30)
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert sorted(a["id"] for a in claims["leg"]["dual_control"]["approvers"]) == ["alice", "bob"]
    [(_, closed)] = await _card(teams, request_id, contains="PoA issued")
    assert "actions" not in closed
    assert "refresh" not in closed
    updates = [c for c in teams.standin.calls if c.method == "PUT" and c.activity_id == activity_id]
    assert len(updates) >= 2  # a vote arrived, the request closed
    assert await _audit_count(teams, "chat_vote_refused", "reason_required") == 1
    assert await _audit_count(teams, "chat_vote_cast", request_id, want=2) == 2


async def test_a_deny_needs_a_reason_and_closes_the_card(teams: TeamsStack) -> None:
    async with _agent(teams) as agent:
        request_id = await agent.request_poa("crm.contact.update", "crm:contact/8", leg=MEDIUM_LEG)
        await _card(teams, request_id)
        status, answer = await teams.clicker.click(CAROL, request_id, "atb_deny", reason="not this customer")
        assert (status, answer["atb"]["choice"]) == (200, "deny")
        with pytest.raises(PoaDeniedError):
            await agent.await_poa(request_id, timeout=30)
    assert await _card(teams, request_id, contains="Denied")


async def test_forged_activities_are_refused_audited_and_never_votes(teams: TeamsStack) -> None:
    async with _agent(teams) as agent:
        request_id = await agent.request_poa("crm.contact.update", "crm:contact/9", leg=MEDIUM_LEG)
        await _card(teams, request_id)
        corpus = teams_forgeries(teams.standin, request_id, CAROL)
        results = []
        for forgery in corpus:
            if forgery.authorization is not None:
                status, answer = await _post_raw(teams, forgery.activity, forgery.authorization)
            else:
                status, answer = await teams.clicker.post(forgery.activity, forgery.token)
            results.append((forgery.name, status, answer.get("error")))
        assert results == [(f.name, 401, f.code) for f in corpus]
        assert await _audit_count(teams, "chat_activity_rejected", want=len(corpus)) >= len(corpus)
        assert await _audit_count(teams, "chat_vote_cast", request_id, want=0) == 0
        # The same service takes a genuine activity: the refusals were the token rules, not a dead endpoint.
        status, answer = await teams.clicker.click(CAROL, request_id, "atb_approve")
        assert (status, answer["atb"]["principal"]) == (200, "carol")
        issued = await agent.await_poa(request_id, timeout=30)
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims["leg"]["approval"]["approver_id"] == "carol"


async def _post_raw(
    teams: TeamsStack, activity: dict[str, Any], authorization: str | None
) -> tuple[int, dict[str, Any]]:
    import json

    import aiohttp

    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with (
        aiohttp.ClientSession() as session,
        session.post(teams.clicker.messages_url, data=json.dumps(activity).encode(), headers=headers) as response,
    ):
        answer = await response.json(content_type=None)
        return response.status, answer if isinstance(answer, dict) else {}


async def test_approvals_refuses_a_reasonless_deny_whatever_the_channel(teams: TeamsStack) -> None:
    """Justification (policy data: a deny on high needs a reason) is the approvals service's rule, not the card's."""
    async with _agent(teams) as agent:
        request_id = await agent.request_poa("sap.vendor.change", "sap:vendor/12", leg=HIGH_LEG, params={"iban": "x"})
        await _card(teams, request_id)
        alice = ApproverClient(
            svid=ensure_svid(teams.running.state_dir, "spiffe://atb.local/user/alice"),
            bootstrap=teams.running.kafka_bootstrap,
            namespace=teams.running.namespace,
        )
        async with alice:
            required = await alice.approval_required(request_id)
            await alice.vote(required, VoteChoice.DENY, reason="   ")  # signed by alice herself, no reason
            assert await _audit_count(teams, "approval_vote_refused", "reason_required") >= 1
            with pytest.raises(TimeoutError):  # not denied: the vote did not count
                await agent.await_poa(request_id, timeout=2)
            await alice.vote(required, VoteChoice.DENY, reason="this vendor change was not requested")
        with pytest.raises(PoaDeniedError):
            await agent.await_poa(request_id, timeout=30)
    assert await _card(teams, request_id, contains="Denied")


async def test_a_refresh_returns_the_current_card_to_the_tenant_only(teams: TeamsStack) -> None:
    async with _agent(teams) as agent:
        request_id = await agent.request_poa("crm.contact.update", "crm:contact/10", leg=MEDIUM_LEG)
        await _card(teams, request_id)
        status, answer = await teams.clicker.click(ALICE, request_id, "atb_refresh")
        assert status == 200
        assert answer["type"] == "application/vnd.microsoft.card.adaptive"
        assert request_id in answer["value"]["fallbackText"]
        status, answer = await teams.clicker.click(ALICE, request_id, "atb_refresh", tenant_id="another-tenant")
        assert (status, answer["atb"]["error"]) == (200, "wrong_tenant")
        assert "value" not in answer or isinstance(answer["value"], str)
    assert await _audit_count(teams, "chat_vote_refused", "wrong_tenant") >= 1
