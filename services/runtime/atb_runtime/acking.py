"""At least once, for work outside Kafka: a record's offset is committed only once the work it started is done.

For effects that cannot join a Kafka transaction and must outlive a crash (the
issuer's outcome callbacks, an HTTP call to someone else's server):

- records are read `read_committed`, in a consumer group (each partition has one
  reader among the instances), from the group's committed offsets (the beginning
  for a new group: the work decides what is too old to do);
- each record is handed to `start(record)`, which returns None (nothing to do)
  or an awaitable that finishes when the work is done: succeeded, or given up
  for good. The awaitables run side by side, as tasks;
- per partition the offset committed is that of the first record whose work is
  not done yet (`Watermarks`). A crash, SIGKILL included, loses no work: the
  next reader of the partition starts again from there, so work done after that
  record is done again. Work must therefore be recognisable when repeated (the
  callbacks carry a delivery id);
- commits follow each poll that moved a watermark, and a revocation (what is
  done of the revoked partitions). A commit that fails leaves its offsets due,
  for the next. A revocation cancels the revoked partitions' work not done (their
  next owner, maybe this member again, reads it and does it again), and nothing
  fetched before a rebalance is noted after it; a stop cancels all work not done,
  which is then read again, and commits the rest;
- at most `max_pending` records' work at a time: beyond it, the loop goes on
  polling (a member that stops polling is dropped from its group) with every
  partition paused until some of it is done;
- a `start` that raises, or work that raises, is logged and counts as done:
  one bad record never holds a partition back. Nor does a failure of the loop
  itself stop it: it is logged, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from atb_runtime.lag import LagReporter
from atb_runtime.records import Incoming, received
from atb_runtime.tracking import group_member

__all__ = ["AckingConfig", "AckingConsumer", "Start", "Watermarks"]

log = logging.getLogger(__name__)


Start = Callable[[Incoming], Awaitable[Awaitable[object] | None]]
"""Starts a record's work: None when there is none, else an awaitable finishing with it."""


class Watermarks:
    """Per partition, the offset below which every record's work is done (pure bookkeeping).

    `seen` notes a record in offset order, with its work (None: none, or done already).
    `due` returns, per partition, the watermark when it is past what was last committed;
    `committed` records a commit that succeeded (a failed one is simply due again). Work
    that failed is done (given up); work that was cancelled is not (it is to be read and
    done again).
    """

    def __init__(self) -> None:
        self._open: dict[TopicPartition, deque[tuple[int, asyncio.Future[object] | None]]] = {}
        self._mark: dict[TopicPartition, int] = {}
        """Per partition, the offset of the first record whose work is not done (all before it are)."""
        self._acked: dict[TopicPartition, int] = {}
        """Per partition, the offset last committed."""

    def seen(self, tp: TopicPartition, offset: int, work: asyncio.Future[object] | None) -> None:
        queue = self._open.setdefault(tp, deque())
        if work is None and not queue:
            self._mark[tp] = offset + 1  # nothing to wait for, nothing before it to wait for (most records)
        else:
            queue.append((offset, work))

    @property
    def pending(self) -> list[asyncio.Future[object]]:
        """The work not done yet, oldest first per partition."""
        return [work for queue in self._open.values() for _, work in queue if work is not None and not work.done()]

    def due(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Drop the records done from the front of each partition's queue; {partition: offset to commit}
        for each whose watermark is past its last commit."""
        for tp in list(self._open) if partitions is None else partitions:
            queue = self._open.get(tp)
            while queue and _finished(queue[0][1]):
                self._mark[tp] = queue.popleft()[0] + 1
        chosen = self._mark if partitions is None else {tp: self._mark[tp] for tp in partitions if tp in self._mark}
        return {tp: mark for tp, mark in chosen.items() if mark > self._acked.get(tp, -1)}

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._acked[tp] = max(offset, self._acked.get(tp, -1))

    def forget(self, partitions: Iterable[TopicPartition]) -> list[asyncio.Future[object]]:
        """Partitions no longer ours: their work not done, which the next owner reads and does again."""
        left: list[asyncio.Future[object]] = []
        for tp in partitions:
            queue = self._open.pop(tp, deque())
            left += [work for _, work in queue if work is not None and not work.done()]
            self._mark.pop(tp, None)
            self._acked.pop(tp, None)
        return left


def _finished(work: asyncio.Future[object] | None) -> bool:
    """Done, failed included; not cancelled (a stop cancels work that must then be read again)."""
    return work is None or (work.done() and not work.cancelled())


@dataclass(frozen=True)
class AckingConfig:
    bootstrap: str
    group_id: str
    member_id: str
    """Static group membership (`group.instance.id`): one per instance, so a restart takes its partitions back."""
    client_id: str
    topics: tuple[str, ...]
    max_batch: int = 500
    poll_timeout_ms: int = 200
    max_pending: int = 10_000
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 500
    """Kafka's `fetch.min.bytes` and `fetch.max.wait.ms`: larger fetches cost less CPU per record, and
    delay a record by at most the wait."""


class AckingConsumer:
    """Runs the loop of the module doc in the background (a runner component: start, stop)."""

    def __init__(self, config: AckingConfig, start: Start) -> None:
        self._config = config
        self._start = start
        self._marks = Watermarks()
        self._lag = LagReporter(config.group_id)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Future[object]] = set()
        """Every piece of work under way, its partition ours or not (a stop cancels them all)."""
        self._generation = 0
        """Counts revocations: work begun before one is not noted for a partition that may be gone."""
        self.started = 0
        """Records whose work was started (not None)."""
        self.committed = 0
        """Commits made."""

    async def start(self) -> None:
        config = self._config
        self._consumer = group_member(
            config.bootstrap,
            config.group_id,
            config.member_id,
            config.client_id,
            fetch_min_bytes=config.fetch_min_bytes,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
        )
        self._consumer.subscribe(list(config.topics), listener=_CommitOnRevoke(self))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"acking-{config.group_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        due = self._marks.due()  # before the cancellations: cancelled work is not done
        for work in list(self._work):
            work.cancel()  # read again by whoever reads the partition next
        if self._consumer is not None:
            await self._commit(due, "on stop")
            await self._consumer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                await self._step(consumer)
            except asyncio.CancelledError:
                raise
            except Exception:  # never stop reading: a failure here must not leave callbacks untold
                log.exception("%s: the loop failed; going on", self._config.client_id)
                await asyncio.sleep(1.0)

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        # Beyond max_pending, keep polling (a member that stops polling is dropped from its group) with
        # every partition paused, until some work is done.
        if len(self._work) >= self._config.max_pending:
            consumer.pause(*consumer.assignment())
        elif paused := consumer.paused():
            consumer.resume(*paused)
        config = self._config
        batches = await consumer.getmany(timeout_ms=config.poll_timeout_ms, max_records=config.max_batch)
        # What getmany returns is of the assignment in force when it returned (aiokafka drops records
        # fetched for an earlier one): a revocation from here on makes the rest stale.
        generation = self._generation
        await self._lag.report(consumer)
        await self._note(batches, generation)
        await self._commit(self._marks.due(), "")

    async def _note(
        self, batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]], generation: int
    ) -> None:
        """Start each record's work, in offset order per partition. Once a revocation happened since
        getmany returned, nothing more is noted: the reassignment put every position back to its committed
        offset, so the partitions' owners read the rest again (noting it would put records ahead of their
        own re-read, and a watermark past unfinished work)."""
        for tp, messages in batches.items():
            for message in messages:
                if generation != self._generation:
                    return
                work = await self._begin(received(message))
                if generation != self._generation:
                    if work is not None:
                        work.cancel()
                    return
                self._marks.seen(tp, message.offset, work)

    async def _begin(self, record: Incoming) -> asyncio.Future[object] | None:
        try:
            work = await self._start(record)
        except Exception:
            where = f"{record.topic}-{record.partition}@{record.offset}"
            log.exception("%s: %s: not started", self._config.client_id, where)
            return None
        if work is None:
            return None
        self.started += 1
        task: asyncio.Future[object] = asyncio.ensure_future(work)
        self._work.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Future[object]) -> None:
        self._work.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: work failed and is given up: %r", self._config.client_id, exc)

    async def _commit(self, offsets: dict[TopicPartition, int], when: str) -> None:
        """Commit `offsets`; a failure is logged and the offsets stay due (committed at the next chance)."""
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("%s: commit %s failed (%s): the offsets stay due", self._config.client_id, when, exc)
            return
        self._marks.committed(offsets)
        self.committed += 1

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        """Commit what is done of the partitions leaving; cancel their work not done, which their next owner
        (maybe this member again) reads and does again."""
        self._generation += 1
        await self._commit(self._marks.due(partitions), "on revocation")
        for work in self._marks.forget(partitions):
            work.cancel()


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, loop: AckingConsumer) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._loop.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None
