"""`atb console`: passkey enrollment links and credential management for the approver console.

Works on the console's store (`ATB_CONSOLE_DB_URL`, else the SQLite file in the
state folder, as the console service finds it):

- `atb console enroll <principal> --as <officer>` prints a one-time link (default
  15 minutes, at most an hour) with which that directory principal registers a
  passkey. The link carries the officer's grant (`PasskeyEnrollmentGranted`,
  signed with the officer's own SVID; the officer is a member of an enroller
  group, default `security`): without it approvals and the issuer refuse the
  passkey, so a console on its own enrolls no one. The link creation is audited
  (`console_enrollment_link_created`, with the grant id and the officer); the
  enrollment itself is audited and announced by the console when the browser
  finishes it.
- `atb console credentials list [<principal>]` lists credentials, revoked ones too.
- `atb console credentials revoke <principal> [--credential ID]` revokes that
  principal's credentials (all, or one), ends their sessions, and publishes
  `PasskeyRevoked` (signed with the console's SVID) and `console_passkey_revoked`.
  Kafka is asked first: with Kafka down nothing is revoked (exit 4).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from atb.cli.vote import CERT_OPTION, KEY_OPTION, _svid
from atb.errors import AtbUsageError, UnavailableError, describe
from atb_identity import Svid, sign_envelope
from atb_runtime import Publisher, audit
from contracts import make_envelope
from contracts.console_events import PasskeyEnrollmentGranted

if TYPE_CHECKING:
    from console.settings import ConsoleSettings

__all__ = ["console_app", "create_link", "revoke_credentials"]

console_app = typer.Typer(no_args_is_help=True, help="The approver console: passkey enrollment and credentials.")
credentials_app = typer.Typer(no_args_is_help=True, help="Enrolled passkeys: list, revoke.")
console_app.add_typer(credentials_app, name="credentials")


def _settings() -> ConsoleSettings:
    """Read now (the environment of this command), not when a module was first imported."""
    from console.settings import ConsoleSettings

    return ConsoleSettings()


def _directory_principal(principal: str) -> str:
    from contracts.directory import Directory

    settings = _settings()
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    approver = directory.resolve(principal)
    if approver is None:
        raise AtbUsageError(f"{principal!r} is not in the approver directory ({settings.directory_path()})")
    return approver.principal


def create_link(principal: str, officer: Svid, ttl_s: float | None = None) -> tuple[str, str, PasskeyEnrollmentGranted]:
    """A one-time enrollment link for a directory principal, with `officer`'s signed grant: (principal, URL, grant).

    The officer is checked first (a member of an enroller group), so a grant that approvals and the
    issuer would refuse is never made.
    """
    from console.adapters.store import ConsoleStore
    from contracts.directory import Directory
    from contracts.passkey_grants import MAX_GRANT_S, officer_refusal

    settings = _settings()
    name = _directory_principal(principal)
    ttl = float(ttl_s if ttl_s is not None else settings.console_enroll_ttl_s)
    if not 0 < ttl <= MAX_GRANT_S:
        raise AtbUsageError(f"--ttl {ttl:.0f}: a link works between 1 s and {MAX_GRANT_S} s")
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    refusal = officer_refusal(directory, str(officer.spiffe_id), settings.passkey_enroller_groups)
    if refusal is not None:
        raise AtbUsageError(f"{officer.spiffe_id} may not grant enrollments: {refusal.detail}")
    now = datetime.now(UTC)
    grant = PasskeyEnrollmentGranted(
        grant_id=f"grant-{uuid.uuid4()}",
        principal=name,
        granted_by=str(officer.spiffe_id),
        granted_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    signed = sign_envelope(make_envelope(grant, source=str(officer.spiffe_id)), officer)
    store = ConsoleStore(settings.db_url(), migrations=settings.console_migrations_dir)
    try:
        token = store.create_enrollment(name, now=now.timestamp(), ttl_s=ttl, grant=signed.model_dump_json())
    finally:
        store.close()
    return name, f"{settings.origin()}/enroll/{token}", grant


async def _audit_link(grant: PasskeyEnrollmentGranted) -> None:
    settings = _settings()
    record = audit(
        "console_enrollment_link_created",
        source=grant.granted_by,
        namespace=settings.topic_namespace,
        outcome="success",
        reason=grant.principal,
        details={
            "principal": grant.principal,
            "expires_at": grant.expires_at.isoformat(),
            "grant_id": grant.grant_id,
            "granted_by": grant.granted_by,
        },
    )
    async with Publisher(settings.kafka_bootstrap_servers, "atb-console-cli") as publisher:
        await publisher.send_and_wait([record])


async def revoke_credentials(principal: str, credential_id: str | None, *, by: str, reason: str) -> list[str]:
    """Revoke a principal's active credentials (or one of them); returns the revoked ids."""
    from atb_runtime.identity import service_svid
    from console.adapters.store import ConsoleStore
    from console.service import ConsoleService
    from contracts.directory import Directory

    settings = _settings()
    name = _directory_principal(principal)
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    store = ConsoleStore(settings.db_url(), migrations=settings.console_migrations_dir)
    try:
        active = store.credentials_of(name, include_revoked=False)
        chosen = [c for c in active if credential_id is None or c.credential_id == credential_id]
        if not chosen:
            raise AtbUsageError(f"{name} has no active credential" + (f" {credential_id}" if credential_id else ""))
        svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
        async with Publisher(settings.kafka_bootstrap_servers, "atb-console-cli") as publisher:
            service = ConsoleService(settings, directory, store, publisher, svid)
            revoked = []
            for credential in chosen:
                await service.revoke(credential.credential_id, by=by, reason=reason)
                revoked.append(credential.credential_id)
        return revoked
    finally:
        store.close()


@console_app.command("enroll")
def enroll(
    principal: str = typer.Argument(..., help="A principal (or any identity) of the approver directory."),
    ttl: float = typer.Option(900.0, help="Seconds the link works (once); at most 3600."),
    officer: str | None = typer.Option(
        None,
        "--as",
        envvar="ATB_ENROLLMENT_OFFICER",
        help="The enrollment officer who grants it (a member of an enroller group): uses the SVID of .../user/<name>.",
    ),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
) -> None:
    """Print a one-time link with which PRINCIPAL registers a passkey, granted by the officer's SVID."""
    if not officer and (cert is None or key is None):
        raise AtbUsageError(
            "say which enrollment officer grants this: --as <name> (or ATB_ENROLLMENT_OFFICER),"
            " or --svid-cert and --svid-key"
        )
    name, url, grant = create_link(principal, _svid(officer, cert, key), ttl)
    try:
        asyncio.run(_audit_link(grant))
    except Exception as exc:
        raise UnavailableError(
            f"the link was made but its audit event was not published: {describe(exc).message}"
        ) from exc
    until = grant.expires_at.strftime("%H:%M:%S UTC")
    Console().print(f"Enrollment link for {name} (single use, until {until}; granted by {grant.granted_by}):")
    print(url)


@credentials_app.command("list")
def list_credentials(principal: str = typer.Argument(None, help="Only this principal's credentials.")) -> None:
    """List enrolled passkeys (revoked ones too)."""
    from console.adapters.store import ConsoleStore

    settings = _settings()
    name = _directory_principal(principal) if principal else None
    store = ConsoleStore(settings.db_url(), migrations=settings.console_migrations_dir)
    try:
        rows = store.credentials_of(name) if name else store.all_credentials()
    finally:
        store.close()
    table = Table("principal", "credential", "enrolled", "counter", "state")
    for c in rows:
        enrolled = datetime.fromtimestamp(c.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        state = "active" if c.active else f"revoked by {c.revoked_by}"
        table.add_row(c.principal, c.credential_id, enrolled, str(c.sign_count), state)
    Console(width=160).print(table)


@credentials_app.command("revoke")
def revoke(
    principal: str = typer.Argument(..., help="Whose passkeys to revoke."),
    credential: str = typer.Option(None, "--credential", help="Only this credential id."),
    reason: str = typer.Option("", help="Why (audited)."),
    by: str = typer.Option("operator", help="Who revokes (audited)."),
) -> None:
    """Revoke PRINCIPAL's passkeys (all, or --credential), end their sessions, announce and audit it."""
    try:
        revoked = asyncio.run(revoke_credentials(principal, credential, by=by, reason=reason))
    except AtbUsageError:
        raise
    except Exception as exc:
        raise UnavailableError(f"nothing confirmed revoked: {describe(exc).message}") from exc
    for credential_id in revoked:
        print(f"revoked {credential_id}")
