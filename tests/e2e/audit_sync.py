"""Prove a negative in the audit store: wait until the sink has consumed up to the topics' end offsets.

"Nothing else is there" is only true of a store that has read everything written so
far. `caught_up` takes every catalogue topic's end offsets (`read_committed`: the last
stable offsets) and waits until the sink's own committed positions, stored with its
rows, reach them. After that, a count of rows for a request is final for what was
written before the call. `stored` waits for given events on Kafka first, then for the
sink to have stored them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from atb_runtime.readback import StoredEvent, iter_records, topic_partitions
from audit_sink.adapters.db import AuditStore, make_engine
from contracts import Topic, topic_name
from tests.waits import events, until

__all__ = ["caught_up", "stored"]

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

    async def unread() -> list[tuple[str, int, int]]:
        return await _unread(bootstrap, ends, await asyncio.to_thread(store.offsets))

    # The sink's positions live in its database, written by another process: polled.
    await until(
        unread, lambda left: not left, timeout=timeout, what="the audit sink storing every record", interval=0.2
    )


async def stored(
    bootstrap: str,
    namespace: str,
    db_url: str,
    topic: Topic,
    match: Callable[[StoredEvent], bool],
    *,
    count: int = 1,
    timeout: float = 60,
    what: str,
) -> list[StoredEvent]:
    """Once `count` matching events are committed on `topic` (a consumer wait), return when the sink stored them.

    After it, the audit store holds those events and everything committed before them:
    read it once and assert.
    """
    found = await events(bootstrap, [topic_name(topic, namespace)], match, count=count, timeout=timeout, what=what)
    await caught_up(bootstrap, namespace, db_url, timeout=timeout)
    return found


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
