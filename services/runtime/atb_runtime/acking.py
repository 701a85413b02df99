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
  done of the revoked partitions); a stop cancels the work not done, which is
  then read again, and commits the rest;
- at most `max_pending` records' work at a time: beyond it, the loop waits for
  some of it to finish before it fetches more;
- a `start` that raises, or work that raises, is logged and counts as done:
  one bad record never holds a partition back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from atb_runtime.lag import LagReporter
from atb_runtime.records import Incoming, received

__all__ = ["AckingConfig", "AckingConsumer", "Start", "Watermarks"]

log = logging.getLogger(__name__)

Start = Callable[[Incoming], Awaitable[Awaitable[object] | None]]
"""Starts a record's work: None when there is none, else an awaitable finishing with it."""


class Watermarks:
    """Per partition, the offset below which every record's work is done (pure bookkeeping).

    `seen` notes a record in offset order, with its work (None: none, or done already);
    `advance` returns the partitions whose watermark moved, with the offset to commit. Work that
    failed is done (given up); work that was cancelled is not (it is to be read and done again).
    """

    def __init__(self) -> None:
        self._open: dict[TopicPartition, deque[tuple[int, asyncio.Future[object] | None]]] = {}
        self._committed: dict[TopicPartition, int] = {}

    def seen(self, tp: TopicPartition, offset: int, work: asyncio.Future[object] | None) -> None:
        self._open.setdefault(tp, deque()).append((offset, work))

    @property
    def pending(self) -> list[asyncio.Future[object]]:
        """The work not done yet, oldest first per partition."""
        return [work for queue in self._open.values() for _, work in queue if work is not None and not work.done()]

    def advance(self, partitions: Sequence[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Drop the records done from the front of each partition's queue; {partition: offset to commit}."""
        moved: dict[TopicPartition, int] = {}
        for tp in list(self._open) if partitions is None else partitions:
            queue = self._open.get(tp)
            last = None
            while queue and _finished(queue[0][1]):
                last = queue.popleft()[0]
            if last is not None and last + 1 > self._committed.get(tp, -1):
                self._committed[tp] = moved[tp] = last + 1
        return moved

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions no longer ours: their work not done is the new owner's to do again."""
        for tp in partitions:
            self._open.pop(tp, None)
            self._committed.pop(tp, None)


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


class AckingConsumer:
    """Runs the loop of the module doc in the background (a runner component: start, stop)."""

    def __init__(self, config: AckingConfig, start: Start) -> None:
        self._config = config
        self._start = start
        self._marks = Watermarks()
        self._lag = LagReporter(config.group_id)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.started = 0
        """Records whose work was started (not None)."""
        self.committed = 0
        """Commits made."""

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._config.bootstrap,
            client_id=self._config.client_id,
            group_id=self._config.group_id,
            group_instance_id=self._config.member_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        self._consumer.subscribe(list(self._config.topics), listener=_CommitOnRevoke(self))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"acking-{self._config.group_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for work in self._marks.pending:
            work.cancel()  # read again by whoever reads the partition next
        if self._consumer is not None:
            with contextlib.suppress(KafkaError):
                await self._commit(self._marks.advance())
            await self._consumer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                await self._step(consumer)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                log.warning("%s: %s; going on", self._config.client_id, exc)
                await asyncio.sleep(1.0)

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        pending = self._marks.pending
        if len(pending) >= self._config.max_pending:
            await asyncio.wait(pending, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        else:
            config = self._config
            batches = await consumer.getmany(timeout_ms=config.poll_timeout_ms, max_records=config.max_batch)
            await self._lag.report(consumer)
            for tp, messages in batches.items():
                for message in messages:
                    self._marks.seen(tp, message.offset, await self._begin(received(message)))
        await self._commit(self._marks.advance())

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
        task.add_done_callback(self._log_failure)
        return task

    def _log_failure(self, task: asyncio.Future[object]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: work failed and is given up: %r", self._config.client_id, exc)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets or self._consumer is None:
            return
        await self._consumer.commit(offsets)
        self.committed += 1

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        """Commit what is done of the partitions leaving; their work not done is read again by the next owner."""
        try:
            await self._commit(self._marks.advance(partitions))
        except KafkaError as exc:
            log.warning("%s: commit on revocation failed (%s): the next owner redoes more", self._config.client_id, exc)
        self._marks.forget(partitions)


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, loop: AckingConsumer) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._loop.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None
