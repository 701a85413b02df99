"""The console's store under alembic, on SQLite and a real PostgreSQL: links used once and expiring,
sessions ending when idle or signed out, challenges taken once, one console vote per approver, revocation,
and the signature counter advanced only from the value read (a replay racing a vote loses)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from atb.dev.postgres import TempPostgres
from atb_runtime.migrate import MIGRATIONS
from console.adapters import store as console_store
from console.adapters.store import ConsoleStore, Credential


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'console.db'}"
    server: TempPostgres = request.getfixturevalue("postgres_server")
    name = f"console_{secrets.token_hex(4)}"
    server.create_database(name)
    return server.url("owner", name)


@pytest.fixture
def store(url: str) -> ConsoleStore:
    return ConsoleStore(url)


def _credential(principal: str = "alice", credential_id: str = "cred-1", sign_count: int = 0) -> Credential:
    return Credential(credential_id, principal, b"\xa5cose", sign_count, "localhost", True, time.time(), None, None)


def test_the_store_is_migrated_to_head_and_matches_its_tables(url: str, store: ConsoleStore) -> None:
    ConsoleStore(url).close()  # a second replica finds it at head
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            versions = list(conn.execute(text("SELECT version_num FROM alembic_version_console")).scalars())
            context = MigrationContext.configure(conn, opts={"version_table": "alembic_version_console"})
            drift = list(compare_metadata(context, console_store.metadata))
    finally:
        engine.dispose()
    assert versions == [ScriptDirectory(str(MIGRATIONS / "console")).get_current_head()]
    assert drift == []


def test_an_enrollment_link_is_used_once_and_expires(store: ConsoleStore) -> None:
    now = time.time()
    token = store.create_enrollment("alice", now=now, ttl_s=900, grant='{"the": "signed grant"}')
    assert store.enrollment(token, now=now) == "alice"
    assert store.use_enrollment(token, now=now + 1) == ("alice", '{"the": "signed grant"}')
    assert store.use_enrollment(token, now=now + 2) is None
    assert store.enrollment(token, now=now + 2) is None
    late = store.create_enrollment("bob", now=now, ttl_s=900)
    assert store.use_enrollment(late, now=now + 901) is None
    assert store.use_enrollment("guess", now=now) is None


def test_sessions_end_when_idle_or_signed_out(store: ConsoleStore) -> None:
    now = time.time()
    sid, csrf = store.create_session("alice", now=now)
    seen = store.session(sid, now=now + 100, idle_s=300)
    assert seen is not None
    assert (seen.principal, seen.csrf) == ("alice", csrf)
    assert store.session(sid, now=now + 399, idle_s=300) is not None  # used at +100: idle since then < 300
    assert store.session(sid, now=now + 800, idle_s=300) is None
    other, _ = store.create_session("alice", now=now)
    store.end_session(other, now=now)
    assert store.session(other, now=now, idle_s=300) is None
    third, _ = store.create_session("alice", now=now)
    store.end_sessions_of("alice", now=now)
    assert store.session(third, now=now, idle_s=300) is None


def test_a_challenge_is_taken_once_for_its_purpose_before_it_expires(store: ConsoleStore) -> None:
    now = time.time()
    nonce = store.put_challenge("vote", b"c" * 32, "alice\nreq\napprove", now=now, ttl_s=60)
    assert store.take_challenge(nonce, "signin", now=now) is None
    taken = store.take_challenge(nonce, "vote", now=now)
    assert taken is not None
    assert (taken.challenge, taken.subject) == (b"c" * 32, "alice\nreq\napprove")
    assert store.take_challenge(nonce, "vote", now=now) is None
    old = store.put_challenge("signin", b"d" * 32, "", now=now, ttl_s=60)
    assert store.take_challenge(old, "signin", now=now + 61) is None


def test_one_console_vote_per_approver_and_request(store: ConsoleStore) -> None:
    now = time.time()
    assert store.claim_vote("req-1", "alice", "approve", "v1", now=now)
    assert not store.claim_vote("req-1", "alice", "deny", "v2", now=now)
    assert store.claim_vote("req-1", "carol", "approve", "v3", now=now)
    assert store.votes_on("req-1") == {"alice": "approve", "carol": "approve"}
    store.release_vote("req-1", "alice")
    assert not store.has_voted("req-1", "alice")


def test_revocation_and_the_signature_counter(store: ConsoleStore) -> None:
    store.add_credential(_credential(sign_count=3))
    assert store.advance_counter("cred-1", 3, 4)
    assert not store.advance_counter("cred-1", 3, 5)  # read 3, but another use already moved it
    stored = store.credential("cred-1")
    assert stored is not None
    assert stored.sign_count == 4
    assert store.revoke("cred-1", by="operator", now=time.time())
    assert not store.revoke("cred-1", by="operator", now=time.time())
    assert store.credentials_of("alice", include_revoked=False) == []
    revoked = store.credentials_of("alice")
    assert [c.revoked_by for c in revoked] == ["operator"]
    assert not revoked[0].active
