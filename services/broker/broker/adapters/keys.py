"""Verification keys, learned from the compacted `atb.keys` topic.

A background reader follows the topic from the beginning (no consumer group: every
replica needs every key). Unknown `kid` is "not yet known", never "allowed": the
verifier may ask for one refresh from the issuer's JWKS, rate-limited so that a
flood of tokens with made-up `kid`s costs at most one fetch per interval. With
`dead_letters`, garbage on the topic is dead-lettered as `broker-keys@<instance>`
(docs/hostile-input.md). With `check` (the broker passes one), a key is taken only
from an envelope whose proof of origin is the issuer's: whoever else can write to
the topic cannot add a key the broker would trust (issuer/adapters/announce.py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from atb_runtime.follow import Check, FollowerDeadLetters, TopicFollower
from contracts import EventPayload, SigningKeyPublished, Topic

__all__ = ["KeyRing", "public_key_from_jwk"]

log = logging.getLogger(__name__)


_SMALL_ORDER = tuple(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",  # identity
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
        "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p (non-canonical 0)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1 (non-canonical 1)
    )
)
"""Ed25519 points of small order, sign bit cleared (libsodium's list). Under such a key, (R, S) =
(identity, 0) verifies for every message (tests/unit/test_broker_verify_differential.py)."""


def public_key_from_jwk(jwk: dict[str, str]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("only OKP/Ed25519 keys are accepted")
    raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    if len(raw) == 32 and raw[:31] + bytes([raw[31] & 0x7F]) in _SMALL_ORDER:
        raise ValueError("a small-order Ed25519 key is not accepted")
    return Ed25519PublicKey.from_public_bytes(raw)


class KeyRing:
    def __init__(
        self,
        bootstrap: str,
        namespace: str,
        *,
        jwks_url: str = "",
        refresh_interval_s: float = 5.0,
        dead_letters: FollowerDeadLetters | None = None,
        check: Check | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._jwks_url = jwks_url
        self._refresh_interval = refresh_interval_s
        self._last_refresh = -refresh_interval_s
        self._refresh_lock = asyncio.Lock()
        self.refreshes = 0
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._retire_after: dict[str, datetime] = {}
        self._follower = TopicFollower(
            bootstrap,
            namespace,
            (Topic.KEYS,),
            self._apply,
            name="atb-keyring",
            dead_letters=dead_letters,
            check=check,
        )

    def get(self, kid: str, now: datetime | None = None) -> Ed25519PublicKey | None:
        """The key, unless unknown or retired (every token it signed has expired by then)."""
        retire = self._retire_after.get(kid)
        if retire is not None and (now or datetime.now(UTC)) > retire:
            return None
        return self._keys.get(kid)

    def add(self, kid: str, jwk: dict[str, str], retire_after: datetime | None = None) -> None:
        self._keys[kid] = public_key_from_jwk(jwk)
        if retire_after is None:
            self._retire_after.pop(kid, None)
        else:
            self._retire_after[kid] = retire_after

    async def load_jwks(self, url: str) -> int:
        """Learn keys from a JWKS endpoint (the issuer's /.well-known/jwks.json); returns how many."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            response.raise_for_status()
            body = await response.json()
        count = 0
        for jwk in body.get("keys", []) if isinstance(body, dict) else []:
            if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
                self.add(jwk["kid"], {k: str(v) for k, v in jwk.items()})
                count += 1
        return count

    async def refresh(self) -> bool:
        """Fetch the JWKS once, unless fetched less than `refresh_interval_s` ago. True when fetched."""
        if not self._jwks_url:
            return False
        async with self._refresh_lock:
            now = asyncio.get_running_loop().time()
            if now - self._last_refresh < self._refresh_interval:
                return False
            self._last_refresh = now
            self.refreshes += 1
            try:
                await self.load_jwks(self._jwks_url)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("JWKS refresh from %s failed: %s", self._jwks_url, exc)
                return False
            return True

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    async def _apply(self, events: Sequence[EventPayload]) -> None:
        for payload in events:
            if isinstance(payload, SigningKeyPublished):
                try:
                    self.add(payload.kid, payload.jwk, payload.retire_after)
                except (ValueError, KeyError) as exc:
                    log.warning("ignoring key %s: %s", payload.kid, exc)
