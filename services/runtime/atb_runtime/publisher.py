"""A non-transactional, idempotent publisher for fire-and-forget events.

Used where no input offset must commit with the output: the agent SDK, the CLI,
the audit sink's checkpoints. Sends are pipelined: `publish` enqueues and returns
a future; `flush` waits for every one of them.

Services depend on `RecordPublisher`, the port `Publisher` implements, so a
test hands them an in-memory one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer

from atb_runtime.records import Outgoing
from contracts.limits import PRODUCER_MAX_REQUEST_SIZE

__all__ = ["Publisher", "RecordPublisher"]


class RecordPublisher(Protocol):
    """The port of every service that publishes outside a Kafka transaction."""

    async def publish(self, records: Sequence[Outgoing]) -> None:
        """Enqueue records; `flush()` waits until Kafka has them."""
        ...

    async def flush(self) -> None: ...

    async def send_and_wait(self, records: Sequence[Outgoing]) -> None:
        """Send records and wait until Kafka acknowledged these."""
        ...


class Publisher:
    def __init__(self, bootstrap: str, client_id: str, *, linger_ms: int = 5) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            # Never refuse what the topic accepts (contracts/limits.py).
            max_request_size=PRODUCER_MAX_REQUEST_SIZE,
        )
        self._pending: list[asyncio.Future[object]] = []

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self.flush()
        await self._producer.stop()

    async def publish(self, records: Sequence[Outgoing]) -> None:
        """Enqueue records; call `flush()` to wait until Kafka has them."""
        for out in records:
            fut = await self._producer.send(out.topic, value=out.value, key=out.key, headers=list(out.headers))
            self._pending.append(fut)

    async def send_and_wait(self, records: Sequence[Outgoing]) -> None:
        """Send records and wait until Kafka acknowledged these (not others sent concurrently)."""
        mine = [
            await self._producer.send(out.topic, value=out.value, key=out.key, headers=list(out.headers))
            for out in records
        ]
        if mine:
            await asyncio.gather(*mine)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
