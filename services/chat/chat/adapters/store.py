"""The chat service's own state: a small SQL store (SQLite file, WAL, by default; or PostgreSQL).

Why a database and not a compacted topic: this state is local to the one process
that talks to Slack (one interactions URL), it is tiny, and two of its three
tables are uniqueness checks that must hold before a vote is published —
a primary key does that in one statement. The views themselves are not stored:
they are rebuilt from Kafka (outcomes, the approvals changelog, PoAs) on start.

- `messages`: the Slack message (channel, ts) of each request's card, and the
  hash of what it shows, so a restart neither reposts cards nor rewrites them.
- `interactions`: every Slack `trigger_id` received: a replayed request counts once.
- `votes`: one published chat vote per (request, approver principal), Slack and Teams alike.
- `teams_activities`: every Teams activity id received: a replayed activity counts once.
- `teams_cards`: the Teams card (conversation, activity id, serviceUrl) of each request, and its hash.
- `notices`: every direct message (reminder, escalation, outcome) claimed before it is sent: each once.

The schema is the alembic history in `migrations/chat/` (`migrate`, run when the
store opens, under a lock); the tables below describe it for queries.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, Float, MetaData, Table, Text, create_engine, delete, event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from atb_runtime.migrate import MIGRATIONS, upgrade

__all__ = [
    "MIGRATION_LOCK",
    "ChatStore",
    "PostedMessage",
    "TeamsCard",
    "interactions",
    "messages",
    "metadata",
    "migrate",
    "notices",
    "store_url",
    "teams_activities",
    "teams_cards",
    "votes",
]

MIGRATION_LOCK = 0x41544243
"""PostgreSQL advisory lock key of the chat store's migrations ("ATBC")."""

metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("channel", Text, primary_key=True),
    Column("ts", Text, nullable=False),
    Column("card_hash", Text, nullable=False),
)

interactions = Table(
    "interactions",
    metadata,
    Column("trigger_id", Text, primary_key=True),
    Column("received_at", Float, nullable=False),
)

votes = Table(
    "votes",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("principal", Text, primary_key=True),
    Column("choice", Text, nullable=False),
    Column("vote_id", Text, nullable=False),
)

teams_activities = Table(
    "teams_activities",
    metadata,
    Column("activity_id", Text, primary_key=True),
    Column("received_at", Float, nullable=False),
)

teams_cards = Table(
    "teams_cards",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("conversation_id", Text, primary_key=True),
    Column("activity_id", Text, nullable=False),
    Column("service_url", Text, nullable=False),
    Column("card_hash", Text, nullable=False),
)


def store_url(where: str | Path) -> str:
    """A SQLAlchemy URL as is; a path is a SQLite file."""
    return f"sqlite:///{where}" if isinstance(where, Path) else where


def migrate(url: str, migrations: Path | None = None) -> None:
    """Bring the chat store at `url` to the newest schema (alembic upgrade head, under the migration lock).

    `migrations` defaults to the checkout's `migrations/chat/`; an installed image
    passes its own copy (`ATB_CHAT_MIGRATIONS_DIR`).
    """
    upgrade(url, migrations or MIGRATIONS / "chat", lock=MIGRATION_LOCK)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


notices = Table(
    "notices",
    metadata,
    Column("notice_id", Text, primary_key=True),
    Column("request_id", Text, nullable=False),
    Column("sent_at", Float, nullable=False),
)


@dataclass(frozen=True)
class PostedMessage:
    channel: str
    ts: str
    card_hash: str


@dataclass(frozen=True)
class TeamsCard:
    conversation_id: str
    activity_id: str
    service_url: str
    card_hash: str


class ChatStore:
    """`where`: a SQLAlchemy URL, or a path for a SQLite file."""

    def __init__(self, where: str | Path, *, migrations: Path | None = None) -> None:
        url = store_url(where)
        migrate(url, migrations)  # creates the SQLite file's folder too
        self._engine: Engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        sqlite = self._engine.dialect.name == "sqlite"
        if sqlite:
            event.listen(self._engine, "connect", _sqlite_pragmas)
        self._insert = sqlite_insert if sqlite else pg_insert

    def close(self) -> None:
        self._engine.dispose()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def messages(self, request_id: str) -> list[PostedMessage]:
        query = (
            select(messages.c.channel, messages.c.ts, messages.c.card_hash)
            .where(messages.c.request_id == request_id)
            .order_by(messages.c.channel)
        )
        with self._engine.connect() as conn:
            return [PostedMessage(str(row[0]), str(row[1]), str(row[2])) for row in conn.execute(query)]

    def has_messages(self, request_id: str) -> bool:
        query = select(messages.c.request_id).where(messages.c.request_id == request_id).limit(1)
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    def save_message(self, request_id: str, message: PostedMessage) -> None:
        upsert = self._insert(messages).values(
            request_id=request_id, channel=message.channel, ts=message.ts, card_hash=message.card_hash
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=["request_id", "channel"],
            set_={"ts": upsert.excluded.ts, "card_hash": upsert.excluded.card_hash},
        )
        with self._engine.begin() as conn:
            conn.execute(upsert)

    def first_interaction(self, trigger_id: str, received_at: float) -> bool:
        """Record a Slack trigger_id; False if it was already received (a replay)."""
        row = {"trigger_id": trigger_id, "received_at": received_at}
        statement = self._insert(interactions).values(row).on_conflict_do_nothing()
        return self._insert_once(statement.returning(interactions.c.trigger_id))

    def first_activity(self, activity_id: str, received_at: float) -> bool:
        """Record a Teams activity id; False if it was already received (a replay)."""
        row = {"activity_id": activity_id, "received_at": received_at}
        statement = self._insert(teams_activities).values(row).on_conflict_do_nothing()
        return self._insert_once(statement.returning(teams_activities.c.activity_id))

    def teams_cards(self, request_id: str) -> list[TeamsCard]:
        c = teams_cards.c
        query = (
            select(c.conversation_id, c.activity_id, c.service_url, c.card_hash)
            .where(c.request_id == request_id)
            .order_by(c.conversation_id)
        )
        with self._engine.connect() as conn:
            return [TeamsCard(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in conn.execute(query)]

    def save_teams_card(self, request_id: str, card: TeamsCard) -> None:
        upsert = self._insert(teams_cards).values(
            request_id=request_id,
            conversation_id=card.conversation_id,
            activity_id=card.activity_id,
            service_url=card.service_url,
            card_hash=card.card_hash,
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=["request_id", "conversation_id"],
            set_={
                "activity_id": upsert.excluded.activity_id,
                "service_url": upsert.excluded.service_url,
                "card_hash": upsert.excluded.card_hash,
            },
        )
        with self._engine.begin() as conn:
            conn.execute(upsert)

    def has_voted(self, request_id: str, principal: str) -> bool:
        query = select(votes.c.vote_id).where(votes.c.request_id == request_id, votes.c.principal == principal)
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    def claim_vote(self, request_id: str, principal: str, choice: str, vote_id: str) -> bool:
        """Reserve this approver's one chat vote on the request; False if it is taken."""
        row = {"request_id": request_id, "principal": principal, "choice": choice, "vote_id": vote_id}
        statement = self._insert(votes).values(row).on_conflict_do_nothing()
        return self._insert_once(statement.returning(votes.c.vote_id))

    def release_vote(self, request_id: str, principal: str) -> None:
        """Publishing failed: the approver may click again."""
        with self._engine.begin() as conn:
            conn.execute(delete(votes).where(votes.c.request_id == request_id, votes.c.principal == principal))

    def claim_notice(self, notice_id: str, request_id: str, at: float) -> bool:
        """Claim one direct message before sending it; False if it was already claimed (sent)."""
        row = {"notice_id": notice_id, "request_id": request_id, "sent_at": at}
        statement = self._insert(notices).values(row).on_conflict_do_nothing()
        return self._insert_once(statement.returning(notices.c.notice_id))

    def release_notice(self, notice_id: str) -> None:
        """Sending failed: the message may be sent again (on the event's next delivery)."""
        with self._engine.begin() as conn:
            conn.execute(delete(notices).where(notices.c.notice_id == notice_id))

    def _insert_once(self, statement: Any) -> bool:
        """True when the row was inserted (RETURNING gives it back); False when its key was already there."""
        with self._engine.begin() as conn:
            return conn.execute(statement).first() is not None
