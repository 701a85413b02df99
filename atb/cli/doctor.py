"""`atb doctor`: is this machine ready to run ATB, and if not, what to fix.

One line per check, `ok`, `warn` or `FAIL` and what was found or what to do:

* toolchain: python 3.11, java 17+; mvn and go only while the Kafka jars or OPA
  are not built yet (`atb dev tools` builds them);
* Kafka answers at the CLI's bootstrap address and has the catalogue topics;
* OPA answers and has the `atb.poa` policy loaded;
* the dev PKI: the CA and its bundle are readable and valid (missing: `warn`, the
  demo and `atb pki init` create it);
* the issuer's signing keys (missing: `warn`, the issuer creates its first key);
* the audit store opens and is migrated to the newest schema (a SQLite file not
  created yet: `warn`, the audit sink creates it);
* services recorded in the state folder (`<state>/services/*/*.pid`) answer /healthz.

Exit 0 when nothing FAILs (warnings do not count), else 1 (atb/errors.py).
Every check is bounded in time, so an unreachable dependency cannot hang it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import typer

from atb.errors import AtbError, describe, kafka_bootstrap

__all__ = ["Check", "doctor", "run_checks"]

Status = Literal["ok", "warn", "fail"]
CHECK_TIMEOUT_S = 8.0
HTTP_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


@dataclass(frozen=True)
class _Where:
    """What the checks look at, read from the environment the way the other commands read it."""

    state_dir: Path
    cache_dir: Path
    kafka: str
    opa: str
    namespace: str
    trust_domain: str


def _where() -> _Where:
    from atb.dev.config import DevConfig

    config = DevConfig.from_env()  # a bad ATB_*_PORT: one line, exit 2 (AtbGroup)
    return _Where(
        state_dir=config.state_dir,
        cache_dir=config.cache_dir,
        kafka=kafka_bootstrap(),
        opa=os.environ.get("ATB_OPA_URL", "").strip() or config.opa_url,
        namespace=os.environ.get("ATB_TOPIC_NAMESPACE", ""),
        trust_domain=os.environ.get("ATB_TRUST_DOMAIN", "atb.local"),
    )


# -- toolchain -------------------------------------------------------------------------------------


def _toolchain() -> list[Check]:
    from atb.dev.config import DevConfig
    from atb.dev.errors import DevError
    from atb.dev.toolchain import jars_fresh, opa_fresh, require_java

    checks = []
    version = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info[:2] == (3, 11)
    checks.append(Check("python", "ok" if ok else "fail", version if ok else f"{version}: use Python 3.11"))
    try:
        checks.append(Check("java", "ok", require_java()))
    except (DevError, OSError) as exc:
        checks.append(Check("java", "fail", str(exc)))
    config = DevConfig.from_env()
    built = {"mvn": jars_fresh(config), "go": opa_fresh(config)}
    what = {"mvn": "the Kafka jars", "go": "OPA"}
    for tool, done in built.items():
        path = shutil.which(tool)
        if path is not None:
            checks.append(Check(tool, "ok", path))
        elif done:
            checks.append(Check(tool, "warn", f"not found; not needed while {what[tool]} stay built in .cache/"))
        else:
            checks.append(Check(tool, "fail", f"not found, and {what[tool]} are not built yet: install {tool}"))
    return checks


# -- Kafka and OPA -------------------------------------------------------------------------------


async def _kafka(where: _Where) -> Check:
    from atb.dev.topics import admin_client, catalogue_names

    async with admin_client(where.kafka, request_timeout_ms=int(CHECK_TIMEOUT_S * 1000)) as admin:
        topics = set(await admin.list_topics())
    wanted = set(catalogue_names(where.namespace))
    missing = sorted(wanted - topics)
    if missing:
        return Check(
            "kafka", "fail", f"{where.kafka} answers but lacks {', '.join(missing)}: `atb dev up` creates them"
        )
    return Check("kafka", "ok", f"{where.kafka}, {len(wanted)} catalogue topics")


async def _opa(where: _Where) -> Check:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(f"{where.opa}/health") as health:
            if health.status != 200:
                return Check("opa", "fail", f"{where.opa}/health answers {health.status}: see .state/opa/opa.log")
        async with session.get(f"{where.opa}/v1/policies") as response:
            body = await response.json()
    raws = [str(p.get("raw", "")) for p in body.get("result", []) if isinstance(p, dict)]
    if not any("package atb.poa\n" in raw for raw in raws):
        return Check("opa", "fail", f"{where.opa} has no `atb.poa` policy: run OPA on opa/policy (`atb dev up`)")
    return Check("opa", "ok", f"{where.opa}, policy atb.poa loaded ({len(raws)} modules)")


# -- files: PKI, keys, audit store ------------------------------------------------------------------


def _pki(where: _Where) -> Check:
    from cryptography import x509

    from atb_identity import TrustBundle, bundle_path, ca_paths

    cert_path, key_path = ca_paths(where.state_dir)
    if not cert_path.exists() and not key_path.exists():
        return Check("pki", "warn", f"no dev CA in {cert_path.parent}: create it with `atb pki init`")
    if not key_path.exists() or not cert_path.exists():
        return Check("pki", "fail", f"{cert_path.parent} holds half a CA: move it away and run `atb pki init`")
    if key_path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Check("pki", "fail", f"the CA key {key_path} is readable by others: chmod 600 it")
    TrustBundle.load(bundle_path(where.state_dir), where.trust_domain)  # raises with what is wrong
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        return Check("pki", "fail", f"the dev CA is not valid now (until {cert.not_valid_after_utc:%Y-%m-%d})")
    left = cert.not_valid_after_utc - now
    status: Status = "warn" if left < timedelta(days=30) else "ok"
    return Check("pki", status, f"CA of {where.trust_domain} valid until {cert.not_valid_after_utc:%Y-%m-%d}")


def _keys() -> Check:
    from issuer.adapters.keyring import SigningKeyRing
    from issuer.settings import IssuerSettings

    settings = IssuerSettings()
    if settings.signing_key_path is not None:
        if not settings.signing_key_path.is_file():
            return Check("keys", "fail", f"ATB_SIGNING_KEY_PATH={settings.signing_key_path} is not a file")
        return Check("keys", "ok", f"mounted signing key {settings.signing_key_path}")
    folder = settings.keyring_dir()
    if not (folder / "index.json").exists():
        return Check("keys", "warn", f"no keyring in {folder} yet: the issuer creates its first key when it starts")
    ring = SigningKeyRing(folder)
    current = ring.current(datetime.now(UTC))
    return Check("keys", "ok", f"{len(ring.entries())} key(s) in {folder}, signing with {current.kid}")


def _audit_store() -> Check:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    from audit_sink.adapters.db import make_engine
    from audit_sink.settings import AuditSinkSettings

    settings = AuditSinkSettings()
    url = settings.audit_db_url or f"sqlite:///{settings.state_dir / 'audit' / 'audit.db'}"
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        return Check("audit store", "warn", f"{shown} does not exist yet: the audit sink creates it when it starts")
    migrations = settings.audit_migrations_dir or Path(__file__).resolve().parents[2] / "migrations"
    head = ScriptDirectory(str(migrations)).get_current_head()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    if current != head:
        return Check(
            "audit store", "fail", f"{shown} is at revision {current}, not {head}: start the audit sink (it migrates)"
        )
    return Check("audit store", "ok", f"{shown} at revision {head}")


# -- services ----------------------------------------------------------------------------------------


def _ops_port(pid: int) -> int | None:
    """The /healthz port a service was started with (its ATB_OPS_PORT), read from /proc."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        name, _, value = item.partition(b"=")
        if name == b"ATB_OPS_PORT" and value.isdigit() and int(value) > 0:
            return int(value)
    return None


async def _services(where: _Where) -> list[Check]:
    import aiohttp

    from atb.dev.procs import ManagedProcess

    pidfiles = sorted((where.state_dir / "services").glob("*/*.pid"))
    if not pidfiles:
        return []
    checks = []
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for pidfile in pidfiles:
            name = f"{pidfile.parent.name}/{pidfile.stem}"
            proc = ManagedProcess(pidfile.stem, ("?",), None, log_path=pidfile.with_suffix(".log"), pid_path=pidfile)
            pid = proc.pid
            if pid is None:
                checks.append(Check(name, "warn", "recorded but not running (left by a crash): start the stack again"))
                continue
            port = _ops_port(pid)
            if port is None:
                checks.append(Check(name, "warn", f"pid {pid} runs without an ops port: /healthz cannot be asked"))
                continue
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    healthy = response.status == 200
            except (aiohttp.ClientError, TimeoutError) as exc:
                checks.append(Check(name, "fail", f"pid {pid}: /healthz on {port}: {describe(exc).message}"))
                continue
            log = pidfile.with_suffix(".log")
            detail = f"pid {pid}, /healthz on {port}" + ("" if healthy else f" answers {response.status}: see {log}")
            checks.append(Check(name, "ok" if healthy else "fail", detail))
    return checks


# -- running them --------------------------------------------------------------------------------------


async def _bounded(name: str, check: Callable[[], Awaitable[Check]]) -> Check:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except Exception as exc:
        return Check(name, "fail", describe(exc).message)


def _safely(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:
        return Check(name, "fail", describe(exc).message)


async def run_checks() -> list[Check]:
    """Every check, in the order they are printed; none raises."""
    where = _where()
    kafka, opa, services = await asyncio.gather(
        _bounded("kafka", lambda: _kafka(where)),
        _bounded("opa", lambda: _opa(where)),
        asyncio.wait_for(_services(where), CHECK_TIMEOUT_S * 2),
        return_exceptions=True,
    )
    try:
        tools = await asyncio.to_thread(_toolchain)
    except Exception as exc:
        tools = [Check("toolchain", "fail", describe(exc).message)]
    checks = [
        *tools,
        *(c for c in (kafka, opa) if isinstance(c, Check)),
        _safely("pki", lambda: _pki(where)),
        _safely("keys", _keys),
        await asyncio.to_thread(_safely, "audit store", _audit_store),
    ]
    if isinstance(services, BaseException):
        checks.append(Check("services", "fail", describe(services).message))
    else:
        checks.extend(services)
    return checks


_MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def doctor() -> None:
    """Check the local setup (toolchain, Kafka, OPA, PKI, keys, audit store, services) and say what to fix."""
    checks = asyncio.run(run_checks())
    width = max(len(c.name) for c in checks)
    for c in checks:
        typer.echo(f"{_MARK[c.status]}  {c.name:<{width}}  {c.detail}")
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        raise AtbError(f"{len(failed)} check(s) failed: {', '.join(failed)} (each line above says what to fix)")
    warned = sum(c.status == "warn" for c in checks)
    typer.echo(f"all {len(checks)} checks pass" + (f" ({warned} warnings)" if warned else ""))
