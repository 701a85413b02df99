"""The console's compliance search over 100,000 stored events, against the bare indexed query.

    .venv/bin/python bench/console_search.py                      # SQLite and PostgreSQL, 100,000 events
    .venv/bin/python bench/console_search.py --backends sqlite --events 20000 --json

The store is filled through the audit sink's own `AuditStore` (rows, leaves and
offsets in one transaction per batch), with a spread like a real store's:
5,000 requests, ten audit names, six producers, eight event types, over 30 days.
Then each search a compliance officer runs from `/compliance` is timed through the
console's reader (`console.adapters.audit.AuditReader.search`: the page's query,
newest first, 50 rows, every column it shows), and beside it, in the same run on
the same database, the bare query: `SELECT seq` with the same predicate, order
and limit, as a prepared text statement. The searches:

- request id (the common case), and a request's timeline (`AuditReader.timeline`);
- event type, audit name, producer (each alone);
- a one-hour window 20 days back (a time range alone);
- audit name + producer + a one-day window;
- page 40 of an event type (`before=` the previous page's last seq: no OFFSET);
- agent, action, tier, outcome (each alone: the facets the sink keeps in
  `audit_event_facets`, read by the sink from the events' JSON), agent + tier +
  a one-day window, and page 20 of an outcome.

Each is run `--repeat` times (the first run warms the caches and is dropped);
the median and the worst are printed with the goal: every search under 1 s
(issue 17). PostgreSQL is a throw-away cluster (atb.dev.postgres) reached through
its Unix socket, unless ATB_TEST_POSTGRES_URL names one. Speed is measured here,
never asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, TextClause, text

from atb.dev.postgres import TempPostgres
from audit_sink.adapters.db import AuditStore, make_engine, migrate
from audit_sink.domain.rows import AuditRow
from console.adapters.audit import AuditHit, AuditQuery, AuditReader

GOAL_S = 1.0
AUDIT_NAMES = [
    "approval_required",
    "approval_vote_counted",
    "approval_vote_refused",
    "poa_issued",
    "request_denied",
    "broker_decision",
    "console_signin",
    "console_vote_cast",
    "chat_vote_cast",
    "audit_checkpoint_signed",
]
PRODUCERS = [
    f"spiffe://atb.local/svc/{name}" for name in ("approvals", "issuer", "broker", "gateway", "chat", "console")
]
EVENT_TYPES = [
    "atb.audit.event.v1",
    "atb.poa.issuance_requested.v1",
    "atb.approvals.approval_required.v1",
    "atb.approvals.vote_cast.v2",
    "atb.poa.issued.v1",
    "atb.broker.decision.v2",
    "atb.approvals.request_state.v1",
    "atb.keys.signing_key_published.v1",
]
# Prime to 8: each agent in every type. The rows go straight into the store (no gateway, no registry).
AGENTS = [f"spiffe://bench.example/agent/bot-{n:03d}" for n in range(199)]
ACTIONS = [f"app{n}.record.update" for n in range(12)]
TIERS = ["low", "medium", "high", "critical"]
NOW = datetime(2026, 12, 1, tzinfo=UTC)
SPAN = timedelta(days=30)


def _rows(start: int, count: int, total: int) -> list[AuditRow]:
    rows = []
    for i in range(start, start + count):
        at = NOW - SPAN + SPAN * (i / total)
        event_type = EVENT_TYPES[i % len(EVENT_TYPES)]
        audit_type = AUDIT_NAMES[(i // 8) % len(AUDIT_NAMES)] if event_type == "atb.audit.event.v1" else None
        who = {"agent_id": AGENTS[i % len(AGENTS)], "action": ACTIONS[i % len(ACTIONS)], "tier": TIERS[(i // 3) % 4]}
        data = {
            "i": i,
            "request_id": f"req-{i % 5000:05d}",
            **who,
            "action_tier": who["tier"],
            "decision": "deny" if i % 16 == 5 else "allow",
            "outcome": "success",
            "details": who,
            "request": who,
            "requirements": {"tier": who["tier"]},
            "status": "open",
        }
        raw = json.dumps({"type": event_type, "data": data}).encode()
        rows.append(
            AuditRow(
                "atb.audit", i % 6, i // 6, f"evt-{i:07d}", event_type, f"req-{i % 5000:05d}",
                PRODUCERS[i % len(PRODUCERS)], at, at, at + timedelta(days=2557), None, raw, None,
                audit_type=audit_type,
            )
        )  # fmt: skip
    return rows


def fill(engine: Engine, total: int, batch: int = 2000) -> float:
    store = AuditStore(engine, "bench")
    started = time.perf_counter()
    offsets: dict[tuple[str, int], int] = {}
    for first in range(0, total, batch):
        rows = _rows(first, min(batch, total - first), total)
        for row in rows:
            offsets[(row.topic, row.partition)] = row.offset + 1
        store.append(rows, dict(offsets))
    return time.perf_counter() - started


@dataclass(frozen=True)
class Search:
    name: str
    query: AuditQuery
    bare_where: str
    params: dict[str, object]
    faceted: bool = False
    """The bare query joins the facets and orders by their seq (as the reader does)."""


def _searches(engine: Engine, total: int) -> list[Search]:
    window = NOW - timedelta(days=20)
    day = NOW - timedelta(days=10)
    with engine.connect() as conn:
        seqs = list(
            conn.execute(
                text("SELECT seq FROM audit_events WHERE event_type = :t ORDER BY seq DESC LIMIT 1 OFFSET 1950"),
                {"t": EVENT_TYPES[3]},
            ).scalars()
        )
        denied = list(
            conn.execute(
                text("SELECT seq FROM audit_event_facets WHERE outcome = 'deny' ORDER BY seq DESC LIMIT 1 OFFSET 950")
            ).scalars()
        )
    page40 = int(seqs[0]) if seqs else total
    page20 = int(denied[0]) if denied else total
    agent, action = AGENTS[17], ACTIONS[5]
    return [
        Search("request id", AuditQuery(request_id="req-01234"), "request_id = :r", {"r": "req-01234"}),
        Search("event type", AuditQuery(event_type=EVENT_TYPES[4]), "event_type = :t", {"t": EVENT_TYPES[4]}),
        Search("audit name", AuditQuery(audit_type="poa_issued"), "audit_type = :a", {"a": "poa_issued"}),
        Search("producer", AuditQuery(producer=PRODUCERS[2]), "producer = :p", {"p": PRODUCERS[2]}),
        Search(
            "1 h window, 20 days back",
            AuditQuery(since=window, until=window + timedelta(hours=1)),
            "occurred_at >= :s AND occurred_at < :u",
            {"s": window, "u": window + timedelta(hours=1)},
        ),
        Search(
            "audit name + producer + 1 day",
            AuditQuery(audit_type="approval_required", producer=PRODUCERS[0], since=day, until=day + timedelta(days=1)),
            "audit_type = :a AND producer = :p AND occurred_at >= :s AND occurred_at < :u",
            {"a": "approval_required", "p": PRODUCERS[0], "s": day, "u": day + timedelta(days=1)},
        ),
        Search(
            "event type, page 40",
            AuditQuery(event_type=EVENT_TYPES[3], before=page40),
            "event_type = :t AND seq < :b",
            {"t": EVENT_TYPES[3], "b": page40},
        ),
        Search("agent", AuditQuery(agent_id=agent), "f.agent_id = :g", {"g": agent}, faceted=True),
        Search("action", AuditQuery(action=action), "f.action = :c", {"c": action}, faceted=True),
        Search("tier", AuditQuery(tier="critical"), "f.tier = :t", {"t": "critical"}, faceted=True),
        Search("outcome", AuditQuery(outcome="deny"), "f.outcome = :o", {"o": "deny"}, faceted=True),
        Search(
            "agent + tier + 1 day",
            AuditQuery(agent_id=agent, tier=TIERS[1], since=day, until=day + timedelta(days=1)),
            "f.agent_id = :g AND f.tier = :t AND occurred_at >= :s AND occurred_at < :u",
            {"g": agent, "t": TIERS[1], "s": day, "u": day + timedelta(days=1)},
            faceted=True,
        ),
        Search(
            "outcome, page 20",
            AuditQuery(outcome="deny", before=page20),
            "f.outcome = :o AND f.seq < :b",
            {"o": "deny", "b": page20},
            faceted=True,
        ),
    ]


def _time(run: Callable[[], object], repeat: int) -> tuple[float, float, int]:
    """(median s, worst s, rows) over `repeat` runs after one warm-up."""
    rows = run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - started)
    count = len(rows) if isinstance(rows, list) else 0
    return statistics.median(times), max(times), count


def measure(url: str, backend: str, total: int, repeat: int) -> dict[str, object]:
    migrate(url)
    engine = make_engine(url)
    try:
        fill_s = fill(engine, total)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        reader = AuditReader(url)
        results: list[dict[str, object]] = []
        worst = 0.0
        for search in _searches(engine, total):
            where = search.bare_where  # the bench's own constant predicates, with bound parameters
            if search.faceted:
                joined = "audit_events JOIN audit_event_facets f ON f.seq = audit_events.seq"
                sql = f"SELECT f.seq FROM {joined} WHERE {where} ORDER BY f.seq DESC LIMIT 50"  # noqa: S608
            else:
                sql = f"SELECT seq FROM audit_events WHERE {where} ORDER BY seq DESC LIMIT 50"  # noqa: S608
            bare = text(sql)

            def run_bare(statement: TextClause = bare, params: dict[str, object] = search.params) -> list[object]:
                with engine.connect() as conn:
                    return list(conn.execute(statement, params).scalars())

            def run_console(query: AuditQuery = search.query) -> list[AuditHit]:
                return reader.search(query)

            console = _time(run_console, repeat)
            worst = max(worst, console[1])
            results.append({"search": search.name, "console": console, "bare": _time(run_bare, repeat)})
        timeline = _time(lambda: reader.timeline("req-01234"), repeat)
        worst = max(worst, timeline[1])
        results.append({"search": "timeline of a request", "console": timeline, "bare": None})
        reader.close()
    finally:
        engine.dispose()
    return {"backend": backend, "events": total, "fill_s": round(fill_s, 2), "results": results, "worst_s": worst}


def _print(report: dict[str, object]) -> None:
    print(f"\n{report['backend']}: {report['events']} stored events (filled in {report['fill_s']} s)")
    print(f"  {'search':32} {'console median':>15} {'worst':>9} {'rows':>5}   {'bare median':>12} {'worst':>9}")
    for r in report["results"]:  # type: ignore[attr-defined]
        median, worst, rows = r["console"]
        line = f"  {r['search']:32} {median * 1000:12.2f} ms {worst * 1000:6.2f} ms {rows:5}"
        if r["bare"] is not None:
            b_median, b_worst, _ = r["bare"]
            line += f"   {b_median * 1000:9.2f} ms {b_worst * 1000:6.2f} ms"
        print(line)
    worst = float(report["worst_s"])  # type: ignore[arg-type]
    verdict = "met" if worst < GOAL_S else "NOT met"
    print(f"  goal: every search under {GOAL_S:.0f} s; worst {worst * 1000:.1f} ms: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per search (after one warm-up)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--json", action="store_true", help="print one JSON object per backend")
    args = parser.parse_args()
    reports = []
    with tempfile.TemporaryDirectory(prefix="atb-bench-search-") as tmp:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                reports.append(measure(f"sqlite:///{Path(tmp) / 'audit.db'}", backend, args.events, args.repeat))
                continue
            external = os.environ.get("ATB_TEST_POSTGRES_URL", "").strip()
            server = TempPostgres(Path(tempfile.mkdtemp(prefix="atb-pg-bench-")), external=external)
            server.start()
            name = f"bench_search_{int(time.time())}"
            try:
                server.create_database(name)
                url = server.url("owner", name, unix_socket=True)
                reports.append(measure(url, backend, args.events, args.repeat))
                server.drop_database(name)
            finally:
                server.stop()
                if not external:
                    server.wait_stopped()
                    shutil.rmtree(server.folder, ignore_errors=True)
    for report in reports:
        if args.json:
            print(json.dumps(report))
        else:
            _print(report)
    sys.exit(0 if all(float(r["worst_s"]) < GOAL_S for r in reports) else 1)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
