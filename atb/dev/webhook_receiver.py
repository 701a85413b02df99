"""A local HTTPS receiver for outcome callbacks (the demo's and the e2e tests' agent webhook).

`WebhookReceiver` serves ``POST /atb/outcomes`` on 127.0.0.1 over TLS, with a
certificate for ``localhost`` it makes in its folder (`ca_path`: the issuer is
told to trust it, ``ATB_CALLBACK_CA_PATH``). It keeps each delivery (headers,
body) and wakes whoever waits for a request's outcome (`wait_for`): no polling.
`verify` checks a delivery's ``ATB-Signature`` with the issuer's published keys
(its JWKS), as an agent would. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from issuer.adapters.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, verify_delivery

__all__ = ["Delivery", "WebhookReceiver", "issuer_keys", "verify"]

PATH = "/atb/outcomes"


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    signature: str
    body: bytes

    @property
    def outcome(self) -> dict[str, Any]:
        parsed = json.loads(self.body)
        return parsed if isinstance(parsed, dict) else {}


def _localhost_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` (its own CA), made once per folder and kept a day."""
    cert_path, key_path = directory / "receiver.pem", directory / "receiver.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(hours=1):
            return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
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
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


@dataclass
class WebhookReceiver:
    folder: Path
    status: int = 200
    """What every delivery is answered."""
    deliveries: list[Delivery] = field(default_factory=list)
    port: int = 0
    _arrived: asyncio.Condition | None = None
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        cert, key = _localhost_cert(self.folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_post(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def ca_path(self) -> Path:
        return self.folder / "receiver.pem"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}{PATH}"

    def env(self) -> dict[str, str]:
        """The issuer's settings for this receiver: its host allowed, its certificate trusted."""
        return {"ATB_CALLBACK_HOSTS": json.dumps(["localhost"]), "ATB_CALLBACK_CA_PATH": str(self.ca_path)}

    async def wait_for(self, request_id: str, timeout: float = 30, *, nth: int = 1) -> Delivery:
        """The `nth` delivery for the request (answered or not), as soon as it arrives."""
        assert self._arrived is not None, "start the receiver first"

        def found() -> Delivery | None:
            of_request = [d for d in self.deliveries if d.outcome.get("request_id") == request_id]
            return of_request[nth - 1] if len(of_request) >= nth else None

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: found() is not None), timeout)
        delivery = found()
        assert delivery is not None
        return delivery

    async def _handle(self, request: web.Request) -> web.Response:
        delivery = Delivery(
            request.headers.get(DELIVERY_HEADER, ""), request.headers.get(SIGNATURE_HEADER, ""), await request.read()
        )
        self.deliveries.append(delivery)
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=self.status)


async def issuer_keys(jwks_url: str) -> dict[str, Ed25519PublicKey]:
    """The issuer's published Ed25519 keys by kid, from its JWKS (`GET /.well-known/jwks.json`)."""
    async with aiohttp.ClientSession() as session, session.get(jwks_url) as response:
        response.raise_for_status()
        document = await response.json()
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in document.get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
            keys[str(jwk["kid"])] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def verify(delivery: Delivery, keys: dict[str, Ed25519PublicKey]) -> str | None:
    """Why the delivery's signature does not hold (None: it holds)."""
    return verify_delivery(delivery.signature, delivery.delivery_id, delivery.body, keys, time.time())
