"""The console's own state: a small SQL store (SQLite file, WAL, by default; or PostgreSQL).

- `credentials`: every enrolled passkey (COSE public key, last signature counter),
  revoked ones kept with who revoked them and when;
- `enrollments`: one-time enrollment links, by the SHA-256 of their token
  (expiring, used once: the use is one conditional UPDATE);
- `sessions`: server-side sessions, by the SHA-256 of the cookie's value, with
  their CSRF token and last use (idle timeout);
- `challenges`: WebAuthn challenges handed out (enrollment, sign-in, vote), each
  taken once and before it expires;
- `votes`: one console vote per (request, approver principal);
- `delegations`: the delegations this console published for delegators who
  signed them with their passkey (the grants themselves are events on atb.keys).

Secrets (link tokens, session ids) are stored only as hashes. The schema is the
alembic history in `migrations/console/` (`migrate`, run when the store opens).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    event,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from atb_runtime.migrate import MIGRATIONS, upgrade

__all__ = [
    "MIGRATION_LOCK",
    "Challenge",
    "ConsoleStore",
    "Credential",
    "Session",
    "migrate",
    "store_url",
    "token_hash",
]

MIGRATION_LOCK = 0x4154424F
"""PostgreSQL advisory lock key of the console store's migrations ("ATBO")."""

metadata = MetaData()

credentials = Table(
    "credentials",
    metadata,
    Column("credential_id", Text, primary_key=True),
    Column("principal", Text, nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("sign_count", BigInteger, nullable=False),
    Column("rp_id", Text, nullable=False),
    Column("user_verified", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("revoked_by", Text, nullable=True),
    Index("credentials_principal", "principal"),
)
enrollments = Table(
    "enrollments",
    metadata,
    Column("token_hash", Text, primary_key=True),
    Column("principal", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
    Column("grant_event", Text, nullable=True),
)
sessions = Table(
    "sessions",
    metadata,
    Column("session_hash", Text, primary_key=True),
    Column("principal", Text, nullable=False),
    Column("csrf", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
)
challenges = Table(
    "challenges",
    metadata,
    Column("nonce", Text, primary_key=True),
    Column("purpose", Text, nullable=False),
    Column("challenge", LargeBinary, nullable=False),
    Column("subject", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
)
votes = Table(
    "votes",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("principal", Text, primary_key=True),
    Column("choice", Text, nullable=False),
    Column("vote_id", Text, nullable=False),
    Column("cast_at", Float, nullable=False),
)

delegations = Table(
    "delegations",
    metadata,
    Column("delegation_id", Text, primary_key=True),
    Column("delegator", Text, nullable=False),
    Column("delegate", Text, nullable=False),
    Column("tiers", Text, nullable=False),
    Column("not_before", Float, nullable=False),
    Column("until", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("granted_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("grant_event", Text, nullable=False),
    Index("delegations_delegator", "delegator"),
    Index("delegations_delegate", "delegate"),
)


def store_url(where: str | Path) -> str:
    return f"sqlite:///{where}" if isinstance(where, Path) else where


def migrate(url: str, migrations: Path | None = None) -> None:
    """Bring the console store at `url` to the newest schema (alembic upgrade head, under the migration lock)."""
    upgrade(url, migrations or MIGRATIONS / "console", lock=MIGRATION_LOCK)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


@dataclass(frozen=True)
class Credential:
    credential_id: str
    principal: str
    public_key: bytes
    sign_count: int
    rp_id: str
    user_verified: bool
    created_at: float
    revoked_at: float | None
    revoked_by: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Session:
    principal: str
    csrf: str
    created_at: float
    last_seen: float


@dataclass(frozen=True)
class DelegationRow:
    """A delegation this console published, or read on the keys topic (`atb delegate`, another console replica):
    `delegator` and `delegate` are directory principals."""

    delegation_id: str
    delegator: str
    delegate: str
    tiers: str
    """Comma-separated tier names; empty: every tier."""
    not_before: float
    until: float
    reason: str
    granted_at: float
    revoked_at: float | None
    grant_event: str
    """The signed DelegationGranted envelope (JSON), as published."""


@dataclass(frozen=True)
class Challenge:
    nonce: str
    purpose: str
    challenge: bytes
    subject: str


class ConsoleStore:
    """`where`: a SQLAlchemy URL, or a path for a SQLite file."""

    def __init__(self, where: str | Path, *, migrations: Path | None = None) -> None:
        url = store_url(where)
        migrate(url, migrations)
        self._engine: Engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        sqlite = self._engine.dialect.name == "sqlite"
        if sqlite:
            event.listen(self._engine, "connect", _sqlite_pragmas)
        self._insert = sqlite_insert if sqlite else pg_insert

    def close(self) -> None:
        self._engine.dispose()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- enrollment links ----------------------------------------------------------------

    def create_enrollment(self, principal: str, *, now: float, ttl_s: float, grant: str | None = None) -> str:
        """A new one-time link token for `principal` (only its hash is stored), with the officer's signed grant."""
        token = secrets.token_urlsafe(32)
        row = {
            "token_hash": token_hash(token),
            "principal": principal,
            "created_at": now,
            "expires_at": now + ttl_s,
            "grant_event": grant,
        }
        with self._engine.begin() as conn:
            conn.execute(enrollments.insert().values(row))
        return token

    def enrollment(self, token: str, *, now: float) -> str | None:
        """The principal of a link that is unused and unexpired, without using it."""
        query = select(enrollments.c.principal).where(
            enrollments.c.token_hash == token_hash(token),
            enrollments.c.used_at.is_(None),
            enrollments.c.expires_at > now,
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else str(row[0])

    def use_enrollment(self, token: str, *, now: float) -> tuple[str, str | None] | None:
        """Use the link once: its principal and grant, or None when it is unknown, used or expired."""
        statement = (
            update(enrollments)
            .where(
                enrollments.c.token_hash == token_hash(token),
                enrollments.c.used_at.is_(None),
                enrollments.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(enrollments.c.principal, enrollments.c.grant_event)
        )
        with self._engine.begin() as conn:
            row = conn.execute(statement).first()
        return None if row is None else (str(row[0]), None if row[1] is None else str(row[1]))

    # -- credentials ---------------------------------------------------------------------

    def add_credential(self, credential: Credential) -> None:
        row = {name: getattr(credential, name) for name in credentials.c.keys()}  # noqa: SIM118
        with self._engine.begin() as conn:
            conn.execute(credentials.insert().values(row))

    def credential(self, credential_id: str) -> Credential | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(credentials).where(credentials.c.credential_id == credential_id)).first()
        return None if row is None else Credential(**row._mapping)

    def credentials_of(self, principal: str, *, include_revoked: bool = True) -> list[Credential]:
        query = select(credentials).where(credentials.c.principal == principal)
        if not include_revoked:
            query = query.where(credentials.c.revoked_at.is_(None))
        with self._engine.connect() as conn:
            return [Credential(**row._mapping) for row in conn.execute(query.order_by(credentials.c.created_at))]

    def all_credentials(self) -> list[Credential]:
        with self._engine.connect() as conn:
            query = select(credentials).order_by(credentials.c.principal, credentials.c.created_at)
            return [Credential(**row._mapping) for row in conn.execute(query)]

    def revoke(self, credential_id: str, *, by: str, now: float) -> bool:
        statement = (
            update(credentials)
            .where(credentials.c.credential_id == credential_id, credentials.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_by=by)
            .returning(credentials.c.credential_id)
        )
        with self._engine.begin() as conn:
            return conn.execute(statement).first() is not None

    def advance_counter(self, credential_id: str, old: int, new: int) -> bool:
        """Record the counter an assertion showed; False if another use got there first (a replay race)."""
        statement = (
            update(credentials)
            .where(credentials.c.credential_id == credential_id, credentials.c.sign_count == old)
            .values(sign_count=new)
            .returning(credentials.c.credential_id)
        )
        with self._engine.begin() as conn:
            return conn.execute(statement).first() is not None

    # -- sessions ------------------------------------------------------------------------

    def create_session(self, principal: str, *, now: float) -> tuple[str, str]:
        """A new session: (cookie value, CSRF token)."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        row = {
            "session_hash": token_hash(sid),
            "principal": principal,
            "csrf": csrf,
            "created_at": now,
            "last_seen": now,
        }
        with self._engine.begin() as conn:
            conn.execute(sessions.insert().values(row))
        return sid, csrf

    def session(self, sid: str, *, now: float, idle_s: float) -> Session | None:
        """The live session of this cookie value, its last use moved to `now`; None if unknown, ended or idle."""
        statement = (
            update(sessions)
            .where(
                sessions.c.session_hash == token_hash(sid),
                sessions.c.ended_at.is_(None),
                sessions.c.last_seen > now - idle_s,
            )
            .values(last_seen=now)
            .returning(sessions.c.principal, sessions.c.csrf, sessions.c.created_at, sessions.c.last_seen)
        )
        with self._engine.begin() as conn:
            row = conn.execute(statement).first()
        return None if row is None else Session(str(row[0]), str(row[1]), float(row[2]), float(row[3]))

    def end_session(self, sid: str, *, now: float) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(sessions).where(sessions.c.session_hash == token_hash(sid)).values(ended_at=now))

    def end_sessions_of(self, principal: str, *, now: float) -> None:
        with self._engine.begin() as conn:
            statement = update(sessions).where(sessions.c.principal == principal, sessions.c.ended_at.is_(None))
            conn.execute(statement.values(ended_at=now))

    # -- challenges ----------------------------------------------------------------------

    def put_challenge(
        self, purpose: str, challenge: bytes, subject: str, *, now: float, ttl_s: float, nonce: str | None = None
    ) -> str:
        nonce = nonce or secrets.token_urlsafe(24)
        row = {
            "nonce": nonce,
            "purpose": purpose,
            "challenge": challenge,
            "subject": subject,
            "expires_at": now + ttl_s,
        }
        with self._engine.begin() as conn:
            conn.execute(challenges.insert().values(row))
        return nonce

    def take_challenge(self, nonce: str, purpose: str, *, now: float) -> Challenge | None:
        """The challenge, used once and only before it expires."""
        statement = (
            update(challenges)
            .where(
                challenges.c.nonce == nonce,
                challenges.c.purpose == purpose,
                challenges.c.used_at.is_(None),
                challenges.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(challenges.c.challenge, challenges.c.subject)
        )
        with self._engine.begin() as conn:
            row = conn.execute(statement).first()
        return None if row is None else Challenge(nonce, purpose, bytes(row[0]), str(row[1]))

    def forget_challenges(self, *, before: float) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(challenges).where(challenges.c.expires_at < before))

    # -- votes ---------------------------------------------------------------------------

    def has_voted(self, request_id: str, principal: str) -> bool:
        query = select(votes.c.vote_id).where(votes.c.request_id == request_id, votes.c.principal == principal)
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    def votes_on(self, request_id: str) -> dict[str, str]:
        query = select(votes.c.principal, votes.c.choice).where(votes.c.request_id == request_id)
        with self._engine.connect() as conn:
            return {str(r[0]): str(r[1]) for r in conn.execute(query)}

    def claim_vote(self, request_id: str, principal: str, choice: str, vote_id: str, *, now: float) -> bool:
        row = {"request_id": request_id, "principal": principal, "choice": choice, "vote_id": vote_id, "cast_at": now}
        statement = self._insert(votes).values(row).on_conflict_do_nothing().returning(votes.c.vote_id)
        with self._engine.begin() as conn:
            return conn.execute(statement).first() is not None

    def release_vote(self, request_id: str, principal: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(votes).where(votes.c.request_id == request_id, votes.c.principal == principal))

    # -- delegations ---------------------------------------------------------------------

    def add_delegation(self, row: DelegationRow) -> bool:
        """Keep a delegation once: False when one with its id is kept already (this console's own, read back)."""
        values = {name: getattr(row, name) for name in delegations.c.keys()}  # noqa: SIM118
        statement = (
            self._insert(delegations).values(values).on_conflict_do_nothing().returning(delegations.c.delegation_id)
        )
        with self._engine.begin() as conn:
            return conn.execute(statement).first() is not None

    def delegations_of(self, principal: str) -> list[DelegationRow]:
        """The delegations `principal` granted or was granted, newest first."""
        query = (
            select(delegations)
            .where(or_(delegations.c.delegator == principal, delegations.c.delegate == principal))
            .order_by(delegations.c.granted_at.desc())
        )
        with self._engine.connect() as conn:
            return [DelegationRow(**dict(r._mapping)) for r in conn.execute(query)]

    def delegations_to(self, delegate: str, *, now: float) -> list[DelegationRow]:
        """The delegations in force now that let `delegate` vote in someone's place, oldest first."""
        query = (
            select(delegations)
            .where(
                delegations.c.delegate == delegate,
                delegations.c.revoked_at.is_(None),
                delegations.c.not_before <= now,
                delegations.c.until >= now,
            )
            .order_by(delegations.c.granted_at)
        )
        with self._engine.connect() as conn:
            return [DelegationRow(**dict(r._mapping)) for r in conn.execute(query)]

    def delegation(self, delegation_id: str) -> DelegationRow | None:
        query = select(delegations).where(delegations.c.delegation_id == delegation_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else DelegationRow(**dict(row._mapping))

    def revoke_delegation(self, delegation_id: str, delegator: str, *, now: float) -> bool:
        """Mark the delegator's delegation revoked once: False when it is not theirs or already revoked."""
        statement = (
            update(delegations)
            .where(
                delegations.c.delegation_id == delegation_id,
                delegations.c.delegator == delegator,
                delegations.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        with self._engine.begin() as conn:
            return conn.execute(statement).rowcount == 1
