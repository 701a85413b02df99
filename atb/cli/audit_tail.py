"""`atb audit tail`: follow the `atb.audit` topic, filtered, one JSON line per event.

Each line carries `event_type`, the audit name (`poa_issued`, ...; the same as
`audit_type`), and `ce_type`, the CloudEvents type (`atb.audit.event.v1`).
Reads with `read_committed` and no consumer group (a reader, not a member: it
never moves anyone's offsets). Records that are not AuditEvents are shown as
`{"undecodable": ...}` rather than dropped, so nothing on the topic is hidden.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer

from contracts import EventDecodeError, Topic, decode_envelope, topic_name

__all__ = ["CHECKPOINT_NOTE_TYPES", "checkpoint_notes", "follow", "matches"]


def matches(data: Mapping[str, object], filters: Mapping[str, str]) -> bool:
    return all(str(data.get(field)) == wanted for field, wanted in filters.items())


def _line(value: bytes | None, filters: Mapping[str, str]) -> str | None:
    try:
        envelope = decode_envelope(value)
    except EventDecodeError as exc:
        return None if filters else json.dumps({"undecodable": str(exc)})
    data = dict(envelope.data)
    if not matches(data, filters):
        return None
    # `event_type` is the audit name (`poa_issued`), as the operating model logs it and a SIEM queries it;
    # the CloudEvents type is `ce_type`.
    name = data.get("audit_type")
    line = {"id": envelope.id, "time": envelope.time.isoformat(), "source": envelope.source, **data}
    line.update(event_type=name if isinstance(name, str) else envelope.type, ce_type=envelope.type)
    return json.dumps(line)


async def follow(
    bootstrap: str,
    namespace: str,
    filters: Mapping[str, str],
    *,
    from_beginning: bool,
    max_events: int,
    timeout: float,
    emit: Callable[[str], None],
) -> int:
    """Print matching events until `max_events` or `timeout` (0: no limit); returns how many were printed."""
    consumer = AIOKafkaConsumer(
        topic_name(Topic.AUDIT, namespace),
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    shown = 0
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while deadline is None or time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    line = _line(record.value, filters)
                    if line is None:
                        continue
                    emit(line)
                    shown += 1
                    if max_events and shown >= max_events:
                        return shown
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return shown


CHECKPOINT_NOTE_TYPES = ("audit_checkpoint_signed", "audit_checkpoint_cosigned")


async def checkpoint_notes(bootstrap: str, namespace: str, *, timeout: float = 30.0) -> tuple[list[str], bool]:
    """The checkpoint notes announced on `atb.audit` (signed and cosigned), read from the oldest record to
    the end as it is now; and whether the end was reached within `timeout`. Raises when Kafka cannot be reached."""
    from aiokafka import TopicPartition

    topic = topic_name(Topic.AUDIT, namespace)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=int(min(timeout, 10) * 1000),
    )
    await asyncio.wait_for(consumer.start(), timeout=min(timeout, 10))
    notes: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        cluster = await consumer._client.fetch_all_metadata()  # as atb/replay/redrive.py: the topic's partitions now
        found = cluster.partitions_for_topic(topic)
        if not found:
            return notes, True
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                return notes, True
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if record.value is None or b"audit_checkpoint_" not in record.value:
                        continue
                    try:
                        data = decode_envelope(record.value).data
                    except EventDecodeError:
                        continue
                    details = data.get("details")
                    if data.get("audit_type") in CHECKPOINT_NOTE_TYPES and isinstance(details, dict):
                        note = details.get("checkpoint")
                        if isinstance(note, str):
                            notes.append(note)
        return notes, False
    finally:
        await consumer.stop()
