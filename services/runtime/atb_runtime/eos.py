"""Exactly-once consume → transform → produce on Kafka transactions.

A batch of input records is handed to a handler; the records it returns and the
consumer offsets of the batch are committed in one Kafka transaction
(`send_offsets_to_transaction`). A crash before the commit aborts the
transaction: its outputs are never visible to `read_committed` readers and the
inputs are read again. A crash after it cannot repeat it. That is guarantee 2 of
DESIGN.md §6 for stateless handlers, and the base for stateful ones (which
rebuild their state from their own committed output).

After any failure of a transaction, the producer is thrown away and a fresh one
is made before the next transaction (REFERENCE.md: delayed commits can tear
transactions), and the consumer is rewound to the committed offsets.

Batching is what makes this fast: one transaction per `getmany` batch, not per
record. The `transactional_id` is stable per service instance, so a restarted
instance fences its own zombie.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from atb_runtime.records import Incoming, Outgoing

__all__ = ["Handler", "ProcessorConfig", "RewindHook", "TransactionalProcessor", "TransientError"]

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[Incoming]], Awaitable[Sequence[Outgoing]]]
RewindHook = Callable[[], Awaitable[None]]
AssignHook = Callable[[list[TopicPartition]], Awaitable[None]]
TickHook = Callable[[], Awaitable[Sequence[Outgoing]]]


class TransientError(RuntimeError):
    """A handler could not finish a batch for now (a dependency is down): retry it later."""


@dataclass(frozen=True)
class ProcessorConfig:
    bootstrap: str
    topics: tuple[str, ...]
    group_id: str
    transactional_id: str
    client_id: str
    max_batch: int = 500
    poll_timeout_ms: int = 100
    transaction_timeout_s: float = 30.0


class TransactionalProcessor:
    """Runs one consume-transform-produce loop until stopped."""

    def __init__(
        self,
        config: ProcessorConfig,
        handler: Handler,
        on_rewind: RewindHook | None = None,
        *,
        on_assigned: AssignHook | None = None,
        tick: TickHook | None = None,
        tick_interval_s: float = 1.0,
    ) -> None:
        self._config = config
        self._handler = handler
        self._on_rewind = on_rewind
        self._on_assigned = on_assigned
        self._tick = tick
        self._tick_interval = tick_interval_s
        self._last_tick = 0.0
        self._pending_assignment: list[TopicPartition] | None = None
        self._restored = on_assigned is None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._backoff = 0.2
        self.committed_batches = 0
        self.committed_records = 0

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._config.bootstrap,
            client_id=self._config.client_id,
            transactional_id=self._config.transactional_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            transaction_timeout_ms=int(self._config.transaction_timeout_s * 1000) * 2,
        )

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._config.bootstrap,
            # Range assignment keeps co-partitioned topics together: partition p of
            # the requests topic and of the votes topic go to the same instance, so
            # a request's state and its votes meet in one place.
            partition_assignment_strategy=(RangePartitionAssignor,),
            client_id=self._config.client_id,
            group_id=self._config.group_id,
            # Static membership: a restarted instance takes its partitions back at
            # once instead of waiting for the dead member's session to time out.
            group_instance_id=self._config.transactional_id,
            session_timeout_ms=10_000,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        self._consumer.subscribe(list(self._config.topics), listener=_AssignListener(self._assigned))
        self._producer = self._new_producer()
        await self._producer.start()
        await self._consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def run(self) -> None:
        """Process batches until `stop()`; a failed batch is retried from committed offsets."""
        assert self._consumer is not None, "start() first"
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(
                timeout_ms=self._config.poll_timeout_ms, max_records=self._config.max_batch
            )
            if self._pending_assignment is not None:
                await self._restore(batches)
                continue
            if not self._restored:
                continue
            await self._maybe_tick()
            if not batches:
                continue
            records = [_incoming(msg) for tp in sorted(batches, key=_tp_sort) for msg in batches[tp]]
            offsets = {tp: msgs[-1].offset + 1 for tp, msgs in batches.items() if msgs}
            try:
                outputs = await self._handler(records)
                await asyncio.wait_for(self._commit(outputs, offsets), self._config.transaction_timeout_s)
            except TransientError as exc:
                log.warning("batch postponed (%s); retrying in %.1fs", exc, self._backoff)
                await self._rewind(list(offsets))
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, 5.0)
                continue
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("transaction failed (%s); fresh producer, rewinding %d partitions", exc, len(offsets))
                await self._recover(list(offsets))
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, 5.0)
                continue
            self._backoff = 0.2
            self.committed_batches += 1
            self.committed_records += len(records)

    def _assigned(self, assigned: list[TopicPartition]) -> None:
        # Called from the consumer's coordination task, concurrently with the loop:
        # only note it; the loop loads the state before it handles another record.
        self._pending_assignment = list(assigned)

    async def _restore(self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Load state for a new assignment; records fetched meanwhile are fetched again afterwards."""
        consumer = self._consumer
        assert consumer is not None
        assigned, self._pending_assignment = self._pending_assignment or [], None
        for tp, messages in fetched.items():
            if messages and tp in consumer.assignment():
                consumer.seek(tp, messages[0].offset)
        if self._on_assigned is not None:
            await self._on_assigned(assigned)
        self._restored = True
        log.info("state loaded for %d assigned partitions", len(assigned))

    async def _maybe_tick(self) -> None:
        """Time-driven outputs (deadlines), committed in a transaction of their own."""
        now = time.monotonic()
        if self._tick is None or now - self._last_tick < self._tick_interval:
            return
        self._last_tick = now
        try:
            outputs = await self._tick()
            if outputs:
                await asyncio.wait_for(self._commit(outputs, {}), self._config.transaction_timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("tick transaction failed (%s); fresh producer, state reloaded", exc)
            await self._recover([])

    async def _commit(self, outputs: Sequence[Outgoing], offsets: dict[TopicPartition, int]) -> None:
        producer = self._producer
        assert producer is not None
        await producer.begin_transaction()
        sends = [
            await producer.send(out.topic, value=out.value, key=out.key, headers=list(out.headers)) for out in outputs
        ]
        if offsets:
            await producer.send_offsets_to_transaction(offsets, self._config.group_id)
        await producer.commit_transaction()
        # The commit flushed every send; surface a per-record failure, if any.
        for fut in sends:
            fut.result()

    async def _recover(self, partitions: list[TopicPartition]) -> None:
        old = self._producer
        self._producer = None
        if old is not None:
            try:
                await old.abort_transaction()
            except Exception as exc:
                log.debug("abort after failure also failed: %s", exc)
            await old.stop()
        fresh = self._new_producer()
        await fresh.start()
        self._producer = fresh
        await self._rewind(partitions)

    async def _rewind(self, partitions: list[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        assigned = consumer.assignment()
        for tp in partitions:
            if tp in assigned:
                committed = await consumer.committed(tp)
                if committed is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, committed)
        if self._on_rewind is not None:
            await self._on_rewind()


async def each_record(
    records: Sequence[Incoming],
    handle_one: Callable[[Incoming], Awaitable[Sequence[Outgoing]]],
    on_error: Callable[[Incoming, Exception], Sequence[Outgoing]],
) -> list[Outgoing]:
    """Handle records one by one; an unexpected error dead-letters that record only.

    A TransientError (a dependency is down) is not the record's fault: it is
    raised, and the whole batch is retried later. Anything else is: the record
    goes to the dead-letter topic and the consumer keeps going (DESIGN.md §6.5).
    """
    out: list[Outgoing] = []
    for record in records:
        try:
            out.extend(await handle_one(record))
        except TransientError:
            raise
        except Exception as exc:
            log.exception("record %s:%d@%d failed", record.topic, record.partition, record.offset)
            out.extend(on_error(record, exc))
    return out


class _AssignListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Tells the processor about a new assignment, so it can load state before going on."""

    def __init__(self, note: Callable[[list[TopicPartition]], None]) -> None:
        self._note = note

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %d partitions", len(assigned))
        self._note(list(assigned))


def _tp_sort(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)


def _incoming(msg: object) -> Incoming:
    headers = tuple((k, bytes(v)) for k, v in (getattr(msg, "headers", None) or ()))
    return Incoming(
        topic=getattr(msg, "topic"),  # noqa: B009 - aiokafka ConsumerRecord is untyped
        partition=getattr(msg, "partition"),  # noqa: B009
        offset=getattr(msg, "offset"),  # noqa: B009
        key=getattr(msg, "key"),  # noqa: B009
        value=getattr(msg, "value"),  # noqa: B009
        headers=headers,
        timestamp_ms=getattr(msg, "timestamp", 0) or 0,
    )
