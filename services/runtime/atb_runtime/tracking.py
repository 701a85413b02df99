"""Exactly-once into a database: the position is stored with the rows, in one transaction.

The loop for a service whose output is rows in its own database (the audit
sink), not records on Kafka. It is the tracking-record pattern of event-sourced
process applications: what a record produced and the position after it are
written by one database transaction, so a crash anywhere keeps both or
neither, and Kafka's own committed offsets are never used.

- On (re)assignment the loop asks the tracker for its stored positions
  (`Tracker.positions`: the next offset per topic partition) and seeks there;
  a partition with no stored position is read from its beginning. Records
  below a partition's stored position are never handed over: Kafka's consumer
  can still deliver a batch fetched from the group's reset position (the
  beginning) before the seek took effect, or even before the assignment's
  callback ran, and the loop drops those records (counted in `stale_dropped`).
  Its floors are the positions stored when it started, those it seeks to, and
  those of every batch it recorded.
- A partition whose log now ends below its floor (its high watermark is lower
  than the position stored for it) was deleted and recreated, or truncated: its
  new records reuse offsets the store already holds, so they can neither be
  stored nor told apart from the old ones. The loop does not drop them quietly:
  it sets the partition aside (paused, `rewound`), logs an error naming it, and
  sets `atb_tracking_partition_rewound` to 1 for it until the process restarts,
  while every other partition goes on.
- Each batch is handed to `Tracker.record` with the positions that follow it;
  the tracker stores its rows and those positions in one transaction.
- A uniqueness violation while recording (`AlreadyRecordedError`, or an
  exception type the tracker names, such as SQLAlchemy's `IntegrityError`)
  means another writer, or an earlier life of this one, recorded these records
  already: the loop does not retry them but seeks every assigned partition to
  the stored positions again and goes on from there.
- `Tracker.tick` runs after every poll (time-driven work, such as signing a
  checkpoint). With `progress`, once a second the loop reports which assigned
  partitions still have committed records it has not handed over.

Records are read `read_committed`, from the topics named or every topic
matching a pattern (new topics are found within `metadata_max_age_ms`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from prometheus_client import Gauge

from atb_runtime.lag import LagReporter
from atb_runtime.records import Incoming, received

__all__ = ["AlreadyRecordedError", "Position", "Tracker", "TrackingConfig", "TrackingConsumer", "group_member"]

log = logging.getLogger(__name__)

Position = tuple[str, int]
"""(topic, partition)."""


PARTITION_REWOUND = Gauge(
    "atb_tracking_partition_rewound",
    "1 while a tracking loop sets a partition aside: its log ends below the position stored for it"
    " (the topic was recreated or truncated), by consumer",
    ["consumer", "topic", "partition"],
)


class AlreadyRecordedError(Exception):
    """What a tracker raises when its store says (by a uniqueness constraint) that a record is recorded already."""


class Tracker(Protocol):
    """A service driven by `TrackingConsumer`."""

    async def positions(self) -> Mapping[Position, int]:
        """The next offset to read per topic partition, as stored with the rows."""
        ...

    async def record(self, records: Sequence[Incoming], positions: Mapping[Position, int]) -> None:
        """Store what `records` produce and `positions` (the offsets after them) in one transaction."""
        ...

    async def tick(self) -> None:
        """Time-driven work, after every poll."""
        ...


@dataclass(frozen=True)
class TrackingConfig:
    bootstrap: str
    group_id: str
    member_id: str
    """Static group membership (`group.instance.id`): one per instance."""
    client_id: str
    topics: tuple[str, ...] = ()
    pattern: str | None = None
    """Subscribe to every topic whose name matches (instead of `topics`)."""
    max_batch: int = 1000
    poll_timeout_ms: int = 200
    metadata_max_age_ms: int = 300_000
    progress_interval_s: float = 1.0
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 500


def group_member(
    bootstrap: str,
    group_id: str,
    member_id: str,
    client_id: str,
    metadata_max_age_ms: int = 300_000,
    *,
    fetch_min_bytes: int = 1,
    fetch_max_wait_ms: int = 500,
) -> AIOKafkaConsumer:
    """A static member of a consumer group that reads committed records and commits offsets only when told
    (a tracking loop commits none; `atb_runtime.acking` commits what is done); a new group starts at the
    beginning."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        group_id=group_id,
        group_instance_id=member_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        metadata_max_age_ms=metadata_max_age_ms,
        fetch_min_bytes=fetch_min_bytes,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


class TrackingConsumer:
    """Runs one tracking loop until stopped (see the module doc)."""

    def __init__(
        self,
        config: TrackingConfig,
        tracker: Tracker,
        *,
        already_recorded: tuple[type[BaseException], ...] = (),
        progress: Callable[[Mapping[Position, bool]], object] | None = None,
    ) -> None:
        if bool(config.topics) == bool(config.pattern):
            raise ValueError("a tracking loop reads either named topics or a pattern")
        self._config = config
        self._lag = LagReporter(config.group_id)
        self._tracker = tracker
        self._already: tuple[type[BaseException], ...] = (AlreadyRecordedError, *already_recorded)
        self._progress = progress
        self._progress_at = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.recorded_batches = 0
        self.already_recorded = 0
        """Batches the store said were recorded already."""
        self.stale_dropped = 0
        """Records dropped because they lie below the position the loop sought (recorded already)."""
        self._floors: dict[TopicPartition, int] = {}
        """Per partition, a position below which everything is recorded (stored at start, sought, or recorded)."""
        self.rewound: dict[TopicPartition, tuple[int, int]] = {}
        """Partitions set aside because their log ends below the stored position: (stored position, log end)."""

    async def start(self) -> None:
        stored = await self._tracker.positions()
        self._floors = {TopicPartition(topic, partition): offset for (topic, partition), offset in stored.items()}
        config = self._config
        self._consumer = group_member(
            config.bootstrap,
            config.group_id,
            config.member_id,
            config.client_id,
            config.metadata_max_age_ms,
            fetch_min_bytes=config.fetch_min_bytes,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
        )
        listener = _SeekToTracked(self)
        if self._config.pattern is not None:
            self._consumer.subscribe(pattern=self._config.pattern, listener=listener)
        else:
            self._consumer.subscribe(list(self._config.topics), listener=listener)
        await self._consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer.stop()

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        while not self._stopping.is_set():
            config = self._config
            batches = await consumer.getmany(timeout_ms=config.poll_timeout_ms, max_records=config.max_batch)
            await self._lag.report(consumer)
            if batches:
                await self._record(batches)
            await self._tracker.tick()
            await self._report_progress()

    async def seek_to_tracked(self, partitions: Sequence[TopicPartition]) -> None:
        """Seek each partition to its stored position (its beginning when it has none)."""
        consumer = self._consumer
        assert consumer is not None
        stored = await self._tracker.positions()
        # Every floor first, then the seeks: a seek to the beginning awaits, and a batch may be handed over
        # meanwhile for a partition whose turn has not come.
        fresh: list[TopicPartition] = []
        for tp in partitions:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                self._floors.pop(tp, None)
                fresh.append(tp)
            else:
                self._floors[tp] = offset
                consumer.seek(tp, offset)
        for tp in fresh:
            await consumer.seek_to_beginning(tp)
        # An assignment resumes every partition it gives: those set aside stay so.
        aside = [tp for tp in partitions if tp in self.rewound]
        if aside:
            consumer.pause(*aside)

    async def _record(self, batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        records: list[Incoming] = []
        positions: dict[Position, int] = {}
        for tp, fetched in batches.items():
            if tp in self.rewound:
                continue  # fetched before the pause took effect
            floor = self._floors.get(tp, 0)
            messages = [msg for msg in fetched if msg.offset >= floor]
            if len(messages) < len(fetched):
                end = self._consumer.highwater(tp) if self._consumer is not None else None
                if end is not None and end < floor:
                    self._set_aside(tp, floor, end)
                    continue
                self.stale_dropped += len(fetched) - len(messages)
                log.info(
                    "%s: %d records below %s's stored position %d dropped (fetched before the seek)",
                    self._config.client_id,
                    len(fetched) - len(messages),
                    tp,
                    floor,
                )
            if not messages:
                continue
            records.extend(received(msg) for msg in messages)
            positions[(tp.topic, tp.partition)] = messages[-1].offset + 1
        if not records:
            return
        try:
            await self._tracker.record(records, positions)
        except self._already as exc:
            # Recorded already (by another writer, or before a crash): go on from what is stored.
            self.already_recorded += 1
            log.warning("%s: batch recorded already (%s); seeking to the stored positions", self._config.client_id, exc)
            consumer = self._consumer
            assert consumer is not None
            await self.seek_to_tracked(sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition)))
            return
        self.recorded_batches += 1
        for (topic, partition), offset in positions.items():
            tp = TopicPartition(topic, partition)
            self._floors[tp] = max(offset, self._floors.get(tp, 0))

    def _set_aside(self, tp: TopicPartition, floor: int, end: int) -> None:
        """A partition whose log ends below what is stored for it: paused, named and counted, never dropped quietly."""
        self.rewound[tp] = (floor, end)
        if self._consumer is not None:
            self._consumer.pause(tp)
        PARTITION_REWOUND.labels(self._config.client_id, tp.topic, str(tp.partition)).set(1)
        log.error(
            "%s: %s ends at offset %d, below the position %d stored for it: the topic was deleted and recreated,"
            " or truncated. Its records reuse offsets already stored and cannot be told apart from them; the"
            " partition is set aside (nothing of it is read) until this process restarts. See docs/runbook.md"
            " (ATBTrackingPartitionRewound).",
            self._config.client_id,
            tp,
            end,
            floor,
        )

    async def _report_progress(self) -> None:
        consumer = self._consumer
        now = time.time()
        if self._progress is None or consumer is None or now - self._progress_at < self._config.progress_interval_s:
            return
        self._progress_at = now
        behind: dict[Position, bool] = {}
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)  # read_committed: what the loop can read
            if end is None:
                continue
            behind[(tp.topic, tp.partition)] = await consumer.position(tp) < end
        self._progress(behind)


class _SeekToTracked(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, loop: TrackingConsumer) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._loop.seek_to_tracked(assigned)
