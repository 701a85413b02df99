"""Audit-store fixtures: the same tests on SQLite and on a real PostgreSQL (docs/architecture.md §9.2, issue 7).

PostgreSQL comes from `ATB_TEST_POSTGRES_URL` (a superuser libpq URL) when set;
otherwise the session starts its own throw-away cluster from Debian's binaries
(`atb.dev.postgres.TempPostgres`: initdb into a temp folder, a free loopback
port, run as the `postgres` user when we are root). Without PostgreSQL binaries
the PostgreSQL tests FAIL with what to install: they never skip.

`audit_db` is parametrized `sqlite` / `postgresql`; each test gets a fresh,
migrated database and three URLs: the owner (migrations), the writer (the sink:
INSERT/SELECT only) and the purger (the privileged retention path). On SQLite
the three are the same file: SQLite has no roles, only the triggers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from atb.dev.postgres import PostgresMissingError, TempPostgres
from audit_sink.adapters.db import migrate

PG_ENV = "ATB_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class AuditDb:
    kind: str
    owner: str
    writer: str
    purger: str
    name: str
    server: TempPostgres | None = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TempPostgres]:
    """A PostgreSQL server for this session (external via ATB_TEST_POSTGRES_URL, else our own cluster)."""
    if external := os.environ.get(PG_ENV, "").strip():
        server = TempPostgres(Path(tempfile.gettempdir()), external=external)
        server.start()
        yield server
        return
    try:
        server = TempPostgres(Path(tempfile.mkdtemp(prefix="atb-pg-")))
    except PostgresMissingError as exc:
        pytest.fail(f"PostgreSQL tests need a server: {exc} (or set {PG_ENV})", pytrace=False)
    server.start()
    yield server
    server.stop()
    server.wait_stopped()
    shutil.rmtree(server.folder, ignore_errors=True)


def new_database(kind: str, request: pytest.FixtureRequest, tmp_path: Path, *, template: str = "") -> AuditDb:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / f'audit-{secrets.token_hex(3)}.db'}"
        migrate(url)
        return AuditDb(kind, url, url, url, url)
    server: TempPostgres = request.getfixturevalue("postgres_server")
    name = f"audit_{secrets.token_hex(4)}"
    server.create_database(name, template)
    db = AuditDb(kind, server.url("owner", name), server.url("writer", name), server.url("purger", name), name, server)
    if not template:
        migrate(db.owner)
    return db


@pytest.fixture(params=BACKENDS)
def audit_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditDb]:
    db = new_database(request.param, request, tmp_path)
    yield db
    if db.server is not None:
        db.server.drop_database(db.name)
