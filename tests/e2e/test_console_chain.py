"""The whole chain in a real browser: agent → gateway → approvals → console (two passkeys) → issuer → PoA.

`ServiceStack` runs the gateway, approvals, the issuer, the broker, the audit sink and the console as
processes on the dev stack's Kafka and OPA. Nothing is published by the test on the services' behalf:
the agent asks through the SDK, two approvers enroll through `atb console enroll` links and sign in with
Chromium's virtual authenticators, the high-risk request reaches both inboxes live, both approve with the
passkey step-up, approvals and the issuer verify the assertions themselves, the PoA is issued and the
open page shows it; the accountable party's attempt is refused in the page and by approvals' audit.
(test_console.py covers the same pages against the console alone, with the services' events forged.)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from playwright.async_api import Browser, Page

from atb.dev.stack import DEFAULT_SERVICES, ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb.sdk import AgentClient
from atb_identity import ensure_svid
from atb_runtime.readback import read_committed
from contracts import AccountableParty, AuditEvent, ContractualNecessity, Topic, spec_for, topic_name
from tests.e2e.test_console import (  # noqa: F401  # _chromium: the autouse check that the browser is there
    DIALOGS,
    _chromium,
    _device,
    _post_vote,
    goto,
    launched_chromium,
)

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
HIGH_LEG = ContractualNecessity(
    ref="MSA-12345", jurisdiction="EU", accountable_party=AccountableParty(type="employee", id="emp-200")
)  # emp-200 is dave


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launched_chromium() as chromium:
        yield chromium


@dataclass(frozen=True)
class Chain:
    stack: ServiceStack
    url: str
    namespace: str
    state: Path
    bootstrap: str
    env: dict[str, str]

    def enroll_link(self, principal: str) -> str:
        """`atb console enroll <principal> --as carol` as an operator runs it next to the stack's console
        (carol, of the security group, is the enrollment officer: her SVID signs the grant)."""
        ensure_svid(self.state, "spiffe://atb.local/user/carol")
        out = subprocess.run(
            [sys.executable, "-c", "from atb.cli import main; main()", "console", "enroll", principal, "--as", "carol"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        links = [line for line in out.splitlines() if line.startswith(self.url + "/enroll/")]
        assert len(links) == 1, out
        return links[0]


@pytest.fixture(scope="module")
async def chain(kafka_bootstrap: str, opa_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chain]:
    ns = f"w{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    state = tmp_path_factory.mktemp("chain")
    config = StackConfig(kafka_bootstrap, opa_url, state, namespace=ns, audit_db_url=f"sqlite:///{state / 'audit.db'}")
    stack = ServiceStack(config, services=(*DEFAULT_SERVICES, "console"))
    await stack.start(ready_timeout=120)
    try:
        env = {
            **os.environ,
            "ATB_STATE_DIR": str(state),
            "ATB_TOPIC_NAMESPACE": ns,
            "ATB_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "ATB_CONSOLE_PORT": str(stack.console_port),
            "ATB_CONSOLE_RP_ID": "localhost",
            "ATB_CONSOLE_ORIGIN": stack.console_url,
        }
        yield Chain(stack, stack.console_url, ns, state, kafka_bootstrap, env)
    finally:
        await stack.stop()
        await delete_topics(kafka_bootstrap, ns)


async def _sign_in(chain: Chain, page: Page, principal: str) -> None:
    await goto(page, chain.enroll_link(principal))
    await page.click("#enroll")
    await page.locator("#status", has_text="Passkey enrolled").wait_for()
    await goto(page, f"{chain.url}/signin")
    await page.click("#signin")
    await page.wait_for_url(f"{chain.url}/inbox")


async def _audits(chain: Chain, request_id: str) -> list[AuditEvent]:
    """Every audit event of the request on atb.audit, read to the end offsets."""
    topic = topic_name(Topic.AUDIT, chain.namespace)
    payloads = await read_committed(chain.bootstrap, topic, range(spec_for(Topic.AUDIT).partitions))
    return [p for p in payloads if isinstance(p, AuditEvent) and p.request_id == request_id]


async def test_two_passkeys_approve_a_high_request_and_the_issuer_issues_its_poa(
    chain: Chain, browser: Browser
) -> None:
    alice_ctx, alice = await _device(browser)
    bob_ctx, bob = await _device(browser)
    dave_ctx, dave = await _device(browser)
    try:
        for page, principal in ((alice, "alice"), (bob, "bob"), (dave, "dave")):
            await _sign_in(chain, page, principal)
        svid = ensure_svid(chain.state, AGENT)
        async with AgentClient(svid=svid, tenant="acme", bootstrap=chain.bootstrap, namespace=chain.namespace) as agent:
            request_id = await agent.request_poa(
                "sap.payment.execute", "sap:invoice/4711", leg=HIGH_LEG, params={"amount_cents": 990000}
            )
            row = f'tr[data-request-id="{request_id}"]'
            # Live in both inboxes (server-sent events): nobody reloads.
            for page in (alice, bob):
                await page.wait_for_selector(row)
            # The accountable party: not in his inbox, no form on the page, a posted vote refused.
            await goto(dave, f"{chain.url}/requests/{request_id}")
            assert await dave.get_attribute("#ineligible", "data-code") == "self_approval"
            assert await dave.query_selector("#approve") is None
            assert (await _post_vote(dave, request_id, "approve")).endswith("result=self_approval")
            await goto(dave, f"{chain.url}/inbox")
            assert await dave.query_selector(row) is None

            await alice.click(f"{row} a")
            assert await alice.text_content("#tier") == "high"
            assert await alice.is_visible("#verified")
            await alice.click("#approve")
            await alice.wait_for_selector('#message[data-code="vote_cast"]')
            await goto(bob, f"{chain.url}/requests/{request_id}")
            await bob.click("#approve")
            await bob.wait_for_selector('#message[data-code="vote_cast"]')

            issued = await agent.await_poa(request_id, timeout=60)
        # The open page shows the PoA as soon as the issuer publishes it.
        await bob.wait_for_selector('#resolution[data-kind="issued"]')
        assert issued.jti in (await bob.text_content("#resolution") or "")
        assert issued.token not in await bob.content()
        claims = jwt.decode(issued.token, options={"verify_signature": False})
        approvers = claims["leg"]["dual_control"]["approvers"]
        assert sorted(a["id"] for a in approvers) == ["alice", "bob"]
        assert all(a.get("channel") == "console" and a.get("device_bound") is True for a in approvers)

        audits = await _audits(chain, request_id)
        refused = [a for a in audits if a.audit_type == "console_vote_refused"]
        assert [a.reason for a in refused] == ["self_approval"]
        assert refused[0].details.get("principal") == "dave"
        assert len([a for a in audits if a.audit_type == "console_vote_cast"]) == 2
        assert DIALOGS == []
    finally:
        for context in (alice_ctx, bob_ctx, dave_ctx):
            await context.close()


OTHER_LEG = ContractualNecessity(
    ref="MSA-12345", jurisdiction="EU", accountable_party=AccountableParty(type="employee", id="emp-900")
)  # nobody of the directory


async def test_a_delegation_granted_in_the_console_lets_the_delegate_vote_in_place(
    chain: Chain, browser: Browser
) -> None:
    """alice, out of office, grants dave her place on high requests in the console with her passkey. dave votes
    for her with `atb delegate vote` (his SVID, the console's grant inside), then on a second request in the
    console with his passkey; approvals counts each as alice's, the issuer verifies alice's assertion over the
    grant (and dave's over his console vote) on its own, and each PoA records dave as her delegate. Then alice
    revokes it in the console."""
    alice_ctx, alice = await _device(browser)
    bob_ctx, bob = await _device(browser)
    dave_ctx, dave = await _device(browser)
    try:
        for page, principal in ((alice, "alice"), (bob, "bob")):
            await _sign_in(chain, page, principal)
        await goto(alice, f"{chain.url}/delegations")
        assert "alice" not in await alice.locator("#delegate option").all_text_contents()  # never oneself
        await alice.select_option("#delegate", "dave")
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        await alice.fill("#until", tomorrow.strftime("%Y-%m-%dT%H:%M"))
        await alice.check("#tier-high")
        await alice.fill("#delegation-reason", "on leave")
        await alice.click("#grant")
        await alice.wait_for_selector('#message[data-code="delegation_granted"]')
        row = alice.locator("#delegations tbody tr").first
        assert await row.get_attribute("data-state") == "in force"
        delegation_id = await row.get_attribute("data-delegation-id")
        assert delegation_id is not None

        ensure_svid(chain.state, "spiffe://atb.local/user/dave")
        svid = ensure_svid(chain.state, AGENT)
        async with AgentClient(svid=svid, tenant="acme", bootstrap=chain.bootstrap, namespace=chain.namespace) as agent:
            request_id = await agent.request_poa(
                "sap.payment.execute", "sap:invoice/4712", leg=OTHER_LEG, params={"amount_cents": 990000}
            )
            await bob.wait_for_selector(f'tr[data-request-id="{request_id}"]')
            await goto(bob, f"{chain.url}/requests/{request_id}")
            await bob.click("#approve")
            await bob.wait_for_selector('#message[data-code="vote_cast"]')
            await _atb(chain, "delegate", "vote", request_id, "approve", "--for", "alice", "--as", "dave")
            issued = await agent.await_poa(request_id, timeout=60)
            approvers = jwt.decode(issued.token, options={"verify_signature": False})["leg"]["dual_control"]
            assert {(a["id"], a.get("delegate")) for a in approvers["approvers"]} == {
                ("alice", "spiffe://atb.local/user/dave"),
                ("bob", None),
            }

            # The same in the console: dave's request page offers to approve for alice, with his passkey.
            await _sign_in(chain, dave, "dave")
            second = await agent.request_poa(
                "sap.payment.execute", "sap:invoice/4713", leg=OTHER_LEG, params={"amount_cents": 990000}
            )
            await goto(bob, f"{chain.url}/inbox")
            await bob.wait_for_selector(f'tr[data-request-id="{second}"]')
            await goto(bob, f"{chain.url}/requests/{second}")
            await bob.click("#approve")
            await bob.wait_for_selector('#message[data-code="vote_cast"]')
            await goto(dave, f"{chain.url}/requests/{second}")
            await dave.click("#approve-for-alice button")
            await dave.wait_for_selector('#message[data-code="vote_cast"]')
            issued = await agent.await_poa(second, timeout=60)
        approvers = jwt.decode(issued.token, options={"verify_signature": False})["leg"]["dual_control"]["approvers"]
        assert {(a["id"], a.get("delegate"), a.get("channel"), a.get("device_bound")) for a in approvers} == {
            ("alice", "dave", "console", True),
            ("bob", None, "console", True),
        }

        await goto(alice, f"{chain.url}/delegations")
        await alice.click(f'tr[data-delegation-id="{delegation_id}"] button')
        await alice.wait_for_selector('#message[data-code="delegation_revoked"]')
        revoked = alice.locator(f'tr[data-delegation-id="{delegation_id}"]')
        assert await revoked.get_attribute("data-state") == "revoked"
        audited = {a.audit_type for a in await _audits_about(chain, delegation_id)}
        assert {"console_delegation_granted", "console_delegation_revoked"} <= audited
    finally:
        for context in (alice_ctx, bob_ctx, dave_ctx):
            await context.close()


async def _atb(chain: Chain, *args: str) -> str:
    """Run the `atb` command with the chain's environment; its output (it must succeed)."""
    command = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", "from atb.cli import main; main()", *args),
        env=chain.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    said, _ = await asyncio.wait_for(command.communicate(), 120)
    assert command.returncode == 0, said.decode()
    return said.decode()


async def test_a_delegation_granted_with_atb_delegate_reaches_the_console_and_its_delegate_approves_there(
    chain: Chain, browser: Browser
) -> None:
    """alice grants dave her place with `atb delegate grant` (her SVID, no console involved). dave, already on a
    request's page in the console, is offered to approve for alice as soon as the console has read the grant on
    `atb.keys` (the page updates itself); he does, with his passkey, and the PoA records him as her delegate.
    His /delegations page lists the grant. (Revocations read on `atb.keys`:
    tests/unit/test_console_delegations_seen.py.)"""
    bob_ctx, bob = await _device(browser)
    dave_ctx, dave = await _device(browser)
    try:
        for page, principal in ((bob, "bob"), (dave, "dave")):
            await _sign_in(chain, page, principal)
        ensure_svid(chain.state, "spiffe://atb.local/user/alice")
        svid = ensure_svid(chain.state, AGENT)
        async with AgentClient(svid=svid, tenant="acme", bootstrap=chain.bootstrap, namespace=chain.namespace) as agent:
            request_id = await agent.request_poa(
                "sap.payment.execute", "sap:invoice/4714", leg=OTHER_LEG, params={"amount_cents": 990000}
            )
            await bob.wait_for_selector(f'tr[data-request-id="{request_id}"]')
            await goto(bob, f"{chain.url}/requests/{request_id}")
            await bob.click("#approve")
            await bob.wait_for_selector('#message[data-code="vote_cast"]')
            await goto(dave, f"{chain.url}/requests/{request_id}")
            assert await dave.locator("#approve-for-alice").count() == 0

            granted = await _atb(chain, "delegate", "grant", "alice", "dave", "--until", "1d", "--tiers", "high")
            delegation_id = granted.split(":", 1)[0].strip()
            await dave.wait_for_selector("#approve-for-alice button", timeout=60_000)
            await dave.click("#approve-for-alice button")
            await dave.wait_for_selector('#message[data-code="vote_cast"]')
            issued = await agent.await_poa(request_id, timeout=60)
        approvers = jwt.decode(issued.token, options={"verify_signature": False})["leg"]["dual_control"]["approvers"]
        assert {(a["id"], a.get("delegate"), a.get("channel"), a.get("device_bound")) for a in approvers} == {
            ("alice", "dave", "console", True),
            ("bob", None, "console", True),
        }

        await goto(dave, f"{chain.url}/delegations")
        row = dave.locator(f'tr[data-delegation-id="{delegation_id}"]')
        assert await row.get_attribute("data-state") == "in force"
    finally:
        for context in (bob_ctx, dave_ctx):
            await context.close()


async def _audits_about(chain: Chain, delegation_id: str) -> list[AuditEvent]:
    topic = topic_name(Topic.AUDIT, chain.namespace)
    payloads = await read_committed(chain.bootstrap, topic, range(spec_for(Topic.AUDIT).partitions))
    return [p for p in payloads if isinstance(p, AuditEvent) and p.details.get("delegation_id") == delegation_id]
