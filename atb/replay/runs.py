"""The run file of one replay: `.state/replay/<run-id>.json`, and its record spool.

A run file says what a run is (command, options, range, the partitions and the
offsets it starts and stops at), how far it got and, for re-drives, which
dead letters it sent (the ledger). Kafka keeps the authoritative position in the
run's own consumer group; the file is what `--resume <run-id>` reads to know
which range and options to continue with. A spool is an append-only JSON-lines
file of the records a command keeps for analysis at the end of the scan (the
policy what-if), so a resumed run still reports on the whole range.

This module does not talk to Kafka.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import JsonValue

from atb.replay.errors import ReplayUsageError, RunNotFoundError

__all__ = ["PartitionSpan", "RunPlan", "RunStatus", "RunStore", "SpooledRecord", "new_run_id"]

RunStatus = Literal["planned", "running", "interrupted", "stopped", "done"]
_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{6}$")


def new_run_id(now: datetime) -> str:
    """`20261126T013000-a1b2c3`: sortable by time, unique enough for one operator's runs."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class PartitionSpan:
    """Offsets [start, end) of one partition that a run reads."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    command: str
    topics: tuple[str, ...]
    since: str | None
    until: str | None
    spans: tuple[PartitionSpan, ...]
    created_at: str
    options: dict[str, JsonValue] = field(default_factory=dict)
    status: RunStatus = "planned"
    positions: dict[str, int] = field(default_factory=dict)
    """Next offset per `topic:partition`, as last committed (informational; Kafka's group is authoritative)."""
    ledger: tuple[str, ...] = ()
    """Re-drives: `dlq-topic:partition:offset` of every dead letter this run sent."""

    @property
    def group_id(self) -> str:
        return f"atb-replay-{self.run_id}"

    @property
    def total(self) -> int:
        return sum(span.size for span in self.spans)

    def with_progress(self, status: RunStatus, positions: dict[str, int]) -> RunPlan:
        return replace(self, status=status, positions={**self.positions, **positions})

    def with_ledger(self, *entries: str) -> RunPlan:
        return replace(self, ledger=(*self.ledger, *entries))

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "topics": list(self.topics),
            "since": self.since,
            "until": self.until,
            "spans": [{"topic": s.topic, "partition": s.partition, "start": s.start, "end": s.end} for s in self.spans],
            "created_at": self.created_at,
            "options": self.options,
            "status": self.status,
            "positions": dict(self.positions),
            "ledger": list(self.ledger),
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> RunPlan:
        spans = doc.get("spans")
        assert isinstance(spans, list)
        return cls(
            run_id=str(doc["run_id"]),
            command=str(doc["command"]),
            topics=tuple(str(t) for t in doc["topics"]),  # type: ignore[attr-defined]
            since=doc.get("since"),  # type: ignore[arg-type]
            until=doc.get("until"),  # type: ignore[arg-type]
            spans=tuple(
                PartitionSpan(str(s["topic"]), int(s["partition"]), int(s["start"]), int(s["end"])) for s in spans
            ),
            created_at=str(doc["created_at"]),
            options=dict(doc.get("options") or {}),  # type: ignore[call-overload]
            status=doc.get("status", "planned"),  # type: ignore[arg-type]
            positions={str(k): int(v) for k, v in dict(doc.get("positions") or {}).items()},  # type: ignore[call-overload]
            ledger=tuple(str(e) for e in doc.get("ledger") or ()),  # type: ignore[attr-defined]
        )


@dataclass(frozen=True)
class SpooledRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: str


class RunStore:
    """Run files and spools under `<state>/replay/` (created 0700: spools may hold PoA tokens)."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "replay"

    def _path(self, run_id: str, suffix: str) -> Path:
        if not _RUN_ID.fullmatch(run_id):
            raise ReplayUsageError(f"{run_id!r} is not a replay run id (like 20261126T013000-a1b2c3)")
        return self.root / f"{run_id}{suffix}"

    def save(self, plan: RunPlan) -> Path:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(plan.run_id, ".json")
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(plan.to_json(), indent=2, sort_keys=True))
        os.replace(tmp, path)  # atomic: an interrupted save leaves the previous file
        return path

    def update(self, run_id: str, change: Callable[[RunPlan], RunPlan]) -> RunPlan:
        """Load, change, save: writers of different fields (progress, ledger) never undo each other."""
        plan = change(self.load(run_id))
        self.save(plan)
        return plan

    def load(self, run_id: str) -> RunPlan:
        path = self._path(run_id, ".json")
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise RunNotFoundError(f"no replay run {run_id} (no {path})") from None
        except json.JSONDecodeError as exc:
            raise ReplayUsageError(f"run file {path} is not JSON: {exc}") from None
        return RunPlan.from_json(doc)

    def spool_path(self, run_id: str) -> Path:
        return self._path(run_id, ".spool.jsonl")

    def spool(self, run_id: str, records: list[SpooledRecord]) -> None:
        """Append and fsync, before the scanner commits the offsets past these records."""
        if not records:
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        lines = "".join(
            json.dumps({"t": r.topic, "p": r.partition, "o": r.offset, "ts": r.timestamp_ms, "v": r.value}) + "\n"
            for r in records
        )
        fd = os.open(self.spool_path(run_id), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, lines.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def spooled(self, run_id: str) -> Iterator[SpooledRecord]:
        """Each spooled record once (a crash between spooling and committing spools a batch twice)."""
        path = self.spool_path(run_id)
        if not path.exists():
            return
        seen: set[tuple[str, int, int]] = set()
        with path.open() as lines:
            for line in lines:
                if not line.strip():
                    continue
                doc = json.loads(line)
                key = (doc["t"], doc["p"], doc["o"])
                if key not in seen:
                    seen.add(key)
                    yield SpooledRecord(doc["t"], doc["p"], doc["o"], doc["ts"], doc["v"])
