"""The one way to read committed records back: these partitions, from an offset or a time, to the end.

    async for record in iter_records(bootstrap, {"atb.poa.issued": None, "atb.approvals.outcomes": [0, 2]},
                                     since=an_hour_ago):
        ...
    events = await read_events(bootstrap, ["atb.audit"])          # decoded, undecodable skipped
    records = await read_records(bootstrap, topic, partitions, since=since)

What every reader gets:

- **Partitions from the cluster.** A topic given without partitions is read on
  every partition its metadata names now, not the catalogue's count (a grown
  topic has more, docs/scaling.md). With `key`, only the partition Kafka's
  default partitioner gives that key on each topic, computed from the topic's
  real partition count: where a request's records are. A topic (or partition)
  that does not exist has nothing to read; it is skipped, never waited for.
- **A start.** The beginning, or the first offset whose timestamp is at or after
  `since` (`offsets_for_times`; none: nothing to read there), or an explicit
  offset per partition (`start`), which wins over both.
- **An end taken at start.** The end offsets are read before the first fetch,
  so records committed later are not waited for and the read always finishes;
  with `follow_s`, records committed later are read too, for that many seconds
  after the start (the bounded follow of `atb trace --follow` and the SDK's
  waiters). Followers that tail forever and rebuild views (`follow.py`) and the
  resumable replay scan (`atb/replay/scan.py`, which commits its progress to a
  group of its own) are not reads to the end and have their own loops; they
  share `topic_partitions` with this module.
- **`read_committed`.** Records of aborted transactions are never seen, and the
  end offsets are the last stable offsets.

The approvals service restores its changelog with it, the issuer the PoAs it
issued, and `atb trace`, `atb vote`/`pending`, `atb poa`, `atb replay` and the
SDK's waiters read through it.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from contracts import Envelope, EventDecodeError, EventPayload, decode_envelope, payload_of
from contracts.limits import PRODUCER_MAX_REQUEST_SIZE

__all__ = [
    "StoredEvent",
    "StoredRecord",
    "Topics",
    "decode",
    "iter_records",
    "partition_for",
    "read_committed",
    "read_events",
    "read_records",
    "topic_partitions",
]

Topics = Iterable[str] | Mapping[str, Iterable[int] | None]
"""Topic names (every partition), or topic name → its partitions (None: every partition)."""


@dataclass(frozen=True)
class StoredRecord:
    """One committed record as read back; `value` None is a tombstone."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    topic: str = ""


@dataclass(frozen=True)
class StoredEvent:
    """A record that decodes: its coordinates, its envelope (with the proof) and its payload."""

    record: StoredRecord
    envelope: Envelope
    payload: EventPayload


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives this key (murmur2, as the Java client)."""
    raw = key.encode() if isinstance(key, str) else key
    index: int = murmur2(raw) & 0x7FFFFFFF
    return index % partitions


def decode(record: StoredRecord) -> StoredEvent | None:
    """The record's event, or None when it does not decode (a tombstone does not)."""
    if record.value is None:
        return None
    try:
        envelope = decode_envelope(record.value)
        return StoredEvent(record, envelope, payload_of(envelope))
    except EventDecodeError:
        return None


async def topic_partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> dict[str, list[int]]:
    """Each existing topic's partitions, from a fresh metadata request; topics that do not exist are absent."""
    # `consumer.topics()` fetches the same metadata but keeps only the names and leaves the
    # client's cached cluster (what `partitions_for_topic` reads) as it was.
    cluster = await consumer._client.fetch_all_metadata()
    found: dict[str, list[int]] = {}
    for topic in topics:
        partitions = cluster.partitions_for_topic(topic)
        if partitions:
            found[topic] = sorted(partitions)
    return found


def _wanted(topics: Topics) -> dict[str, list[int] | None]:
    if isinstance(topics, Mapping):
        return {t: (None if ps is None else sorted(set(ps))) for t, ps in topics.items()}
    return dict.fromkeys(topics)


async def _assignment(consumer: AIOKafkaConsumer, topics: Topics, key: str | bytes | None) -> list[TopicPartition]:
    wanted = _wanted(topics)
    existing = await topic_partitions(consumer, wanted)
    tps: list[TopicPartition] = []
    for topic, asked in wanted.items():
        present = existing.get(topic)
        if not present:
            continue
        chosen = present if asked is None else [p for p in asked if p in present]
        if key is not None:
            own = partition_for(key, len(present))
            chosen = [p for p in chosen if p == own]
        tps.extend(TopicPartition(topic, p) for p in chosen)
    return tps


async def _seek_start(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    since: datetime | None,
    start: Mapping[TopicPartition, int],
) -> None:
    rest = [tp for tp in tps if tp not in start]
    for tp in tps:
        if tp in start:
            consumer.seek(tp, start[tp])
    if not rest:
        return
    if since is None:
        await consumer.seek_to_beginning(*rest)
        return
    found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in rest})
    for tp in rest:
        hit = found.get(tp)
        if hit is None:
            # No record at or after `since`: nothing to read here.
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, hit.offset)


async def iter_records(
    bootstrap: str,
    topics: Topics,
    *,
    since: datetime | None = None,
    start: Mapping[TopicPartition, int] | None = None,
    key: str | bytes | None = None,
    follow_s: float = 0.0,
    poll_ms: int = 500,
) -> AsyncGenerator[StoredRecord, None]:
    """Yield the committed records of `topics` from their start to the end offsets taken first (see the module).

    With `follow_s` > 0 (`math.inf`: until the caller stops), also what is committed later, until
    both the end offsets are reached and `follow_s` seconds have passed. Close the iterator
    (`contextlib.aclosing`) when leaving it early: its consumer is stopped then.
    """
    wanted = _wanted(topics)
    if all(ps is not None and not ps for ps in wanted.values()):
        return  # nothing asked for (a service that owns no partition): no consumer at all
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        # A record may be as large as its topic accepts (contracts/limits.py).
        max_partition_fetch_bytes=PRODUCER_MAX_REQUEST_SIZE,
        # Never "latest": a reset racing our own seek must not skip the records we came for
        # (seen: 2 reads in 10 from the beginning returned nothing).
        auto_offset_reset="earliest",
        # A fetch started before the seek is not waited out for long.
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    try:
        tps = await _assignment(consumer, wanted, key)
        if not tps:
            return
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await _seek_start(consumer, tps, since, start or {})
        following = follow_s > 0
        stop_at = time.monotonic() + follow_s if math.isfinite(follow_s) else math.inf
        remaining = [tp for tp in tps if await consumer.position(tp) < end[tp]]
        while remaining or (following and time.monotonic() < stop_at):
            # While following, every partition is fetched and nothing is dropped; otherwise only
            # those below their end, and records at or past it are not ours (the position is not
            # used again, so dropping them loses nothing).
            batches = await consumer.getmany(*(tps if following else remaining), timeout_ms=poll_ms, max_records=5000)
            for tp, messages in batches.items():
                for m in messages:
                    if following or m.offset < end[tp]:
                        yield StoredRecord(m.partition, m.offset, m.key, m.value, m.timestamp or 0, m.topic)
            remaining = [tp for tp in remaining if await consumer.position(tp) < end[tp]]
    finally:
        await consumer.stop()


async def read_records(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int] | None = None,
    *,
    since: datetime | None = None,
    start: Mapping[TopicPartition, int] | None = None,
) -> list[StoredRecord]:
    """Every committed record of these partitions of `topic` (None: all of them) to the end offsets at start."""
    return [r async for r in iter_records(bootstrap, {topic: partitions}, since=since, start=start)]


async def read_events(
    bootstrap: str, topics: Topics, *, since: datetime | None = None, key: str | bytes | None = None
) -> list[StoredEvent]:
    """`iter_records`, decoded: every record that decodes, with its envelope; the others are skipped."""
    events: list[StoredEvent] = []
    async for record in iter_records(bootstrap, topics, since=since, key=key):
        event = decode(record)
        if event is not None:
            events.append(event)
    return events


async def read_committed(
    bootstrap: str, topic: str, partitions: Iterable[int] | None = None, *, since: datetime | None = None
) -> list[EventPayload]:
    """The decoded payloads of `read_records`; records that do not decode (tombstones too) are skipped."""
    return [e.payload for e in await read_events(bootstrap, {topic: partitions}, since=since)]
