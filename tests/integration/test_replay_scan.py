"""The replay range scanner on the real broker: time ranges, end offsets fixed at start, resume."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import PIPE

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
from tests.waits import until

pytestmark = pytest.mark.kafka

# Recent: records older than a topic's retention may be deleted by the broker at any moment.
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
ATB = str(Path(sys.executable).parent / "atb")


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


async def test_ctrl_c_leaves_a_run_that_resumes_without_reading_twice(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    """A real SIGINT to `atb replay redrive` part way through; `--resume` reads exactly the rest."""
    total = 120_000
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:
        dlq = topic_name(Topic.DLQ, namespace)
        sent = [await producer.send(dlq, value=b"not a dead letter", key=str(i % 7).encode()) for i in range(total)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    env = {
        **os.environ,
        "ATB_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ATB_TOPIC_NAMESPACE": namespace,
        "ATB_STATE_DIR": str(tmp_path),
    }
    proc = await asyncio.create_subprocess_exec(
        ATB, "replay", "redrive", "--json", env=env, stdout=PIPE, stderr=PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a shell's background jobs ignore it
    )  # fmt: skip
    runs = tmp_path / "replay"
    # The run's state file, written by the CLI process, is the only sign that it started: polled.
    await until(
        lambda: asyncio.to_thread(lambda: [p.read_text() for p in runs.glob("*.json")]),
        lambda states: any('"running"' in state for state in states),
        timeout=30,
        what="the replay run starting",
        interval=0.02,
    )
    proc.send_signal(signal.SIGINT)
    _, err = await proc.communicate()
    assert proc.returncode == 130, err.decode()
    [run_file] = runs.glob("*.json")
    run_id = run_file.stem
    assert f"--resume {run_id}" in err.decode()
    assert "Traceback" not in err.decode()
    first = json.loads(run_file.read_text())
    assert first["status"] == "interrupted"
    done_before = sum(first["positions"].values())
    assert 0 <= done_before < total
    resumed = await asyncio.create_subprocess_exec(
        ATB, "replay", "redrive", "--resume", run_id, "--json", env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await resumed.communicate()
    assert resumed.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["complete"] is True
    assert report["records"] == total - done_before
