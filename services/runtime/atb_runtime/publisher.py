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

from atb_runtime.records import Outgoing, audit, run_after_commit
from contracts import JsonObject
from contracts.limits import PRODUCER_MAX_REQUEST_SIZE

__all__ = ["AuditTrail", "Publisher", "RecordPublisher"]


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
        self._pending: list[tuple[asyncio.Future[object], Outgoing]] = []

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self.flush()
        await self._producer.stop()

    async def publish(self, records: Sequence[Outgoing]) -> None:
        """Enqueue records; call `flush()` to wait until Kafka has them."""
        for out in records:
            fut = await self._producer.send(out.topic, value=out.value, key=out.key, headers=list(out.headers))
            self._pending.append((fut, out))

    async def send_and_wait(self, records: Sequence[Outgoing]) -> None:
        """Send records and wait until Kafka acknowledged these (not others sent concurrently)."""
        mine = [
            (await self._producer.send(out.topic, value=out.value, key=out.key, headers=list(out.headers)), out)
            for out in records
        ]
        await _acknowledged(mine)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        await _acknowledged(pending)

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class AuditTrail:
    """The audit events a service publishes outside a transaction (refusals at its HTTP edge).

    Called as `trail(audit_type, reason, details, request_id)`; the reason is cut to 1 KiB.
    With `wait`, each call returns once Kafka has the event; otherwise it is enqueued.
    """

    def __init__(
        self, publisher: RecordPublisher, *, source: str, namespace: str, outcome: str = "denied", wait: bool = True
    ) -> None:
        self._publisher = publisher
        self._source = source
        self._ns = namespace
        self._outcome = outcome
        self._wait = wait

    async def __call__(self, audit_type: str, reason: str, details: JsonObject, request_id: str | None = None) -> None:
        record = audit(
            audit_type,
            source=self._source,
            namespace=self._ns,
            outcome=self._outcome,
            request_id=request_id,
            reason=reason[:1024],
            details=details,
        )
        if self._wait:
            await self._publisher.send_and_wait([record])
        else:
            await self._publisher.publish([record])


async def _acknowledged(sends: Sequence[tuple[asyncio.Future[object], Outgoing]]) -> None:
    """Wait for every send; run the after-commit effects of the records Kafka took; raise the first failure."""
    if not sends:
        return
    results = await asyncio.gather(*(fut for fut, _ in sends), return_exceptions=True)
    await run_after_commit(
        out for (_, out), result in zip(sends, results, strict=True) if not isinstance(result, BaseException)
    )
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        raise failures[0]
