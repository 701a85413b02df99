"""Zombie fencing of the exactly-once processor, with real processes and a real SIGSTOP.

Worker A (tests/e2e/zombie_worker.py) freezes itself while it handles the record
`freeze` — in its handler, or inside its transaction after the output was sent and
before the commit — and stays frozen past its session timeout. Worker B joins, takes
A's partitions and copies the record. Then A is thawed: it wakes up believing it
still owns the partition, mid-batch, and tries to commit.

A `read_committed` reader must see the record's copy exactly once, and A must have
been refused (fenced) rather than retried blindly (docs/scaling.md). The copy's
after-commit effect (`Outgoing.after_commit`) runs in B only. Without
per-partition transactional ids A's commit lands and the copy appears twice; with
an in-flight transaction of A left open, B could not move past it either.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from atb.dev.topics import delete_topics, ensure_topics
from atb_runtime import Outgoing, Publisher
from atb_runtime.readback import read_records
from contracts import Topic, topic_name
from tests.waits import records

pytestmark = [pytest.mark.kafka]

FREEZE = b"freeze"
ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.lines: list[str] = []
        self._seen = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._seen:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._seen.notify_all()

    async def wait_for(self, text: str, timeout: float = 60.0) -> str:
        async def seen() -> str:
            async with self._seen:
                while True:
                    for line in self.lines:
                        if text in line:
                            return line
                    await self._seen.wait()

        try:
            return await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            tail = "\n".join(self.lines[-30:])
            raise AssertionError(f"worker {self.name} never printed {text!r}; its output:\n{tail}") from None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()


@pytest.fixture
async def fence_ns(kafka_bootstrap: str) -> AsyncIterator[str]:
    ns = f"z{uuid.uuid4().hex[:8]}."
    await ensure_topics(kafka_bootstrap, ns)
    yield ns
    await delete_topics(kafka_bootstrap, ns)


async def _worker(bootstrap: str, ns: str, instance: str, marker: Path, moment: str) -> Worker:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.e2e.zombie_worker",
        bootstrap,
        ns,
        instance,
        str(marker),
        moment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    worker = Worker(proc, instance)
    await worker.wait_for("READY")
    return worker


async def _copies(bootstrap: str, ns: str, key: bytes) -> list[bytes]:
    """Every committed copy of `key` on the output topic, read to the end offsets taken first."""
    records = await read_records(bootstrap, topic_name(Topic.POA_ISSUED, ns))
    return [r.value for r in records if r.key == key and r.value is not None]


async def _wait_copies(bootstrap: str, ns: str, key: bytes, at_least: int, timeout: float = 60.0) -> list[bytes]:
    """Every committed copy of `key`, read to the end offsets once `at_least` copies are committed (consumed)."""
    await records(
        bootstrap,
        [topic_name(Topic.POA_ISSUED, ns)],
        lambda r: r.key == key and r.value is not None,
        count=at_least,
        timeout=timeout,
        what=f"{at_least} committed copies of {key!r}",
    )
    return await _copies(bootstrap, ns, key)


@pytest.mark.parametrize("moment", ["handler", "transaction"])
async def test_a_thawed_zombie_cannot_commit_for_a_partition_it_lost(
    kafka_bootstrap: str, fence_ns: str, tmp_path: Path, moment: str
) -> None:
    marker = tmp_path / "frozen"
    key = f"rec-{uuid.uuid4().hex[:6]}".encode()
    inbound = topic_name(Topic.POA_REQUESTS, fence_ns)
    a = await _worker(kafka_bootstrap, fence_ns, "a", marker, moment)
    b: Worker | None = None
    try:
        await a.wait_for("fenced and loaded")  # A owns every partition
        async with Publisher(kafka_bootstrap, "fence-test") as publisher:
            await publisher.publish([Outgoing(topic=inbound, key=key, value=FREEZE, headers=())])
        await a.wait_for("FROZEN")
        assert a.proc.returncode is None

        # B joins; A cannot answer the rebalance, so its session times out and B takes everything.
        b = await _worker(kafka_bootstrap, fence_ns, "b", marker, moment)
        copies = await _wait_copies(kafka_bootstrap, fence_ns, key, at_least=1, timeout=90)
        assert copies == [FREEZE], "the new owner must copy the record once, past anything A left open"

        # A wakes up mid-batch, still believing it owns the partition.
        a.proc.send_signal(signal.SIGCONT)
        await a.wait_for("THAWED")
        line = await a.wait_for(": fenced (", timeout=60)  # refused and reported, not retried blindly
        assert "Fenced" in line or "Epoch" in line, line
        assert await _copies(kafka_bootstrap, fence_ns, key) == [FREEZE], "the zombie committed a second copy"
        # Only the owner that committed the copy ran its after-commit effect.
        await b.wait_for(f"TOLD {key.decode()}")
        assert [line for line in a.lines if line == f"TOLD {key.decode()}"] == [], (
            "the zombie told its uncommitted copy"
        )
        # And the pipeline goes on: a later record is copied once, by whoever owns it now.
        later = f"later-{uuid.uuid4().hex[:6]}".encode()
        async with Publisher(kafka_bootstrap, "fence-test") as publisher:
            await publisher.publish([Outgoing(topic=inbound, key=later, value=b"after", headers=())])
        assert await _wait_copies(kafka_bootstrap, fence_ns, later, at_least=1) == [b"after"]
        assert await _copies(kafka_bootstrap, fence_ns, key) == [FREEZE]
    finally:
        await a.stop()
        if b is not None:
            await b.stop()
