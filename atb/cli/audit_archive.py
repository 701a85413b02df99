"""`atb audit archive` and `atb audit verify --archive`: the audit log sealed into object storage.

`archive` seals the closed segments of the audit store (every leaf up to a
signed checkpoint) into an S3 bucket with Object Lock in COMPLIANCE mode,
7 years, and maps the store's legal holds to the objects' legal holds.
`verify --archive` checks the whole archived history from the archive alone.
The format and the argument: docs/archive.md.

The S3 endpoint and credentials are the usual AWS settings (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, profiles), or `--endpoint`.
Exit codes as for the other audit commands: 1 refused or failed verification,
2 bad input, 4 the store or the object storage cannot be reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from atb.errors import AtbError, AtbUsageError, UnavailableError, describe

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from audit_sink.adapters.ledger import PurgeOutcome
    from audit_sink.adapters.signing import NoteSigner
    from audit_sink.archive.objects import DirArchive, S3Archive
    from audit_sink.domain.checkpoint import VerifierKey

__all__ = ["ARCHIVE_OPTION", "ENDPOINT_OPTION", "archive", "purge_hot", "verify_archive_command"]

console = Console()

ARCHIVE_OPTION = typer.Option(
    "",
    "--archive",
    help="Verify the archived history instead of the store: s3://<bucket>/<prefix> or file:///<copy>.",
)
ENDPOINT_OPTION = typer.Option("", "--endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL or the AWS default).")


@contextmanager
def _archive_errors() -> Iterator[None]:
    from audit_sink.archive.objects import ArchiveRefusedError, ArchiveUnavailableError, ArchiveUrlError
    from audit_sink.archive.seal import ArchiveStateError

    try:
        yield
    except ArchiveUrlError as exc:
        raise AtbUsageError(str(exc)) from exc
    except ArchiveUnavailableError as exc:
        raise UnavailableError(f"the archive cannot be used: {exc}") from exc
    except (ArchiveRefusedError, ArchiveStateError) as exc:
        raise AtbError(f"FAILED: {exc}") from exc


def _open(url: str, endpoint: str) -> S3Archive | DirArchive:
    from audit_sink.archive.objects import open_archive

    with _archive_errors():
        return open_archive(url, endpoint=endpoint or None)


def archive(
    url: str = typer.Argument(..., help="Where to archive: s3://<bucket>/<prefix>."),
    db: str = typer.Option("", "--db", help="SQLAlchemy URL of the audit store (default: ATB_AUDIT_DB_URL)."),
    key: str = typer.Option("", "--key", help="Verifier key of the log (<name>+<id>+<key>) or a file holding it."),
    endpoint: str = ENDPOINT_OPTION,
    max_leaves: int = typer.Option(
        10_000, "--max-leaves", help="Leaves per segment, at most (unless one checkpoint is further than that)."
    ),
    settle: float = typer.Option(
        300.0, "--settle", help="Seconds a checkpoint must have been stored before its segment is sealed."
    ),
    limit: int = typer.Option(0, "--limit", help="Seal at most this many segments (0: all that are closed)."),
    create_bucket: bool = typer.Option(False, "--create-bucket", help="Create the bucket, with Object Lock enabled."),
    holds: bool = typer.Option(True, "--holds/--no-holds", help="Map the store's legal holds to the objects'."),
) -> None:
    """Seal closed segments of the audit store into S3 with Object Lock (COMPLIANCE, 7 years); idempotent."""
    from atb.cli.audit import _engine, _key
    from audit_sink.archive.objects import S3Archive
    from audit_sink.archive.seal import Sealer

    if max_leaves < 1 or settle < 0 or limit < 0:
        raise AtbUsageError("--max-leaves must be ≥ 1, --settle and --limit ≥ 0")
    target = _open(url, endpoint)
    if not isinstance(target, S3Archive):
        raise AtbUsageError(f"{url}: archive into s3://<bucket>/<prefix>; a local copy is read only")
    engine = _engine(db)
    verifier = _key(key)

    def progress(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    def warn(line: str) -> None:
        console.print(f"[yellow]![/yellow] {escape(line)}", highlight=False)

    sealer = Sealer(
        engine,
        target,
        verifier,
        max_leaves=max_leaves,
        settle=timedelta(seconds=settle),
        progress=progress,
        warn=warn,
    )
    with _archive_errors():
        if create_bucket:
            target.create_bucket()
        sealed = sealer.run(limit=limit or None)
        changed = sealer.sync_holds() if holds else []
    written = sum(1 for s in sealed if s.written)
    console.print(
        f"[green]OK[/green]: {written} segment(s) sealed, {len(sealed) - written} found archived and verified"
        + (f", {len(changed)} legal hold(s) changed" if changed else "")
    )


def _anchors(origin: str, trusted: list[str], witnesses: list[str]) -> list[tuple[str, str]]:
    from audit_sink.adapters.witnesses import fetch_latest

    notes: list[tuple[str, str]] = []
    for path in trusted:
        try:
            notes.append((path, Path(path).read_text()))
        except OSError as exc:
            raise AtbUsageError(f"cannot read --trusted-checkpoint {path}: {exc}") from exc
    for url in witnesses:
        try:
            note = asyncio.run(fetch_latest(url, origin))
        except Exception as exc:
            raise UnavailableError(f"witness {url} did not answer: {describe(exc).message}") from exc
        if note is not None:
            notes.append((f"checkpoint from witness {url}", note))
    return notes


def verify_archive_command(
    url: str,
    endpoint: str,
    verifier: VerifierKey,
    witness_keys: list[str],
    threshold: int,
    witnesses: list[str],
    trusted: list[str],
) -> None:
    """`atb audit verify --archive URL`: the whole history from the archive alone."""
    from audit_sink.adapters.signing import load_cosigner_key
    from audit_sink.archive.check import verify_archive
    from audit_sink.domain.checkpoint import NoteError

    try:
        keys = [load_cosigner_key(k) for k in witness_keys]
    except (NoteError, OSError) as exc:
        raise AtbUsageError(f"bad --witness-key: {exc}") from exc
    if keys and not 1 <= threshold <= len(keys):
        raise AtbUsageError(f"--witness-threshold must be between 1 and the {len(keys)} --witness-key given")
    source = _open(url, endpoint)
    anchors = _anchors(verifier.name, trusted, witnesses)
    with _archive_errors():
        report = verify_archive(source, verifier, witness_keys=keys, threshold=threshold, anchors=anchors)
    latest = f"size {report.latest.size}" if report.latest else "none"
    console.print(
        f"{report.location}: {report.segments} segment(s), {report.leaves} leaves, {report.rows} rows, "
        f"latest signed checkpoint {latest}" + (f", witnessed up to {report.witnessed}" if keys else ""),
        markup=False,
        highlight=False,
    )
    for problem in report.problems:
        console.print(f"  [red]✗[/red] {escape(problem)}", highlight=False)
    _print_notices(report.notices)
    if not report.ok:
        raise AtbError(f"FAILED: {len(report.problems)} problem(s), listed above")
    console.print("[green]OK[/green]: every manifest, segment, leaf, root and checkpoint of the archive verifies")


def purge_hot(engine: Engine, signer: NoteSigner, url: str, endpoint: str, hot_days: float, actor: str) -> PurgeOutcome:
    """`atb audit purge --archive URL --hot-days N`: retention's purge plus the archived rows older than N days."""
    from audit_sink.archive.hot import hot_purge

    source = _open(url, endpoint)
    console.print(f"verifying the archive {source.location} before anything leaves the store", markup=False)
    with _archive_errors():
        outcome, report = hot_purge(engine, signer, source, keep=timedelta(days=hot_days), actor=actor)
    _print_notices(report.notices)
    console.print(
        f"archive verified: {report.segments} segment(s), {report.leaves} leaves; rows below leaf "
        f"{report.leaves} recorded more than {hot_days:g} day(s) ago may leave the store",
        markup=False,
    )
    return outcome


def _print_notices(notices: Sequence[str]) -> None:
    """What was written over sealed keys of a versioned bucket: ignored (the sealed versions were
    checked), and shown, since only someone with write access to the bucket can have written it."""
    for notice in notices:
        console.print(f"  [yellow]![/yellow] {escape(notice)}", highlight=False)
