"""Prove a negative in the audit store: wait until the sink has consumed up to the topics' end offsets.

"Nothing else is there" is only true of a store that has read everything written so
far. `caught_up` takes every catalogue topic's end offsets (`read_committed`: the last
stable offsets) and waits until the sink's own committed positions, stored with its
rows, reach them. After that, a count of rows for a request is final for what was
written before the call.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from atb_runtime.readback import iter_records, topic_partitions
from audit_sink.adapters.db import AuditStore, make_engine
from contracts import Topic, topic_name

__all__ = ["caught_up"]

SINK_GROUP = "atb-audit-sink"


async def caught_up(bootstrap: str, namespace: str, db_url: str, *, timeout: float = 60) -> None:
    """Return once the sink's stored positions reach every catalogue topic's end offset taken now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        names = [topic_name(topic, namespace) for topic in Topic]
        partitions = await topic_partitions(consumer, names)
        wanted = [TopicPartition(topic, p) for topic, ps in partitions.items() for p in ps]
        ends = {(tp.topic, tp.partition): offset for tp, offset in (await consumer.end_offsets(wanted)).items()}
    finally:
        await consumer.stop()
    store = AuditStore(make_engine(db_url), f"{SINK_GROUP}.{namespace.rstrip('.') or 'default'}")
    deadline = time.monotonic() + timeout
    unread: list[tuple[str, int, int]] = []
    while time.monotonic() < deadline:
        unread = await _unread(bootstrap, ends, await asyncio.to_thread(store.offsets))
        if not unread:
            return
        await asyncio.sleep(0.2)  # polls the sink's positions until nothing before the end offsets is unread
    raise AssertionError(f"the audit sink had not stored these records within {timeout}s: {unread[:10]}")


async def _unread(
    bootstrap: str, ends: dict[tuple[str, int], int], positions: dict[tuple[str, int], int]
) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of the committed records between the sink's position and the end offset.

    A position below the end offset is not yet "behind": the offsets in between may be
    transaction markers and aborted records, which no consumer ever sees.
    """
    start = {TopicPartition(*key): positions.get(key, 0) for key, end in ends.items() if positions.get(key, 0) < end}
    if not start:
        return []
    topics: dict[str, list[int]] = {}
    for tp in start:
        topics.setdefault(tp.topic, []).append(tp.partition)
    return [
        (r.topic, r.partition, r.offset)
        async for r in iter_records(bootstrap, topics, start=start)
        if r.offset < ends[(r.topic, r.partition)]
    ]
