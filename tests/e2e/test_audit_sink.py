"""The audit sink as a real process on the real Kafka broker, on SQLite and on PostgreSQL (writer role).

Records on every kind of topic — requests, `atb.audit`, `atb.dlq`, garbage
bytes — are published while the sink is SIGKILLed and restarted. Afterwards the
store holds each published record exactly once (by topic/partition/offset), the
sink has signed and announced checkpoints on `atb.audit`, `atb audit tail`
shows them, and `verify_store` passes strictly over everything.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from atb.cli.audit_tail import follow
from atb.dev.stack import ServiceStack, StackConfig
from audit_sink.adapters.db import audit_events, make_engine
from audit_sink.adapters.ledger import CHECKPOINT_AUDIT_TYPE
from audit_sink.adapters.signing import load_verifier
from audit_sink.evidence import verify_store
from contracts import Topic, topic_name
from tests.audit_db import AuditDb
from tests.audit_support import event_bytes
from tests.e2e.audit_sync import caught_up
from tests.waits import records

TOPICS = (Topic.POA_REQUESTS, Topic.AUDIT, Topic.DLQ, Topic.BROKER_DECISIONS, Topic.KEYS)
N = 600


async def _publish(bootstrap: str, namespace: str, start: int, count: int) -> dict[tuple[str, int, int], bytes]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures, values = [], []
        for i in range(start, start + count):
            topic = topic_name(TOPICS[i % len(TOPICS)], namespace)
            value = b"not json \x00\xff" if i % 41 == 0 else event_bytes(i)
            values.append(value)
            futures.append(await producer.send(topic, value=value, key=f"req-{i % 7}".encode()))
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {(m.topic, m.partition, m.offset): value for m, value in zip(sent, values, strict=True)}


def _stored_raw(url: str) -> dict[tuple[str, int, int], bytes]:
    with make_engine(url).connect() as conn:
        query = select(audit_events.c.topic, audit_events.c.partition, audit_events.c.offset, audit_events.c.raw)
        return {(t, int(p), int(o)): bytes(raw) for t, p, o, raw in conn.execute(query)}


def _stored(url: str) -> list[tuple[str, int, int]]:
    with make_engine(url).connect() as conn:
        query = select(audit_events.c.topic, audit_events.c.partition, audit_events.c.offset)
        return [(t, int(p), int(o)) for t, p, o in conn.execute(query)]


async def test_sink_stores_every_record_once_through_sigkill_and_signs_checkpoints(
    kafka_bootstrap: str, namespace: str, audit_db: AuditDb, tmp_path: Path
) -> None:
    key_path = tmp_path / "checkpoint.key"
    env = {"ATB_CHECKPOINT_EVERY": "150", "ATB_CHECKPOINT_INTERVAL_S": "1", "ATB_CHECKPOINT_KEY_PATH": str(key_path)}
    config = StackConfig(
        kafka_bootstrap,
        "http://127.0.0.1:1",
        tmp_path,
        namespace=namespace,
        audit_db_url=audit_db.writer,
        extra_env=env,
    )
    stack = ServiceStack(config, services=("audit-sink",))
    await stack.start(ready_timeout=90)
    sent: dict[tuple[str, int, int], bytes] = {}
    try:
        for round_ in range(3):
            sent |= await _publish(kafka_bootstrap, namespace, round_ * N // 3, N // 3)
            await asyncio.sleep(0.3 * round_)  # the kill lands mid-batch in some rounds, between in others
            assert await stack.kill("audit-sink")
            await stack.restart("audit-sink", ready_timeout=90)
        published = set(sent)
        # Every record published is on Kafka: the sink's positions reaching the end offsets is the event.
        await caught_up(kafka_bootstrap, namespace, audit_db.owner)
        stored = await asyncio.to_thread(_stored, audit_db.owner)
        assert published <= set(stored), f"{len(published - set(stored))} records missing"
        # Once per position is the store's key; what can differ is what is stored there: the exact bytes sent.
        rows = await asyncio.to_thread(_stored_raw, audit_db.owner)
        wrong = [pos for pos, value in sent.items() if rows.get(pos) != value]
        assert not wrong, f"{len(wrong)} positions hold other bytes than were sent, e.g. {wrong[:3]}"
        # A checkpoint (interval 1 s) and its announcement come back through atb.audit: awaited there, then stored.
        announced = CHECKPOINT_AUDIT_TYPE.encode()
        await records(
            kafka_bootstrap,
            [topic_name(Topic.AUDIT, namespace)],
            lambda r: r.value is not None and announced in r.value,
            what="the sink's checkpoint announcement",
        )
        await caught_up(kafka_bootstrap, namespace, audit_db.owner)
    finally:
        await stack.stop()  # a graceful stop signs the last checkpoint
    key = load_verifier(str(key_path) + ".pub")
    report = verify_store(make_engine(audit_db.owner), key, strict=True)
    assert report.ok, report.problems
    assert report.checkpoints >= 2
    own = {(t, p, o) for t, p, o in _stored(audit_db.owner)} - published
    assert own, "the sink's own checkpoint announcements on atb.audit were not stored"

    lines: list[str] = []
    shown = await follow(
        kafka_bootstrap,
        namespace,
        {"audit_type": CHECKPOINT_AUDIT_TYPE},
        from_beginning=True,
        max_events=2,
        timeout=20,
        emit=lines.append,
    )
    assert shown == 2
    assert all(json.loads(line)["details"]["checkpoint"].startswith("atb.local/audit\n") for line in lines)
