"""The database-tracking loop (atb_runtime.tracking) on the real broker, with a SQLite tracker.

The tracker stores each record's row and the positions after it in one SQLite
transaction; `(topic, partition, offset)` is unique. What the tests show:

- a restarted loop goes on from the stored positions: it hands the tracker only
  records it has not stored, never the earlier ones again, even those of a batch
  Kafka's consumer fetched before the loop's seek took effect (Kafka's committed
  offsets are never used: the loop commits none);
- a uniqueness violation (another writer stored part of the batch first) is
  "already done": the loop seeks to the stored positions and hands over only
  what is missing, and every record ends up stored exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from atb_runtime import Incoming
from atb_runtime.tracking import Position, TrackingConfig, TrackingConsumer
from contracts import Topic, topic_name
from tests.waits import until

pytestmark = pytest.mark.kafka


class SqliteTracker:
    def __init__(self, path: Path, *, stale_reads: int = 0) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS rows (topic TEXT, part INTEGER, off INTEGER, value BLOB,"
            " UNIQUE (topic, part, off));"
            "CREATE TABLE IF NOT EXISTS positions (topic TEXT, part INTEGER, next INTEGER, PRIMARY KEY (topic, part));"
        )
        self._stale = stale_reads
        """How many reads of the positions still predate another writer's commit."""
        self.handed: list[list[int]] = []
        """The offsets of every batch `record` was given (committed or not)."""
        self.changed = asyncio.Event()

    async def positions(self) -> Mapping[Position, int]:
        if self._stale:
            self._stale -= 1
            return {}  # as read before another writer committed
        return {(t, p): n for t, p, n in self._db.execute("SELECT topic, part, next FROM positions")}

    async def record(self, records: Sequence[Incoming], positions: Mapping[Position, int]) -> None:
        self.handed.append([r.offset for r in records])
        self.store(records, positions)
        self.changed.set()

    def store(self, records: Sequence[Incoming], positions: Mapping[Position, int]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO rows VALUES (?, ?, ?, ?)", [(r.topic, r.partition, r.offset, r.value) for r in records]
            )
            self._db.executemany(
                "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET next = excluded.next",
                [(t, p, n) for (t, p), n in positions.items()],
            )

    async def tick(self) -> None:
        return None

    def stored(self) -> list[int]:
        return [off for (off,) in self._db.execute("SELECT off FROM rows ORDER BY off")]

    def stored_of(self, topic: str) -> list[int]:
        return [off for (off,) in self._db.execute("SELECT off FROM rows WHERE topic = ? ORDER BY off", (topic,))]

    def close(self) -> None:
        self._db.close()


async def _produce(bootstrap: str, topic: str, offsets: range) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for n in offsets:
            await producer.send(topic, value=f"record-{n}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


def _config(bootstrap: str, topic: str, group: str, instance: int = 0) -> TrackingConfig:
    return TrackingConfig(
        bootstrap=bootstrap,
        group_id=group,
        member_id=f"{group}-{instance}",
        client_id=group,
        topics=(topic,),
        poll_timeout_ms=100,
    )


async def _until(tracker: SqliteTracker, count: int, loop_task: asyncio.Task[None]) -> None:
    """Wait until `count` records are stored; a loop that died meanwhile is reported with its exception at once."""
    async with asyncio.timeout(120):  # a bound, not a pace
        while len(tracker.stored()) < count:
            tracker.changed.clear()
            changed = asyncio.ensure_future(tracker.changed.wait())
            try:
                await asyncio.wait({changed, loop_task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            if loop_task.done():
                raise AssertionError(f"the loop stopped with {len(tracker.stored())} of {count} stored") from (
                    loop_task.exception() if not loop_task.cancelled() else None
                )


@pytest.fixture
def topic(namespace: str) -> str:
    return topic_name(Topic.AUDIT, namespace)  # the records go to its partition 0


async def _run(loop: TrackingConsumer) -> asyncio.Task[None]:
    await loop.start()
    return asyncio.create_task(loop.run())


async def _stop(loop: TrackingConsumer, task: asyncio.Task[None]) -> None:
    await loop.stop()
    await task


async def test_a_restarted_loop_goes_on_from_the_stored_positions(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    await _produce(kafka_bootstrap, topic, range(20))
    first = SqliteTracker(tmp_path / "t.db")
    loop = _loop(kafka_bootstrap, topic, first)
    task = await _run(loop)
    await _until(first, 20, task)
    await _stop(loop, task)
    first.close()

    await _produce(kafka_bootstrap, topic, range(20, 25))
    second = SqliteTracker(tmp_path / "t.db")
    loop = _loop(kafka_bootstrap, topic, second)  # the same group and member: a restart
    task = await _run(loop)
    await _until(second, 25, task)
    await _stop(loop, task)
    # The loop seeks each partition it is given to the stored position. Kafka's consumer may still deliver one
    # batch fetched from the group's reset position (its beginning: the loop commits no offsets) before that seek
    # took effect (1 restart in 10 with the machine busy; in full runs the loop then died on the unique key and the
    # test waited out its bound). The loop drops what lies below the position (`stale_dropped`; its own test:
    # tests/unit/test_tracking_floor.py), so only the new records reach the store.
    assert [offset for batch in second.handed for offset in batch] == list(range(20, 25))
    assert loop.already_recorded == 0
    assert 0 <= loop.stale_dropped <= 20  # only records below the stored position are ever dropped
    assert second.stored() == list(range(25))
    second.close()


def _loop(bootstrap: str, topic: str, tracker: SqliteTracker) -> TrackingConsumer:
    """A loop that treats the store's unique key as "recorded already", as the audit sink does."""
    config = _config(bootstrap, topic, f"{topic}.tracking")
    return TrackingConsumer(config, tracker, already_recorded=(sqlite3.IntegrityError,))


async def test_a_uniqueness_violation_means_already_done(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    await _produce(kafka_bootstrap, topic, range(20))
    tracker = SqliteTracker(tmp_path / "t.db", stale_reads=2)
    # Another writer stored the first ten and their position; this loop's reads of the positions (at its
    # start and at the assignment) predate that commit, so it starts from the beginning.
    others = [Incoming(topic, 0, n, None, f"record-{n}".encode()) for n in range(10)]
    tracker.store(others, {(topic, 0): 10})
    loop = _loop(kafka_bootstrap, topic, tracker)
    task = await _run(loop)
    await _until(tracker, 20, task)
    await _stop(loop, task)
    # Every batch holding a stored offset is refused as a whole and the loop seeks to the stored position; a
    # fetch already under way when it seeks can hand one more such batch (seen in a full run), refused the same way.
    refused = [batch for batch in tracker.handed if min(batch) < 10]
    taken = [batch for batch in tracker.handed if min(batch) >= 10]
    assert tracker.handed[0][0] == 0  # refused: its first rows were stored already
    assert loop.already_recorded == len(refused) >= 1
    assert [offset for batch in taken for offset in batch] == list(range(10, 20))
    assert tracker.stored() == list(range(20))
    tracker.close()


async def _recreate(bootstrap: str, topic: str) -> None:
    """Delete `topic` and make it again, empty (Kafka finishes a deletion in the background: retried)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])

        async def made() -> bool:
            response = await admin.create_topics([NewTopic(topic, 1, 1)])
            errors = [error for _, error, *_ in response.topic_errors]
            return errors == [0]

        await until(made, bool, timeout=60, what=f"{topic} made again after its deletion", interval=0.2)
    finally:
        await admin.close()


async def test_a_partition_whose_log_ends_below_the_stored_position_is_set_aside_loudly(
    kafka_bootstrap: str, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The topic deleted and made again: its new records reuse offsets the store holds. They were dropped
    as "fetched before the seek", quietly, and the lag read zero; now the partition is set aside and named."""
    rewound, steady = f"{namespace}rewound", f"{namespace}steady"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(rewound, 1, 1), NewTopic(steady, 1, 1)])
    finally:
        await admin.close()
    await _produce(kafka_bootstrap, rewound, range(5))
    config = replace(_config(kafka_bootstrap, rewound, f"{namespace}rewind"), topics=(rewound, steady))
    first = SqliteTracker(tmp_path / "t.db")
    loop = TrackingConsumer(config, first, already_recorded=(sqlite3.IntegrityError,))
    task = await _run(loop)
    await _until(first, 5, task)
    await _stop(loop, task)
    first.close()

    await _recreate(kafka_bootstrap, rewound)
    await _produce(kafka_bootstrap, rewound, range(2))  # offsets 0 and 1 again
    await _produce(kafka_bootstrap, steady, range(3))
    second = SqliteTracker(tmp_path / "t.db")
    loop = TrackingConsumer(config, second, already_recorded=(sqlite3.IntegrityError,))
    task = await _run(loop)
    caplog.set_level(logging.ERROR, logger="atb_runtime.tracking")
    await _until(second, 5 + 3, task)  # the other topic goes on

    async def aside() -> dict[TopicPartition, tuple[int, int]]:
        return dict(loop.rewound)

    found = await until(aside, bool, timeout=60, what="the recreated partition set aside")
    await _stop(loop, task)
    assert found == {TopicPartition(rewound, 0): (5, 2)}
    assert second.stored_of(rewound) == list(range(5))  # the first life's: nothing of the new log
    assert second.stored_of(steady) == list(range(3))
    assert loop.stale_dropped == 0  # not counted as the benign race
    gauge = REGISTRY.get_sample_value(
        "atb_tracking_partition_rewound", {"consumer": config.client_id, "topic": rewound, "partition": "0"}
    )
    assert gauge == 1
    assert any("ends at offset 2, below the position 5" in r.getMessage() for r in caplog.records)
    second.close()
