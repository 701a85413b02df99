"""Read chosen partitions of a topic from the beginning to their end, `read_committed`.

How a stateful consumer rebuilds what it committed: the approvals service its
changelog, the issuer the PoAs it already issued. The end offsets are taken
first, so records committed later are not waited for; aborted records are never
seen. Records that do not decode are skipped (their consumers dead-letter them).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import EventDecodeError, EventPayload, decode_envelope, payload_of

__all__ = ["read_committed"]


async def read_committed(bootstrap: str, topic: str, partitions: Iterable[int]) -> list[EventPayload]:
    tps = [TopicPartition(topic, p) for p in sorted(set(partitions))]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    payloads: list[EventPayload] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = [tp for tp in tps if end[tp] > 0]
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for messages in batches.values():
                for msg in messages:
                    try:
                        payloads.append(payload_of(decode_envelope(msg.value)))
                    except EventDecodeError:
                        continue
            remaining = [tp for tp in remaining if await consumer.position(tp) < end[tp]]
    finally:
        await consumer.stop()
    return payloads
