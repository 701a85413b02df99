"""A resumable, read-only scan of a time range of Kafka topics (`atb replay *`, `atb trace`).

    planner = RangeScanner(bootstrap, store)
    plan = await planner.plan("policy", topics, TimeRange.parse("2h", None, now), options={...})
    result = await planner.run(plan, handle)          # handle(batch of Incoming) -> None

Every partition of the topics is assigned by hand (no group rebalancing); a scan
starts at `offsets_for_times(since)` (or the beginning) and stops at the end
offsets taken when the run was planned (clamped by `offsets_for_times(until)`),
so records produced while it runs are not waited for. It reads `read_committed`:
aborted transactions are never replayed. Progress is committed to the run's own
consumer group `atb-replay-<run-id>` after each handled batch, so `--resume`
continues after the last batch the handler finished: each record is handled
once, unless the process dies between a handler's side effect and the commit
(handlers that act, like the re-drive, are idempotent on their own).

The scanner never produces and never commits to any group but its own. It is
not `atb_runtime.readback.iter_records`, the read-to-the-end everything else
uses: a run is planned once and read later (its spans, clamped by `until`, are in
the run file), progress is committed to the run's group after each handled batch,
and a resumed run starts from that group's offsets. It shares the partition
discovery (`topic_partitions`) with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import JsonValue
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from atb.replay.errors import ReplayInfraError, ReplayUsageError
from atb.replay.runs import PartitionSpan, RunPlan, RunStatus, RunStore, new_run_id
from atb.replay.timerange import TimeRange
from atb_runtime import Incoming
from atb_runtime.readback import topic_partitions

__all__ = ["BatchHandler", "RangeScanner", "ScanResult"]

log = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[Incoming]], Awaitable[None]]


@dataclass(frozen=True)
class ScanResult:
    run_id: str
    handled: int
    """Records handled by this invocation (not counting earlier, resumed-from runs)."""
    complete: bool
    """Every partition reached its end offset."""
    seconds: float


def _key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class _Bar:
    """A rich progress bar with counts and rate, or nothing (not a TTY, or `--quiet`)."""

    def __init__(self, console: Console | None, total: int, done: int, label: str) -> None:
        self._progress: Progress | None = None
        self._started = time.monotonic()
        self._base = done
        if console is not None and console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[records]} records, {task.fields[rate]}/s"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task(label, total=total or 1, completed=done, records=0, rate="0")

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: int, records: int) -> None:
        if self._progress is None:
            return
        rate = records / max(time.monotonic() - self._started, 1e-3)
        self._progress.update(self._task, completed=done, records=records, rate=f"{rate:,.0f}")


class RangeScanner:
    """Plans and runs scans; one consumer per call, always stopped."""

    def __init__(
        self, bootstrap: str, store: RunStore, *, console: Console | None = None, batch_size: int = 500
    ) -> None:
        self._bootstrap = bootstrap
        self._store = store
        self._console = console
        self._batch_size = batch_size

    def _consumer(self, group_id: str | None) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=group_id,
            client_id="atb-replay",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )

    async def _start(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await asyncio.wait_for(consumer.start(), 30)
        except (KafkaError, OSError, TimeoutError) as exc:
            await consumer.stop()
            raise ReplayInfraError(
                f"cannot reach Kafka at {self._bootstrap} ({type(exc).__name__}):"
                " start it with `atb dev up`, or set ATB_KAFKA_BOOTSTRAP_SERVERS"
            ) from exc

    async def plan(
        self,
        command: str,
        topics: Sequence[str],
        time_range: TimeRange,
        options: dict[str, JsonValue] | None = None,
        now: datetime | None = None,
    ) -> RunPlan:
        """Fix the partitions and offsets of a new run and write its run file."""
        now = now or datetime.now(UTC)
        consumer = self._consumer(None)
        await self._start(consumer)
        try:
            tps = await _partitions(consumer, topics)
            spans = await _spans(consumer, tps, time_range)
        finally:
            await consumer.stop()
        plan = RunPlan(
            run_id=new_run_id(now),
            command=command,
            topics=tuple(topics),
            since=time_range.since.isoformat() if time_range.since else None,
            until=time_range.until.isoformat() if time_range.until else None,
            spans=spans,
            created_at=now.isoformat(),
            options=dict(options or {}),
        )
        self._store.save(plan)
        return plan

    async def run(self, plan: RunPlan, handle: BatchHandler, *, limit: int | None = None) -> ScanResult:
        """Read the plan's spans from where its group stopped; `limit` stops after that many records."""
        started = time.monotonic()
        consumer = self._consumer(plan.group_id)
        await self._start(consumer)
        handled = 0
        ends = {TopicPartition(s.topic, s.partition): s.end for s in plan.spans}
        positions: dict[TopicPartition, int] = {}
        status: RunStatus = "interrupted"

        def progress(p: RunPlan) -> RunPlan:
            return p.with_progress(status, _as_keys(positions))

        try:
            consumer.assign(list(ends))
            positions = await _resume_positions(consumer, plan.spans)
            status = "running"
            self._store.update(plan.run_id, progress)
            total, label = plan.total, f"{plan.command} {plan.run_id}"
            with _Bar(self._console, total, _done(plan.spans, positions), label) as bar:
                while (remaining := [tp for tp, end in ends.items() if positions[tp] < end]) and (
                    limit is None or handled < limit
                ):
                    room = self._batch_size if limit is None else min(self._batch_size, limit - handled)
                    batch = await _next_batch(consumer, remaining, ends, room)
                    if batch:
                        await handle(batch)
                        handled += len(batch)
                    for tp in remaining:
                        # The position has moved past every record returned, and past transaction
                        # markers and aborted records, which take offsets but are never returned.
                        positions[tp] = min(await consumer.position(tp), ends[tp])
                    await _commit(consumer, positions, remaining)
                    bar.update(_done(plan.spans, positions), handled)
            complete = all(positions[tp] >= end for tp, end in ends.items())
            status = "done" if complete else "stopped"
        except BaseException:
            status = "interrupted"
            # Positions advance only after a batch was handled: commit them, so that
            # `--resume` does not handle the last finished batches again.
            await _last_commit(consumer, positions)
            raise
        finally:
            self._store.update(plan.run_id, progress)
            await consumer.stop()
        return ScanResult(plan.run_id, handled, complete, time.monotonic() - started)


async def _partitions(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    # The partitions come from the real topic, not the catalogue (production may have more).
    found = await topic_partitions(consumer, topics)
    missing = [t for t in topics if t not in found]
    if missing:
        raise ReplayUsageError(f"unknown topic{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    return [TopicPartition(t, p) for t in topics for p in found[t]]


async def _offsets_at(consumer: AIOKafkaConsumer, tps: list[TopicPartition], at_ms: int) -> dict[TopicPartition, int]:
    """First offset with a timestamp ≥ at_ms per partition; absent where there is none."""
    found = await consumer.offsets_for_times(dict.fromkeys(tps, at_ms))
    return {tp: hit.offset for tp, hit in found.items() if hit is not None}


async def _spans(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], time_range: TimeRange
) -> tuple[PartitionSpan, ...]:
    firsts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)  # read_committed: the last stable offset
    since = await _offsets_at(consumer, tps, time_range.since_ms) if time_range.since_ms is not None else {}
    until = await _offsets_at(consumer, tps, time_range.until_ms) if time_range.until_ms is not None else {}
    spans = []
    for tp in tps:
        start = since.get(tp, ends[tp]) if time_range.since_ms is not None else firsts[tp]
        end = min(ends[tp], until.get(tp, ends[tp]))
        spans.append(PartitionSpan(tp.topic, tp.partition, start, max(start, end)))
    return tuple(spans)


async def _resume_positions(consumer: AIOKafkaConsumer, spans: Sequence[PartitionSpan]) -> dict[TopicPartition, int]:
    """Where to continue: the run group's committed offset, else the span's start."""
    positions: dict[TopicPartition, int] = {}
    for span in spans:
        tp = TopicPartition(span.topic, span.partition)
        committed = await consumer.committed(tp)
        positions[tp] = max(span.start, committed) if committed is not None else span.start
        consumer.seek(tp, positions[tp])
    return positions


async def _next_batch(
    consumer: AIOKafkaConsumer,
    remaining: list[TopicPartition],
    ends: dict[TopicPartition, int],
    room: int,
) -> list[Incoming]:
    """Up to `room` records (over all partitions) below the end offsets."""
    fetched = await consumer.getmany(*remaining, timeout_ms=500, max_records=room)
    batch: list[Incoming] = []
    for tp, messages in fetched.items():
        for msg in messages:
            if msg.offset >= ends[tp]:
                break
            batch.append(
                Incoming(
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    key=msg.key,
                    value=msg.value,
                    headers=tuple((k, bytes(v)) for k, v in (msg.headers or ())),
                    timestamp_ms=msg.timestamp,
                )
            )
    return batch


async def _commit(consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int], tps: list[TopicPartition]) -> None:
    # Shielded: an interrupt (Ctrl-C cancels the task) must not tear a commit in flight.
    commit = asyncio.ensure_future(consumer.commit({tp: positions[tp] for tp in tps}))
    try:
        await asyncio.shield(commit)
    except asyncio.CancelledError:
        await asyncio.wait([commit], timeout=5)
        raise
    except KafkaError as exc:
        raise ReplayInfraError(f"cannot commit the run's progress: {type(exc).__name__}: {exc}") from exc


async def _last_commit(consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]) -> None:
    """Best effort, on the way out of an interrupted run: a failure only means some records are read again."""
    if not positions:
        return
    try:
        await asyncio.wait_for(consumer.commit(dict(positions)), 5)
    except (KafkaError, TimeoutError, asyncio.CancelledError) as exc:
        log.warning("could not commit the last position of an interrupted run: %s", exc)


def _as_keys(positions: dict[TopicPartition, int]) -> dict[str, int]:
    return {_key(tp.topic, tp.partition): offset for tp, offset in positions.items()}


def _done(spans: Sequence[PartitionSpan], positions: dict[TopicPartition, int]) -> int:
    return sum(
        max(0, min(positions.get(TopicPartition(s.topic, s.partition), s.start), s.end) - s.start) for s in spans
    )
