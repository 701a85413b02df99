"""Verification keys, learned from the compacted `atb.keys` topic.

A background reader follows the topic from the beginning (no consumer group: every
replica needs every key). Unknown `kid` is "not yet known", never "allowed".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contracts import EventDecodeError, SigningKeyPublished, Topic, decode_envelope, payload_of, topic_name

__all__ = ["KeyRing", "public_key_from_jwk"]

log = logging.getLogger(__name__)


def public_key_from_jwk(jwk: dict[str, str]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("only OKP/Ed25519 keys are accepted")
    raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    return Ed25519PublicKey.from_public_bytes(raw)


class KeyRing:
    def __init__(self, bootstrap: str, namespace: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic_name(Topic.KEYS, namespace)
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def add(self, kid: str, jwk: dict[str, str]) -> None:
        self._keys[kid] = public_key_from_jwk(jwk)

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, isolation_level="read_committed"
        )
        await self._consumer.start()
        self._consumer.assign([TopicPartition(self._topic, 0)])
        await self._consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._follow(), name="keyring")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        async for msg in consumer:
            try:
                payload = payload_of(decode_envelope(msg.value))
                if isinstance(payload, SigningKeyPublished):
                    self.add(payload.kid, payload.jwk)
            except (EventDecodeError, ValueError, KeyError) as exc:
                log.warning("ignoring bad key record at offset %s: %s", msg.offset, exc)
