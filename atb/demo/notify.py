"""The reminders, escalation and outcome-callback part of `atb demo`.

A high-risk request (`iam.role.assign`: two of manager, compliance, security)
with an outcome callback to a local HTTPS receiver (`atb.dev.webhook_receiver`).
The demo's approvals service caps every pending window (`PENDING_CAP_S`), so the
shipped policy's reminders (50 % and 80 % of the window) and its escalation to
security (80 %) come due within seconds. alice approves on Slack; the approvals
timer's reminder reaches bob and carol by Slack DM and Teams message; the
escalation reaches carol (security); carol approves and brings the quorum; the
issuer POSTs the outcome to the receiver, signed with its key (checked here with
its published JWKS), and dave, the accountable party, is told in chat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from atb.demo.chat import SLACK_IDS, ChatDemo
from atb.dev.webhook_receiver import WebhookReceiver, issuer_keys, verify
from atb.sdk import GatewayClient
from atb_identity import bundle_path, ensure_svid
from contracts import AccountableParty, LegitimateInterest

__all__ = ["PENDING_CAP_S", "escalation_and_callback"]

PENDING_CAP_S = 24
"""The demo's ATB_MAX_PENDING_SECONDS: reminders at 12 s and 19.2 s, the escalation at 19.2 s."""

TEAMS_IDS = {
    "bob": "b0b00000-0000-4000-8000-000000000002",
    "carol": "ca201000-0000-4000-8000-000000000003",
    "dave": "da7e0000-0000-4000-8000-000000000004",
}


async def _slack_dm(chat: ChatDemo, name: str, starts: str, timeout: float) -> str:
    """The first direct message (text only, no card) to the user starting with `starts`."""
    channel = f"D{SLACK_IDS[name]}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for (where, _), message in list(chat.standin.messages.items()):
            text = str(message.get("text") or "")
            if where == channel and not message.get("blocks") and text.startswith(starts):
                return text
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no Slack direct message to {name} starting with {starts!r}")


async def _until(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("no Teams message came")
        await asyncio.sleep(0.2)


def _teams_dms(chat: ChatDemo, name: str, starts: str) -> list[str]:
    assert chat.teams is not None
    return [t for t in chat.teams.direct_messages(TEAMS_IDS[name]) if t.startswith(starts)]


async def escalation_and_callback(
    console: Console, state_dir: Path, gateway_url: str, jwks_url: str, chat: ChatDemo, receiver: WebhookReceiver
) -> str:
    console.rule("[bold]Reminders, escalation and an outcome callback")
    leg = LegitimateInterest(
        ref="LI-2024-004",
        description="Make the support lead an IAM role owner",
        jurisdiction="US",
        accountable_party=AccountableParty(type="employee", id="emp-200"),  # dave
    )
    svid = ensure_svid(state_dir, "spiffe://atb.local/agent/crm-assistant")
    async with GatewayClient(svid=svid, bundle_path=bundle_path(state_dir), base_url=gateway_url) as gateway:
        request_id = await gateway.request_poa(
            "iam.role.assign", "iam:role/support-lead", tenant="acme", leg=leg, callback_url=receiver.url
        )
        console.print(
            f"Agent asks for [bold]iam.role.assign[/bold] with callback {receiver.url} → request {request_id}"
            f" (pending window capped at {PENDING_CAP_S} s for the demo)"
        )
        await chat.show_card(console, request_id)
        if not (await chat.click(console, "alice", request_id)).get("ok"):
            raise RuntimeError("alice's Slack click did not cast a vote")

        started = time.monotonic()
        for name in ("bob", "carol"):
            # The first reminder at 50 % (or, on a slow machine, only the latest one due: never a burst).
            text = await _slack_dm(chat, name, "Reminder ", timeout=2 * PENDING_CAP_S)
            await _until(lambda: bool(_teams_dms(chat, name, "Reminder ")), 10)  # noqa: B023 - awaited here
            console.print(
                f"  +{time.monotonic() - started:.0f} s reminder → {name}: Slack DM and a Teams message: “{text[:90]}…”"
            )
        text = await _slack_dm(chat, "carol", "Escalated to security", timeout=2 * PENDING_CAP_S)
        console.print(f"  +{time.monotonic() - started:.0f} s escalation → carol (security): “{text[:90]}…”")
        if not (await chat.click(console, "carol", request_id)).get("ok"):
            raise RuntimeError("carol's Slack click did not cast a vote")
        status = await gateway.await_poa(request_id, timeout=60)
    assert status.poa is not None
    console.print(f"Quorum reached with carol, who was told by the escalation: PoA issued (tier {status.tier}).")

    delivery = await receiver.wait_for(request_id, timeout=30)
    refusal = verify(delivery, await issuer_keys(jwks_url))
    if refusal is not None:
        raise RuntimeError(f"the outcome callback's signature does not hold: {refusal}")
    console.print(f"Outcome callback delivered to the local HTTPS receiver ({delivery.delivery_id}):")
    console.print_json(data=delivery.outcome)
    console.print(f"  ATB-Signature verified with the issuer's published key: {delivery.signature.split(';')[1]}")
    told = await _slack_dm(chat, "dave", f"Request {request_id}", timeout=30)
    console.print(f"  dave (emp-200, the accountable party) is told in Slack: “{told[:100]}”")
    return request_id
