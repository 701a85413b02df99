"""Revoked PoAs, learned from `atb.poa.revoked` by every replica.

Like the key ring, a group-less reader follows the topic from the beginning:
each replica must see every revocation, and quickly (the consumer's fetch wait
is 200 ms, so a revocation is in force everywhere well within 2 seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import EventDecodeError, PoaRevoked, Topic, decode_envelope, payload_of, spec_for, topic_name

__all__ = ["RevocationList"]

log = logging.getLogger(__name__)


class RevocationList:
    def __init__(self, bootstrap: str, namespace: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic_name(Topic.POA_REVOKED, namespace)
        self._jtis: dict[str, str] = {}
        self._requests: dict[str, str] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.learned_at: dict[str, float] = {}
        """jti or request id → monotonic time it was learned (for the revocation-latency metric)."""

    def revoked(self, jti: str, request_id: str) -> str | None:
        """The revocation reason when either the PoA or its whole request is revoked."""
        return self._jtis.get(jti) or self._requests.get(request_id)

    def add(self, revocation: PoaRevoked) -> None:
        if revocation.jti and revocation.jti != "*":
            self._jtis[revocation.jti] = revocation.reason
            self.learned_at[revocation.jti] = time.monotonic()
        else:
            self._requests[revocation.request_id] = revocation.reason
            self.learned_at[revocation.request_id] = time.monotonic()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=200,
        )
        await self._consumer.start()
        partitions = spec_for(Topic.POA_REVOKED).partitions
        self._consumer.assign([TopicPartition(self._topic, p) for p in range(partitions)])
        await self._consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._follow(), name="revocations")

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
            except EventDecodeError as exc:
                log.warning("ignoring bad revocation record at offset %s: %s", msg.offset, exc)
                continue
            if isinstance(payload, PoaRevoked):
                self.add(payload)
