"""The stack on SPIRE's default X.509-SVIDs: EC P-256 keys, as spiffe-helper writes them, end to end.

Each service process reads its own `svid.pem`, `svid_key.pem` and `bundle.pem`
(ATB_SVID_CERT_PATH, ATB_SVID_KEY_PATH, ATB_TRUST_BUNDLE_PATH), issued by a
SPIRE-like EC P-256 CA (tests/spire_support.py) that is the only root any of them
trusts; the agent and the approvers hold SVIDs of the same CA. A high-risk
request goes over mutual TLS to the gateway, is approved by two votes on Kafka,
issued by the issuer, and allowed by the broker over mutual TLS: real processes,
real Kafka, real OPA. Every proof on the way is ES256; the PoA is the issuer's
EdDSA JWT, bound to the agent's EC certificate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from atb.dev.stack import DEFAULT_SERVICES, ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb.sdk import ApproverClient, BrokerClient, GatewayClient
from atb_identity import Svid, load_svid
from atb_identity.tls import client_context
from atb_runtime.readback import read_records
from contracts import (
    AccountableParty,
    ContractualNecessity,
    Decision,
    JsonObject,
    Topic,
    VoteChoice,
    decode_envelope,
    topic_name,
)
from contracts.http import RequestStatus
from tests.e2e.audit_sync import audit_rows
from tests.spire_support import HelperFiles, SpireCa, write_helper_files
from tests.waits import until

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
HIGH_LEG = ContractualNecessity(
    ref="MSA-12345",
    description="Change vendor bank details",
    jurisdiction="EU",
    accountable_party=AccountableParty(type="employee", id="emp-200"),
)
PARAMS: JsonObject = {"iban": "DE02120300000000202051"}
SIGNED_TOPICS = (Topic.POA_REQUESTS, Topic.VOTES, Topic.OUTCOMES, Topic.POA_ISSUED)


@dataclass(frozen=True)
class SpireStack:
    stack: ServiceStack
    namespace: str
    bootstrap: str
    db_url: str
    ca: SpireCa
    folder: Path

    def holder(self, spiffe_id: str) -> tuple[Svid, HelperFiles]:
        """An SVID of this CA for an agent or approver, on disk as spiffe-helper writes it."""
        name = spiffe_id.rsplit("/", 1)[-1]
        files = write_helper_files(self.ca.issue(spiffe_id), self.ca.roots, self.folder / name)
        return load_svid(files.svid, files.key), files


@pytest.fixture(scope="module")
async def spire_stack(
    kafka_bootstrap: str, opa_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SpireStack]:
    ns = f"s{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    state = tmp_path_factory.mktemp("spire-stack")
    ca = SpireCa.create(days=1)
    service_env: dict[str, dict[str, str]] = {}
    for name in DEFAULT_SERVICES:
        svid = ca.issue(f"spiffe://atb.local/svc/{name}")
        # Renewed files are looked for every 0.2 s (test_renewed_svids_are_taken_without_a_restart).
        service_env[name] = {
            **write_helper_files(svid, ca.roots, state / "svid" / name).env(),
            "ATB_IDENTITY_CHECK_S": "0.2",
        }
    db_url = f"sqlite:///{state / 'audit.db'}"
    config = StackConfig(kafka_bootstrap, opa_url, state, namespace=ns, audit_db_url=db_url, service_env=service_env)
    stack = ServiceStack(config)
    await stack.start(ready_timeout=90)
    try:
        yield SpireStack(stack, ns, kafka_bootstrap, db_url, ca, state / "svid")
    finally:
        await stack.stop()
        await delete_topics(kafka_bootstrap, ns)


async def _approved_high_request(
    env: SpireStack, agent: Svid, agent_files: HelperFiles, resource: str
) -> tuple[str, RequestStatus]:
    """A high-risk request by the agent over mutual TLS, approved by alice and bob on Kafka: its id and PoA view."""
    async with GatewayClient(svid=agent, bundle_path=agent_files.bundle, base_url=env.stack.gateway_url) as gateway:
        request_id = await gateway.request_poa(
            "sap.vendor.change", resource, tenant="acme", leg=HIGH_LEG, params=PARAMS
        )
        for name in ("alice", "bob"):
            approver, files = env.holder(f"spiffe://atb.local/user/{name}")
            async with ApproverClient(
                svid=approver, bootstrap=env.bootstrap, namespace=env.namespace, bundle_path=files.bundle
            ) as client:
                await client.vote(await client.approval_required(request_id, timeout=60), VoteChoice.APPROVE)
        return request_id, await gateway.await_poa(request_id, timeout=60)


async def test_a_high_risk_request_runs_end_to_end_on_spire_ec_svids(spire_stack: SpireStack) -> None:
    env = spire_stack
    agent, agent_files = env.holder(AGENT)
    assert agent.alg == "ES256"
    request_id, issued = await _approved_high_request(env, agent, agent_files, "sap:vendor/V-100")
    assert issued.status == "issued"
    assert issued.poa is not None
    token = issued.poa.token
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert jwt.decode(token, options={"verify_signature": False})["cnf"] == {"x5t#S256": agent.thumbprint()}

    async with BrokerClient(svid=agent, bundle_path=agent_files.bundle, base_url=env.stack.broker_url()) as broker:
        answer = await broker.authorize(
            "sap.vendor.change",
            "sap:vendor/V-100",
            request_id=request_id,
            tenant="acme",
            poa=token,
            params=PARAMS,
            execute=False,
        )
    assert answer.decision is Decision.ALLOW, answer.reasons
    assert await audit_rows(env.bootstrap, env.namespace, env.db_url, request_id, "broker_action_allowed")

    # Every proof of this request on Kafka was ES256, and no consumer dead-lettered anything.
    producers: set[str] = set()
    for topic in SIGNED_TOPICS:
        for record in await read_records(env.bootstrap, topic_name(topic, env.namespace)):
            assert record.value is not None
            envelope = decode_envelope(record.value)
            if envelope.partitionkey != request_id:
                continue
            assert envelope.proof is not None, (topic, envelope.type)
            assert envelope.proof.alg == "ES256", (topic, envelope.type, envelope.proof.alg)
            producers.add(envelope.source)
    assert producers >= {
        "spiffe://atb.local/svc/gateway",
        "spiffe://atb.local/svc/approvals",
        "spiffe://atb.local/svc/issuer",
        "spiffe://atb.local/user/alice",
        "spiffe://atb.local/user/bob",
    }
    assert await read_records(env.bootstrap, topic_name(Topic.DLQ, env.namespace)) == []


async def _renewals(ops_port: int) -> float:
    """The service's `atb_identity_renewals_total{what="svid",outcome="renewed"}`."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{ops_port}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("atb_identity_renewals_total{") and 'what="svid"' in line and 'outcome="renewed"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _replace(path: Path, data: bytes) -> None:
    """Write a file as spiffe-helper does: a new file renamed over the old one."""
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    os.replace(tmp, path)


async def _presented(port: int, files: HelperFiles) -> bytes:
    """The DER of the certificate the server on `port` presents in a fresh mutual-TLS handshake."""
    agent = files
    context = client_context(agent.svid, agent.key, agent.bundle)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def test_renewed_svids_are_taken_without_a_restart(spire_stack: SpireStack) -> None:
    """spiffe-helper rewrites svid.pem, then svid_key.pem (SPIRE renews at half the SVID's lifetime): each
    running service signs its next events and serves its next handshakes with the new SVID, same process."""
    env = spire_stack
    stack = env.stack
    renewed = ("gateway", "approvals", "issuer", "broker")
    pids = {name: stack.processes[name].pid for name in renewed}
    before = {name: await _renewals(stack.ops_ports[name]) for name in renewed}
    new_leaves: dict[str, bytes] = {}
    pem = serialization.Encoding.PEM
    for name in renewed:
        svid = env.ca.issue(f"spiffe://atb.local/svc/{name}")
        folder = env.folder / name
        # The certificate first: for a moment it does not match the old key, and is refused until the key follows.
        _replace(folder / "svid.pem", b"".join(c.public_bytes(pem) for c in svid.chain))
        key = svid.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        _replace(folder / "svid_key.pem", key)
        new_leaves[name] = svid.chain[0].public_bytes(serialization.Encoding.DER)
    for name in renewed:  # each service reports the renewal on /metrics (it checks every 0.2 s)
        await until(
            lambda port=stack.ops_ports[name]: _renewals(port),  # type: ignore[misc]
            lambda seen, was=before[name]: seen > was,  # type: ignore[misc]
            timeout=30,
            what=f"{name} taking its renewed SVID",
        )

    agent, agent_files = env.holder(AGENT)
    gateway_port = int(stack.gateway_url.rsplit(":", 1)[1])
    broker_port = int(stack.broker_url().rsplit(":", 1)[1])
    assert await _presented(gateway_port, agent_files) == new_leaves["gateway"]
    assert await _presented(broker_port, agent_files) == new_leaves["broker"]
    request_id, issued = await _approved_high_request(env, agent, agent_files, "sap:vendor/V-200")
    assert issued.status == "issued"
    # Every event the renewed services signed for this request carries the new leaf.
    signers: dict[str, set[str]] = {}
    for topic in SIGNED_TOPICS:
        for record in await read_records(env.bootstrap, topic_name(topic, env.namespace)):
            assert record.value is not None
            envelope = decode_envelope(record.value)
            if envelope.partitionkey != request_id or envelope.proof is None:
                continue
            signers.setdefault(envelope.source, set()).add(envelope.proof.x5c[0])
    for name in ("gateway", "approvals", "issuer"):
        want = base64.b64encode(new_leaves[name]).decode()
        assert signers[f"spiffe://atb.local/svc/{name}"] == {want}, name
    assert {name: stack.processes[name].pid for name in renewed} == pids, "a service restarted"
