"""Read chosen partitions of a topic, from a time or the beginning, to their end, `read_committed`.

How a stateful consumer rebuilds what it committed: the approvals service its
changelog, the issuer the PoAs it already issued. The end offsets are taken
first, so records committed later are not waited for; aborted records are never
seen. With `since`, reading starts at the first offset whose timestamp is at or
after it (`offsets_for_times`), so a restore reads a bounded window however long
the topic's history is (docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import EventDecodeError, EventPayload, decode_envelope, payload_of

__all__ = ["StoredRecord", "read_committed", "read_records"]


@dataclass(frozen=True)
class StoredRecord:
    """One committed record as read back; `value` None is a tombstone."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


async def read_records(
    bootstrap: str, topic: str, partitions: Iterable[int], *, since: datetime | None = None
) -> list[StoredRecord]:
    """Every committed record of these partitions from `since` (or the beginning) to the end offsets at start."""
    tps = [TopicPartition(topic, p) for p in sorted(set(partitions))]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    records: list[StoredRecord] = []
    try:
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await _seek_start(consumer, tps, since)
        remaining = [tp for tp in tps if end[tp] > 0 and await consumer.position(tp) < end[tp]]
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for messages in batches.values():
                records.extend(
                    StoredRecord(m.partition, m.offset, m.key, m.value, m.timestamp or 0)
                    for m in messages
                    if m.offset < end[TopicPartition(topic, m.partition)]
                )
            remaining = [tp for tp in remaining if await consumer.position(tp) < end[tp]]
    finally:
        await consumer.stop()
    return records


async def _seek_start(consumer: AIOKafkaConsumer, tps: list[TopicPartition], since: datetime | None) -> None:
    if since is None:
        await consumer.seek_to_beginning(*tps)
        return
    found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
    for tp in tps:
        start = found.get(tp)
        if start is None:
            # No record at or after `since`: nothing to read here.
            await consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, start.offset)


async def read_committed(
    bootstrap: str, topic: str, partitions: Iterable[int], *, since: datetime | None = None
) -> list[EventPayload]:
    """The decoded payloads of `read_records`; records that do not decode (tombstones too) are skipped."""
    payloads: list[EventPayload] = []
    for record in await read_records(bootstrap, topic, partitions, since=since):
        if record.value is None:
            continue
        try:
            payloads.append(payload_of(decode_envelope(record.value)))
        except EventDecodeError:
            continue
    return payloads
