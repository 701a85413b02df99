"""The chat part of `atb demo`: Slack cards and signed clicks, a Teams approval, and one vote with `atb vote`.

`ChatDemo` starts the local Slack stand-in (the chat service posts its cards there
through slack_sdk) and clicks buttons as Slack would: a `block_actions` payload
signed with the app's signing secret, posted to `/slack/interactions`. It starts
the local Teams stand-in too (OpenID metadata and keys, bot tokens, the Bot
Connector; `teams_env()` is the chat service's environment for it):
`medium_by_teams` has an approver click Approve on the Adaptive Card, an
`adaptiveCard/action` invoke with a Bot Framework token, posted to `/api/messages`.
`medium_by_cli` runs a scenario where the approver uses the real `atb vote`
command with their own SVID.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from atb.dev.slack_standin import SlackClicker, SlackStandIn
from atb.dev.teams_standin import TeamsClicker, TeamsStandIn
from atb_identity import bundle_path, ensure_svid
from chat.adapters.secret import dev_secret_path, ensure_signing_secret

__all__ = ["ChatDemo", "medium_by_cli", "medium_by_teams"]

SLACK_IDS = {"alice": "UALICE01", "bob": "UBOB0002", "carol": "UCAROL03", "dave": "UDAVE004"}
"""As in config/approvers.json (`slack:<id>` identities)."""
TEAMS_IDS = {"alice": "a11ce000-0000-4000-8000-000000000001", "bob": "b0b00000-0000-4000-8000-000000000002"}
"""Microsoft Entra object ids, as in config/approvers.json (`teams:<object id>` identities)."""


@dataclass
class ChatDemo:
    standin: SlackStandIn
    state_dir: Path
    interactions_url: str = ""
    teams: TeamsStandIn | None = None

    @classmethod
    async def start(cls, state_dir: Path) -> ChatDemo:
        standin = SlackStandIn()
        await standin.start()
        teams = TeamsStandIn()
        await teams.start()
        return cls(standin, state_dir, teams=teams)

    def teams_env(self) -> dict[str, str]:
        """The chat service's ATB_TEAMS_* settings for the Teams stand-in."""
        return self.teams.env() if self.teams is not None else {}

    @property
    def messages_url(self) -> str:
        """The chat service's Teams endpoint (same port as /slack/interactions)."""
        return self.interactions_url.replace("/slack/interactions", "/api/messages")

    async def stop(self) -> None:
        await self.standin.stop()
        if self.teams is not None:
            await self.teams.stop()

    async def card(self, request_id: str, contains: str = "", timeout: float = 30) -> list[tuple[str, str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cards = [c for c in self.standin.cards_for(request_id) if contains in str(c[2])]
            if cards:
                return cards
            await asyncio.sleep(0.2)
        raise RuntimeError(f"no Slack card for {request_id} containing {contains!r}")

    async def click(self, console: Console, name: str, request_id: str) -> dict[str, Any]:
        secret = ensure_signing_secret(dev_secret_path(self.state_dir))
        clicker = SlackClicker(self.interactions_url, secret)
        status, answer = await clicker.click(SLACK_IDS[name], request_id, "atb_approve")
        verdict = "vote attested by svc/chat" if answer.get("ok") else f"refused: {answer.get('error')}"
        console.print(f"  Slack: {name} ({SLACK_IDS[name]}) clicks Approve → HTTP {status}, {verdict}")
        return answer

    async def show_card(self, console: Console, request_id: str) -> None:
        cards = await self.card(request_id)
        channels = ", ".join(sorted(ch for ch, _, _ in cards))
        console.print(f"  Slack card posted to {channels} (chat.postMessage via slack_sdk → local stand-in)")


async def medium_by_cli(
    console: Console, kafka_bootstrap: str, state_dir: Path, gateway_url: str, chat: ChatDemo
) -> None:
    """crm.contact.update (medium): carol approves with `atb vote ... --as carol`."""
    from atb.sdk import GatewayClient
    from contracts import AccountableParty, LegitimateInterest

    console.rule("[bold]Medium risk: one approver, with `atb vote`")
    leg = LegitimateInterest(
        ref="LI-2024-002",
        description="Fix a customer's phone number",
        jurisdiction="US",
        accountable_party=AccountableParty(type="employee", id="emp-100"),
    )
    svid = ensure_svid(state_dir, "spiffe://atb.local/agent/crm-assistant")
    ensure_svid(state_dir, "spiffe://atb.local/user/carol")  # = `atb pki issue spiffe://atb.local/user/carol`
    async with GatewayClient(svid=svid, bundle_path=bundle_path(state_dir), base_url=gateway_url) as gateway:
        request_id = await gateway.request_poa(
            "crm.contact.update", "crm:contact/4711", tenant="acme", leg=leg, params={"phone": "+1 555 0100"}
        )
        console.print(f"Agent asks for [bold]crm.contact.update[/bold] → request {request_id}")
        await chat.show_card(console, request_id)
        env = {**os.environ, "ATB_STATE_DIR": str(state_dir), "ATB_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
        command = ["vote", request_id, "approve", "--as", "carol", "--reason", "customer asked for it"]
        console.print(f"  $ atb {' '.join(command)}")
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "atb"),
            *command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        console.print("  " + out.decode().strip())
        if proc.returncode != 0:
            raise RuntimeError(f"atb vote failed ({proc.returncode})")
        status = await gateway.await_poa(request_id, timeout=60)
    assert status.poa is not None
    await chat.card(request_id, contains="PoA issued")
    console.print(f"PoA issued (tier {status.tier}), approved by carol; the Slack card now says so.")


async def medium_by_teams(console: Console, state_dir: Path, gateway_url: str, chat: ChatDemo) -> None:
    """crm.contact.update (medium): alice approves on the Teams Adaptive Card; the card follows to the PoA."""
    from atb.sdk import GatewayClient
    from contracts import AccountableParty, LegitimateInterest

    assert chat.teams is not None
    console.rule("[bold]Medium risk: one approver, in Microsoft Teams")
    leg = LegitimateInterest(
        ref="LI-2024-003",
        description="Correct a customer's postal address",
        jurisdiction="US",
        accountable_party=AccountableParty(type="employee", id="emp-100"),
    )
    svid = ensure_svid(state_dir, "spiffe://atb.local/agent/crm-assistant")
    async with GatewayClient(svid=svid, bundle_path=bundle_path(state_dir), base_url=gateway_url) as gateway:
        request_id = await gateway.request_poa(
            "crm.contact.update", "crm:contact/4712", tenant="acme", leg=leg, params={"city": "Springfield"}
        )
        console.print(f"Agent asks for [bold]crm.contact.update[/bold] → request {request_id}")
        await _teams_card(chat.teams, request_id)
        console.print("  Teams card posted (Bot Connector POST /v3/conversations/…/activities → local stand-in)")
        clicker = TeamsClicker(chat.messages_url, chat.teams)
        status, answer = await clicker.click(TEAMS_IDS["alice"], request_id, "atb_approve", name="Alice")
        result = answer.get("atb", answer)
        verdict = "vote attested by svc/chat" if result.get("ok") else f"refused: {result.get('error')}"
        console.print(
            f"  Teams: alice (aadObjectId {TEAMS_IDS['alice']}) clicks Approve → HTTP {status}, {verdict}"
            " (Bot Framework token: RS256, issuer, audience, msteams-endorsed key, serviceUrl checked)"
        )
        if not result.get("ok"):
            raise RuntimeError(f"the Teams approval was refused: {answer}")
        issued = await gateway.await_poa(request_id, timeout=60)
    assert issued.poa is not None
    await _teams_card(chat.teams, request_id, contains="PoA issued")
    console.print(f"PoA issued (tier {issued.tier}), approved by alice in Teams; the card was updated in place (PUT).")


async def _teams_card(teams: TeamsStandIn, request_id: str, contains: str = "", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(contains in str(card) for _, card in teams.cards_for(request_id)):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no Teams card for {request_id} containing {contains!r}")
