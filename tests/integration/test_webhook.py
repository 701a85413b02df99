"""Outcome notifications to a local HTTPS receiver: signed with the issuer's key, retried, audited, allowlisted.

The receiver is a real aiohttp HTTPS server on 127.0.0.1 with a certificate for
``localhost`` made for the test; the notifier trusts that certificate only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from atb_runtime import Outgoing
from contracts import AuditEvent, decode_envelope, payload_of
from issuer.adapters.keys import load_or_create_key
from issuer.adapters.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    CallbackAllowlist,
    WebhookNotifier,
    verify_delivery,
)


@dataclass
class Receiver:
    statuses: list[int]
    """What to answer, in order (the last one from then on)."""
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), await request.read()))
        status = self.statuses[min(len(self.seen), len(self.statuses)) - 1]
        return web.Response(status=status)


def _localhost_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "receiver.pem", directory / "receiver.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Setup:
    receiver: Receiver
    url: str
    notifier: WebhookNotifier
    audits: list[AuditEvent]
    audited: asyncio.Event


@pytest.fixture
async def setup(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    statuses: list[int] = getattr(request, "param", [503, 200])
    receiver = Receiver(statuses)
    cert, key = _localhost_cert(tmp_path)
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    port = runner.addresses[0][1]
    audits: list[AuditEvent] = []
    audited = asyncio.Event()

    async def publish(records: Sequence[Outgoing]) -> None:  # the audit trail
        for record in records:
            assert record.value is not None
            event = payload_of(decode_envelope(record.value))
            assert isinstance(event, AuditEvent)
            audits.append(event)
        audited.set()

    client_ssl = ssl.create_default_context(cafile=str(cert))
    notifier = WebhookNotifier(
        load_or_create_key(tmp_path / "issuer" / "signing.key"),
        CallbackAllowlist.of(["localhost"]),
        publish,
        source="spiffe://atb.local/svc/issuer",
        namespace="",
        ssl_context=client_ssl,
        max_attempts=3,
        backoff_seconds=0.05,
    )
    await notifier.start()
    try:
        yield Setup(receiver, f"https://localhost:{port}/hook", notifier, audits, audited)
    finally:
        await notifier.stop()
        await runner.cleanup()


async def _audit(setup: Setup) -> AuditEvent:
    await asyncio.wait_for(setup.audited.wait(), timeout=10)
    [event] = setup.audits
    return event


async def test_a_delivery_is_signed_retried_after_a_5xx_and_audited(setup: Setup, tmp_path: Path) -> None:
    body = json.dumps({"request_id": "req-1", "outcome": "poa_issued"}).encode()
    assert await setup.notifier.deliver("req-1", setup.url, body) == "delivered"
    event = await _audit(setup)
    assert (event.audit_type, event.outcome, event.request_id) == ("outcome_notification_delivered", "success", "req-1")
    assert (event.details["attempts"], event.details["host"]) == (2, "localhost")
    assert len(setup.receiver.seen) == 2
    headers, received = setup.receiver.seen[-1]
    assert received == body
    key = load_or_create_key(tmp_path / "issuer" / "signing.key")
    keys = {key.kid: key.private.public_key()}
    delivery = headers[DELIVERY_HEADER]
    assert verify_delivery(headers[SIGNATURE_HEADER], delivery, received, keys, time.time()) is None
    assert verify_delivery(headers[SIGNATURE_HEADER], delivery, received + b" ", keys, time.time()) == "bad signature"
    assert verify_delivery(headers[SIGNATURE_HEADER], "dlv-other", received, keys, time.time()) == "bad signature"
    assert "too old" in (verify_delivery(headers[SIGNATURE_HEADER], delivery, received, keys, time.time() + 3600) or "")
    assert verify_delivery(headers[SIGNATURE_HEADER], delivery, received, {}, time.time()) == f"unknown key {key.kid}"


@pytest.mark.parametrize("setup", [[400]], indirect=True)
async def test_a_4xx_is_final_and_audited_as_failed(setup: Setup) -> None:
    assert await setup.notifier.deliver("req-2", setup.url, b"{}") == "failed"
    event = await _audit(setup)
    assert (event.audit_type, event.outcome, event.reason) == ("outcome_notification_failed", "failure", "HTTP 400")
    assert event.details["attempts"] == 1
    assert len(setup.receiver.seen) == 1


@pytest.mark.parametrize("setup", [[503]], indirect=True)
async def test_a_receiver_that_keeps_failing_gets_max_attempts(setup: Setup) -> None:
    assert await setup.notifier.deliver("req-3", setup.url, b"{}") == "failed"
    event = await _audit(setup)
    assert (event.audit_type, event.reason, event.details["attempts"]) == ("outcome_notification_failed", "HTTP 503", 3)
    assert len(setup.receiver.seen) == 3


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost/hook", "callback must be https"),
        ("https://evil.example/hook", "callback host evil.example is not on the allowlist"),
        ("https://localhost.evil.example/hook", "callback host localhost.evil.example is not on the allowlist"),
        ("https://user:pw@localhost/hook", "callback must not carry credentials"),
        ("https://127.0.0.1/hook", "callback host 127.0.0.1 is not on the allowlist"),
        ("https://localhost:99999/hook", "malformed callback URL"),
    ],
)
async def test_a_callback_off_the_allowlist_is_refused_and_audited_before_any_connection(
    setup: Setup, url: str, reason: str
) -> None:
    assert await setup.notifier.deliver("req-4", url, b"{}") == "refused"
    event = await _audit(setup)
    assert (event.audit_type, event.outcome, event.reason) == ("outcome_notification_refused", "denied", reason)
    assert setup.receiver.seen == []  # refused before any connection
