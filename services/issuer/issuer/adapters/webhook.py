"""Outcome notifications to an agent's callback: an HTTPS webhook signed with the issuer's key.

An agent may register a callback URL with its request; when the request's
outcome is known, `WebhookNotifier` POSTs the outcome (JSON) to it:

- only to an ``https://`` URL whose host is on the operator's allowlist
  (`CallbackAllowlist`): anything else is refused before any connection, and audited;
- signed with the issuer's Ed25519 PoA key (`sign_delivery`): the header
  ``ATB-Signature: v1;kid=<kid>;t=<unix time>;sig=<base64url>`` signs
  ``atb.webhook.v1\\n<t>\\n<delivery id>\\n<body>``, domain-separated from PoAs; a
  receiver checks it with the issuer's published key (`verify_delivery`) and
  refuses an old ``t``;
- delivered off the pipeline (`deliver`, called by issuer/callbacks.py for each
  committed outcome), retrying a failure (a connection error, a 5xx, a 429) with
  exponential backoff up to `max_attempts`; a 4xx other than 429 is final;
- every delivery audited: ``outcome_notification_delivered``, ``_failed`` (after
  the last attempt, or final), ``_refused`` (not on the allowlist).

The HTTP client is aiohttp with the TLS context given (the system's by default).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from atb_runtime import Outgoing, audit
from issuer.adapters.keys import SigningKey

__all__ = [
    "SIGNATURE_HEADER",
    "CallbackAllowlist",
    "WebhookNotifier",
    "sign_delivery",
    "verify_delivery",
]

SIGNATURE_HEADER = "ATB-Signature"
DELIVERY_HEADER = "ATB-Delivery"
_DOMAIN = b"atb.webhook.v1"
MAX_AGE_SECONDS = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed_bytes(t: int, delivery_id: str, body: bytes) -> bytes:
    return b"\n".join((_DOMAIN, str(t).encode(), delivery_id.encode(), body))


def sign_delivery(key: SigningKey, delivery_id: str, body: bytes, now: float) -> str:
    """The ``ATB-Signature`` header value for one delivery."""
    t = int(now)
    sig = key.private.sign(_signed_bytes(t, delivery_id, body))
    return f"v1;kid={key.kid};t={t};sig={_b64url(sig)}"


def verify_delivery(
    header: str, delivery_id: str, body: bytes, keys: dict[str, Ed25519PublicKey], now: float
) -> str | None:
    """Why a delivery's signature does not hold (None: it holds), for a receiver holding the issuer's keys."""
    parts = dict(p.split("=", 1) for p in header.split(";")[1:] if "=" in p)
    if not header.startswith("v1;") or not {"kid", "t", "sig"} <= parts.keys():
        return "malformed signature header"
    key = keys.get(parts["kid"])
    if key is None:
        return f"unknown key {parts['kid']}"
    try:
        t = int(parts["t"])
        sig = base64.urlsafe_b64decode(parts["sig"] + "=" * (-len(parts["sig"]) % 4))
    except ValueError:
        return "malformed signature header"
    if abs(now - t) > MAX_AGE_SECONDS:
        return "signature too old or from the future"
    try:
        key.verify(sig, _signed_bytes(t, delivery_id, body))
    except InvalidSignature:
        return "bad signature"
    return None


@dataclass(frozen=True)
class CallbackAllowlist:
    """The hosts an agent's callback may point at (exact, case-insensitive); HTTPS only."""

    hosts: frozenset[str]

    @classmethod
    def of(cls, hosts: Iterable[str]) -> CallbackAllowlist:
        return cls(frozenset(h.strip().lower().rstrip(".") for h in hosts if h.strip()))

    def refusal(self, url: str) -> str | None:
        """Why a callback URL is refused (None: it may be called)."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower().rstrip(".")
            _ = parts.port  # raises on a malformed port
        except ValueError:
            return "malformed callback URL"
        if parts.scheme != "https":
            return "callback must be https"
        if parts.username is not None or parts.password is not None:
            return "callback must not carry credentials"
        if not host:
            return "callback has no host"
        if host not in self.hosts:
            return f"callback host {host} is not on the allowlist"
        return None


@dataclass(frozen=True)
class _Delivery:
    delivery_id: str
    request_id: str
    url: str
    body: bytes


Publish = Callable[[Sequence[Outgoing]], Awaitable[None]]

DELIVERED, FAILED, REFUSED = "delivered", "failed", "refused"


class WebhookNotifier:
    """Delivers outcome notifications, one `deliver` call each (a component: start, stop).

    It keeps nothing: what is to be delivered, and again after a crash, is the caller's
    (issuer/callbacks.py reads it from committed records, at least once).
    """

    def __init__(
        self,
        key: SigningKey | Callable[[], SigningKey],
        allowlist: CallbackAllowlist,
        publish: Publish,
        *,
        source: str,
        namespace: str,
        ssl_context: ssl.SSLContext | None = None,
        max_attempts: int = 6,
        backoff_seconds: float = 1.0,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._key: Callable[[], SigningKey] = key if callable(key) else (lambda: key)
        """The issuer's signing key in force now (the keyring rotates it)."""
        self._allowlist = allowlist
        self._publish = publish
        self._source = source
        self._ns = namespace
        self._ssl = ssl_context
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, request_id: str, url: str, body: bytes, delivery_id: str | None = None) -> str:
        """Deliver one notification, retrying, and audit its fate: `delivered`, `failed` or `refused`.

        A URL off the allowlist is refused before any connection. `delivery_id` (header
        ``ATB-Delivery``, signed) is the same for every delivery of one outcome, so a receiver
        can drop a repeat; default: a new id.
        """
        delivery = _Delivery(delivery_id or f"dlv-{uuid.uuid4().hex}", request_id, url, body)
        refusal = self._allowlist.refusal(url)
        if refusal is not None:
            await self._audit(delivery, "outcome_notification_refused", "denied", refusal, attempts=0)
            return REFUSED
        return await self._deliver(delivery)

    async def _deliver(self, delivery: _Delivery) -> str:
        assert self._session is not None, "start() first"
        reason = ""
        for attempt in range(1, self._max_attempts + 1):
            headers = {
                "Content-Type": "application/json",
                DELIVERY_HEADER: delivery.delivery_id,
                SIGNATURE_HEADER: sign_delivery(self._key(), delivery.delivery_id, delivery.body, time.time()),
            }
            try:
                async with self._session.post(
                    delivery.url, data=delivery.body, headers=headers, ssl=self._ssl or True, allow_redirects=False
                ) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, reason = 0, f"{type(exc).__name__}: {exc}"
            if 200 <= status < 300:
                await self._audit(delivery, "outcome_notification_delivered", "success", f"HTTP {status}", attempt)
                return DELIVERED
            if status:
                reason = f"HTTP {status}"
            if status and status < 500 and status != 429:
                break  # the receiver refused it: retrying would not help
            if attempt < self._max_attempts:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
        await self._audit(delivery, "outcome_notification_failed", "failure", reason, attempt)
        return FAILED

    async def _audit(self, delivery: _Delivery, kind: str, outcome: str, reason: str, attempts: int) -> None:
        host = urlsplit(delivery.url).hostname or ""
        await self._publish(
            [
                audit(
                    kind,
                    source=self._source,
                    namespace=self._ns,
                    outcome=outcome,
                    request_id=delivery.request_id,
                    reason=reason[:1024],
                    details={"delivery_id": delivery.delivery_id, "host": host, "attempts": attempts},
                )
            ]
        )
