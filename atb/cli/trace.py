"""`atb trace <request-id | jti> [--json] [--follow] [--audit-db URL] [--archive URL]`: a request's timeline.

A line above the table names the W3C trace id(s) the request's records carried (`trace_ids` in the JSON), to look the
request up in the tracing backend (docs/observability.md, "Traces").

With `--archive` (default `ATB_AUDIT_ARCHIVE_URL`), the request's rows are also read from the immutable
archive, for requests whose rows hot retention removed from the audit store: only the segments whose manifest
lists the request are read, each verified against its manifest, the log's signed checkpoint (`--key`) and the
manifests' hash chain before it is used. Steps from the archive say so; the caption names what was verified.
An archive that does not verify fails the command (exit 1), naming the segment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from atb.errors import AtbError, AtbUsageError, UnavailableError, kafka_bootstrap
from atb.trace.timeline import (
    Step,
    TraceRecord,
    build_timeline,
    follow_request,
    read_request,
    resolve_request_id,
    timeline_json,
    trace_ids,
)
from atb_runtime.settings import CommonSettings

if TYPE_CHECKING:
    from audit_sink.archive.read import VerifiedArchiveRows

__all__ = ["render", "trace"]


def _archive_caption(steps: list[Step], archived: VerifiedArchiveRows) -> str:
    shown = sum(1 for s in steps if s.origin == "archive")
    segments = ", ".join(map(str, archived.segments)) or "none"
    latest = f", up to the signed checkpoint of tree size {archived.latest.size}" if archived.latest else ""
    return (
        f"{shown} of {len(steps)} steps read from the archive {archived.location} and verified: "
        f"segment(s) {segments} against their manifests and signed checkpoints, "
        f"the hash chain of its {archived.manifests} manifest(s){latest}"
    )


def _origin_note(origin: str) -> str:
    if origin == "kafka":
        return ""
    return f" [dim]({origin}{', verified' if origin == 'archive' else ''})[/dim]"


def render(request_id: str, steps: list[Step], archived: VerifiedArchiveRows | None = None) -> Table:
    stored = [s for s in steps if "checkpoint" in s.details and s.origin != "archive"]
    covered = sorted({str(s.details["checkpoint"]).split(", ", 1)[-1] for s in stored})
    lines = [f"{len(stored)} of {len(steps)} steps found in the audit store ({'; '.join(covered)})"] if stored else []
    if archived is not None and archived.rows:
        lines.append(_archive_caption(steps, archived))
    caption = "\n".join(lines) or None
    table = Table(title=f"Trace of {request_id}", title_justify="left", caption=caption, caption_justify="left")
    for column, justify in (("time", "left"), ("+ms", "right"), ("Δms", "right"), ("step", "left"), ("by", "left")):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("what", overflow="fold")
    for s in steps:
        table.add_row(
            s.at.strftime("%H:%M:%S.%f")[:-3],
            f"{s.since_start_ms:.0f}",
            f"{s.since_previous_ms:.0f}",
            s.kind,
            s.who,
            s.summary + _origin_note(s.origin),
        )
    return table


def _audit_records(db_url: str, request_id: str) -> list[TraceRecord]:
    """The request's rows in the audit store (for requests older than Kafka's retention)."""
    from atb.trace.audit import audit_records

    return audit_records(db_url, request_id)


@contextmanager
def _archive_errors() -> Iterator[None]:
    from audit_sink.archive.objects import ArchiveRefusedError, ArchiveUnavailableError, ArchiveUrlError
    from audit_sink.archive.read import ArchiveTamperedError

    try:
        yield
    except ArchiveUrlError as exc:
        raise AtbUsageError(f"--archive: {exc}") from exc
    except ArchiveUnavailableError as exc:
        raise UnavailableError(f"the archive cannot be read: {exc}") from exc
    except ArchiveTamperedError as exc:
        raise AtbError(f"FAILED: {exc}") from exc
    except ArchiveRefusedError as exc:
        raise AtbError(f"the archive cannot be read: {exc}") from exc


def _archive_records(
    url: str, key: str, endpoint: str, request_id: str
) -> tuple[list[TraceRecord], VerifiedArchiveRows]:
    """The request's rows in the immutable archive, verified (for requests hot retention removed from the store)."""
    from atb.cli.audit import _key
    from atb.trace.archive import archive_records

    verifier = _key(key)
    with _archive_errors():
        return archive_records(url, verifier, request_id, endpoint=endpoint or None)


def _where(audit_db: str, archive: str) -> str:
    if audit_db or archive:
        return "on Kafka" + (", in the audit store" if audit_db else "") + (", in the archive" if archive else "")
    return "on Kafka (older requests: add --audit-db URL, --archive URL)"


def trace(
    target: str = typer.Argument(..., help="A request id, or a PoA's jti."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    follow: bool = typer.Option(False, "--follow", help="Keep printing new steps of a request in flight."),
    seconds: float = typer.Option(120.0, "--seconds", help="How long --follow watches."),
    audit_db: str = typer.Option("", "--audit-db", help="Also read the audit store (SQLAlchemy URL)."),
    archive: str = typer.Option(
        "",
        "--archive",
        envvar="ATB_AUDIT_ARCHIVE_URL",
        help="Also read the immutable archive, verified (s3://<bucket>/<prefix> or file:///<copy>).",
    ),
    key: str = typer.Option(
        "", "--key", help="With --archive: the log's verifier key (default: the state folder's checkpoint key)."
    ),
    endpoint: str = typer.Option(
        "",
        "--endpoint",
        envvar="ATB_AUDIT_ARCHIVE_ENDPOINT",
        help="With --archive: S3 endpoint URL (default: AWS_ENDPOINT_URL or the AWS default).",
    ),
) -> None:
    """The whole life of one request across every topic, with the latency between steps."""
    bootstrap, ns = kafka_bootstrap(), CommonSettings().topic_namespace
    console = Console()
    request_id = asyncio.run(resolve_request_id(bootstrap, target, ns))
    records = asyncio.run(read_request(bootstrap, request_id, ns))
    if audit_db:
        records += _audit_records(audit_db, request_id)
    archived: VerifiedArchiveRows | None = None
    if archive:
        found, archived = _archive_records(archive, key, endpoint, request_id)
        records += found
    if not records:
        raise AtbUsageError(f"nothing is known about {target!r} {_where(audit_db, archive)}")
    steps = build_timeline(records)
    if as_json and not follow:
        typer.echo(timeline_json(request_id, steps, archive=_archive_json(archived)))
        return
    for trace_id in trace_ids(steps):
        console.print(f"trace id {trace_id}", highlight=False)
    for notice in archived.notices if archived else ():
        console.print(f"[yellow]archive:[/yellow] {notice}", highlight=False)
    console.print(render(request_id, steps, archived))
    if follow:
        asyncio.run(_follow(console, bootstrap, request_id, ns, seconds, {s.event_id for s in steps}, as_json))


def _archive_json(archived: VerifiedArchiveRows | None) -> dict[str, object] | None:
    if archived is None:
        return None
    return {
        "location": archived.location,
        "verified": True,
        "rows": len(archived.rows),
        "segments": list(archived.segments),
        "manifests": archived.manifests,
        "head": archived.head,
        "checkpoint_size": archived.latest.size if archived.latest else None,
        "notices": list(archived.notices),
    }


async def _follow(
    console: Console, bootstrap: str, request_id: str, ns: str, seconds: float, seen: set[str], as_json: bool
) -> None:
    records: list[TraceRecord] = []
    async for record in follow_request(bootstrap, request_id, ns, seconds=seconds):
        records.append(record)
        if record.envelope is None or record.envelope.id in seen:
            continue
        seen.add(record.envelope.id)
        step = next(s for s in build_timeline(records) if s.event_id == record.envelope.id)
        if as_json:
            typer.echo(
                json.dumps({"at": step.at.isoformat(), "kind": step.kind, "who": step.who, "summary": step.summary})
            )
        else:
            console.print(f"{step.at:%H:%M:%S.%f}"[:-3] + f"  {step.kind:<20} {step.who:<16} {step.summary}")
