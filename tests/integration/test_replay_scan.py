"""The replay range scanner on the real broker: time ranges, end offsets fixed at start, resume."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from atb.replay.errors import ReplayUsageError
from atb.replay.runs import RunStore
from atb.replay.scan import RangeScanner
from atb.replay.timerange import TimeRange
from atb_runtime import Incoming
from contracts import Topic, topic_name

pytestmark = pytest.mark.kafka

BASE = datetime(2026, 1, 1, tzinfo=UTC)


async def _produce(bootstrap: str, topic: str, count: int, first: int = 0) -> None:
    """Records `0..count-1`, one minute apart from BASE, spread over the partitions by key."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(first, first + count):
            ts = int((BASE + timedelta(minutes=i)).timestamp() * 1000)
            await producer.send_and_wait(topic, value=str(i).encode(), key=f"k{i % 5}".encode(), timestamp_ms=ts)
    finally:
        await producer.stop()


class _Collect:
    def __init__(self) -> None:
        self.values: list[int] = []

    async def __call__(self, batch: Sequence[Incoming]) -> None:
        self.values.extend(int(r.value or b"-1") for r in batch)


async def test_a_limited_scan_resumes_where_it_stopped_and_sees_each_record_once(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    topic = topic_name(Topic.BROKER_DECISIONS, namespace)
    await _produce(kafka_bootstrap, topic, 25)
    store = RunStore(tmp_path)
    scanner = RangeScanner(kafka_bootstrap, store, batch_size=4)
    plan = await scanner.plan("test", [topic], TimeRange())
    assert plan.total == 25
    await _produce(kafka_bootstrap, topic, 5, first=100)  # after the plan: beyond its end offsets

    first = _Collect()
    stopped = await scanner.run(plan, first, limit=10)
    assert (stopped.handled, stopped.complete) == (10, False)
    assert store.load(plan.run_id).status == "stopped"

    rest = _Collect()
    resumed = await scanner.run(store.load(plan.run_id), rest)
    assert resumed.complete
    assert sorted(first.values + rest.values) == list(range(25))  # each once, none of the later ones
    assert store.load(plan.run_id).status == "done"

    nothing = _Collect()
    again = await scanner.run(store.load(plan.run_id), nothing)  # a finished run has nothing left
    assert (again.handled, nothing.values) == (0, [])


async def test_since_and_until_select_by_record_time(kafka_bootstrap: str, namespace: str, tmp_path: Path) -> None:
    topic = topic_name(Topic.AUDIT, namespace)
    await _produce(kafka_bootstrap, topic, 30)
    scanner = RangeScanner(kafka_bootstrap, RunStore(tmp_path))
    window = TimeRange(BASE + timedelta(minutes=10), BASE + timedelta(minutes=20))
    seen = _Collect()
    result = await scanner.run(await scanner.plan("test", [topic], window), seen)
    assert result.complete
    assert sorted(seen.values) == list(range(10, 20))
    late = _Collect()
    await scanner.run(await scanner.plan("test", [topic], TimeRange(BASE + timedelta(days=1))), late)
    assert late.values == []


async def test_an_unknown_topic_is_a_usage_error(kafka_bootstrap: str, tmp_path: Path) -> None:
    scanner = RangeScanner(kafka_bootstrap, RunStore(tmp_path))
    with pytest.raises(ReplayUsageError, match=r"unknown topic: no-such\.atb\.dlq"):
        await scanner.plan("test", ["no-such.atb.dlq"], TimeRange())
