"""A throw-away PostgreSQL cluster for tests and benchmarks, from Debian's binaries.

`TempPostgres` runs `initdb` into a folder, starts `postgres` on a free loopback
port with its unix socket in that folder, and creates the audit store's three
roles (docs/architecture.md §9.2: real PostgreSQL in tests, no Docker):

* `atb_audit_owner`   owns the schema and runs the migrations;
* `atb_audit_writer`  the audit sink: INSERT/SELECT only (the migrations grant it);
* `atb_audit_purger`  the separate, privileged retention path (`atb audit purge`).

When the current user is root, the binaries run as the `postgres` system user
(`runuser`), because PostgreSQL refuses to run as root. It does not install
PostgreSQL: `PostgresMissingError` says what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from atb.dev.errors import DevError

__all__ = ["ROLES", "PostgresMissingError", "TempPostgres", "find_pg_bin"]

ROLES = {"owner": "atb_audit_owner", "writer": "atb_audit_writer", "purger": "atb_audit_purger"}
PASSWORD = "atb-dev"  # noqa: S105 - a throw-away cluster on loopback, gone after the run
_SEARCH = ("/usr/lib/postgresql",)


class PostgresMissingError(DevError):
    """No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found."""


def find_pg_bin(search: tuple[str, ...] = _SEARCH) -> Path:
    """The newest `/usr/lib/postgresql/<v>/bin` with initdb, or `ATB_PG_BIN`, or `initdb` on PATH."""
    if explicit := os.environ.get("ATB_PG_BIN", "").strip():
        if not (Path(explicit) / "initdb").exists():
            raise PostgresMissingError(f"ATB_PG_BIN={explicit} has no initdb: apt-get install postgresql")
        return Path(explicit)
    candidates: list[Path] = []
    for root in search:
        base = Path(root)
        if base.is_dir():
            candidates += [p / "bin" for p in base.iterdir() if (p / "bin" / "initdb").exists()]
    if candidates:
        return max(candidates, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if search == _SEARCH and (on_path := shutil.which("initdb")):
        return Path(on_path).parent
    raise PostgresMissingError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH): "
        "apt-get install postgresql, or set ATB_PG_BIN"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class TempPostgres:
    """One cluster in `folder`; `start()` then `url(role)`; `stop()` stops it (the folder stays)."""

    folder: Path
    port: int = 0
    external: str = ""
    """A superuser libpq URL of a server someone else runs (ATB_TEST_POSTGRES_URL): use it, start nothing."""

    def __post_init__(self) -> None:
        self.host = "127.0.0.1"
        self._admin_password = ""
        if self.external:
            parsed = urlsplit(self.external)
            self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 5432
            self.superuser, self._admin_password = parsed.username or "postgres", parsed.password or ""
            self.run_as = None
            return
        self.bin = find_pg_bin()
        self.port = self.port or _free_port()
        self.data = self.folder / "data"
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.superuser = "postgres" if self.run_as else os.environ.get("USER", "postgres")

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/")
        if result.returncode != 0:
            raise DevError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
        return result

    def start(self) -> None:
        if self.external:
            self._roles()
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            shutil.chown(self.folder, self.run_as, self.run_as)
            self.folder.chmod(0o700)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", self.superuser, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "postgres.log"), "-o", options, "-w", "start")
        self._roles()

    def _psql(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(None, driver=False), autocommit=True) as conn:
            conn.execute(sql)

    def _roles(self) -> None:
        for role in ROLES.values():
            extra = " CREATEROLE" if role == ROLES["owner"] else ""
            self._psql(
                f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
                f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'{extra}; END IF; END $$"
            )

    def create_database(self, name: str, template: str = "") -> None:
        """A fresh database owned by the owner role (each test its own); `template` copies another one."""
        copy = f' TEMPLATE "{template}"' if template else ""
        self._psql(f'CREATE DATABASE "{name}" OWNER {ROLES["owner"]}{copy}')

    def drop_database(self, name: str) -> None:
        self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(
        self, role: str | None, database: str = "postgres", *, driver: bool = True, unix_socket: bool = False
    ) -> str:
        """A DSN: SQLAlchemy URL (psycopg 3) when `driver`, else a libpq URL; `role` None = superuser.

        `unix_socket`: through the cluster's socket in `folder` instead of TCP (a cluster started here only).
        """
        user = ROLES[role] if role else self.superuser
        secret = f":{PASSWORD}" if role else (f":{self._admin_password}" if self._admin_password else "")
        scheme = "postgresql+psycopg" if driver else "postgresql"
        if unix_socket and not self.external:
            return f"{scheme}://{user}{secret}@/{database}?host={self.folder}&port={self.port}"
        return f"{scheme}://{user}{secret}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        if self.external:
            return
        with contextlib.suppress(DevError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def wait_stopped(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (self.data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
