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
from sqlalchemy import select

from atb_runtime.readback import StoredEvent, iter_records, topic_partitions
from audit_sink.adapters.db import AuditStore, audit_events, make_engine
from audit_sink.adapters.db import StoredEvent as StoredRow
from contracts import AuditEvent, EventPayload, Topic, topic_name
from tests.waits import events, until

__all__ = ["audit_rows", "caught_up", "request_rows", "stored", "stored_raw"]

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


async def audit_rows(
    bootstrap: str,
    namespace: str,
    db_url: str,
    request_id: str,
    audit_type: str,
    *,
    want: int = 1,
    timeout: float = 60,
) -> list[StoredRow]:
    """The stored audit events of `audit_type` for the request, once `want` are on atb.audit and stored."""
    await stored(
        bootstrap,
        namespace,
        db_url,
        Topic.AUDIT,
        lambda e: (
            isinstance(e.payload, AuditEvent)
            and e.payload.request_id == request_id
            and e.payload.audit_type == audit_type
        ),
        count=want,
        timeout=timeout,
        what=f"{want} x {audit_type} audited for {request_id}",
    )
    needle = f'"audit_type":"{audit_type}"'.encode()
    store = AuditStore(make_engine(db_url), "reader")
    return [r for r in await asyncio.to_thread(store.for_request, request_id) if needle in r.raw]


async def request_rows(
    bootstrap: str,
    namespace: str,
    db_url: str,
    request_id: str,
    kind: type[EventPayload],
    *,
    count: int = 1,
    timeout: float = 60,
) -> list[StoredRow]:
    """The request's stored `kind` events, once `count` are on their topic (the subject is the request) and stored."""
    await stored(
        bootstrap,
        namespace,
        db_url,
        kind.topic,
        lambda e: e.envelope.type == kind.event_type and e.envelope.subject == request_id,
        count=count,
        timeout=timeout,
        what=f"{count} x {kind.__name__} of {request_id}",
    )
    store = AuditStore(make_engine(db_url), "reader")
    return [r for r in await asyncio.to_thread(store.for_request, request_id) if r.event_type == kind.event_type]


async def stored_raw(
    bootstrap: str, namespace: str, db_url: str, kind: type[EventPayload], needle: str, *, timeout: float = 60
) -> str:
    """The stored bytes of the first `kind` event containing `needle`, once it is on its topic and stored."""
    await stored(
        bootstrap,
        namespace,
        db_url,
        kind.topic,
        lambda e: isinstance(e.payload, kind) and e.record.value is not None and needle.encode() in e.record.value,
        timeout=timeout,
        what=f"a {kind.__name__} with {needle}",
    )
    engine = make_engine(db_url)
    with engine.connect() as conn:
        for (raw,) in conn.execute(select(audit_events.c.raw).where(audit_events.c.event_type == kind.event_type)):
            if needle.encode() in raw:
                return bytes(raw).decode()
    raise AssertionError(f"the {kind.__name__} with {needle} is on Kafka but not in the audit store")


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


async def audit_count(
    bootstrap: str, namespace: str, db_url: str, audit_type: str, needle: str = "", *, want: int, timeout: float = 60
) -> int:
    """How many stored audit events of `audit_type` hold `needle`, once `want` of them are on atb.audit (a consumer
    wait) and the sink caught up with everything committed by then: with `want=0` it proves a count, not a wait."""
    wanted = needle.encode()

    def match(event: StoredEvent) -> bool:
        payload = event.payload
        return (
            isinstance(payload, AuditEvent)
            and payload.audit_type == audit_type
            and wanted in (event.record.value or b"")
        )

    if want:
        await events(
            bootstrap,
            [topic_name(Topic.AUDIT, namespace)],
            match,
            count=want,
            timeout=timeout,
            what=f"{want} {audit_type} with {needle!r} on atb.audit",
        )
    await caught_up(bootstrap, namespace, db_url, timeout=timeout)
    kind = f'"audit_type":"{audit_type}"'.encode()
    with make_engine(db_url).connect() as conn:
        rows = conn.execute(select(audit_events.c.raw).where(audit_events.c.event_type == AuditEvent.event_type))
        return sum(1 for (raw,) in rows if kind in raw and wanted in raw)
