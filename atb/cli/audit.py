"""`atb audit ...`: verify, prove, export, tail, hold, purge, archive — the compliance side of the audit store.

Reads the store the audit sink writes (`ATB_AUDIT_DB_URL`, default the SQLite
file in the state folder) and trusts only the verifier key it is given (`--key`,
default `<state>/audit/checkpoint.key.pub`). `hold` and `purge` are the privileged
path: give them the purger role's URL (`--db` / `ATB_AUDIT_PURGE_DB_URL`) on
PostgreSQL. Both are audited: an AuditEvent on `atb.audit`, besides their own
append-only rows.

Exit codes (atb/errors.py): 0 ok, 1 verification failed or refused, 2 bad input,
4 the store (a missing SQLite file, an unreachable PostgreSQL) or Kafka cannot be used.
Errors are one line on stderr (atb/cli/errors.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from atb.cli.audit_archive import ARCHIVE_OPTION, ENDPOINT_OPTION, archive, purge_hot, verify_archive_command
from atb.errors import AtbError, AtbUsageError, UnavailableError, describe

if TYPE_CHECKING:
    from audit_sink.settings import AuditSinkSettings

__all__ = ["audit_app"]

audit_app = typer.Typer(
    no_args_is_help=True, help="Audit store: verify, prove, export, tail, legal hold, purge, archive."
)
audit_app.command("archive")(archive)
console = Console()

_DB = typer.Option(
    "", "--db", help="SQLAlchemy URL of the audit store (default: ATB_AUDIT_DB_URL or the state folder)."
)
_KEY = typer.Option("", "--key", help="Verifier key (<name>+<id>+<key>) or a file holding it.")


def _settings() -> AuditSinkSettings:
    from audit_sink.settings import AuditSinkSettings  # imported late: keeps `atb --help` fast

    return AuditSinkSettings()


def _engine(url: str, *, purge: bool = False):  # type: ignore[no-untyped-def]
    """The store at `url`; a SQLite file must exist unless this is hold/purge (they create it)."""
    from sqlalchemy.engine import make_url

    from audit_sink.adapters.db import make_engine, migrate

    url = url or (os.environ.get("ATB_AUDIT_PURGE_DB_URL", "") if purge else "") or _settings().db_url()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not purge and parsed.database and not Path(parsed.database).is_file():
            raise UnavailableError(
                f"no audit store at {parsed.database}: point --db or ATB_AUDIT_DB_URL at the sink's store"
                " (the audit sink creates it when it starts)"
            )
        migrate(url)  # the embedded store: make sure it has the schema (a no-op when current)
    return make_engine(url)


def _key(text: str):  # type: ignore[no-untyped-def]
    from audit_sink.adapters.signing import load_verifier
    from audit_sink.domain.checkpoint import NoteError

    path = text or str(_settings().key_path()) + ".pub"
    try:
        return load_verifier(path)
    except (NoteError, OSError) as exc:
        raise AtbUsageError(f"no usable verifier key ({path}): {exc}: pass --key") from exc


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise AtbUsageError(f"{text!r} is not an ISO 8601 time (2026-01-31 or 2026-01-31T12:00:00+00:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@audit_app.command("verify")
def verify(
    db: str = _DB,
    key: str = _KEY,
    bundle: str = typer.Option("", "--bundle", help="Check an exported evidence bundle (folder) offline instead."),
    proof: str = typer.Option("", "--proof", help="Check an inclusion proof file (from `atb audit prove`)."),
    strict: bool = typer.Option(False, "--strict", help="Also fail when the newest leaves are not yet signed."),
    witness_key: list[str] = typer.Option(  # noqa: B008 - typer's idiom
        [], "--witness-key", help="A witness's vkey (or a file holding it) whose cosignatures you trust; repeatable."
    ),
    witness_threshold: int = typer.Option(
        1, "--witness-threshold", help="How many of the --witness-key witnesses must cosign a checkpoint."
    ),
    witness: list[str] = typer.Option(  # noqa: B008
        [], "--witness", help="Ask this witness (URL) for the latest checkpoint it cosigned; repeatable."
    ),
    trusted_checkpoint: list[str] = typer.Option(  # noqa: B008
        [], "--trusted-checkpoint", help="A checkpoint note (file) from outside the store; repeatable."
    ),
    kafka: str = typer.Option("", "--kafka", help="Kafka bootstrap for the atb.audit cross-check (default settings)."),
    no_kafka: bool = typer.Option(False, "--no-kafka", help="Do not cross-check the checkpoints on atb.audit."),
    archive: str = ARCHIVE_OPTION,
    endpoint: str = ENDPOINT_OPTION,
) -> None:
    """Recompute every leaf, the Merkle tree, every checkpoint signature and consistency proof.

    With --witness-key / --trusted-checkpoint (and the checkpoints announced on atb.audit), also fail
    when the store is smaller than, or inconsistent with, a checkpoint vouched for outside it (a rollback).
    With --archive URL, verify the archived history instead, from the archive alone (docs/archive.md).
    """
    from audit_sink.evidence import EvidenceError, check_bundle, check_proof, verify_store

    try:
        if bundle:
            _verify_bundle(Path(bundle), key, check_bundle)
            return
        if proof:
            cp = check_proof(json.loads(Path(proof).read_text()), _key(key))
            console.print(f"[green]OK[/green]: the event is leaf of the signed tree {cp.origin} size {cp.size}")
            return
    except (EvidenceError, ValueError) as exc:
        raise AtbError(f"FAILED: {exc}") from exc
    if archive:  # the archived history, from the archive alone: no store
        verify_archive_command(
            archive, endpoint, _key(key), witness_key, witness_threshold, witness, trusted_checkpoint
        )
        return
    engine = _engine(db)  # the store first: a missing or unreachable one is what to fix first
    verifier = _key(key)
    outside = _outside(verifier.name, witness_key, witness_threshold, witness, trusted_checkpoint, kafka, no_kafka)
    report = verify_store(engine, verifier, strict=strict, outside=outside)
    latest = f"size {report.latest.size}" if report.latest else "none"
    console.print(
        f"{report.leaves} leaves, {report.rows} rows, {report.purged} purged (tombstones), "
        f"{report.checkpoints} signed checkpoints (latest {latest}), {report.uncovered} not yet signed"
    )
    if report.anchors:
        newest = max(report.anchors, key=lambda a: a.checkpoint.size)
        console.print(
            f"checked against {len(report.anchors)} checkpoint(s) from outside the store; newest: {newest.source}"
        )
    for problem in report.problems:
        console.print(f"  [red]✗[/red] {problem}")
    if not report.ok:
        raise AtbError(f"FAILED: {len(report.problems)} problem(s), listed above")
    console.print("[green]OK[/green]: every row, leaf, checkpoint and consistency proof verifies")


def _outside(  # type: ignore[no-untyped-def]
    origin: str,
    witness_keys: list[str],
    threshold: int,
    witnesses: list[str],
    trusted: list[str],
    kafka: str,
    no_kafka: bool,
):
    """The checkpoints from outside the store `verify` checks it against (docs/audit.md, "Witnessed checkpoints")."""
    from audit_sink.adapters.signing import load_cosigner_key
    from audit_sink.adapters.witnesses import fetch_latest
    from audit_sink.domain.checkpoint import NoteError
    from audit_sink.evidence import OutsideCheckpoints

    try:
        keys = [load_cosigner_key(k) for k in witness_keys]
    except (NoteError, OSError) as exc:
        raise AtbUsageError(f"bad --witness-key: {exc}") from exc
    if witness_keys and not 1 <= threshold <= len(keys):
        raise AtbUsageError(f"--witness-threshold must be between 1 and the {len(keys)} --witness-key given")
    notes: list[tuple[str, str]] = []
    for path in trusted:
        try:
            notes.append((path, Path(path).read_text()))
        except OSError as exc:
            raise AtbUsageError(f"cannot read --trusted-checkpoint {path}: {exc}") from exc
    fetched: list[tuple[str, str]] = []
    for url in witnesses:
        try:
            note = asyncio.run(fetch_latest(url, origin))
        except Exception as exc:
            raise UnavailableError(f"witness {url} did not answer: {describe(exc).message}") from exc
        if note is not None:
            fetched.append((f"checkpoint from witness {url}", note))
    announced: list[str] = []
    if not no_kafka:
        from atb.cli.audit_tail import checkpoint_notes

        settings = _settings()
        bootstrap = kafka or settings.kafka_bootstrap_servers
        try:
            announced, complete = asyncio.run(checkpoint_notes(bootstrap, settings.topic_namespace))
        except Exception as exc:
            console.print(
                f"[yellow]notice: Kafka at {bootstrap} is unreachable ({describe(exc).message}): "
                "the checkpoints announced on atb.audit were not cross-checked[/yellow]"
            )
        else:
            if not complete:
                console.print("[yellow]notice: atb.audit was read only in part (timeout)[/yellow]")
    return OutsideCheckpoints(keys, threshold, notes, announced, fetched)


def _verify_bundle(bundle: Path, key: str, check_bundle) -> None:  # type: ignore[no-untyped-def]
    trusted = _key(key) if key else None
    if trusted is None:
        console.print(
            "[yellow]no --key: using the bundle's own verifier.pub; compare it with the published key[/yellow]"
        )
    checkpoint, count, problems = check_bundle(bundle, trusted)
    for problem in problems:
        console.print(f"  [red]✗[/red] {problem}")
    if problems:
        raise AtbError(f"FAILED: {len(problems)} of {count} events do not check out")
    console.print(f"[green]OK[/green]: {count} events included in {checkpoint.origin} tree size {checkpoint.size}")


@audit_app.command("prove")
def prove(
    event_id: str = typer.Argument(..., help="The event's id (CloudEvents `id`)."),
    db: str = _DB,
    key: str = _KEY,
    out: str = typer.Option("", "--out", "-o", help="Write the proof to this file instead of stdout."),
) -> None:
    """Print an inclusion proof of one event against the latest signed checkpoint."""
    from audit_sink.evidence import EvidenceError
    from audit_sink.evidence import prove as make_proof

    try:
        document = json.dumps(make_proof(_engine(db), _key(key), event_id), indent=1)
    except EvidenceError as exc:
        raise AtbError(str(exc)) from exc
    if not out:
        typer.echo(document)
    else:
        Path(out).write_text(document + "\n")
        console.print(f"proof written to {out}; check it with: atb audit verify --proof {out} --key <verifier key>")


@audit_app.command("export")
def export(
    since: str = typer.Option(..., "--since", help="ISO 8601 time (inclusive), occurred-at."),
    until: str = typer.Option(..., "--until", help="ISO 8601 time (exclusive)."),
    request: str | None = typer.Option(None, "--request", help="Only this request id."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv"),
    out: str = typer.Option("audit-evidence", "--out", "-o", help="Bundle folder."),
    db: str = _DB,
    key: str = _KEY,
) -> None:
    """An evidence bundle: events, the latest checkpoint, their inclusion proofs, the public key."""
    from audit_sink.evidence import EvidenceError, export_bundle

    start, end = _time(since), _time(until)  # bad input first, then the store
    try:
        summary = export_bundle(_engine(db), _key(key), Path(out), since=start, until=end, request_id=request, fmt=fmt)
    except EvidenceError as exc:
        raise AtbError(str(exc)) from exc
    console.print(f"{summary.events} events → {summary.folder} (checkpoint size {summary.tree_size})")


@audit_app.command("tail")
def tail(
    request: str | None = typer.Option(None, "--request", help="Only this request id."),
    audit_type: str | None = typer.Option(None, "--type", help="Only this audit name (e.g. poa_issued)."),
    outcome: str | None = typer.Option(None, "--outcome", help="success, failure, denied or info."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record, not the newest."),
    max_events: int = typer.Option(0, "--max", help="Stop after this many matching events (0: follow forever)."),
    timeout: float = typer.Option(0.0, "--timeout", help="Stop after this many seconds (0: never)."),
) -> None:
    """Follow the `atb.audit` topic, one JSON line per matching event."""
    from atb.cli.audit_tail import follow

    filters = {"request_id": request, "audit_type": audit_type, "outcome": outcome}
    settings = _settings()
    asyncio.run(
        follow(
            settings.kafka_bootstrap_servers,
            settings.topic_namespace,
            {k: v for k, v in filters.items() if v},
            from_beginning=from_beginning,
            max_events=max_events,
            timeout=timeout,
            emit=typer.echo,
        )
    )


@audit_app.command("hold")
def hold(
    target: str | None = typer.Argument(None, help="A request id, or a range <from>..<until> (ISO 8601)."),
    reason: str = typer.Option(..., "--reason", help="Why (case number, matter)."),
    release: int | None = typer.Option(None, "--release", help="Release this hold id instead."),
    actor: str = typer.Option(os.environ.get("USER", "compliance"), "--actor", help="Who places it."),
    db: str = typer.Option("", "--db", help="Privileged URL (purger role); default ATB_AUDIT_PURGE_DB_URL."),
) -> None:
    """Place (or release) a legal hold: held events are never purged."""
    from audit_sink.adapters.ledger import HOLD_AUDIT_TYPE, RELEASE_AUDIT_TYPE, HoldScope, place_hold, release_hold

    engine = _engine(db, purge=True)
    if release is not None:
        release_hold(engine, release, reason=reason, actor=actor)
        _publish(RELEASE_AUDIT_TYPE, None, {"hold_id": release, "reason": reason, "actor": actor})
        console.print(f"legal hold {release} released")
        return
    if not target:
        raise AtbUsageError("give a request id or a range <from>..<until>, or --release <id>")
    if ".." in target:
        start, _, end = target.partition("..")
        scope = HoldScope(since=_time(start), until=_time(end))
    else:
        scope = HoldScope(request_id=target)
    hold_id = place_hold(engine, scope, reason=reason, actor=actor)
    _publish(
        HOLD_AUDIT_TYPE, scope.request_id, {"hold_id": hold_id, "target": target, "reason": reason, "actor": actor}
    )
    console.print(f"legal hold {hold_id} placed on {target}")


@audit_app.command("purge")
def purge(
    yes: bool = typer.Option(False, "--yes", help="Really delete (otherwise: say what would go)."),
    actor: str = typer.Option(os.environ.get("USER", "compliance"), "--actor"),
    db: str = typer.Option("", "--db", help="Privileged URL (purger role); default ATB_AUDIT_PURGE_DB_URL."),
    archive: str = typer.Option(
        "", "--archive", help="Hot retention: also remove rows archived here (s3://...), once it verifies."
    ),
    hot_days: float = typer.Option(
        -1.0, "--hot-days", help="With --archive: keep archived rows this many days in the store (hot)."
    ),
    endpoint: str = ENDPOINT_OPTION,
) -> None:
    """Delete rows past retain_until and not under legal hold; record them in a signed purge record.

    With --archive and --hot-days, also the rows older than that which are in the archive: the whole
    archive is verified first, and must hold the store's history (docs/archive.md, "Hot retention").
    """
    from audit_sink.adapters.ledger import PURGE_AUDIT_TYPE
    from audit_sink.adapters.ledger import purge as run_purge
    from audit_sink.adapters.signing import load_or_create_signer

    if not yes:
        raise AtbUsageError("nothing purged: pass --yes to purge (rows past retain_until, not under legal hold)")
    if bool(archive) != (hot_days >= 0):
        raise AtbUsageError("hot retention takes both --archive URL and --hot-days N (N ≥ 0)")
    settings = _settings()
    signer = load_or_create_signer(settings.key_path(), settings.checkpoint_origin)
    if archive:
        outcome = purge_hot(_engine(db, purge=True), signer, archive, endpoint, hot_days, actor)
    else:
        outcome = run_purge(_engine(db, purge=True), signer, actor=actor)
    details = {"purge_id": outcome.purge_id, "removed": outcome.removed, "held_back": outcome.held_back}
    _publish(PURGE_AUDIT_TYPE, None, {**details, "record": outcome.note, "actor": actor})
    console.print(f"purge {outcome.purge_id}: {outcome.removed} rows removed, {outcome.held_back} kept by legal holds")


def _publish(audit_type: str, request_id: str | None, details: dict[str, object]) -> None:
    """The AuditEvent of a hold/purge on atb.audit; failing to publish is an error (the action is done)."""
    from atb_runtime import Publisher
    from atb_runtime.records import audit

    settings = _settings()
    record = audit(
        audit_type,
        source="spiffe://atb.local/cli/audit",
        namespace=settings.topic_namespace,
        outcome="success",
        request_id=request_id,
        details=details,  # type: ignore[arg-type]
    )

    async def send() -> None:
        async with Publisher(settings.kafka_bootstrap_servers, "atb-audit-cli") as publisher:
            await publisher.publish([record])

    try:
        asyncio.run(asyncio.wait_for(send(), timeout=30))
    except Exception as exc:
        failure = describe(exc)
        raise UnavailableError(f"done, but its audit event is not on atb.audit: {failure.message}") from exc
