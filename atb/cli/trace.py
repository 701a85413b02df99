"""`atb trace <request-id | jti> [--json] [--follow] [--audit-db URL]`: a request's timeline.

A line above the table names the W3C trace id(s) the request's records carried (`trace_ids` in the JSON), to look the
request up in the tracing backend (docs/observability.md, "Traces").
"""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console
from rich.table import Table

from atb.errors import AtbUsageError, kafka_bootstrap
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

__all__ = ["render", "trace"]


def render(request_id: str, steps: list[Step]) -> Table:
    stored = [s for s in steps if "checkpoint" in s.details]
    covered = sorted({str(s.details["checkpoint"]).split(", ", 1)[-1] for s in stored})
    caption = f"{len(stored)} of {len(steps)} steps found in the audit store ({'; '.join(covered)})" if stored else None
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
            s.summary + ("" if s.origin == "kafka" else f" [dim]({s.origin})[/dim]"),
        )
    return table


def _audit_records(db_url: str, request_id: str) -> list[TraceRecord]:
    """The request's rows in the audit store (for requests older than Kafka's retention)."""
    from atb.trace.audit import audit_records

    return audit_records(db_url, request_id)


def trace(
    target: str = typer.Argument(..., help="A request id, or a PoA's jti."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    follow: bool = typer.Option(False, "--follow", help="Keep printing new steps of a request in flight."),
    seconds: float = typer.Option(120.0, "--seconds", help="How long --follow watches."),
    audit_db: str = typer.Option("", "--audit-db", help="Also read the audit store (SQLAlchemy URL)."),
) -> None:
    """The whole life of one request across every topic, with the latency between steps."""
    bootstrap, ns = kafka_bootstrap(), CommonSettings().topic_namespace
    console = Console()
    request_id = asyncio.run(resolve_request_id(bootstrap, target, ns))
    records = asyncio.run(read_request(bootstrap, request_id, ns))
    if audit_db:
        records += _audit_records(audit_db, request_id)
    if not records:
        where = "on Kafka or in the audit store" if audit_db else "on Kafka (older requests: add --audit-db URL)"
        raise AtbUsageError(f"nothing is known about {target!r} {where}")
    steps = build_timeline(records)
    if as_json and not follow:
        typer.echo(timeline_json(request_id, steps))
        return
    for trace_id in trace_ids(steps):
        console.print(f"trace id {trace_id}", highlight=False)
    console.print(render(request_id, steps))
    if follow:
        asyncio.run(_follow(console, bootstrap, request_id, ns, seconds, {s.event_id for s in steps}, as_json))


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
