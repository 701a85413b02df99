"""Tenants bound to identity (issue 14, point 3; docs/tenants.md), on the real Kafka, OPA and processes.

The stack reads its own agent registry (`ATB_AGENT_REGISTRY_PATH`): an agent of
acme, an agent of acme and globex, nobody else. One extra broker replica reads a
narrower registry, in which the two-tenant agent was withdrawn from globex.
Covered: own tenant (served), declared foreign tenant (refused by the gateway,
by approvals when published straight to Kafka, and by the broker), target tenant
outside the registry (critical), an agent with two tenants, an unregistered agent.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.standins import SystemStandIn
from atb.dev.topics import delete_topics, ensure_topics
from atb.sdk import AgentClient, ApproverClient, BrokerClient, GatewayClient, GatewayError, PoaDeniedError
from atb_identity import bundle_path, ensure_svid
from audit_sink.adapters.db import StoredEvent
from contracts import AccountableParty, Decision, LegitimateInterest, RequestDenied, Tier
from contracts.http import AuthorizeResponse
from contracts.reasons import ReasonCode
from tests.e2e.audit_sync import audit_rows

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

ACME_BOT = "spiffe://atb.local/agent/acme-tenant-bot"
TWO_TENANT_BOT = "spiffe://atb.local/agent/two-tenant-bot"
STRANGER = "spiffe://atb.local/agent/stranger"
REGISTRY = {
    "agents": [
        {"agent": ACME_BOT, "tenants": ["acme"]},
        {"agent": TWO_TENANT_BOT, "tenants": ["acme", "globex"]},
    ]
}
NARROW_REGISTRY = {
    "agents": [
        {"agent": ACME_BOT, "tenants": ["acme"]},
        {"agent": TWO_TENANT_BOT, "tenants": ["acme"]},
    ]
}
LEG = LegitimateInterest(
    ref="LI-2024-001", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-100")
)
TICKETED = LEG.model_copy(update={"ticket_ref": "CHG-1234"})


@dataclass
class TenantEnv:
    stack: ServiceStack
    namespace: str
    state_dir: Path
    bootstrap: str
    db_url: str
    crm: SystemStandIn
    narrow_broker: str
    """Process name of a broker replica whose registry withdrew the two-tenant agent from globex."""


@pytest.fixture(scope="module")
async def env(kafka_bootstrap: str, opa_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TenantEnv]:
    ns = f"t{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    state = tmp_path_factory.mktemp("tenants")
    registry = state / "agents.json"
    registry.write_text(json.dumps(REGISTRY))
    narrow = state / "agents-narrow.json"
    narrow.write_text(json.dumps(NARROW_REGISTRY))
    async with SystemStandIn("crm") as crm:
        connectors = state / "connectors.json"
        connectors.write_text(
            json.dumps(
                {"connectors": [{"name": "crm", "actions": ["crm.*"], "egress": ["127.0.0.1"], "endpoint": crm.url}]}
            )
        )
        db_url = f"sqlite:///{state / 'audit.db'}"
        config = StackConfig(
            kafka_bootstrap,
            opa_url,
            state,
            namespace=ns,
            audit_db_url=db_url,
            extra_env={"ATB_AGENT_REGISTRY_PATH": str(registry), "ATB_CONNECTORS_PATH": str(connectors)},
        )
        stack = ServiceStack(config)
        narrow_broker = stack.add_replica(
            "broker", "1", {"ATB_AGENT_REGISTRY_PATH": str(narrow), "ATB_CONSUME_ACTIONS": "false"}
        )
        await stack.start(ready_timeout=90)
        try:
            yield TenantEnv(stack, ns, state, kafka_bootstrap, db_url, crm, narrow_broker)
        finally:
            await stack.stop()
            await delete_topics(kafka_bootstrap, ns)


def _gateway(env: TenantEnv, agent: str) -> GatewayClient:
    svid = ensure_svid(env.state_dir, agent)
    return GatewayClient(svid=svid, bundle_path=bundle_path(env.state_dir), base_url=env.stack.gateway_url)


def _broker(env: TenantEnv, agent: str, name: str = "broker") -> BrokerClient:
    svid = ensure_svid(env.state_dir, agent)
    return BrokerClient(svid=svid, bundle_path=bundle_path(env.state_dir), base_url=env.stack.broker_url(name))


def _kafka_agent(env: TenantEnv, agent: str, tenant: str) -> AgentClient:
    svid = ensure_svid(env.state_dir, agent)
    return AgentClient(svid=svid, tenant=tenant, bootstrap=env.bootstrap, namespace=env.namespace)


async def _tier_asked(env: TenantEnv, request_id: str) -> Tier:
    """The tier approvals asked approvers for (an ApprovalRequired on the outcomes topic)."""
    svid = ensure_svid(env.state_dir, "spiffe://atb.local/user/carol")
    async with ApproverClient(svid=svid, bootstrap=env.bootstrap, namespace=env.namespace) as approver:
        required = await approver.approval_required(request_id, timeout=60)
    return required.tier


async def _audits(env: TenantEnv, request_id: str, audit_type: str) -> list[StoredEvent]:
    return await audit_rows(env.bootstrap, env.namespace, env.db_url, request_id, audit_type)


async def _authorize(
    env: TenantEnv, agent: str, request_id: str, tenant: str, token: str, *, broker: str = "broker"
) -> AuthorizeResponse:
    async with _broker(env, agent, broker) as client:
        return await client.authorize(
            "crm.contact.read", "crm:contact/1", request_id=request_id, tenant=tenant, poa=token
        )


def _request_id(label: str) -> str:
    return f"req-{label}-{uuid.uuid4().hex[:12]}"


async def test_own_tenant_is_served_and_a_declared_foreign_tenant_is_refused_at_the_gateway(env: TenantEnv) -> None:
    async with _gateway(env, ACME_BOT) as gateway:
        own = await gateway.request_poa("crm.contact.read", "crm:contact/1", tenant="acme", leg=LEG)
        issued = await gateway.await_poa(own, timeout=60)
        # Issue 14: the same agent declared tenant globex, no target, and got tier low and a PoA.
        foreign = _request_id("foreign")
        with pytest.raises(GatewayError) as refused:
            await gateway.request_poa("crm.contact.read", "crm:contact/1", tenant="globex", leg=LEG, request_id=foreign)
    assert issued.tier is Tier.LOW
    assert issued.poa is not None
    answer = await _authorize(env, ACME_BOT, own, "acme", issued.poa.token)
    assert answer.decision is Decision.ALLOW, answer.reasons
    assert refused.value.status == 403
    assert refused.value.body.error == "tenant_not_allowed"
    assert refused.value.body.field == "tenant"
    (row,) = await _audits(env, foreign, "request_tenant_refused")
    assert b"tenant_not_allowed" in row.raw
    assert ACME_BOT.encode() in row.raw


async def test_approvals_refuses_a_foreign_tenant_published_straight_to_kafka(env: TenantEnv) -> None:
    # Agents may publish IssuanceRequested themselves: approvals checks the registry too.
    async with _kafka_agent(env, ACME_BOT, "globex") as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/1", leg=LEG)
        with pytest.raises(PoaDeniedError) as denied:
            await agent.await_poa(request_id, timeout=60)
    assert isinstance(denied.value.outcome, RequestDenied)
    assert denied.value.outcome.code == "tenant_not_allowed"
    (row,) = await _audits(env, request_id, "approval_request_denied")
    assert b"tenant_not_allowed" in row.raw


async def test_an_unregistered_agent_acts_for_no_tenant(env: TenantEnv) -> None:
    async with _gateway(env, STRANGER) as gateway:
        with pytest.raises(GatewayError) as refused:
            await gateway.request_poa("crm.contact.read", "crm:contact/1", tenant="acme", leg=LEG)
    assert refused.value.status == 403
    assert refused.value.body.error == "tenant_not_allowed"
    assert "not in the agent registry" in refused.value.body.message
    async with _kafka_agent(env, STRANGER, "acme") as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/1", leg=LEG)
        with pytest.raises(PoaDeniedError) as denied:
            await agent.await_poa(request_id, timeout=60)
    assert isinstance(denied.value.outcome, RequestDenied)
    assert denied.value.outcome.code == "tenant_not_allowed"


async def test_a_target_tenant_outside_the_registry_is_critical_whatever_the_agent_declares(env: TenantEnv) -> None:
    async with _gateway(env, ACME_BOT) as gateway:
        target = await gateway.request_poa(
            "crm.contact.read", "crm:contact/1", tenant="acme", target_tenant="globex", leg=TICKETED
        )
    assert await _tier_asked(env, target) is Tier.CRITICAL
    # Both fields from the agent, agreeing with each other: not low, not a PoA (issue 14).
    async with _kafka_agent(env, ACME_BOT, "globex") as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/1", leg=LEG, target_tenant="globex")
        with pytest.raises(PoaDeniedError) as denied:
            await agent.await_poa(request_id, timeout=60)
    assert isinstance(denied.value.outcome, RequestDenied)
    assert denied.value.outcome.code == "tenant_not_allowed"


async def test_an_agent_with_two_tenants_acts_for_both_and_no_other(env: TenantEnv) -> None:
    async with _gateway(env, TWO_TENANT_BOT) as gateway:
        globex = await gateway.request_poa("crm.contact.read", "crm:contact/1", tenant="globex", leg=LEG)
        issued = await gateway.await_poa(globex, timeout=60)
        # Its other tenant as the target: it could have asked for globex directly, so not cross-tenant.
        own_target = await gateway.request_poa(
            "crm.contact.read", "crm:contact/1", tenant="acme", target_tenant="globex", leg=LEG
        )
        own_target_issued = await gateway.await_poa(own_target, timeout=60)
        third = await gateway.request_poa(
            "crm.contact.read", "crm:contact/1", tenant="acme", target_tenant="initech", leg=TICKETED
        )
        with pytest.raises(GatewayError) as refused:
            await gateway.request_poa("crm.contact.read", "crm:contact/1", tenant="initech", leg=LEG)
    assert issued.tier is Tier.LOW
    assert issued.poa is not None
    answer = await _authorize(env, TWO_TENANT_BOT, globex, "globex", issued.poa.token)
    assert answer.decision is Decision.ALLOW, answer.reasons
    assert own_target_issued.tier is Tier.LOW
    assert await _tier_asked(env, third) is Tier.CRITICAL
    assert refused.value.body.error == "tenant_not_allowed"


async def test_the_broker_checks_the_presented_tenant_against_the_registry(env: TenantEnv) -> None:
    async with _gateway(env, TWO_TENANT_BOT) as gateway:
        request_id = await gateway.request_poa("crm.contact.read", "crm:contact/1", tenant="globex", leg=LEG)
        issued = await gateway.await_poa(request_id, timeout=60)
        acme_id = await gateway.request_poa("crm.contact.read", "crm:contact/1", tenant="acme", leg=LEG)
        acme_issued = await gateway.await_poa(acme_id, timeout=60)
    assert issued.poa is not None
    assert acme_issued.poa is not None
    # A broker whose registry no longer lists globex for this agent refuses the PoA it holds ...
    withdrawn = await _authorize(env, TWO_TENANT_BOT, request_id, "globex", issued.poa.token, broker=env.narrow_broker)
    assert withdrawn.decision is Decision.DENY
    assert withdrawn.codes == (ReasonCode.TENANT_NOT_ALLOWED,), withdrawn.reasons
    rows = await _audits(env, request_id, "broker_action_denied")
    assert any(b"tenant_not_allowed" in r.raw for r in rows)
    # ... without spending it: a broker that still lists globex allows it.
    allowed = await _authorize(env, TWO_TENANT_BOT, request_id, "globex", issued.poa.token)
    assert allowed.decision is Decision.ALLOW, allowed.reasons
    # An acme PoA presented as globex by the agent of acme alone: the registry's refusal comes first.
    async with _gateway(env, ACME_BOT) as gateway:
        own = await gateway.request_poa("crm.contact.read", "crm:contact/1", tenant="acme", leg=LEG)
        own_issued = await gateway.await_poa(own, timeout=60)
    assert own_issued.poa is not None
    foreign = await _authorize(env, ACME_BOT, own, "globex", own_issued.poa.token)
    assert foreign.decision is Decision.DENY
    assert foreign.codes == (ReasonCode.TENANT_NOT_ALLOWED,), foreign.reasons
