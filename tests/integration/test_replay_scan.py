"""The replay range scanner on the real broker: time ranges, end offsets fixed at start, resume."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from rich.console import Console
from typer.testing import CliRunner

from atb.cli import app
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


async def test_the_progress_bar_shows_counts_and_rate_on_a_terminal(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    topic = topic_name(Topic.POA_ISSUED, namespace)
    await _produce(kafka_bootstrap, topic, 12)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    scanner = RangeScanner(kafka_bootstrap, RunStore(tmp_path), console=console)
    plan = await scanner.plan("test", [topic], TimeRange())
    await scanner.run(plan, _Collect())
    assert "12/12" in screen.getvalue()
    assert "12 records" in screen.getvalue()
    quiet = io.StringIO()
    silent = RangeScanner(kafka_bootstrap, RunStore(tmp_path), console=Console(file=quiet))  # not a terminal
    await silent.run(await silent.plan("test", [topic], TimeRange()), _Collect())
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["redrive", "--since", "yesterday"], "--since 'yesterday': not an ISO-8601 time"),
        (["redrive", "--filter", "colour=red"], "unknown key 'colour'"),
        (["redrive", "--to", "atb.nope"], "--to 'atb.nope': unknown topic"),
        (["redrive", "--resume", "20200101T000000-000000"], "no replay run 20200101T000000-000000"),
        (["policy", "--since", "2h"], "--policy <folder> is required"),
        (["redrive"], "unknown topic: nowhere.atb.dlq"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(kafka_bootstrap: str, tmp_path: Path, args: list[str], message: str) -> None:
    env = {
        "ATB_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ATB_TOPIC_NAMESPACE": "nowhere.",
        "ATB_STATE_DIR": str(tmp_path),
    }
    result = CliRunner().invoke(app, ["replay", *args], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
