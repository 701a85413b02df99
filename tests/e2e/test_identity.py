"""Identity end to end: the mTLS gateway, and proofs of origin on the real broker.

Real TLS on loopback with real X.509-SVIDs from the dev CA; real Kafka; the
services as processes.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import jwt
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from atb.sdk import GatewayClient, GatewayError
from atb_identity import Svid, build_certificate, bundle_path, ca_paths, ensure_svid, issue_svid, sign_envelope
from atb_runtime import Outgoing, Publisher, outgoing_envelope
from atb_runtime.readback import StoredEvent as ReadEvent
from audit_sink.adapters.db import AuditStore, StoredEvent, audit_events, make_engine
from contracts import (
    AccountableParty,
    AuditEvent,
    DeadLetter,
    IssuanceRequested,
    LegitimateInterest,
    Topic,
    encode_envelope,
    make_envelope,
    topic_name,
)
from tests.e2e.audit_sync import caught_up, stored
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.opa]


@pytest.fixture
def running_stack(module_stack: RunningStack) -> RunningStack:
    """Every test here shares one stack: they use distinct request ids and identities."""
    return module_stack


AGENT = "spiffe://atb.local/agent/id-bot"
OTHER = "spiffe://atb.local/agent/other-bot"
LEG = LegitimateInterest(ref="LI-1", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="e1"))
BODY = {
    "tenant": "acme",
    "action": "crm.contact.read",
    "resource": "crm:contact/1",
    "leg": LEG.model_dump(mode="json", exclude_none=True),
}


def _gateway(stack: RunningStack, spiffe_id: str = AGENT) -> GatewayClient:
    svid = ensure_svid(stack.state_dir, spiffe_id)
    return GatewayClient(svid=svid, bundle_path=bundle_path(stack.state_dir), base_url=stack.stack.gateway_url)


def _raw_context(stack: RunningStack, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(bundle_path(stack.state_dir)))
    context.check_hostname = False  # the gateway's SVID has a URI SAN only
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context


async def _post(stack: RunningStack, body: bytes, context: ssl.SSLContext) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.stack.gateway_url}/issue", data=body, ssl=context, headers={"content-type": "application/json"}
        ) as response,
    ):
        return response.status, await response.json()


async def test_agent_gets_its_poa_through_the_gateway(running_stack: RunningStack) -> None:
    async with _gateway(running_stack) as gateway:
        request_id = await gateway.request_poa(
            "crm.contact.read", "crm:contact/1", tenant="acme", leg=LEG, params={"f": 1}
        )
        status = await gateway.await_poa(request_id, timeout=60)
        svid = gateway.svid
    assert status.status == "issued"
    assert status.poa is not None
    claims = jwt.decode(status.poa.token, options={"verify_signature": False})
    assert claims["sub"] == AGENT
    assert claims["cnf"] == {"x5t#S256": svid.thumbprint()}

    # Another agent, authenticated just as well, may not see it.
    async with _gateway(running_stack, OTHER) as other:
        with pytest.raises(GatewayError) as refused:
            await other.status(request_id)
    assert refused.value.status == 403
    assert refused.value.body.error == "not_your_request"


@pytest.mark.parametrize(
    ("body", "status", "error", "field"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b'{"tenant": "acme"}', 422, "invalid_body", "action"),
        (
            b'{"tenant": "acme", "action": "crm.contact.read", "resource": "r", "leg": {}, "sneaky": 1}',
            422,
            "invalid_body",
            "leg",
        ),
        (
            (
                b'{"tenant": "acme", "action": 7, "resource": "r", "leg": '
                b'{"basis": "LI", "ref": "x", "jurisdiction": "US", "accountable_party": {"type": "e", "id": "e"}}}'
            ),
            422,
            "invalid_body",
            "action",
        ),
        (b'{"tenant": "acme", "amount": 1.5}', 422, "not_canonical", None),
        (b"[" * 10 + b"1" + b"]" * 10 + b" " * (70 * 1024), 413, "body_too_large", None),
    ],
)
async def test_bad_bodies_get_a_json_error_naming_the_field(
    running_stack: RunningStack, body: bytes, status: int, error: str, field: str | None
) -> None:
    chain, key = _paths(ensure_svid(running_stack.state_dir, AGENT))
    got, answer = await _post(running_stack, body, _raw_context(running_stack, chain, key))
    assert got == status, answer
    assert answer["error"] == error
    if field is not None:
        assert str(answer.get("field", "")).startswith(field)


async def test_unknown_field_is_named(running_stack: RunningStack) -> None:
    chain, key = _paths(ensure_svid(running_stack.state_dir, AGENT))
    body = dict(BODY, sneaky=True)
    got, answer = await _post(running_stack, orjson.dumps(body), _raw_context(running_stack, chain, key))
    assert got == 422
    assert answer["field"] == "sneaky"


async def test_no_client_certificate_is_401_and_audited(running_stack: RunningStack) -> None:
    got, answer = await _post(running_stack, orjson.dumps(BODY), _raw_context(running_stack))
    assert got == 401
    assert answer["error"] == "no_client_certificate"
    assert await _audit_of_type(running_stack, "identity_rejected", containing=b"no_client_certificate")


async def test_a_service_identity_may_not_ask_for_poas(running_stack: RunningStack) -> None:
    async with _gateway(running_stack, "spiffe://atb.local/svc/sneaky") as gateway:
        with pytest.raises(GatewayError) as refused:
            await gateway.request_poa("crm.contact.read", "r", tenant="acme", leg=LEG)
    assert refused.value.status == 403
    assert refused.value.body.error == "not_an_agent"


async def test_a_leaf_from_our_ca_breaking_a_spiffe_rule_is_403_with_the_rule(running_stack: RunningStack) -> None:
    # Signed by the trusted dev CA (so TLS accepts it) but marked as a CA itself.
    bad = _issue_from_dev_ca(running_stack.state_dir, uris=[AGENT], is_ca=True)
    got, answer = await _post(running_stack, orjson.dumps(BODY), _raw_context(running_stack, *bad))
    assert got == 403
    assert answer["error"] == "leaf_is_ca"
    assert await _audit_of_type(running_stack, "identity_rejected", containing=b"leaf_is_ca")


@pytest.mark.parametrize("which", ["foreign_ca", "expired"])
async def test_untrusted_or_expired_certificates_are_refused_in_tls(running_stack: RunningStack, which: str) -> None:
    if which == "foreign_ca":
        foreign = running_stack.state_dir / "foreign"
        svid = issue_svid(foreign, AGENT)
        chain, key = _paths(svid)
    else:
        chain, key = _issue_from_dev_ca(
            running_stack.state_dir,
            uris=[AGENT],
            is_ca=False,
            not_before=datetime.now(UTC) - timedelta(days=2),
            not_after=datetime.now(UTC) - timedelta(days=1),
        )
    with pytest.raises((aiohttp.ClientConnectorError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        await _post(running_stack, orjson.dumps(BODY), _raw_context(running_stack, chain, key))


async def test_unsigned_forged_and_misattributed_requests_are_dead_lettered(running_stack: RunningStack) -> None:
    ns = running_stack.namespace
    agent = ensure_svid(running_stack.state_dir, AGENT)
    other = ensure_svid(running_stack.state_dir, OTHER)

    def request(request_id: str, agent_id: str = AGENT) -> IssuanceRequested:
        return IssuanceRequested(
            request_id=request_id,
            agent_id=agent_id,
            tenant="acme",
            action="crm.contact.read",
            resource="crm:contact/1",
            leg=LEG,
            requested_at=datetime.now(UTC),
        )

    unsigned = make_envelope(request("forge-unsigned"), source=AGENT)
    signed = sign_envelope(make_envelope(request("forge-tampered"), source=AGENT), agent)
    tampered = encode_envelope(signed).replace(b"crm:contact/1", b"crm:contact/2")
    misattributed = sign_envelope(make_envelope(request("forge-claim", agent_id=AGENT), source=OTHER), other)
    topic = topic_name(IssuanceRequested.topic, ns)
    async with Publisher(running_stack.kafka_bootstrap, "forger") as publisher:
        await publisher.publish(
            [
                outgoing_envelope(unsigned, topic),
                Outgoing(topic=topic, key=b"forge-tampered", value=tampered),
                outgoing_envelope(misattributed, topic),
            ]
        )
    for request_id in ("forge-unsigned", "forge-tampered", "forge-claim"):
        rows = await _rows_until(running_stack, request_id, Topic.DLQ, lambda kind, _raw: kind == DeadLetter.event_type)
        assert rows, f"{request_id} was not dead-lettered"
        audits = await _rows_until(
            running_stack, request_id, Topic.AUDIT, lambda _k, raw: b"identity_proof_rejected" in raw
        )
        assert audits, f"{request_id}: no identity_proof_rejected audit event"
    # None of them got a PoA or an outcome: true of everything committed so far once the sink caught up.
    await caught_up(running_stack.kafka_bootstrap, ns, running_stack.db_url)
    for request_id in ("forge-unsigned", "forge-tampered", "forge-claim"):
        rows = await _rows(running_stack, request_id)
        assert not [r for r in rows if r.event_type.startswith(("atb.approvals.", "atb.poa.issued"))]


def _paths(svid: Svid) -> tuple[Path, Path]:
    assert svid.cert_path is not None
    assert svid.key_path is not None
    return svid.cert_path, svid.key_path


def _issue_from_dev_ca(
    state_dir: Path,
    *,
    uris: list[str],
    is_ca: bool,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> tuple[Path, Path]:
    ca_cert_path, ca_key_path = ca_paths(state_dir)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    assert isinstance(ca_key, Ed25519PrivateKey)
    key = Ed25519PrivateKey.generate()
    cert = build_certificate(
        subject_key=key.public_key(),
        issuer_cert=ca_cert,
        issuer_key=ca_key,
        uris=uris,
        is_ca=is_ca,
        key_usage={"digital_signature": True},
        not_before=not_before or datetime.now(UTC) - timedelta(minutes=5),
        not_after=not_after or datetime.now(UTC) + timedelta(hours=1),
    )
    out = state_dir / f"crafted-{time.monotonic_ns()}"
    out.mkdir()
    (out / "chain.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    (out / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return out / "chain.pem", out / "key.pem"


async def _rows(stack: RunningStack, request_id: str) -> list[StoredEvent]:
    store = AuditStore(make_engine(stack.db_url), "reader")
    try:
        return await asyncio.to_thread(store.for_request, request_id)
    except Exception:
        return []


async def _rows_until(
    stack: RunningStack, request_id: str, topic: Topic, keep: Callable[[str, bytes], bool], timeout: float = 30
) -> list[StoredEvent]:
    """The request's stored rows that `keep` (event type, bytes) takes, once such an event is on `topic` and stored."""

    def about(e: ReadEvent) -> bool:
        # The store files an event under its envelope's subject.
        return e.envelope.subject == request_id and keep(e.envelope.type, e.record.value or b"")

    what = f"{topic.value} of {request_id}"
    await stored(stack.kafka_bootstrap, stack.namespace, stack.db_url, topic, about, timeout=timeout, what=what)
    return [row for row in await _rows(stack, request_id) if keep(row.event_type, row.raw)]


async def _audit_of_type(
    stack: RunningStack, audit_type: str, *, containing: bytes, timeout: float = 30
) -> list[StoredEvent]:
    """Stored audit events of a type whose bytes contain `containing`, once one is on atb.audit and stored."""

    def hit(e: ReadEvent) -> bool:
        return (
            isinstance(p := e.payload, AuditEvent)
            and p.audit_type == audit_type
            and containing in (e.record.value or b"")
        )

    what = f"{audit_type} with {containing!r}"
    await stored(stack.kafka_bootstrap, stack.namespace, stack.db_url, Topic.AUDIT, hit, timeout=timeout, what=what)
    engine = make_engine(stack.db_url)
    with engine.connect() as conn:
        raws = [
            StoredEvent(0, row.topic, row.event_type, None, datetime.now(UTC), datetime.now(UTC), row.raw)
            for row in conn.execute(
                select(audit_events.c.topic, audit_events.c.event_type, audit_events.c.raw).where(
                    audit_events.c.event_type == "atb.audit.event.v1"
                )
            )
        ]
    return [row for row in raws if audit_type.encode() in row.raw and containing in row.raw]
