"""The chat part of `atb demo`: Slack cards and signed clicks, and one vote with `atb vote`.

`ChatDemo` starts the local Slack stand-in (the chat service posts its cards there
through slack_sdk) and clicks buttons as Slack would: a `block_actions` payload
signed with the app's signing secret, posted to `/slack/interactions`.
`medium_by_cli` runs a third scenario where the approver uses the real
`atb vote` command with their own SVID.
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
from atb_identity import bundle_path, ensure_svid
from chat.adapters.secret import dev_secret_path, ensure_signing_secret

__all__ = ["ChatDemo", "medium_by_cli"]

SLACK_IDS = {"alice": "UALICE01", "bob": "UBOB0002", "carol": "UCAROL03", "dave": "UDAVE004"}
"""As in config/approvers.json (`slack:<id>` identities)."""


@dataclass
class ChatDemo:
    standin: SlackStandIn
    state_dir: Path
    interactions_url: str = ""

    @classmethod
    async def start(cls, state_dir: Path) -> ChatDemo:
        standin = SlackStandIn()
        await standin.start()
        return cls(standin, state_dir)

    async def stop(self) -> None:
        await self.standin.stop()

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
