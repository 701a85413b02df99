"""The one Kafka read helper (atb_runtime.readback) on the real broker, and `atb trace` on a grown topic."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from atb.trace.timeline import find_poa, read_request, resolve_request_id
from atb_runtime import outgoing
from atb_runtime.readback import StoredRecord, iter_records, partition_for, read_events, read_records
from contracts import PoaIssued, RequestExpired, Tier, Topic, topic_name

pytestmark = pytest.mark.kafka

ISSUER = "spiffe://atb.local/svc/issuer"
AGENT = "spiffe://atb.local/agent/grown"


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await p.start()
    yield p
    await p.stop()


def _issued(request_id: str, jti: str) -> PoaIssued:
    now = datetime.now(UTC).replace(microsecond=0)
    token = f"header.payload-{jti}.signature"
    return PoaIssued(
        request_id=request_id,
        jti=jti,
        kid="k1",
        agent_id=AGENT,
        action="crm.contact.read",
        tier=Tier.LOW,
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
        token=token,
        token_sha256="sha256:" + hashlib.sha256(token.encode()).hexdigest(),
    )


async def _grow(bootstrap: str, topics: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({t: NewPartitions(total_count=partitions) for t in topics})
    finally:
        await admin.close()


async def test_trace_reads_a_grown_topic_where_the_request_really_is(kafka_bootstrap: str, namespace: str) -> None:
    """Topics grown to 5 partitions (docs/scaling.md): a request's records are on its key's partition of 5.

    Before the helper, `atb trace` took the catalogue's 3: `resolve_request_id` did not look at
    partitions 3 and 4 (the jti was not resolved) and `read_request` read the key's partition of 3.
    """
    issued_topic = topic_name(Topic.POA_ISSUED, namespace)
    outcomes_topic = topic_name(Topic.OUTCOMES, namespace)
    await _grow(kafka_bootstrap, [issued_topic, outcomes_topic], 5)
    request_id = next(
        rid for i in range(1000) if partition_for(rid := f"req-grown-{i}", 5) >= 3 and partition_for(rid, 3) != 0
    )
    partition = partition_for(request_id, 5)
    poa = _issued(request_id, "jti-grown-1")
    expired = RequestExpired(
        request_id=request_id, deadline=datetime.now(UTC), approvals_counted=0, required_approvals=1
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)  # started after the growth: knows 5
    await producer.start()
    try:
        for topic in (issued_topic, outcomes_topic):  # the growth reaches the metadata a little later
            while len(await producer.partitions_for(topic)) < 5:
                await producer.client.force_metadata_update()
        for event in (poa, expired):
            record = outgoing(event, source=ISSUER, namespace=namespace)
            await producer.send_and_wait(record.topic, record.value, key=record.key, partition=partition)
    finally:
        await producer.stop()

    assert await resolve_request_id(kafka_bootstrap, "jti-grown-1", namespace) == request_id
    found = await find_poa(kafka_bootstrap, "jti-grown-1", namespace)
    assert found is not None
    assert (found.topic, found.partition, found.offset) == (issued_topic, partition, 0)  # not partition 0
    records = await read_request(kafka_bootstrap, request_id, namespace)
    assert {(r.topic, r.partition, type(r.payload)) for r in records} == {
        (issued_topic, partition, PoaIssued),
        (outcomes_topic, partition, RequestExpired),
    }


async def _put(
    producer: AIOKafkaProducer, topic: str, partition: int, values: list[bytes], timestamp_ms: int | None = None
) -> list[int]:
    """Offsets of the records written; their timestamps are `timestamp_ms` when given (else the producer's clock)."""
    offsets = []
    for v in values:
        meta = await producer.send_and_wait(topic, v, key=b"k", partition=partition, timestamp_ms=timestamp_ms)
        offsets.append(meta.offset)
    return offsets


async def test_read_to_the_end_taken_at_start_from_an_offset_a_time_or_the_beginning(
    kafka_bootstrap: str, namespace: str, producer: AIOKafkaProducer
) -> None:
    topic = topic_name(Topic.AUDIT, namespace)
    # Explicit record times: a `since` in the same millisecond as a record would be a coin toss.
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    await _put(producer, topic, 0, [b"a", b"b"], timestamp_ms=now_ms - 20)
    await _put(producer, topic, 2, [b"c"], timestamp_ms=now_ms - 10)
    middle = datetime.fromtimestamp((now_ms - 5) / 1000, UTC)  # 5 ms from each side: no rounding decides
    await _put(producer, topic, 0, [b"d"], timestamp_ms=now_ms)

    def values(records: list[StoredRecord]) -> set[tuple[int, bytes | None]]:
        return {(r.partition, r.value) for r in records}

    # Every partition from the metadata, from the beginning.
    assert values(await read_records(kafka_bootstrap, topic)) == {(0, b"a"), (0, b"b"), (2, b"c"), (0, b"d")}
    # Chosen partitions; none chosen: nothing (and no wait).
    assert values(await read_records(kafka_bootstrap, topic, [2])) == {(2, b"c")}
    assert await read_records(kafka_bootstrap, topic, []) == []
    # From a time: only what was written at or after it.
    assert values(await read_records(kafka_bootstrap, topic, since=middle)) == {(0, b"d")}
    # From an offset, which wins over `since` for that partition.
    tp = TopicPartition(topic, 0)
    assert values(await read_records(kafka_bootstrap, topic, [0], start={tp: 1})) == {(0, b"b"), (0, b"d")}
    # A topic that does not exist is nothing to read, not a hang.
    assert await read_records(kafka_bootstrap, f"{namespace}no.such.topic") == []
    # Undecodable values are skipped by the decoding reads.
    assert await read_events(kafka_bootstrap, [topic]) == []

    # The end is taken at start: what is committed while reading is not waited for nor read.
    seen: list[bytes | None] = []
    async with aclosing(iter_records(kafka_bootstrap, {topic: [0]})) as records:
        async for record in records:
            if not seen:
                await _put(producer, topic, 0, [b"late"])
            seen.append(record.value)
    assert seen == [b"a", b"b", b"d"]
    # Following: the later record is read too.
    followed: list[bytes | None] = []
    async with aclosing(iter_records(kafka_bootstrap, {topic: [0]}, follow_s=30)) as records:
        async for record in records:
            followed.append(record.value)
            if record.value == b"late":
                break
    assert followed == [b"a", b"b", b"d", b"late"]
