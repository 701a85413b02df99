"""The chat service's own state, in one small SQLite file (WAL).

Why SQLite and not a compacted topic: this state is local to the one process
that talks to Slack (one interactions URL), it is tiny, and two of its three
tables are uniqueness checks that must hold before a vote is published —
a primary key does that in one statement. The views themselves are not stored:
they are rebuilt from Kafka (outcomes, the approvals changelog, PoAs) on start.

- `messages`: the Slack message (channel, ts) of each request's card, and the
  hash of what it shows, so a restart neither reposts cards nor rewrites them.
- `interactions`: every Slack `trigger_id` received: a replayed request counts once.
- `votes`: one published chat vote per (request, approver principal).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChatStore", "PostedMessage"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    request_id TEXT NOT NULL, channel TEXT NOT NULL, ts TEXT NOT NULL, card_hash TEXT NOT NULL,
    PRIMARY KEY (request_id, channel));
CREATE TABLE IF NOT EXISTS interactions (trigger_id TEXT PRIMARY KEY, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    request_id TEXT NOT NULL, principal TEXT NOT NULL, choice TEXT NOT NULL, vote_id TEXT NOT NULL,
    PRIMARY KEY (request_id, principal));
"""


@dataclass(frozen=True)
class PostedMessage:
    channel: str
    ts: str
    card_hash: str


class ChatStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def messages(self, request_id: str) -> list[PostedMessage]:
        rows = self._db.execute(
            "SELECT channel, ts, card_hash FROM messages WHERE request_id = ? ORDER BY channel", (request_id,)
        )
        return [PostedMessage(*row) for row in rows]

    def has_messages(self, request_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM messages WHERE request_id = ?", (request_id,)).fetchone() is not None

    def save_message(self, request_id: str, message: PostedMessage) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?) ON CONFLICT (request_id, channel) "
                "DO UPDATE SET ts = excluded.ts, card_hash = excluded.card_hash",
                (request_id, message.channel, message.ts, message.card_hash),
            )

    def first_interaction(self, trigger_id: str, received_at: float) -> bool:
        """Record a Slack trigger_id; False if it was already received (a replay)."""
        with self._lock:
            try:
                self._db.execute("INSERT INTO interactions VALUES (?, ?)", (trigger_id, received_at))
            except sqlite3.IntegrityError:
                return False
            return True

    def has_voted(self, request_id: str, principal: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM votes WHERE request_id = ? AND principal = ?", (request_id, principal)
        ).fetchone()
        return row is not None

    def claim_vote(self, request_id: str, principal: str, choice: str, vote_id: str) -> bool:
        """Reserve this approver's one chat vote on the request; False if it is taken."""
        with self._lock:
            try:
                self._db.execute("INSERT INTO votes VALUES (?, ?, ?, ?)", (request_id, principal, choice, vote_id))
            except sqlite3.IntegrityError:
                return False
            return True

    def release_vote(self, request_id: str, principal: str) -> None:
        """Publishing failed: the approver may click again."""
        with self._lock:
            self._db.execute("DELETE FROM votes WHERE request_id = ? AND principal = ?", (request_id, principal))
