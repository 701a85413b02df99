"""Audit ingest throughput vs a bare batched insert of the same rows into the same database.

    .venv/bin/python bench/audit_ingest.py --events 20000            # SQLite and PostgreSQL
    .venv/bin/python bench/audit_ingest.py --backends sqlite --json

Both sides run in the same process, on the same database, in the same run, in
batches of `--batch` records:

- ingest: what the audit sink does per batch once Kafka has handed it the
  records — `row_for` (parse, redact, retention), the leaf hashes, the writer
  lock, the duplicate check, rows (each carrying its leaf) + offsets in one transaction, the
  in-memory tree, and a signed checkpoint (Ed25519) every `--every` events,
  sealed into the transaction of the batch that reaches the count — all through
  the sink's own `AuditStore` and `LogHead`.
- bare: an executemany INSERT (SQLAlchemy Core, as the sink) of the very same
  rows, leaf index and hash included, into an empty copy of `audit_events`
  reflected from the migrated database (same columns, unique keys and indexes),
  and of each event's search facets into a copy of `audit_event_facets`, keyed
  by the `seq` the bare side gives its rows itself (the sink reads them back), one
  transaction per batch. What the sink stores per event, inserted and nothing
  else: the ceiling.

The two sides take turns batch by batch (who goes first alternates), each round
on a fresh database, sharing one connection pool: a shared machine's noise then
falls on both alike. Times are summed over `--rounds` rounds.

Kafka is left out on purpose: it is the same for both and measured by
bench/e2e.py. PostgreSQL is a throw-away cluster (atb.dev.postgres), reached
through its Unix socket, unless ATB_TEST_POSTGRES_URL names one. Over loopback
TCP (`--pg-transport tcp`), psycopg's pipelined executemany stalls for ~200 ms
(a TCP timer: a Unix socket never shows it) in roughly one batch in five, on
either side at random, which buries the comparison in noise. Prints events/s of both and the ratio to the
goal (ingest ≥ 75% of bare). Speed is measured here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Constraint, Engine, Index, MetaData, Table

from atb.dev.postgres import TempPostgres
from audit_sink.adapters.db import AuditStore, _values, make_engine, migrate
from audit_sink.adapters.signing import load_or_create_signer
from audit_sink.domain import RecordMeta, RetentionPolicy, row_for
from audit_sink.domain.facets import facets_of
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import leaf_hash
from audit_sink.head import LogHead
from contracts import AuditEvent, encode_envelope, make_envelope

GOAL = 0.75
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


class Ingest:
    """What the sink does per batch, through its own `AuditStore` and `LogHead`."""

    def __init__(self, url: str, every: int, key_dir: Path) -> None:
        self.store = AuditStore(make_engine(url), "bench")
        signer = load_or_create_signer(key_dir / "checkpoint.key", "atb.local/audit")
        self._retention = RetentionPolicy()
        # The sink's own log head: a checkpoint sealed into the append that reaches `every`.
        self.head = LogHead(signer, every=every, interval_s=60.0)
        self.head.load(self.store.leaf_hashes(), self.store.checkpoint_notes())

    def batch(self, chunk: list[RecordMeta]) -> float:
        started = time.perf_counter()
        now = datetime.now(UTC)
        rows = [row_for(meta, recorded_at=now, retention=self._retention) for meta in chunk]
        offsets = {(m.topic, m.partition): m.offset + 1 for m in chunk}
        self.head.grow(self.store.append(rows, offsets, self.head.seal))
        if self.head.due():
            cp = self.head.sign()
            self.store.add_checkpoint(cp.size, cp.root, cp.note, cp.created_at)
            self.head.signed(cp)
        return time.perf_counter() - started


class Bare:
    """An executemany INSERT of the same rows and facets (values, seq, leaf index and hash computed
    beforehand, untimed)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._table = _bare_table(self._engine, "audit_events")
        self._facets = _bare_table(self._engine, "audit_event_facets")
        self._retention = RetentionPolicy()
        self._size = 0

    def batch(self, chunk: list[RecordMeta]) -> float:
        now = datetime.now(UTC)
        values, facets = [], []
        for meta in chunk:
            row = row_for(meta, recorded_at=now, retention=self._retention)
            seq = self._size + 1
            values.append(_values(row) | {"seq": seq, "leaf_idx": self._size, "leaf_hash": leaf_hash(leaf_bytes(row))})
            if found := facets_of(row.event_type, row.raw):
                facets.append({"seq": seq, **found._asdict()})
            self._size += 1
        started = time.perf_counter()
        with self._engine.begin() as conn:
            conn.execute(self._table.insert(), values)
            if facets:
                conn.execute(self._facets.insert(), facets)
        return time.perf_counter() - started


def _bare_table(engine: Engine, name: str) -> Table:
    """An empty copy of a migrated table as the database has it: columns, keys and indexes (no triggers)."""
    real = Table(name, MetaData(), autoload_with=engine)
    bare = real.to_metadata(MetaData(), name=f"bench_bare_{name}")
    # Index and constraint names are per schema, not per table: the copy's get a prefix.
    for item in (*bare.indexes, *bare.constraints):
        if isinstance(item, Index | Constraint) and isinstance(item.name, str):
            item.name = f"bench_{item.name}"
    bare.drop(engine, checkfirst=True)
    bare.create(engine)
    return bare


def run_round(
    backend: str, url: str, records: list[RecordMeta], args: argparse.Namespace, tmp: Path
) -> tuple[Result, Result]:
    """One round on a freshly migrated database, the two sides batch by batch in turn.

    Taking turns puts both under the same conditions (a shared machine's noise comes and
    goes over seconds); who goes first alternates. Each side first takes one untimed
    batch of other records, to warm its connection and caches.
    """
    migrate(url)
    ingest = Ingest(url, args.every, tmp)
    bare = Bare(ingest.store.engine)  # the same connection pool: the same server processes serve both
    warm = [m._replace(topic="atb.bench.warmup") for m in records[: min(200, args.batch)]]
    ingest.batch(warm)
    bare.batch(warm)
    spent = {"ingest": 0.0, "bare": 0.0}
    for number, chunk in enumerate(_batches(records, args.batch)):
        sides: list[tuple[str, Ingest | Bare]] = [("ingest", ingest), ("bare", bare)]
        for name, side in sides if number % 2 == 0 else sides[::-1]:
            spent[name] += side.batch(chunk)
    assert ingest.store.count() == len(records) + len(warm), "ingest lost or duplicated records"
    assert ingest.head.checkpoints >= len(records) // args.every, "ingest signed too few checkpoints"
    n = len(records)
    return Result(backend, "ingest", n, spent["ingest"]), Result(backend, "bare", n, spent["bare"])


def run_backend(backend: str, urls: Iterator[str], args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    """`--rounds` rounds, each on a fresh database; the sides' times summed over all of them."""
    records = _records(args.events)
    # The benchmark's own inputs are not the sink's working set: keep the cyclic GC from
    # rescanning them on every collection (it would tax whichever side allocates more).
    gc.collect()
    gc.freeze()
    rounds = []
    for number in range(1, args.rounds + 1):
        ingest, bare = run_round(backend, next(urls), records, args, tmp)
        rounds.append((ingest, bare))
        print(
            f"{backend:10} round {number}: ingest {ingest.per_second:,.0f}/s, bare {bare.per_second:,.0f}/s,"
            f" ratio {ingest.per_second / bare.per_second:.2f}",
            file=sys.stderr,
        )
    ingest = Result(backend, "ingest", sum(i.events for i, _ in rounds), sum(i.seconds for i, _ in rounds))
    bare = Result(backend, "bare", sum(b.events for _, b in rounds), sum(b.seconds for _, b in rounds))
    ratio = ingest.per_second / bare.per_second
    return {
        "backend": backend,
        "rounds": len(rounds),
        "ingest": {**asdict(ingest), "per_second": round(ingest.per_second)},
        "bare": {**asdict(bare), "per_second": round(bare.per_second)},
        "round_ratios": [round(i.per_second / b.per_second, 3) for i, b in rounds],
        "ratio": round(ratio, 3),
        "goal_ratio": GOAL,
        "ratio_to_goal": round(ratio / GOAL, 3),
    }


def _sqlite_urls(tmp: Path) -> Iterator[str]:
    for number in itertools.count():
        yield f"sqlite:///{tmp / f'bench-{number}.db'}"


def _postgres_urls(server: TempPostgres, unix_socket: bool) -> Generator[str]:
    """A fresh database per round; each dropped when the next is asked for (or the generator closed)."""
    name = ""
    try:
        for number in itertools.count():
            if name:
                server.drop_database(name)
            name = f"bench_{int(time.time())}_{number}"
            server.create_database(name)
            yield server.url("owner", name, unix_socket=unix_socket)
    finally:
        if name:
            server.drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--every", type=int, default=1000, help="events per signed checkpoint")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per backend, each on a fresh database")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--pg-transport",
        choices=("unix", "tcp"),
        default="unix",
        help="how to reach the PostgreSQL cluster this starts (see the module docstring on tcp)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per backend")
    args = parser.parse_args()
    reports = []
    with tempfile.TemporaryDirectory(prefix="atb-bench-audit-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                reports.append(run_backend(backend, _sqlite_urls(tmp), args, tmp))
                continue
            external = os.environ.get("ATB_TEST_POSTGRES_URL", "").strip()
            server = TempPostgres(Path(tempfile.mkdtemp(prefix="atb-pg-bench-")), external=external)
            server.start()
            urls = _postgres_urls(server, args.pg_transport == "unix")
            try:
                reports.append(run_backend(backend, urls, args, tmp))
                urls.close()
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
            print(
                f"{report['backend']:10} {side:6} {r['events']} events in {r['seconds']:.2f}s: {r['per_second']}/s"
                f" (over {report['rounds']} rounds)"
            )
        ratio = float(str(report["ratio"]))
        print(
            f"{report['backend']:10} ratio ingest/bare = {ratio:.2f} (goal ≥ {GOAL:.2f}; {ratio / GOAL:.2f}× the goal)"
        )


if __name__ == "__main__":
    main()
