"""The broker on the real Kafka broker and OPA: two broker processes sharing one spent store.

Agents present PoAs over mTLS (`POST /v1/authorize`) and on Kafka; a local
stand-in plays the business system behind the connector. Faults are injected
for real: concurrent replays across processes, SIGKILL, a dead OPA, revocation.
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from atb.cli.poa import RevokeError, revoke_poa
from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.standins import SystemStandIn
from atb.dev.topics import delete_topics, ensure_topics
from atb.sdk import AgentClient, ApproverClient, BrokerClient, GatewayError
from atb_identity import bundle_path, ensure_svid, issue_svid
from atb_runtime.readback import read_committed
from contracts import (
    AccountableParty,
    AuditEvent,
    BrokerDecision,
    ContractualNecessity,
    Decision,
    JsonObject,
    LegitimateInterest,
    Topic,
    VoteChoice,
    spec_for,
    topic_name,
)
from contracts.http import AuthorizeResponse
from contracts.reasons import Reason, ReasonCode
from tests.waits import events, until

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
OTHER_AGENT = "spiffe://atb.local/agent/other-bot"
LOW_LEG = LegitimateInterest(
    ref="LI-2024-001", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-100")
)
HIGH_LEG = ContractualNecessity(
    ref="MSA-12345",
    description="Change vendor bank details",
    jurisdiction="EU",
    accountable_party=AccountableParty(type="employee", id="emp-200"),
)


@dataclass
class BrokerEnv:
    stack: ServiceStack
    namespace: str
    state_dir: Path
    bootstrap: str
    sap: SystemStandIn
    crm: SystemStandIn
    dead_opa: str
    """Process name of a broker replica whose OPA does not answer."""
    unmandated: str
    """Process name of a broker replica with ALLOW_UNMANDATED_LOW_RISK=true."""


def _connectors(sap: SystemStandIn, crm: SystemStandIn) -> dict[str, object]:
    return {
        "connectors": [
            {"name": "sap", "actions": ["sap.*", "erp.*"], "egress": ["127.0.0.1"], "endpoint": sap.url},
            {"name": "salesforce", "actions": ["crm.*", "salesforce.*"], "egress": ["127.0.0.1"], "endpoint": crm.url},
        ]
    }


@pytest.fixture(scope="module")
async def env(kafka_bootstrap: str, opa_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrokerEnv]:
    ns = f"b{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    state = tmp_path_factory.mktemp("broker")
    async with SystemStandIn("sap") as sap, SystemStandIn("crm") as crm:
        registry = state / "connectors.json"
        registry.write_text(json.dumps(_connectors(sap, crm)))
        config = StackConfig(
            kafka_bootstrap,
            opa_url,
            state,
            namespace=ns,
            audit_db_url=f"sqlite:///{state / 'audit.db'}",
            extra_env={"ATB_CONNECTORS_PATH": str(registry)},
        )
        stack = ServiceStack(config)
        stack.add_replica("broker", "1")
        # HTTP-only replicas with other settings: they must not take Kafka partitions from the others.
        http_only = {"ATB_CONSUME_ACTIONS": "false"}
        dead = stack.add_replica("broker", "2", {**http_only, "ATB_OPA_URL": "http://127.0.0.1:9"})
        unmandated = stack.add_replica("broker", "3", {**http_only, "ALLOW_UNMANDATED_LOW_RISK": "true"})
        await stack.start(ready_timeout=90)
        try:
            yield BrokerEnv(stack, ns, state, kafka_bootstrap, sap, crm, dead, unmandated)
        finally:
            await stack.stop()
            await delete_topics(kafka_bootstrap, ns)


def _agent(env: BrokerEnv) -> AgentClient:
    return AgentClient(
        svid=ensure_svid(env.state_dir, AGENT), tenant="acme", bootstrap=env.bootstrap, namespace=env.namespace
    )


def _broker(env: BrokerEnv, name: str = "broker", agent: str = AGENT, state_dir: Path | None = None) -> BrokerClient:
    svid = ensure_svid(state_dir or env.state_dir, agent)
    return BrokerClient(svid=svid, bundle_path=bundle_path(env.state_dir), base_url=env.stack.broker_url(name))


async def _low_poa(env: BrokerEnv, resource: str = "crm:contact/42") -> tuple[str, str]:
    """A low-risk PoA (issued without approvals): (request id, token)."""
    async with _agent(env) as agent:
        request_id = await agent.request_poa("crm.contact.read", resource, leg=LOW_LEG)
        issued = await agent.await_poa(request_id, timeout=60)
    return request_id, issued.token


async def _decisions(env: BrokerEnv, request_id: str, want: int, timeout: float = 20) -> list[BrokerDecision]:
    """Every decision of the request on Kafka, read to the end offsets once `want` are there.

    The outbox relay publishes right after answering: the wait consumes the decisions as
    they are committed; the read after it holds every one committed before it, extra ones too.
    """
    topic = topic_name(Topic.BROKER_DECISIONS, env.namespace)
    await events(
        env.bootstrap,
        [topic],
        lambda e: isinstance(e.payload, BrokerDecision) and e.payload.request_id == request_id,
        count=want,
        timeout=timeout,
        what=f"{want} broker decisions of {request_id}",
    )
    found = await read_committed(env.bootstrap, topic, range(spec_for(Topic.BROKER_DECISIONS).partitions))
    return [p for p in found if isinstance(p, BrokerDecision) and p.request_id == request_id]


async def _audit_types(env: BrokerEnv, request_id: str, want: str, timeout: float = 20) -> list[str]:
    """The request's audit types on Kafka, read to the end offsets once one of type `want` is there."""
    topic = topic_name(Topic.AUDIT, env.namespace)
    await events(
        env.bootstrap,
        [topic],
        lambda e: (
            isinstance(e.payload, AuditEvent) and e.payload.request_id == request_id and e.payload.audit_type == want
        ),
        timeout=timeout,
        what=f"{want} audited for {request_id}",
    )
    found = await read_committed(env.bootstrap, topic, range(spec_for(Topic.AUDIT).partitions))
    return [p.audit_type for p in found if isinstance(p, AuditEvent) and p.request_id == request_id]


def _codes(response: AuthorizeResponse) -> list[str]:
    return [r.code.value for r in response.reasons]


async def test_high_risk_action_runs_once_and_a_second_presentation_is_blocked(env: BrokerEnv) -> None:
    async with _agent(env) as agent:
        request_id = await agent.request_poa(
            "sap.vendor.change", "sap:vendor/V-100", leg=HIGH_LEG, params={"iban": "DE02120300000000202051"}
        )
        for name in ("alice", "bob"):
            svid = ensure_svid(env.state_dir, f"spiffe://atb.local/user/{name}")
            async with ApproverClient(svid=svid, bootstrap=env.bootstrap, namespace=env.namespace) as approver:
                await approver.vote(await approver.approval_required(request_id), VoteChoice.APPROVE)
        issued = await agent.await_poa(request_id, timeout=60)
    calls_before = len(env.sap.calls)
    params: JsonObject = {"iban": "DE02120300000000202051"}
    async with _broker(env) as broker:
        first = await broker.authorize(
            "sap.vendor.change",
            "sap:vendor/V-100",
            request_id=request_id,
            tenant="acme",
            poa=issued.token,
            params=params,
        )
    async with _broker(env, "broker-1") as other_replica:
        second = await other_replica.authorize(
            "sap.vendor.change",
            "sap:vendor/V-100",
            request_id=request_id,
            tenant="acme",
            poa=issued.token,
            params=params,
        )
    assert first.decision is Decision.ALLOW, first.reasons
    assert first.tier is not None
    assert first.tier.value == "high"
    assert first.result is not None
    assert first.result.status == 200
    assert first.result.connector == "sap"
    assert second.decision is Decision.DENY
    assert _codes(second) == ["poa_single_use_replay_blocked"]
    # The system behind the connector ran the action exactly once, keyed by the PoA's jti.
    new_calls = env.sap.calls[calls_before:]
    assert [c.idempotency_key for c in new_calls] == [issued.jti]
    assert new_calls[0].path == "/sap.vendor.change"
    assert new_calls[0].body["params"] == params
    assert "poa_single_use_replay_blocked" in await _audit_types(env, request_id, "poa_single_use_replay_blocked")
    decisions = await _decisions(env, request_id, want=2)
    assert len(decisions) == 2
    assert [d.decision for d in decisions].count(Decision.ALLOW) == 1
    assert all(d.jti == issued.jti for d in decisions)


async def test_one_poa_presented_concurrently_to_two_processes_is_allowed_exactly_once(env: BrokerEnv) -> None:
    n = int(os.environ.get("ATB_BROKER_RACE", "200"))
    request_id, token = await _low_poa(env)
    calls_before = len(env.crm.calls)

    async def present(broker: BrokerClient) -> AuthorizeResponse:
        return await broker.authorize(
            "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token
        )

    async with _broker(env) as a, _broker(env, "broker-1") as b:
        answers = await asyncio.gather(*(present(a if i % 2 else b) for i in range(n)))
    allowed = [r for r in answers if r.decision is Decision.ALLOW]
    assert len(allowed) == 1
    assert all(_codes(r) == ["poa_single_use_replay_blocked"] for r in answers if r.decision is Decision.DENY)
    assert len(env.crm.calls) - calls_before == 1
    decisions = await _decisions(env, request_id, want=n)
    assert len(decisions) == n
    assert [d.decision for d in decisions].count(Decision.ALLOW) == 1


async def test_a_spent_poa_stays_spent_after_both_brokers_are_killed(env: BrokerEnv) -> None:
    request_id, token = await _low_poa(env)
    async with _broker(env) as broker:
        first = await broker.authorize(
            "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token, execute=False
        )
    assert first.decision is Decision.ALLOW
    for name in ("broker", "broker-1"):
        assert await env.stack.kill(name)
    await asyncio.gather(env.stack.restart("broker"), env.stack.restart("broker-1"))
    for name in ("broker", "broker-1"):
        async with _broker(env, name) as broker:
            again = await broker.authorize(
                "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token
            )
        assert _codes(again) == ["poa_single_use_replay_blocked"], name


async def test_kafka_and_http_presentations_share_single_use(env: BrokerEnv) -> None:
    request_id, token = await _low_poa(env)
    async with _agent(env) as agent:
        by_kafka = await agent.invoke("crm.contact.read", "crm:contact/42", poa=token, request_id=request_id)
        again_by_kafka = await agent.invoke("crm.contact.read", "crm:contact/42", poa=token, request_id=request_id)
    async with _broker(env, "broker-1") as broker:
        by_http = await broker.authorize(
            "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token
        )
    assert by_kafka.decision is Decision.ALLOW, by_kafka.reasons
    assert again_by_kafka.codes == (ReasonCode.POA_SINGLE_USE_REPLAY_BLOCKED,), again_by_kafka.reasons
    assert _codes(by_http) == ["poa_single_use_replay_blocked"]


async def _revocations_applied(env: BrokerEnv, name: str) -> float:
    """`atb_broker_revocations_applied_total` of one broker process, from its /metrics."""
    port = env.stack.ops_ports[name]
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    found = re.search(r"^atb_broker_revocations_applied_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_revocation_reaches_every_replica(env: BrokerEnv) -> None:
    """Each replica follows atb.keys; once its list took both revocations, it refuses both PoAs (no fixed wait)."""
    replicas = ("broker", "broker-1")
    before = {name: await _revocations_applied(env, name) for name in replicas}
    by_jti_request, by_jti_token = await _low_poa(env, "crm:contact/7")
    whole_request, whole_token = await _low_poa(env, "crm:contact/8")
    jti = await _issued_jti(env, by_jti_request)
    await revoke_poa(jti, reason="agent compromised", bootstrap=env.bootstrap, namespace=env.namespace)
    await revoke_poa(whole_request, reason="request withdrawn", bootstrap=env.bootstrap, namespace=env.namespace)
    for name in replicas:
        # The replica's own count, on its /metrics, is the only signal that its list took them: polled.
        await until(
            functools.partial(_revocations_applied, env, name),
            functools.partial(operator.le, before[name] + 2),
            timeout=30,
            what=f"{name} taking both revocations",
            interval=0.1,
        )
    for name in replicas:
        async with _broker(env, name) as broker:
            one = await broker.authorize(
                "crm.contact.read", "crm:contact/7", request_id=by_jti_request, tenant="acme", poa=by_jti_token
            )
            two = await broker.authorize(
                "crm.contact.read", "crm:contact/8", request_id=whole_request, tenant="acme", poa=whole_token
            )
        assert one.reasons == (Reason(ReasonCode.POA_REVOKED, "agent compromised"),), name
        assert two.reasons == (Reason(ReasonCode.POA_REVOKED, "request withdrawn"),), name
    assert "poa_revoked" in await _audit_types(env, by_jti_request, "poa_revoked")
    assert "poa_revoked_presented" in await _audit_types(env, by_jti_request, "poa_revoked_presented")
    with pytest.raises(RevokeError):
        await revoke_poa("no-such-jti", reason="x", bootstrap=env.bootstrap, namespace=env.namespace)


async def _issued_jti(env: BrokerEnv, request_id: str) -> str:
    async with _agent(env) as agent:
        return (await agent.await_poa(request_id, timeout=30)).jti


async def test_opa_unreachable_denies_audits_and_does_not_spend(env: BrokerEnv) -> None:
    request_id, token = await _low_poa(env)
    async with _broker(env, env.dead_opa) as broken:
        denied = await broken.authorize(
            "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token
        )
    assert denied.decision is Decision.DENY
    assert _codes(denied) == ["policy_unavailable"]
    assert "broker_policy_unavailable" in await _audit_types(env, request_id, "broker_policy_unavailable")
    async with _broker(env) as healthy:
        allowed = await healthy.authorize(
            "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token
        )
    assert allowed.decision is Decision.ALLOW, allowed.reasons


async def test_unmandated_low_risk_only_when_switched_on_and_only_for_the_allowlist(env: BrokerEnv) -> None:
    async def ask(name: str, action: str) -> AuthorizeResponse:
        async with _broker(env, name) as broker:
            return await broker.authorize(
                action, "crm:contact/1", request_id=f"req-{secrets.token_hex(6)}", tenant="acme", poa=None
            )

    on_read = await ask(env.unmandated, "crm.contact.read")
    on_write = await ask(env.unmandated, "crm.contact.update")
    off_read = await ask("broker", "crm.contact.read")
    assert on_read.decision is Decision.ALLOW, on_read.reasons
    assert on_read.codes == (ReasonCode.UNMANDATED_LOW_RISK,), on_read.reasons
    assert _codes(on_write) == ["poa_required"]
    assert _codes(off_read) == ["poa_required"]


async def test_connector_registry_and_egress_allowlist(env: BrokerEnv) -> None:
    request_id, token = await _low_poa(env, "https://evil.example/exfiltrate")
    async with _broker(env) as broker:
        outside = await broker.authorize(
            "crm.contact.read", "https://evil.example/exfiltrate", request_id=request_id, tenant="acme", poa=token
        )
        wrong = await broker.authorize(
            "crm.contact.read", "crm:contact/1", request_id=request_id, tenant="acme", poa=token, connector="sap"
        )
        unknown = await broker.authorize(
            "weather.forecast.read", "weather:today", request_id=request_id, tenant="acme", poa=token
        )
    assert _codes(outside) == ["egress_denied"]
    assert _codes(wrong) == ["connector_mismatch"]
    assert _codes(unknown) == ["connector_unknown"]


async def test_a_copied_token_is_useless_without_the_agents_key(env: BrokerEnv, tmp_path: Path) -> None:
    request_id, token = await _low_poa(env)
    # Same SPIFFE ID, same CA, another key: what a thief with a fresh certificate would hold.
    shutil.copytree(env.state_dir / "pki" / "ca", tmp_path / "pki" / "ca")
    shutil.copy(env.state_dir / "pki" / "bundle.pem", tmp_path / "pki" / "bundle.pem")
    issue_svid(tmp_path, AGENT)
    async with _broker(env, agent=AGENT, state_dir=tmp_path) as thief:
        same_id = await thief.authorize(
            "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token
        )
    async with _broker(env, agent=OTHER_AGENT) as other:
        other_agent = await other.authorize(
            "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token
        )
    assert _codes(same_id) == ["cnf_mismatch"]
    # The request digest (v2) covers the agent too: another agent's presentation cannot match it.
    assert _codes(other_agent) == ["sub_mismatch", "cnf_mismatch", "digest_mismatch"]
    async with _broker(env) as owner:
        mine = await owner.authorize(
            "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token
        )
    assert mine.decision is Decision.ALLOW, mine.reasons


async def test_forged_tokens_over_http_are_denied_with_their_reason(env: BrokerEnv) -> None:
    request_id, token = await _low_poa(env)
    head, body, sig = token.split(".")
    forged = {
        "alg_not_allowed": "eyJhbGciOiJub25lIiwidHlwIjoicG9hK2p3dCJ9." + body + ".",
        "bad_signature": f"{head}.{body}.{sig[:-4]}AAAA",
        "malformed": "not.a.jwt",
    }
    async with _broker(env) as broker:
        for code, bad in forged.items():
            answer = await broker.authorize(
                "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=bad
            )
            assert _codes(answer)[0] in (code, "invalid_token"), (code, answer.reasons)
        # The real token still works once: forgeries spent nothing.
        real = await broker.authorize(
            "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token
        )
    assert real.decision is Decision.ALLOW


async def test_without_a_client_certificate_the_broker_refuses_and_audits(env: BrokerEnv) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(bundle_path(env.state_dir)))
    context.check_hostname = False
    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(env.stack.broker_url() + "/v1/authorize", json={}, ssl=context) as response:
                status = response.status
        except aiohttp.ClientError:
            status = 0  # refused in the handshake: also a refusal
    assert status in (0, 401)


async def test_metrics_count_decisions_and_replays(env: BrokerEnv) -> None:
    port = env.stack.ops_ports["broker"]
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    assert "atb_broker_decisions_total" in text
    assert "atb_broker_verify_seconds_bucket" in text
    assert "atb_broker_policy_seconds_bucket" in text
    assert "atb_broker_replay_blocked_total" in text


async def test_sigkill_mid_burst_loses_no_recorded_allow_and_allows_each_poa_once(env: BrokerEnv) -> None:
    """Allows answered before a SIGKILL reach Kafka after the restart (outbox); no PoA is allowed twice."""
    n = int(os.environ.get("ATB_BROKER_KILL_POAS", "20"))
    poas = await asyncio.gather(*(_low_poa(env, f"crm:contact/k{i}") for i in range(n)))

    async def present(broker: BrokerClient, i: int) -> AuthorizeResponse | None:
        request_id, token = poas[i]
        try:
            return await broker.authorize(
                "crm.contact.read", f"crm:contact/k{i}", request_id=request_id, tenant="acme", poa=token, execute=False
            )
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None  # the process died under the call

    async with _broker(env) as doomed:
        burst = asyncio.gather(*(present(doomed, i) for i in range(n)))
        await asyncio.sleep(0.02)  # the fault's timing is what is tested: the kill lands while the burst is in flight
        assert await env.stack.kill("broker")
        first = await burst
    await env.stack.restart("broker")
    async with _broker(env, "broker-1") as survivor:
        second = await asyncio.gather(*(present(survivor, i) for i in range(n)))
    for i, (request_id, _token) in enumerate(poas):
        answered_allow = first[i] is not None and first[i].decision is Decision.ALLOW  # type: ignore[union-attr]
        retry = second[i]
        assert retry is not None
        if answered_allow:
            assert _codes(retry) == ["poa_single_use_replay_blocked"], i
        allows_answered = int(answered_allow) + int(retry.decision is Decision.ALLOW)
        assert allows_answered <= 1, i
        decisions = await _decisions(env, request_id, want=1 + int(first[i] is not None), timeout=15)
        kafka_allows = [d for d in decisions if d.decision is Decision.ALLOW]
        # Every PoA is spent exactly once, and that one allow is on Kafka, whoever answered it.
        assert len(kafka_allows) == 1, (i, [d.reasons for d in decisions])


async def test_a_non_agent_identity_gets_a_named_refusal_not_a_decision(env: BrokerEnv) -> None:
    request_id, token = await _low_poa(env)
    async with _broker(env, agent="spiffe://atb.local/user/alice") as not_an_agent:
        with pytest.raises(GatewayError) as refused:
            await not_an_agent.authorize(
                "crm.contact.read", "crm:contact/42", request_id=request_id, tenant="acme", poa=token
            )
    assert refused.value.status == 403
    assert refused.value.body.error == "not_an_agent"
