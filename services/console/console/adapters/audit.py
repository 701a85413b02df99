"""Read-only search of the audit store for the compliance view.

The audit sink writes `audit_events` (migrations/versions); the console only
reads it, through its own description of the columns it needs, on a URL that
should be a read-only role on PostgreSQL (`ATB_CONSOLE_AUDIT_DB_URL`). Searches
filter on indexed columns (request id, event type, audit name, producer) and a
time range, newest first, and page by the primary key (`seq`): a page is
`seq < before`, never an OFFSET, so every page costs the same. Agent, action,
tier and outcome live inside the stored JSON; the sink keeps them, indexed with
`seq`, in `audit_event_facets` (migration 0010, audit_sink/domain/facets.py), and
a search on any of them walks that table's index newest first and joins the rows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    select,
)

__all__ = ["AuditHit", "AuditQuery", "AuditReader"]

_metadata = MetaData()
audit_events = Table(
    "audit_events",
    _metadata,
    Column("seq", Integer, primary_key=True),
    Column("topic", String(255)),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("event_id", String(255)),
    Column("event_type", String(128)),
    Column("request_id", String(255)),
    Column("producer", String(2048)),
    Column("occurred_at", DateTime(timezone=True)),
    Column("recorded_at", DateTime(timezone=True)),
    Column("raw", LargeBinary),
    Column("audit_type", String(64)),
)

audit_event_facets = Table(
    "audit_event_facets",
    _metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("agent_id", String(255)),
    Column("action", String(128)),
    Column("tier", String(16)),
    Column("outcome", String(32)),
)

_SHOWN = tuple(
    audit_events.c[name]
    for name in (
        "seq",
        "topic",
        "partition",
        "offset",
        "event_type",
        "request_id",
        "producer",
        "audit_type",
        "occurred_at",
        "recorded_at",
        "raw",
    )
)
PAGE = 50
RAW_SHOWN = 4096
"""How much of a stored record a result row shows (the store keeps it whole)."""


@dataclass(frozen=True)
class AuditQuery:
    request_id: str = ""
    event_type: str = ""
    audit_type: str = ""
    producer: str = ""
    since: datetime | None = None
    until: datetime | None = None
    agent_id: str = ""
    action: str = ""
    tier: str = ""
    outcome: str = ""
    before: int | None = None
    """Page: only rows with `seq` below this (the previous page's last seq)."""


@dataclass(frozen=True)
class AuditHit:
    seq: int
    topic: str
    event_type: str
    request_id: str | None
    producer: str | None
    audit_type: str | None
    occurred_at: datetime
    recorded_at: datetime
    raw: str
    segment: int | None = None
    """The archive segment the row was read from; None for a row of the store."""
    position: tuple[str, int, int] = ("", 0, 0)
    """(topic, partition, offset): the row's identity across the store and the archive."""


class AuditReader:
    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))

    def close(self) -> None:
        self._engine.dispose()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def search(self, query: AuditQuery, *, limit: int = PAGE) -> list[AuditHit]:
        c, f = audit_events.c, audit_event_facets.c
        statement = select(*_SHOWN)
        facets = [
            (column, value)
            for column, value in ((f.agent_id, query.agent_id), (f.action, query.action), (f.tier, query.tier),
                                  (f.outcome, query.outcome))
            if value
        ]  # fmt: skip
        # Keyed on the facets' seq when a facet is asked for: the planner walks (facet, seq) backwards.
        key = f.seq if facets else c.seq
        if facets:
            statement = statement.select_from(audit_events.join(audit_event_facets, f.seq == c.seq))
            for column, value in facets:
                statement = statement.where(column == value)
        for column, value in (
            (c.request_id, query.request_id),
            (c.event_type, query.event_type),
            (c.audit_type, query.audit_type),
            (c.producer, query.producer),
        ):
            if value:
                statement = statement.where(column == value)
        if query.since is not None:
            statement = statement.where(c.occurred_at >= query.since)
        if query.until is not None:
            statement = statement.where(c.occurred_at < query.until)
        if query.before is not None:
            statement = statement.where(key < query.before)
        statement = statement.order_by(key.desc()).limit(max(1, min(limit, 500)))
        with self._engine.connect() as conn:
            return [_row(r) for r in conn.execute(statement)]

    def timeline(self, request_id: str, *, limit: int = 1000) -> list[AuditHit]:
        """Every stored event of one request, oldest first (what `atb trace` reads)."""
        c = audit_events.c
        statement = select(*_SHOWN).where(c.request_id == request_id).order_by(c.seq).limit(limit)
        with self._engine.connect() as conn:
            return [_row(r) for r in conn.execute(statement)]


def _row(r: Any) -> AuditHit:
    m = r._mapping
    text = bytes(m["raw"][:RAW_SHOWN]).decode("utf-8", errors="replace")
    return AuditHit(
        int(m["seq"]),
        str(m["topic"]),
        str(m["event_type"]),
        m["request_id"],
        m["producer"],
        m["audit_type"],
        m["occurred_at"],
        m["recorded_at"],
        text,
        position=(str(m["topic"]), int(m["partition"]), int(m["offset"])),
    )
