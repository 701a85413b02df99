"""A record whose transaction can never commit costs one dead letter, never the pipeline.

The worker (tests/e2e/zombie_worker.py, moment `poison`) copies records to an output
topic; for the record `huge` its copy is larger than any topic accepts, so every
transaction that carries it fails. The records before and after it in the same batch
must still be copied exactly once, and the poison record must be dead-lettered by
itself after a bounded number of tries, with its coordinates (docs/scaling.md §3).
Without isolation the processor rewound the whole batch forever and copied nothing.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from atb_runtime import Outgoing, Publisher
from atb_runtime.readback import read_committed
from contracts import DeadLetter, Topic, topic_name
from tests.e2e.test_fencing import Worker, _copies, _wait_copies, _worker
from tests.e2e.test_fencing import fence_ns as fence_ns  # the fixture

pytestmark = [pytest.mark.kafka]


async def _letters(bootstrap: str, ns: str) -> list[DeadLetter]:
    payloads = await read_committed(bootstrap, topic_name(Topic.DLQ, ns))
    return [p for p in payloads if isinstance(p, DeadLetter)]


async def test_a_record_that_cannot_commit_is_set_aside_and_its_neighbours_are_copied(
    kafka_bootstrap: str, fence_ns: str, tmp_path: Path
) -> None:
    inbound = topic_name(Topic.POA_REQUESTS, fence_ns)
    key = f"k-{uuid.uuid4().hex[:6]}".encode()  # one key: one partition, one batch, in order
    values = [b"before-1", b"before-2", b"huge", b"after-1", b"after-2"]
    worker: Worker = await _worker(kafka_bootstrap, fence_ns, "p", tmp_path / "unused", "poison")
    try:
        await worker.wait_for("fenced and loaded")
        async with Publisher(kafka_bootstrap, "poison-test") as publisher:
            await publisher.publish([Outgoing(topic=inbound, key=key, value=v, headers=()) for v in values])
        copies = await _wait_copies(kafka_bootstrap, fence_ns, key, at_least=4, timeout=120)
        tail = "\n".join(worker.lines[-15:])
        assert copies == [b"before-1", b"before-2", b"after-1", b"after-2"], tail
        await worker.wait_for("dead-lettered after 3 failed tries")
        letters = [letter for letter in await _letters(kafka_bootstrap, fence_ns) if letter.consumer == "zombie"]
        assert len(letters) == 1, letters
        letter = letters[0]
        assert letter.error_code == "poison_record"
        assert letter.original_topic == inbound
        assert letter.original_size == len(b"huge")
        assert "MessageSizeTooLarge" in letter.reason or "TooLarge" in letter.reason, letter.reason
        # Nothing was copied twice while the batch was retried one record at a time.
        assert await _copies(kafka_bootstrap, fence_ns, key) == copies
    finally:
        await worker.stop()
