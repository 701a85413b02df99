"""The broker part of `atb demo`: spend a PoA once through a connector, see the replay and a revocation refused.

`ConnectorDemo` starts a stand-in for SAP (atb/dev/standins.py) and writes a connector
registry that points the `sap` connector at it (egress: 127.0.0.1 only), so the
broker's HTTP connector really calls something. The agent then uses its PoA over
mTLS (`POST /v1/authorize`): the action runs once, the same PoA presented again
is blocked as `poa_single_use_replay_blocked`, and a revoked PoA is refused.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from atb.cli.poa import revoke_poa
from atb.dev.standins import SystemStandIn
from atb.errors import AtbError
from atb.sdk import BrokerClient, GatewayClient
from atb_identity import Svid, bundle_path
from broker.settings import DEFAULT_CONNECTORS
from contracts import Decision, JsonObject, Leg
from contracts.http import AuthorizeResponse
from contracts.reasons import ReasonCode

__all__ = ["ConnectorDemo", "DemoStepError", "revoked_is_refused", "spend_once_then_replay"]


class DemoStepError(AtbError, RuntimeError):
    """The broker did not decide as it must."""


@dataclass
class ConnectorDemo:
    sap: SystemStandIn
    registry_path: Path

    @staticmethod
    async def start(state_dir: Path) -> ConnectorDemo:
        sap = SystemStandIn("sap")
        await sap.start()
        registry = json.loads(DEFAULT_CONNECTORS.read_text(encoding="utf-8"))
        for connector in registry["connectors"]:
            if connector["name"] == "sap":
                connector["endpoint"] = sap.url
                connector["egress"] = ["127.0.0.1"]
        path = state_dir / "demo" / "connectors.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(registry, indent=2) + "\n", encoding="utf-8")
        return ConnectorDemo(sap, path)

    async def stop(self) -> None:
        await self.sap.stop()


def _line(console: Console, label: str, answer: AuthorizeResponse) -> None:
    reasons = ", ".join(map(str, answer.reasons))
    colour = "green" if answer.decision is Decision.ALLOW else "red"
    console.print(f"{label}: [{colour}][bold]{answer.decision.value}[/bold][/{colour}] ({reasons})")


async def spend_once_then_replay(
    console: Console,
    demo: ConnectorDemo,
    *,
    svid: Svid,
    state_dir: Path,
    broker_url: str,
    action: str,
    resource: str,
    request_id: str,
    token: str,
    params: JsonObject,
) -> None:
    async with BrokerClient(svid=svid, bundle_path=bundle_path(state_dir), base_url=broker_url) as broker:
        first = await broker.authorize(action, resource, request_id=request_id, tenant="acme", poa=token, params=params)
        _line(console, f"POST {broker_url}/v1/authorize (mTLS) with the PoA", first)
        if first.decision is not Decision.ALLOW or first.result is None:
            raise DemoStepError(f"the broker did not run the approved action: {first.reasons}")
        call = demo.sap.calls[-1]
        console.print(
            f"  connector [bold]{first.result.connector}[/bold] → {demo.sap.url}{call.path} answered "
            f"{first.result.status} {first.result.body}; Idempotency-Key = jti {call.idempotency_key}"
        )
        calls = len(demo.sap.calls)
        second = await broker.authorize(
            action, resource, request_id=request_id, tenant="acme", poa=token, params=params
        )
        _line(console, "The same PoA again", second)
    if second.decision is not Decision.DENY or second.reasons[0].code is not ReasonCode.POA_SINGLE_USE_REPLAY_BLOCKED:
        raise DemoStepError(f"a spent PoA was not blocked: {second.reasons}")
    if len(demo.sap.calls) != calls:
        raise DemoStepError("the connector was called for a replay")
    console.print("  → single use: the action ran once (audited as poa_single_use_replay_blocked)")


async def revoked_is_refused(
    console: Console,
    *,
    svid: Svid,
    state_dir: Path,
    gateway_url: str,
    broker_url: str,
    bootstrap: str,
    leg: Leg,
) -> None:
    action, resource = "crm.contact.read", "crm:contact/4712"
    async with GatewayClient(svid=svid, bundle_path=bundle_path(state_dir), base_url=gateway_url) as gateway:
        request_id = await gateway.request_poa(action, resource, tenant="acme", leg=leg)
        status = await gateway.await_poa(request_id, timeout=60)
    assert status.poa is not None
    revocation = await revoke_poa(status.poa.jti, reason="agent under investigation", bootstrap=bootstrap)
    console.print(f"atb poa revoke {revocation.jti} --reason '{revocation.reason}' → PoaRevoked on atb.poa.revoked")
    await asyncio.sleep(1.0)  # every replica follows the topic; well under the 2 s promised
    async with BrokerClient(svid=svid, bundle_path=bundle_path(state_dir), base_url=broker_url) as broker:
        answer = await broker.authorize(action, resource, request_id=request_id, tenant="acme", poa=status.poa.token)
    _line(console, "The revoked PoA, unexpired and unspent", answer)
    if answer.decision is not Decision.DENY or answer.reasons[0].code is not ReasonCode.POA_REVOKED:
        raise DemoStepError(f"a revoked PoA was not refused: {answer.reasons}")
