"""`atb demo`: the walking skeleton, end to end, on the embedded defaults.

Starts Kafka and OPA (if not running), the services as processes, then acts as
an agent with a dev X.509-SVID: asks the AgentAuth gateway (mTLS) for a PoA for
a low-risk action, fetches it, invokes the action through the broker, and prints
the request's timeline as the audit store recorded it. Then dual control, a vote
with `atb vote`, a Teams approval, and a request that is reminded, escalated
and approved by the escalation group, its outcome delivered to a local HTTPS
webhook (atb.demo.notify). The approver console runs too; with `--keep-running`
the demo prints its URL and a one-time passkey enrollment link. Stops everything
it started, and exits non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import jwt
from rich.console import Console
from rich.table import Table

from atb.cli.trace import render
from atb.demo.broker import ConnectorDemo, revoked_is_refused, spend_once_then_replay
from atb.demo.chat import ChatDemo, medium_by_cli, medium_by_teams
from atb.demo.notify import PENDING_CAP_S, escalation_and_callback
from atb.dev.config import DevConfig
from atb.dev.launcher import Infra, ensure_infra, stop_infra
from atb.dev.stack import DEFAULT_SERVICES, ServiceStack, StackConfig
from atb.dev.webhook_receiver import WebhookReceiver
from atb.errors import AtbError
from atb.sdk import AgentClient, ApproverClient, GatewayClient
from atb.trace.audit import audit_records
from atb.trace.timeline import build_timeline, read_request
from atb_identity import bundle_path, ensure_svid
from audit_sink.adapters.db import AuditStore, StoredEvent, make_engine, migrate
from contracts import (
    AccountableParty,
    ContractualNecessity,
    Decision,
    EventDecodeError,
    JsonObject,
    LegitimateInterest,
    VoteChoice,
    decode_envelope,
)

__all__ = ["DemoError", "run_demo"]

AGENT = "spiffe://atb.local/agent/crm-assistant"
EXPECTED_EVENTS = 9
"""request, quorum, approvals changelog, approval audit, PoA, PoA audit, action, decision, decision audit."""


class DemoError(AtbError, RuntimeError):
    """The scenario did not go as a working ATB would make it go."""


async def run_demo(console: Console, *, keep_running: bool = False) -> None:
    config = DevConfig.from_env()
    console.rule("[bold]ATB walking skeleton")
    infra = await ensure_infra(progress=lambda msg: console.print(f"  [dim]{msg}[/dim]"), config=config)
    console.print(f"Kafka {infra.kafka_bootstrap} · OPA {infra.opa_url}")
    db_url = f"sqlite:///{config.state_dir / 'audit' / 'audit.db'}"
    (config.state_dir / "audit").mkdir(parents=True, exist_ok=True)
    chat = await ChatDemo.start(config.state_dir)  # the local Slack stand-in
    connectors = await ConnectorDemo.start(config.state_dir)  # a stand-in SAP behind the sap connector
    receiver = WebhookReceiver(config.state_dir / "webhook")  # the agent's outcome callback, over HTTPS
    await receiver.start()
    stack_config = StackConfig(
        infra.kafka_bootstrap,
        infra.opa_url,
        config.state_dir,
        audit_db_url=db_url,
        slack_api_url=chat.standin.api_url,
        extra_env={
            "ATB_CONNECTORS_PATH": str(connectors.registry_path),
            **chat.teams_env(),
            **receiver.env(),
            # Approvals and the issuer alike: reminders and the escalation come due within seconds.
            "ATB_MAX_PENDING_SECONDS": str(PENDING_CAP_S),
        },
        witness=True,
        # --keep-running: the services outlive this process (the console's link stays usable).
        exit_with_parent=not keep_running,
    )
    if not (config.state_dir / "audit" / "audit.db").exists():
        # A new audit log: the demo's witness starts over with it (a witness that remembered a
        # larger earlier log under the same origin would rightly refuse to cosign this one).
        shutil.rmtree(stack_config.run_dir() / "witness", ignore_errors=True)
    stack = ServiceStack(stack_config, services=(*DEFAULT_SERVICES, "chat", "console"))
    chat.interactions_url = stack.interactions_url
    try:
        console.print("Starting services: " + ", ".join(stack.processes))
        await stack.start(ready_timeout=90)
        await _scenario(console, infra, db_url, config.state_dir, stack.gateway_url)
        high_risk_request = await _high_risk(console, infra, db_url, config.state_dir, stack, chat, connectors)
        await medium_by_cli(console, infra.kafka_bootstrap, config.state_dir, stack.gateway_url, chat)
        await medium_by_teams(console, config.state_dir, stack.gateway_url, chat)
        jwks_url = f"http://127.0.0.1:{stack.ops_ports['issuer']}/.well-known/jwks.json"
        await escalation_and_callback(console, config.state_dir, stack.gateway_url, jwks_url, chat, receiver)
        from atb.demo.audit import audit_ending  # the audit store verifies; a tampered copy does not

        await audit_ending(console, stack, db_url, config.state_dir)
        await _print_trace(console, infra.kafka_bootstrap, db_url, high_risk_request)
        if keep_running:
            await _console_link(console, infra.kafka_bootstrap, config.state_dir, stack)
    except Exception:
        for name, log in stack.logs().items():
            console.print(f"  [red]{name} log:[/red] {log}")
        raise
    finally:
        if not keep_running:
            await stack.stop()
            await chat.stop()
            await connectors.stop()
            await receiver.stop()
            if infra.started:
                await stop_infra(infra.started, config=config)
                console.print(f"Stopped {', '.join(sorted(infra.started))} (started by the demo).")


async def _scenario(console: Console, infra: Infra, db_url: str, state_dir: Path, gateway_url: str) -> None:
    leg = LegitimateInterest(
        ref="LI-2024-001",
        description="Look up a customer contact for support case 789",
        jurisdiction="US",
        accountable_party=AccountableParty(type="employee", id="emp-100"),
    )
    action, resource = "crm.contact.read", "crm:contact/4711"
    params: JsonObject = {"fields": ["name", "email"]}
    svid = ensure_svid(state_dir, AGENT)
    console.print(f"Agent identity: X.509-SVID {svid.spiffe_id} ({svid.cert_path}), x5t#S256 {svid.thumbprint()}")
    async with GatewayClient(svid=svid, bundle_path=bundle_path(state_dir), base_url=gateway_url) as gateway:
        started = time.perf_counter()
        request_id = await gateway.request_poa(action, resource, tenant="acme", leg=leg, params=params)
        console.print(f"POST {gateway_url}/issue over mTLS: [bold]{action}[/bold] on {resource} → request {request_id}")
        status = await gateway.await_poa(request_id, timeout=60)
        got_poa = time.perf_counter()
    assert status.poa is not None
    token = status.poa.token
    claims = jwt.decode(token, options={"verify_signature": False})
    console.print(
        f"PoA issued after {1000 * (got_poa - started):.0f} ms (tier {status.tier}), fetched with GET /requests/{{id}}:"
    )
    console.print_json(data=claims)
    if claims.get("cnf", {}).get("x5t#S256") != svid.thumbprint():
        raise DemoError("the PoA is not bound to the agent's certificate")
    console.print("cnf.x5t#S256 binds the PoA to the agent's certificate.")
    async with AgentClient(svid=svid, tenant="acme", bootstrap=infra.kafka_bootstrap) as agent:
        decision = await agent.invoke(action, resource, poa=token, request_id=request_id, params=params)
    console.print(
        f"Broker decision: [bold]{decision.decision.value}[/bold] ({', '.join(map(str, decision.reasons))}) "
        f"after {1000 * (time.perf_counter() - got_poa):.0f} ms"
    )
    if decision.decision is not Decision.ALLOW:
        raise DemoError(f"the broker denied a valid PoA: {decision.reasons}")
    events = await _await_audit(db_url, request_id, EXPECTED_EVENTS, timeout=30)
    console.print(_timeline(request_id, events))
    console.print(f"[green]OK[/green]: {len(events)} events of request {request_id} are in the audit store.")


async def _high_risk(
    console: Console,
    infra: Infra,
    db_url: str,
    state_dir: Path,
    stack: ServiceStack,
    chat: ChatDemo,
    connectors: ConnectorDemo,
) -> str:
    """sap.payment.execute: two distinct approvers, the accountable party's own vote refused; spent once."""
    gateway_url = stack.gateway_url
    console.rule("[bold]High risk: dual control")
    leg = ContractualNecessity(
        ref="MSA-12345",
        description="Pay vendor invoice 4711",
        jurisdiction="EU",
        accountable_party=AccountableParty(type="employee", id="emp-200"),  # dave, in config/approvers.json
    )
    action, resource = "sap.payment.execute", "sap:invoice/4711"
    # Under 1,000,000 cents: high, manager + compliance; from there on critical (docs/quorum-and-risk.md).
    params: JsonObject = {"amount_cents": 125_000, "currency": "EUR", "vendor": "V-100"}
    svid = ensure_svid(state_dir, AGENT)
    async with GatewayClient(svid=svid, bundle_path=bundle_path(state_dir), base_url=gateway_url) as gateway:
        request_id = await gateway.request_poa(action, resource, tenant="acme", leg=leg, params=params)
        console.print(f"Agent asks for [bold]{action}[/bold] {params} → request {request_id}")
        approvers = {
            name: ensure_svid(state_dir, f"spiffe://atb.local/user/{name}") for name in ("dave", "alice", "bob")
        }
        async with ApproverClient(svid=approvers["dave"], bootstrap=infra.kafka_bootstrap) as dave:
            required = await dave.approval_required(request_id)
            console.print(
                f"ApprovalRequired: tier [bold]{required.tier.value}[/bold], {required.required_approvals} distinct "
                f"approvers of {', '.join(required.eligible_groups)}, digest {required.request_digest[:19]}…"
            )
            await dave.vote(required, VoteChoice.APPROVE)
            console.print("dave (emp-200, the accountable party) votes approve …")
        await _await_audit_type(db_url, request_id, "approval_self_vote_refused")
        console.print("  → [red]refused[/red]: self-approval (audited as approval_self_vote_refused)")
        await chat.show_card(console, request_id)
        for name in ("alice", "bob"):  # signed Slack clicks; the chat service attests each user's vote
            if not (await chat.click(console, name, request_id)).get("ok"):
                raise DemoError(f"{name}'s Slack click did not cast a vote")
        status = await gateway.await_poa(request_id, timeout=60)
    assert status.poa is not None
    claims = jwt.decode(status.poa.token, options={"verify_signature": False})
    console.print("Quorum reached; the PoA's leg and binding:")
    console.print_json(
        data={"leg": claims["leg"], "cnf": claims.get("cnf"), "exp - iat": claims["exp"] - claims["iat"]}
    )
    await spend_once_then_replay(
        console,
        connectors,
        svid=svid,
        state_dir=state_dir,
        broker_url=stack.broker_url(),
        action=action,
        resource=resource,
        request_id=request_id,
        token=status.poa.token,
        params=params,
    )
    events = await _await_audit(db_url, request_id, 14, timeout=30)
    console.print(_timeline(request_id, events))
    console.rule("[bold]Revocation")
    await revoked_is_refused(
        console,
        svid=svid,
        state_dir=state_dir,
        gateway_url=gateway_url,
        broker_url=stack.broker_url(),
        bootstrap=infra.kafka_bootstrap,
        leg=leg,
    )
    return request_id


async def _console_link(console: Console, bootstrap: str, state_dir: Path, stack: ServiceStack) -> None:
    """The console's URL and a one-time enrollment link for alice (`atb console enroll alice --as carol`).

    carol, of the security group, is the enrollment officer: her SVID signs the grant inside the link.
    """
    console.rule("[bold]Approver console")
    ensure_svid(state_dir, "spiffe://atb.local/user/carol")
    env = {
        **os.environ,
        "ATB_STATE_DIR": str(state_dir),
        "ATB_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ATB_CONSOLE_PORT": str(stack.console_port),
        "ATB_CONSOLE_RP_ID": "localhost",
        "ATB_CONSOLE_ORIGIN": stack.console_url,
    }
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "atb"),
        *("console", "enroll", "alice", "--as", "carol"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise DemoError(f"atb console enroll failed ({proc.returncode}): {out.decode().strip()}")
    link = out.decode().strip().splitlines()[-1]
    console.print(f"Approver console: [bold]{stack.console_url}[/bold] (passkeys; the relying party is localhost)")
    console.print(f"One-time enrollment link for alice, granted by carol (atb console enroll alice --as carol): {link}")
    console.print("The services keep running (the chat, Teams, SAP and webhook stand-ins end with this demo).")


async def _print_trace(console: Console, bootstrap: str, db_url: str, request_id: str) -> None:
    """`atb trace <id> --audit-db <url>`: the high-risk request, from Kafka and the audit store."""
    console.rule(f"[bold]atb trace {request_id}")
    records = await read_request(bootstrap, request_id)
    records += await asyncio.to_thread(audit_records, db_url, request_id)
    steps = build_timeline(records)
    console.print(render(request_id, steps))
    kinds = {s.kind for s in steps}
    missing = {"requested", "approval required", "vote", "quorum reached", "PoA issued", "broker decision"} - kinds
    if missing:
        raise DemoError(f"the trace misses {sorted(missing)}")


async def _await_audit_type(db_url: str, request_id: str, audit_type: str, timeout: float = 30) -> None:
    migrate(db_url)
    store = AuditStore(make_engine(db_url), group_id="demo-reader")
    needle = f'"audit_type":"{audit_type}"'.encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(needle in e.raw for e in await asyncio.to_thread(store.for_request, request_id)):
            return
        await asyncio.sleep(0.2)
    raise DemoError(f"no {audit_type} audit event for {request_id}")


async def _await_audit(db_url: str, request_id: str, expected: int, timeout: float) -> list[StoredEvent]:
    migrate(db_url)
    store = AuditStore(make_engine(db_url), group_id="demo-reader")
    deadline = time.monotonic() + timeout
    while True:
        events = await asyncio.to_thread(store.for_request, request_id)
        if len(events) >= expected:
            return events
        if time.monotonic() > deadline:
            raise DemoError(f"audit store holds {len(events)} of {expected} events of {request_id}")
        await asyncio.sleep(0.25)


def _timeline(request_id: str, events: list[StoredEvent]) -> Table:
    events = sorted(events, key=lambda e: e.occurred_at)
    start: datetime = events[0].occurred_at
    table = Table(title=f"Timeline of {request_id} (from the audit store)")
    for column in ("+ms", "Δms", "topic", "event", "producer", "stored +ms"):
        table.add_column(column, justify="right" if "ms" in column else "left")
    previous = start
    for event in events:
        table.add_row(
            f"{_ms(event.occurred_at - start):.0f}",
            f"{_ms(event.occurred_at - previous):.0f}",
            event.topic,
            _describe(event),
            (event.producer or "?").removeprefix("spiffe://atb.local/"),
            f"{_ms(event.recorded_at - start):.0f}",
        )
        previous = event.occurred_at
    return table


def _describe(event: StoredEvent) -> str:
    """The event type; for audit events, the audit name (`poa_issued`, ...)."""
    name = event.event_type.removeprefix("atb.")
    try:
        audit_type = decode_envelope(event.raw).data.get("audit_type")
    except EventDecodeError:
        return name
    return f"audit: {audit_type}" if isinstance(audit_type, str) else name


def _ms(delta: object) -> float:
    seconds = getattr(delta, "total_seconds", lambda: 0.0)()
    return float(seconds) * 1000
