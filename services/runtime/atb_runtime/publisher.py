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
        self._pending: list[asyncio.Future[object]] = []
        self._effects: list[Outgoing] = []

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
            if out.after_commit is not None:
                self._effects.append(out)

    async def send_and_wait(self, records: Sequence[Outgoing]) -> None:
        """Send records and wait until Kafka acknowledged these (not others sent concurrently)."""
        mine = [
            await self._producer.send(out.topic, value=out.value, key=out.key, headers=list(out.headers))
            for out in records
        ]
        if mine:
            await asyncio.gather(*mine)
        await run_after_commit(records)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        effects, self._effects = self._effects, []
        if pending:
            await asyncio.gather(*pending)
        await run_after_commit(effects)  # once Kafka has the records

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
