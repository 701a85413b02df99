"""Exactly-once consume → transform → produce on Kafka transactions, fenced per partition.

The unit of work is a *task*: one partition index of the (co-partitioned) input
topics. The records of a task are handed to the handler; the records it returns
and the task's input offsets commit in one Kafka transaction
(`send_offsets_to_transaction`). A crash before the commit aborts the
transaction: its outputs are never visible to `read_committed` readers and the
inputs are read again. A crash after it cannot repeat it.

**Fencing** (docs/scaling.md). Each task has a transactional producer of its own,
`transactional_id = <prefix>-<partition>`, the same id whichever instance owns
the task. When an instance is assigned a task it first initialises that
producer, which bumps the id's epoch: a zombie (an instance frozen past its
session timeout, or cut off) that still believes it owns the task can then never
commit for it again, and its open transaction is aborted (or, when its commit was
already under way, completed) before the initialisation returns. Only then does
the new owner load the task's state and read its committed offsets, so neither
can miss a write of the zombie's. This is the pattern Kafka Streams used before
KIP-447; aiokafka cannot send the group metadata that KIP-447 needs.

On revocation the in-flight batch finishes (or aborts) before the partitions are
released: the rebalance listener waits for the processing lock.

**Failures.** A fenced producer is replaced, the task's state reloaded and its
partitions rewound, never retried blindly. A transient failure (a broker down, a
timeout) does the same after a backoff, without limit: it is not a record's
fault. Any other failure may be a record's (an output too large to produce, a
handler bug): the task is then retried one record per transaction, and a record
that fails alone `max_record_attempts` times is dead-lettered by itself, so one
poison record costs one dead letter, never the pipeline.

A record placed on another partition than its key's (see `partitioning`) is
dead-lettered without reaching the handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    IllegalOperation,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    ProducerFenced,
    UnknownProducerId,
)
from prometheus_client import Counter, Histogram

from atb_runtime.lag import LagReporter
from atb_runtime.partitioning import partition_for
from atb_runtime.records import Incoming, Outgoing, run_after_commit
from atb_runtime.records import received as _incoming
from atb_runtime.tracing import consuming
from contracts.limits import PRODUCER_MAX_REQUEST_SIZE

__all__ = [
    "AssignHook",
    "Handler",
    "PoisonHook",
    "ProcessorConfig",
    "RewindHook",
    "TickHook",
    "TransactionalProcessor",
    "TransientError",
    "each_record",
]

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[Incoming]], Awaitable[Sequence[Outgoing]]]
AssignHook = Callable[[set[int]], Awaitable[None]]
"""Load the state of exactly these partition indexes (the instance's whole assignment)."""
RewindHook = Callable[[set[int]], Awaitable[None]]
"""Forget what was decided in memory for these partition indexes; reload what was committed."""
TickHook = Callable[[], Awaitable[Sequence[Outgoing]]]
PoisonHook = Callable[[Incoming, str, str], Sequence[Outgoing]]
"""`(record, code, reason)` → the dead letter (and its audit event) for a record set aside."""

FENCED_ERRORS: tuple[type[BaseException], ...] = (
    ProducerFenced,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    UnknownProducerId,
    # The producer's transaction was put in an error state under us by its background sender (a fencing or
    # coordinator error): "Can't send messages while not in transaction". Seen when an instance frozen past its
    # session wakes up mid-transaction (the scale-out soak); not a KafkaError, it used to end the loop.
    IllegalOperation,
)

COMMIT_SECONDS = Histogram(
    "atb_processor_commit_seconds",
    "One task's transaction: begin, the outputs, the offsets, the commit (every hop of a pipeline waits for one)",
    ["service"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0),
)
PROCESSOR_EVENTS = Counter(
    "atb_processor_events_total",
    "Exceptional events of the exactly-once processor, by service and kind "
    "(fenced, transient, isolated, poison_dead_lettered, misplaced, skipped, effects_dropped: after-commit effects "
    "of a transaction not known to have committed).",
    ["service", "kind"],
)


class TransientError(RuntimeError):
    """A handler could not finish a batch for now (a dependency is down): retry it later."""


@dataclass(frozen=True)
class ProcessorConfig:
    bootstrap: str
    topics: tuple[str, ...]
    group_id: str
    transactional_prefix: str
    """Producers are `<prefix>-<partition>`: one per task, whichever instance owns it."""
    member_id: str
    """Static group membership (`group.instance.id`): one per instance."""
    client_id: str
    service: str = "service"
    max_batch: int = 500
    poll_timeout_ms: int = 100
    fetch_max_wait_ms: int = 20
    """How long the broker may hold a fetch that finds nothing to return. A `read_committed` fetch
    waiting for data is not answered when a transaction's commit makes records readable, only when
    this wait runs out, so it is added to every hop of a pipeline (Kafka's default, 500 ms, made a
    hop about 170 ms at p50; 20 ms, about 95 ms: docs/performance.md). Lower costs more empty
    fetches while idle."""
    transaction_timeout_s: float = 30.0
    max_record_attempts: int = 3
    max_request_size: int = PRODUCER_MAX_REQUEST_SIZE
    session_timeout_ms: int = 10_000


class _Verdict(Enum):
    OK = "ok"
    TRANSIENT = "transient"
    FENCED = "fenced"
    SUSPECT = "suspect"


@dataclass
class _Task:
    """One owned partition index: its producer and its isolation bookkeeping."""

    partition: int
    producer: AIOKafkaProducer | None = None
    isolate_until: dict[TopicPartition, int] = field(default_factory=dict)
    """Per input partition, the offset below which records go one per transaction."""
    attempts: dict[tuple[str, int, int], int] = field(default_factory=dict)
    last_error: str = ""
    in_transaction: bool = False
    """Whether the last failure happened inside a transaction (else in the handler: no producer to replace)."""
    verdict: _Verdict = _Verdict.OK
    """How the task's last unit ended."""
    effects_ran: bool = False
    """Whether the last transaction committed and ran its records' after-commit effects."""

    def isolating(self, tp: TopicPartition, offset: int) -> bool:
        return offset < self.isolate_until.get(tp, -1)


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
        poison: PoisonHook | None = None,
    ) -> None:
        self._config = config
        self._lag = LagReporter(config.group_id)
        self._handler = handler
        self._on_rewind = on_rewind
        self._on_assigned = on_assigned
        self._tick = tick
        self._tick_interval = tick_interval_s
        self._poison = poison
        self._last_tick = 0.0
        self._pending_assignment: list[TopicPartition] | None = None
        self._tasks: dict[int, _Task] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._backoff = 0.2
        self._partition_counts: dict[str, int] = {}
        self.committed_batches = 0
        self.committed_records = 0
        self.dead_lettered = 0

    # -- lifecycle -----------------------------------------------------------------------

    def _new_producer(self, partition: int) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._config.bootstrap,
            client_id=f"{self._config.client_id}-p{partition}",
            transactional_id=f"{self._config.transactional_prefix}-{partition}",
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_request_size=self._config.max_request_size,
            transaction_timeout_ms=int(self._config.transaction_timeout_s * 1000) * 2,
        )

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._config.bootstrap,
            # Range assignment keeps co-partitioned topics together: partition p of
            # the requests topic and of the votes topic go to the same instance, so
            # a request's state and its votes meet in one place (one task).
            partition_assignment_strategy=(RangePartitionAssignor,),
            client_id=self._config.client_id,
            group_id=self._config.group_id,
            # Static membership: a restarted instance takes its partitions back at
            # once instead of waiting for the dead member's session to time out.
            group_instance_id=self._config.member_id,
            session_timeout_ms=self._config.session_timeout_ms,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=self._config.fetch_max_wait_ms,
            auto_offset_reset="earliest",
            # Whatever a topic accepts can be fetched (contracts/limits.py).
            max_partition_fetch_bytes=self._config.max_request_size,
        )
        self._consumer.subscribe(list(self._config.topics), listener=_Listener(self))
        await self._consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer.stop()
        await self._close_tasks(list(self._tasks))

    @property
    def partitions(self) -> set[int]:
        """The partition indexes this instance owns now."""
        return set(self._tasks)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Process batches until `stop()`; failures are handled per task (see the module doc)."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        while not self._stopping.is_set():
            batches = await consumer.getmany(
                timeout_ms=self._config.poll_timeout_ms, max_records=self._config.max_batch
            )
            await self._lag.report(consumer)
            async with self._lock:
                if self._pending_assignment is not None:
                    await self._restore()
                    continue
                await self._maybe_tick()
                reopened = await self._reopen_failed()
                await self._process({p: parts for p, parts in self._by_task(batches).items() if p not in reopened})

    def _by_task(
        self, batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> dict[int, list[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]]:
        consumer = self._consumer
        assert consumer is not None
        assigned = consumer.assignment()
        grouped: dict[int, list[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]] = {}
        for tp in sorted(batches, key=_tp_sort):
            if batches[tp] and tp in assigned:
                grouped.setdefault(tp.partition, []).append((tp, batches[tp]))
        return grouped

    async def _process(
        self, by_task: dict[int, list[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]]
    ) -> None:
        """Handle each task's records, then commit the tasks' transactions concurrently."""
        prepared: list[tuple[_Task, list[Outgoing], dict[TopicPartition, int], int]] = []
        for partition, parts in by_task.items():
            task = self._tasks.get(partition)
            if task is None:
                continue  # revoked meanwhile: the new owner reads these again
            if task.producer is None:
                continue  # still failing to reopen (`_reopen_failed`)
            records = [(tp, msg) for tp, msgs in parts for msg in msgs]
            if any(task.isolating(tp, msg.offset) for tp, msg in records):
                await self._one_by_one(task, records)
                continue
            offsets = {tp: msgs[-1].offset + 1 for tp, msgs in parts}
            outputs = await self._handled(task, [msg for _tp, msg in records])
            if outputs is None:
                await self._failed(task, offsets)
                continue
            prepared.append((task, outputs, offsets, len(records)))
        verdicts = await asyncio.gather(*(self._commit(task, outs, offsets) for task, outs, offsets, _n in prepared))
        for (task, _outs, offsets, count), verdict in zip(prepared, verdicts, strict=True):
            if verdict is _Verdict.OK:
                self._committed(count)
            else:
                task.verdict = verdict
                await self._failed(task, offsets)

    async def _failed(self, task: _Task, offsets: dict[TopicPartition, int]) -> None:
        if task.verdict is _Verdict.SUSPECT:
            # Maybe one record's fault: take this range again one record at a time.
            PROCESSOR_EVENTS.labels(self._config.service, "isolated").inc()
            task.isolate_until.update(offsets)
            log.warning("task %d: batch failed (%s); retrying it one record at a time", task.partition, task.last_error)
        await self._fail(task, task.verdict)

    def _committed(self, records: int) -> None:
        self._backoff = 0.2
        self.committed_batches += 1
        self.committed_records += records

    async def _one_by_one(
        self, task: _Task, records: list[tuple[TopicPartition, ConsumerRecord[bytes, bytes]]]
    ) -> None:
        for tp, msg in records:
            verdict = await self._unit(task, [msg], {tp: msg.offset + 1})
            key = (tp.topic, tp.partition, msg.offset)
            if verdict is _Verdict.OK:
                task.attempts.pop(key, None)
                self._end_isolation(task, tp, msg.offset)
                continue
            if verdict is not _Verdict.SUSPECT:
                await self._fail(task, verdict)
                return
            task.attempts[key] = task.attempts.get(key, 0) + 1
            if task.attempts[key] < self._config.max_record_attempts:
                await self._fail(task, verdict)
                return
            # It failed alone, every time: it is the record's fault. Set it aside.
            await self._replace_producer(task)
            await self._rewound(task)
            await self._set_aside(task, tp, msg, task.last_error)
            task.attempts.pop(key, None)
            self._end_isolation(task, tp, msg.offset)
            await self._seek_committed(task)
            return

    def _end_isolation(self, task: _Task, tp: TopicPartition, offset: int) -> None:
        if offset + 1 >= task.isolate_until.get(tp, -1):
            task.isolate_until.pop(tp, None)

    async def _unit(
        self, task: _Task, messages: Sequence[ConsumerRecord[bytes, bytes]], offsets: Mapping[TopicPartition, int]
    ) -> _Verdict:
        """Handle records and commit their outputs with their offsets in the task's transaction."""
        outputs = await self._handled(task, messages)
        if outputs is None:
            return task.verdict
        verdict = await self._commit(task, outputs, offsets)
        if verdict is _Verdict.OK:
            self._committed(len(messages))
        return verdict

    async def _handled(self, task: _Task, messages: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Outgoing] | None:
        """The outputs for these records, or None (`task.verdict` says why) when the handler failed."""
        records = [_incoming(msg) for msg in messages]
        usable, outputs = self._misplaced(records)
        task.in_transaction = False
        try:
            # A consumer span per traced record; what the handler produces for its request carries it on.
            with consuming(self._config.service, usable):
                outputs += list(await self._handler(usable)) if usable else []
        except TransientError as exc:
            task.last_error, task.verdict = f"{exc}", _Verdict.TRANSIENT
            return None
        except Exception as exc:  # a handler bug may be one record's fault: isolate it
            log.exception("task %d: handler failed", task.partition)
            task.last_error, task.verdict = f"{type(exc).__name__}: {exc}", _Verdict.SUSPECT
            return None
        return outputs

    def _misplaced(self, records: list[Incoming]) -> tuple[list[Incoming], list[Outgoing]]:
        """Records on another partition than their key's are dead-lettered, not handled."""
        usable: list[Incoming] = []
        letters: list[Outgoing] = []
        for record in records:
            count = self._partition_count(record.topic)
            expected = partition_for(record.key, count) if record.key and count else record.partition
            if expected == record.partition or self._poison is None:
                usable.append(record)
                continue
            PROCESSOR_EVENTS.labels(self._config.service, "misplaced").inc()
            reason = f"key belongs on partition {expected} of {count}, the record is on {record.partition}"
            letters.extend(self._poison(record, "wrong_partition", reason))
        return usable, letters

    def _partition_count(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            consumer = self._consumer
            parts = consumer.partitions_for_topic(topic) if consumer is not None else None
            count = len(parts) if parts else 0
            if count:
                self._partition_counts[topic] = count
        return count

    async def _commit(
        self, task: _Task, outputs: Sequence[Outgoing], offsets: Mapping[TopicPartition, int]
    ) -> _Verdict:
        task.in_transaction, task.effects_ran = True, False
        verdict = await self._committed_verdict(task, outputs, offsets)
        if verdict is not _Verdict.OK and not task.effects_ran:
            self._effects_not_run(task, outputs)
        return verdict

    async def _committed_verdict(
        self, task: _Task, outputs: Sequence[Outgoing], offsets: Mapping[TopicPartition, int]
    ) -> _Verdict:
        try:
            with COMMIT_SECONDS.labels(self._config.service).time():
                await asyncio.wait_for(self._transaction(task, outputs, offsets), self._config.transaction_timeout_s)
        except FENCED_ERRORS as exc:
            task.last_error = f"{type(exc).__name__}: {exc}"
            return _Verdict.FENCED
        except (TimeoutError, OSError) as exc:
            task.last_error = f"{type(exc).__name__}: {exc}"
            return _Verdict.TRANSIENT
        except KafkaError as exc:
            task.last_error = f"{type(exc).__name__}: {exc}"
            return _Verdict.TRANSIENT if exc.retriable else _Verdict.SUSPECT
        return _Verdict.OK

    def _effects_not_run(self, task: _Task, outputs: Sequence[Outgoing]) -> None:
        """A transaction not known to have committed: its records' after-commit effects are dropped, loudly."""
        dropped = sum(1 for out in outputs if out.after_commit is not None)
        if dropped:
            PROCESSOR_EVENTS.labels(self._config.service, "effects_dropped").inc(dropped)
            log.warning(
                "task %d: %d after-commit effect(s) dropped, the transaction is not known to have committed (%s)",
                task.partition,
                dropped,
                task.last_error,
            )

    async def _transaction(
        self, task: _Task, outputs: Sequence[Outgoing], offsets: Mapping[TopicPartition, int]
    ) -> None:
        producer = task.producer
        assert producer is not None
        await producer.begin_transaction()
        sends = [
            await producer.send(out.topic, value=out.value, key=out.key, headers=list(out.headers)) for out in outputs
        ]
        if offsets:
            await producer.send_offsets_to_transaction(dict(offsets), self._config.group_id)
        await producer.commit_transaction()
        # Committed: the effects of the records Kafka took run now (an aborted or fenced transaction's never
        # do). The commit flushed every send; a per-record failure, if any, is raised after them.
        await run_after_commit(
            out for out, fut in zip(outputs, sends, strict=True) if fut.done() and fut.exception() is None
        )
        task.effects_ran = True
        for fut in sends:
            fut.result()

    async def _set_aside(self, task: _Task, tp: TopicPartition, msg: ConsumerRecord[bytes, bytes], error: str) -> None:
        """Commit a dead letter for one record with its offset; if even that fails, skip it loudly."""
        reason = f"failed alone {self._config.max_record_attempts} times: {error}"
        record = _incoming(msg)
        with consuming(self._config.service, [record]):
            letters = list(self._poison(record, "poison_record", reason)) if self._poison is not None else []
        if letters and await self._commit(task, letters, {tp: msg.offset + 1}) is _Verdict.OK:
            PROCESSOR_EVENTS.labels(self._config.service, "poison_dead_lettered").inc()
            self.dead_lettered += 1
            log.error(
                "%s:%d@%d dead-lettered after %d failed tries: %s",
                tp.topic,
                tp.partition,
                msg.offset,
                self._config.max_record_attempts,
                error,
            )
            return
        # The original stays on its topic and in the audit store; the letter could not be written.
        await self._replace_producer(task)
        if await self._commit(task, [], {tp: msg.offset + 1}) is _Verdict.OK:
            PROCESSOR_EVENTS.labels(self._config.service, "skipped").inc()
            log.critical(
                "%s:%d@%d skipped: neither it nor its dead letter could be committed (%s)",
                tp.topic,
                tp.partition,
                msg.offset,
                error,
            )

    # -- failures ------------------------------------------------------------------------

    async def _fail(self, task: _Task, verdict: _Verdict) -> None:
        PROCESSOR_EVENTS.labels(self._config.service, verdict.value).inc()
        log.warning("task %d: %s (%s); state reloaded, rewinding", task.partition, verdict.value, task.last_error)
        if verdict is _Verdict.TRANSIENT and not task.in_transaction:
            # The handler could not finish (a dependency is down): nothing to abort.
            await self._rewound(task)
            await self._seek_committed(task)
        else:
            await self._drop_producer(task)  # the next round fences, reloads and rewinds (`_reopen`)
        if verdict is _Verdict.FENCED:
            # Another instance took this task: let the group tell us so before we
            # fence it back (a stale claim here would only cost it a retry).
            self._lock.release()
            try:
                await asyncio.sleep(self._config.session_timeout_ms / 1000 / 3)
            finally:
                await self._lock.acquire()
            return
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, 5.0)

    async def _reopen_failed(self) -> set[int]:
        """Tasks whose producer was dropped after a failure: fence, reload and rewind them first.

        Their records fetched meanwhile are dropped (the rewind fetches them again).
        """
        reopened: set[int] = set()
        for task in [t for t in self._tasks.values() if t.producer is None]:
            reopened.add(task.partition)
            try:
                await self._reopen(task)
            except (KafkaError, OSError, TimeoutError) as exc:
                task.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("task %d: cannot reopen yet (%s)", task.partition, task.last_error)
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, 5.0)
        return reopened

    async def _reopen(self, task: _Task) -> None:
        if self._pending_assignment is not None or self._tasks.get(task.partition) is not task:
            return
        await self._replace_producer(task)
        await self._rewound(task)
        await self._seek_committed(task)

    async def _rewound(self, task: _Task) -> None:
        if self._on_rewind is not None:
            await self._on_rewind({task.partition})

    async def _drop_producer(self, task: _Task) -> None:
        old, task.producer = task.producer, None
        if old is None:
            return
        try:
            await old.abort_transaction()
        except Exception as exc:  # the producer is thrown away either way
            log.debug("abort after failure also failed: %s", exc)
        try:
            await old.stop()
        except Exception as exc:  # the producer is thrown away either way
            log.debug("stopping a failed producer failed: %s", exc)

    async def _replace_producer(self, task: _Task) -> None:
        """A new producer for the task; starting it fences every earlier one with the same id."""
        await self._drop_producer(task)
        fresh = self._new_producer(task.partition)
        await fresh.start()
        task.producer = fresh

    async def _seek_committed(self, task: _Task) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp in consumer.assignment():
            if tp.partition == task.partition:
                committed = await consumer.committed(tp)
                if committed is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, committed)

    # -- rebalancing ---------------------------------------------------------------------

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Called by the group before partitions go: the in-flight batch finishes first."""
        indexes = {tp.partition for tp in partitions}
        async with self._lock:
            await self._close_tasks([p for p in indexes if p in self._tasks])
        log.info("revoked %d partitions", len(indexes))

    def assigned(self, partitions: list[TopicPartition]) -> None:
        # Called from the consumer's coordination task, concurrently with the loop:
        # only note it; the loop fences, loads state and seeks before going on.
        self._pending_assignment = list(partitions)

    async def _close_tasks(self, indexes: list[int]) -> None:
        for index in indexes:
            task = self._tasks.pop(index, None)
            if task is not None:
                await self._drop_producer(task)

    async def _restore(self) -> None:
        """Fence, then load state, then seek to committed offsets, for a new assignment."""
        assigned, self._pending_assignment = self._pending_assignment or [], None
        indexes = {tp.partition for tp in assigned}
        await self._close_tasks([p for p in self._tasks if p not in indexes])
        tasks = [self._tasks.setdefault(p, _Task(p)) for p in sorted(indexes)]
        await asyncio.gather(*(self._replace_producer(task) for task in tasks))
        self._partition_counts.clear()
        if self._on_assigned is not None:
            await self._on_assigned(indexes)
        for task in tasks:
            await self._seek_committed(task)
        log.info("fenced and loaded %d tasks: %s", len(tasks), sorted(indexes))

    # -- time ----------------------------------------------------------------------------

    async def _maybe_tick(self) -> None:
        """Time-driven outputs (deadlines), committed per task in transactions of their own."""
        now = time.monotonic()
        if self._tick is None or now - self._last_tick < self._tick_interval or not self._tasks:
            return
        self._last_tick = now
        try:
            outputs = await self._tick()
        except TransientError as exc:
            log.warning("tick postponed: %s", exc)
            return
        by_task: dict[int, list[Outgoing]] = {}
        count = self._partition_count(self._config.topics[0])
        for out in outputs:
            by_task.setdefault(partition_for(out.key, count) if count else -1, []).append(out)
        for index, outs in by_task.items():
            task = self._tasks.get(index)
            if task is None or task.producer is None:
                # Not held (or being replaced, which reloads its state): these decisions are not ours to commit now.
                log.warning("tick: %d outputs for task %d, which this instance cannot commit now", len(outs), index)
                continue
            verdict = await self._commit(task, outs, {})
            if verdict is not _Verdict.OK:
                await self._fail(task, verdict)


async def each_record(
    records: Sequence[Incoming],
    handle_one: Callable[[Incoming], Awaitable[Sequence[Outgoing]]],
    on_error: Callable[[Incoming, Exception], Sequence[Outgoing]],
) -> list[Outgoing]:
    """Handle records one by one; an unexpected error dead-letters that record only.

    A TransientError (a dependency is down) is not the record's fault: it is
    raised, and the whole batch is retried later. Anything else is: the record
    goes to the dead-letter topic and the consumer keeps going.
    """
    out: list[Outgoing] = []
    for record in records:
        try:
            out.extend(await handle_one(record))
        except TransientError:
            raise
        except Exception as exc:  # dead-letter this record only
            log.exception("record %s:%d@%d failed", record.topic, record.partition, record.offset)
            out.extend(on_error(record, exc))
    return out


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, processor: TransactionalProcessor) -> None:
        self._processor = processor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._processor.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %d partitions", len(assigned))
        self._processor.assigned(list(assigned))


def _tp_sort(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)
