"""A policy change rolls out and back through the running services (docs/policy.md §1).

The services (approvals, issuer, broker, gateway, audit sink) run as processes
against an OPA of their own in bundle mode (the pinned binary, own port), which
polls a bundle store served by the development bundle server. Revision A is the
committed policy; revision B takes `crm.contact.read` and `crm.account.read` off
the low-risk allowlist (so they become high). Build and sign → publish A → the broker decides with A →
publish B → the approvals service and the broker decide with B → rollback → A
decides again; the audit store holds every decision with its revision. Every
wait is on an event: OPA's reported revision, the broker's decision, the
audit store's rows.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from atb.dev.config import HOST, DevConfig
from atb.dev.opa import opa_process
from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.toolchain import build_opa
from atb.policy.bundle import build_bundle
from atb.policy.keys import ensure_dev_key, load_signing_key
from atb.policy.opa_config import BUNDLE_NAME, opa_config
from atb.policy.publish import publish_to_dir, rollback_dir
from atb.policy.server import bundle_server_app
from atb.policy.status import wait_for_revision
from atb.sdk import AgentClient
from atb_identity import ensure_svid
from contracts import (
    AccountableParty,
    ApprovalRequired,
    ApprovalStateChanged,
    BrokerDecision,
    ContractualNecessity,
    Decision,
    EventPayload,
)
from tests.e2e.audit_sync import request_rows
from tests.integration.test_policy_bundles import _committed_policy, _free_port

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
LEG = ContractualNecessity(
    ref="MSA-1",
    description="Read a contact",
    jurisdiction="EU",
    accountable_party=AccountableParty(type="employee", id="emp-300"),
)
# The broker and approvals cache a policy answer for a second by its exact input (docs/policy.md §3):
# each question after a change differs in its input (action, accountable party, target tenant) from
# every question before it, so its answer is OPA's answer now, not a cached one.
LEG_AFTER = LEG.model_copy(update={"accountable_party": AccountableParty(type="employee", id="emp-301")})


@pytest.fixture
async def bundle_opa(tmp_path: Path) -> AsyncIterator[tuple[str, Path, dict[str, Path]]]:
    """(OPA URL, bundle store, {"a": bundle A, "b": bundle B}) with OPA polling the store every second."""
    opa = await build_opa(DevConfig.from_env())
    key = load_signing_key(ensure_dev_key(tmp_path / "keys" / "policy.pem"))
    bundles = {}
    for name in ("a", "b"):
        folder = tmp_path / f"policy-{name}"
        _committed_policy(folder)
        if name == "b":
            data = json.loads((folder / "data.json").read_text())
            for action in ("crm.contact.read", "crm.account.read"):
                data["atb_policy"]["low_risk_allowlist"].remove(action)
            (folder / "data.json").write_text(json.dumps(data))
        bundles[name] = build_bundle(opa, folder, tmp_path / f"{name}.tar.gz", key, run_tests=(name == "a")).path

    store = tmp_path / "store"
    runner = web.AppRunner(bundle_server_app(store))
    await runner.setup()
    sock = socket.socket()
    sock.bind((HOST, 0))
    await web.SockSite(runner, sock).start()
    document = opa_config(
        service_url=f"http://{HOST}:{sock.getsockname()[1]}",
        public_pem=key.public_pem,
        algorithm=key.algorithm,
        min_delay_s=1,
        max_delay_s=1,
        persistence_dir=str(tmp_path / "opa-persist"),
    )
    (tmp_path / "opa.json").write_text(json.dumps(document))
    dev = DevConfig.from_env()
    config = DevConfig(
        dev.repo, tmp_path / "opa-state", dev.cache_dir, dev.kafka_port, dev.controller_port, _free_port()
    )
    proc = opa_process(config, opa, config_file=tmp_path / "opa.json")
    await proc.start(ready_timeout=60.0)
    try:
        yield config.opa_url, store, bundles
    finally:
        await proc.stop(10.0)
        await runner.cleanup()
        sock.close()


async def _serves(opa_url: str, revision: str) -> None:
    await wait_for_revision(opa_url, BUNDLE_NAME, lambda r: r.revision == revision and r.error is None, 60.0)


async def _audit_payloads(
    bootstrap: str, namespace: str, db_url: str, request_id: str, kind: type[EventPayload], count: int
) -> list[dict[str, object]]:
    """The payloads of `kind` the audit store holds for the request, once `count` are on Kafka and stored."""
    rows = await request_rows(bootstrap, namespace, db_url, request_id, kind, count=count)
    return [orjson.loads(r.raw)["data"] for r in rows]


async def test_publish_decide_change_rollback_through_the_services(
    kafka_bootstrap: str, namespace: str, tmp_path: Path, bundle_opa: tuple[str, Path, dict[str, Path]]
) -> None:
    opa_url, store, bundles = bundle_opa
    rev_a = publish_to_dir(bundles["a"], store).revision
    await _serves(opa_url, rev_a)

    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    audit = (kafka_bootstrap, namespace, db_url)
    stack = ServiceStack(StackConfig(kafka_bootstrap, opa_url, tmp_path, namespace=namespace, audit_db_url=db_url))
    await stack.start(ready_timeout=90)
    try:
        svid = ensure_svid(tmp_path, AGENT)
        async with AgentClient(svid=svid, tenant="acme", bootstrap=kafka_bootstrap, namespace=namespace) as agent:
            # Revision A: crm.contact.read is low; the PoA is issued at once and the broker allows it.
            first = await agent.request_poa("crm.contact.read", "crm:contact/p1", leg=LEG)
            poa_1 = await agent.await_poa(first, timeout=30)
            kept = await agent.request_poa("crm.contact.read", "crm:contact/p2", leg=LEG_AFTER)
            poa_2 = await agent.await_poa(kept, timeout=30)  # a low PoA, presented after the change
            allowed = await agent.invoke("crm.contact.read", "crm:contact/p1", poa=poa_1.token, request_id=first)
            assert (allowed.decision, allowed.policy_version) == (Decision.ALLOW, rev_a), allowed.reasons

            # Revision B: the same action is high. The broker refuses the low PoA, naming B...
            rev_b = publish_to_dir(bundles["b"], store).revision
            await _serves(opa_url, rev_b)
            denied = await agent.invoke("crm.contact.read", "crm:contact/p2", poa=poa_2.token, request_id=kept)
            assert (denied.decision, denied.policy_version) == (Decision.DENY, rev_b)
            assert "tier_too_low" in [r.code for r in denied.reasons]
            # ... and approvals asks for two approvers under B (its changelog records the revision).
            pending = await agent.request_poa("crm.account.read", "crm:account/p3", leg=LEG)
            [required] = await _audit_payloads(*audit, pending, ApprovalRequired, 1)
            assert (required["tier"], required["required_approvals"]) == ("high", 2)
            [state, *_] = await _audit_payloads(*audit, pending, ApprovalStateChanged, 1)
            requirements = state["requirements"]
            assert isinstance(requirements, dict)
            assert (requirements["tier"], requirements["policy_version"]) == ("high", rev_b)

            # Rollback: A decides again.
            rollback_dir(store, rev_a)
            await _serves(opa_url, rev_a)
            again = await agent.request_poa("crm.contact.read", "crm:contact/p4", leg=LEG, target_tenant="acme")
            poa_4 = await agent.await_poa(again, timeout=30)
            back = await agent.invoke(
                "crm.contact.read", "crm:contact/p4", poa=poa_4.token, request_id=again, target_tenant="acme"
            )
            assert (back.decision, back.policy_version) == (Decision.ALLOW, rev_a), back.reasons

        # The audit store holds each decision with the revision that made it.
        for request_id, revision in ((first, rev_a), (kept, rev_b), (again, rev_a)):
            [decision] = await _audit_payloads(*audit, request_id, BrokerDecision, 1)
            assert decision["policy_version"] == revision
    finally:
        await stack.stop()
