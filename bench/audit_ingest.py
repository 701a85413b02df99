"""Audit ingest throughput vs a bare batched insert of the same rows into the same database.

    .venv/bin/python bench/audit_ingest.py --events 20000            # SQLite and PostgreSQL
    .venv/bin/python bench/audit_ingest.py --backends sqlite --json

Both sides run in the same process, on the same database, in the same run, in
batches of `--batch` records:

- ingest: what the audit sink does per batch once Kafka has handed it the
  records — `row_for` (parse, redact, retention), the leaf hashes, the writer
  lock, the duplicate check, rows + leaves + offsets in one transaction, the
  in-memory tree, and a signed checkpoint (Ed25519) stored every `--every` events.
- bare: an executemany INSERT of the very same row values into a copy of the
  table (same columns and indexes), one transaction per batch. The ceiling.

Kafka is left out on purpose: it is the same for both and measured by
bench/e2e.py. PostgreSQL is a throw-away cluster (atb.dev.postgres), unless
ATB_TEST_POSTGRES_URL names one. Prints events/s of both and the ratio to the
goal (ingest ≥ 60% of bare). Speed is measured here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, MetaData

from atb.dev.postgres import TempPostgres
from audit_sink.adapters.db import AuditStore, _values, audit_events, make_engine, migrate
from audit_sink.adapters.signing import load_or_create_signer
from audit_sink.domain import RecordMeta, RetentionPolicy, row_for
from audit_sink.domain.checkpoint import Checkpoint
from audit_sink.domain.merkle import Frontier
from contracts import AuditEvent, encode_envelope, make_envelope

GOAL = 0.6
SOURCE = "spiffe://atb.local/svc/bench"


@dataclass(frozen=True)
class Result:
    backend: str
    name: str
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def _records(n: int) -> list[RecordMeta]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        payload = AuditEvent(
            audit_type="broker_action_allowed",
            request_id=f"req-{i % 997:06d}",
            actor=SOURCE,
            outcome="success",
            details={"action": "crm.contact.read", "resource": f"crm:contact/{i}", "reasons": ["poa_valid"]},
            occurred_at=now,
        )
        value = encode_envelope(make_envelope(payload, source=SOURCE, time=now))
        out.append(RecordMeta("atb.audit", i % 3, i // 3, f"req-{i % 997}".encode(), value, int(now.timestamp() * 1e3)))
    return out


def _batches(records: list[RecordMeta], size: int) -> list[list[RecordMeta]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def bench_ingest(url: str, records: list[RecordMeta], batch: int, every: int, key_dir: Path, backend: str) -> Result:
    store = AuditStore(make_engine(url), "bench")
    signer = load_or_create_signer(key_dir / "checkpoint.key", "atb.local/audit")
    retention = RetentionPolicy()
    frontier = Frontier.of(store.leaf_hashes())
    pending = 0
    started = time.perf_counter()
    for chunk in _batches(records, batch):
        now = datetime.now(UTC)
        rows = [row_for(meta, recorded_at=now, retention=retention) for meta in chunk]
        offsets = {(m.topic, m.partition): m.offset + 1 for m in chunk}
        result = store.append(rows, offsets)
        frontier = frontier.extend(result.hashes)
        pending += len(result.rows)
        if pending >= every:
            cp = Checkpoint("atb.local/audit", frontier.size, frontier.root())
            store.add_checkpoint(cp.size, cp.root, signer.sign(cp.body()).render(), now)
            pending = 0
    seconds = time.perf_counter() - started
    assert store.count() >= len(records), "ingest lost records"
    return Result(backend, "ingest", len(records), seconds)


def bench_bare(engine: Engine, records: list[RecordMeta], batch: int, backend: str) -> Result:
    bare = audit_events.to_metadata(MetaData(), name="bench_bare_events")
    bare.create(engine, checkfirst=True)
    now = datetime.now(UTC)
    prepared = [
        [_values(row_for(m, recorded_at=now, retention=RetentionPolicy())) for m in c] for c in _batches(records, batch)
    ]
    started = time.perf_counter()
    for values in prepared:
        with engine.begin() as conn:
            conn.execute(bare.insert(), values)
    return Result(backend, "bare", len(records), time.perf_counter() - started)


def run_backend(backend: str, url: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    migrate(url)
    records = _records(args.events)
    # The benchmark's own inputs are not the sink's working set: keep the cyclic GC from
    # rescanning them on every collection (it would tax whichever side allocates more).
    gc.collect()
    gc.freeze()
    # Both sides warm the same connection pool and caches once with a small batch first.
    bench_bare(make_engine(url), _records(200), args.batch, backend)
    bare = bench_bare(make_engine(url), records, args.batch, backend)
    ingest = bench_ingest(url, records, args.batch, args.every, tmp, backend)
    ratio = ingest.per_second / bare.per_second
    return {
        "backend": backend,
        "ingest": {**asdict(ingest), "per_second": round(ingest.per_second)},
        "bare": {**asdict(bare), "per_second": round(bare.per_second)},
        "ratio": round(ratio, 3),
        "goal_ratio": GOAL,
        "ratio_to_goal": round(ratio / GOAL, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--every", type=int, default=1000, help="events per signed checkpoint")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--json", action="store_true", help="print one JSON object per backend")
    args = parser.parse_args()
    reports = []
    with tempfile.TemporaryDirectory(prefix="atb-bench-audit-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                reports.append(run_backend(backend, f"sqlite:///{tmp / 'bench.db'}", args, tmp))
                continue
            external = os.environ.get("ATB_TEST_POSTGRES_URL", "").strip()
            server = TempPostgres(Path(tempfile.mkdtemp(prefix="atb-pg-bench-")), external=external)
            server.start()
            try:
                name = f"bench_{int(time.time())}"
                server.create_database(name)
                reports.append(run_backend(backend, server.url("owner", name), args, tmp))
                server.drop_database(name)
            finally:
                server.stop()
                if not external:
                    server.wait_stopped()
                    shutil.rmtree(server.folder, ignore_errors=True)
    for report in reports:
        if args.json:
            print(json.dumps(report))
            continue
        for side in ("ingest", "bare"):
            r = report[side]
            assert isinstance(r, dict)
            print(f"{report['backend']:10} {side:6} {r['events']} events in {r['seconds']:.2f}s: {r['per_second']}/s")
        ratio = float(str(report["ratio"]))
        print(
            f"{report['backend']:10} ratio ingest/bare = {ratio:.2f} (goal ≥ {GOAL:.2f}; {ratio / GOAL:.2f}× the goal)"
        )


if __name__ == "__main__":
    main()
