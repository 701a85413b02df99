"""Search facets beside the rows (migration 0010) on SQLite and PostgreSQL.

The sink stores an event's facets in the transaction that stores the row; the
migration fills them in for rows stored before it; they are append-only like the
rows, and the purge path takes them with their rows, so no facet outlives its event.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, insert, select, text
from sqlalchemy.exc import DBAPIError

from atb.dev.postgres import TempPostgres
from audit_sink.adapters.db import audit_event_facets, audit_events, make_engine
from audit_sink.adapters.ledger import HoldScope, place_hold, purge
from audit_sink.domain import AuditRow, RecordMeta, RetentionPolicy, row_for
from audit_sink.domain.facets import facets_of
from audit_sink.domain.rows import STORED_FIELDS
from contracts import (
    AuditEvent,
    BrokerDecision,
    Decision,
    EventPayload,
    RequestExpired,
    Tier,
    encode_envelope,
    make_envelope,
)
from tests.audit_db import AuditDb
from tests.audit_support import Filler

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
OLD = datetime(2015, 3, 1, tzinfo=UTC)  # + 7 years: past retention
AGENT = "spiffe://atb.local/agent/finance-bot"


def _payload(i: int, occurred: datetime) -> EventPayload:
    if i % 3 == 0:
        return BrokerDecision(
            request_id=f"req-{i}",
            action_id=f"a-{i}",
            agent_id=AGENT if i % 2 else f"spiffe://atb.local/agent/bot-{i}",
            action="crm.contact.update",
            decision=Decision.DENY if i % 2 else Decision.ALLOW,
            reasons=(),
            action_tier=Tier.HIGH,
            policy_version="v1",
            decided_at=occurred,
        )
    if i % 3 == 1:
        return RequestExpired(request_id=f"req-{i}", deadline=occurred, approvals_counted=0, required_approvals=1)
    return AuditEvent(audit_type="approval_vote_counted", request_id=f"req-{i}", actor="x", outcome="info",
                      details={"i": i}, occurred_at=occurred)  # fmt: skip


def _rows(start: int, count: int, *, occurred: datetime) -> list[AuditRow]:
    out = []
    for i in range(start, start + count):
        payload = _payload(i, occurred)
        value = encode_envelope(
            make_envelope(payload, source="spiffe://atb.local/svc/t", event_id=f"e-{i}", time=occurred)
        )
        if i % 10 == 9:
            value = b"\x00not json" + str(i).encode()
        meta = RecordMeta(payload.topic.value, 0, i, None, value, int(occurred.timestamp() * 1000))
        out.append(row_for(meta, recorded_at=datetime.now(UTC), retention=RetentionPolicy()))
    return out


def _stored(engine: Engine) -> dict[int, tuple[str | None, ...]]:
    c = audit_event_facets.c
    with engine.connect() as conn:
        return {int(r[0]): tuple(r[1:]) for r in conn.execute(select(c.seq, c.agent_id, c.action, c.tier, c.outcome))}


def _expected(engine: Engine) -> dict[int, tuple[str | None, ...]]:
    c = audit_events.c
    with engine.connect() as conn:
        found = {
            int(seq): facets_of(event_type, bytes(raw))
            for seq, event_type, raw in conn.execute(select(c.seq, c.event_type, c.raw))
        }
    return {seq: tuple(f) for seq, f in found.items() if f}


def test_the_sink_stores_each_rows_facets_with_it(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    filler.append(_rows(0, 60, occurred=datetime.now(UTC)))
    owner = make_engine(audit_db.owner)
    stored = _stored(owner)
    assert stored == _expected(owner)
    assert len(stored) == 54  # every 10th record is not JSON: stored, without facets
    assert (None, None, None, "expired") in stored.values()
    assert (AGENT, "crm.contact.update", "high", "deny") in stored.values()
    assert (None, None, None, "info") in stored.values()


def test_facets_are_append_only_and_leave_with_their_rows(audit_db: AuditDb, tmp_path: Path) -> None:
    filler = Filler(audit_db.writer, tmp_path)
    filler.append(_rows(0, 30, occurred=OLD))  # past retention
    filler.append(_rows(30, 30, occurred=datetime.now(UTC) - timedelta(days=1)))  # kept
    filler.checkpoint()
    owner, purger = make_engine(audit_db.owner), make_engine(audit_db.purger)
    for engine in (make_engine(audit_db.writer), purger):
        with pytest.raises(DBAPIError, match=r"refused|denied"), engine.begin() as conn:
            conn.execute(text("UPDATE audit_event_facets SET outcome = 'allow'"))
        with pytest.raises(DBAPIError, match=r"refused|denied"), engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_event_facets"))
    assert _stored(owner) == _expected(owner)
    assert len(_stored(owner)) == 54

    place_hold(purger, HoldScope(request_id="req-3"), reason="case 7", actor="legal")
    outcome = purge(purger, filler.signer, actor="compliance")
    assert outcome.removed == 29
    stored = _stored(owner)
    assert stored == _expected(owner)  # no facet left without its row, none lost for a row kept
    assert len(stored) == 28  # the 27 kept rows with facets and req-3's, held
    with owner.connect() as conn:
        held = conn.execute(select(audit_events.c.seq).where(audit_events.c.request_id == "req-3")).scalar_one()
    assert stored[int(held)] == (AGENT, "crm.contact.update", "high", "deny")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    server: TempPostgres = request.getfixturevalue("postgres_server")
    name = f"facets_{secrets.token_hex(4)}"
    server.create_database(name)
    return server.url("owner", name)


def test_the_migration_fills_in_the_facets_of_rows_stored_before_it(url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "0009")
    engine = create_engine(url)
    with engine.begin() as conn:
        old = _rows(0, 4500, occurred=OLD)  # more than one backfill batch
        values = [
            {**dict(zip(STORED_FIELDS, row, strict=False)), "leaf_idx": i, "leaf_hash": b"\x00" * 32}
            for i, row in enumerate(old)
        ]
        conn.execute(insert(audit_events), values)
    engine.dispose()
    command.upgrade(config, "head")
    owner = make_engine(url)
    stored = _stored(owner)
    assert len(stored) == 4050
    assert stored == _expected(owner)
