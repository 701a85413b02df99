"""`atb replay policy` and `atb replay redrive`: read-only by default, resumable, with progress.

Both plan a run (partitions, start and end offsets, options) into
`<state>/replay/<run-id>.json`, then scan with the run's own consumer group.
`--resume <run-id>` continues an interrupted or `--limit`ed run with the options
it was started with. Kafka: `ATB_KAFKA_BOOTSTRAP_SERVERS`; topics:
`ATB_TOPIC_NAMESPACE`; state: `ATB_STATE_DIR`.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from pydantic import JsonValue
from rich.console import Console
from rich.table import Table

from atb.dev.config import DevConfig
from atb.replay.errors import ReplayUsageError
from atb.replay.letters import LetterFilter, resolve_topic
from atb.replay.policy import POLICY_TOPICS, CandidateOpa, Spooler, build_history, fill_context, report_json, what_if
from atb.replay.redrive import RedriveOptions, Redriver, redriven_refs
from atb.replay.runs import RunPlan, RunStore
from atb.replay.scan import RangeScanner, ScanResult
from atb.replay.timerange import TimeRange
from atb.replay.whatif import WhatIfReport
from atb_runtime.settings import CommonSettings
from contracts import Topic, topic_name

if TYPE_CHECKING:  # the audit package is not in every image that has the `atb` command
    from atb.replay.audit import AuditComparison

__all__ = ["replay_app"]

replay_app = typer.Typer(
    no_args_is_help=True, help="Replay history read-only: audit rebuild, policy what-if, dead-letter re-drive."
)

T = TypeVar("T")

SINCE = typer.Option(None, "--since", help="Start: ISO-8601 time or relative (30m, 2h, 7d). Default: the beginning.")
UNTIL = typer.Option(None, "--until", help="End (exclusive): ISO-8601 or relative. Default: the end offsets at start.")
RESUME = typer.Option(None, "--resume", help="Continue an interrupted run (its range and options are kept).")
LIMIT = typer.Option(None, "--limit", min=1, help="Stop after this many records (resume later with --resume).")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")
JSON_OUT = typer.Option(False, "--json", help="Print the report as JSON (no table).")


@dataclass
class _Session:
    """What every replay command needs: settings, the run store, consoles, the run id once known."""

    json_out: bool
    quiet: bool
    settings: CommonSettings = field(default_factory=CommonSettings)
    run_id: str | None = None
    command: str = ""

    def __post_init__(self) -> None:
        self.store = RunStore(self.settings.state_dir)
        self.out = Console()
        self.err = Console(stderr=True)

    @property
    def namespace(self) -> str:
        return self.settings.topic_namespace

    @property
    def bootstrap(self) -> str:
        """`ATB_KAFKA_BOOTSTRAP_SERVERS`, else the local stack's port (`ATB_KAFKA_PORT`), as `atb vote` does."""
        configured = os.environ.get("ATB_KAFKA_BOOTSTRAP_SERVERS", "").strip()
        return configured or DevConfig.from_env().kafka_bootstrap

    def scanner(self) -> RangeScanner:
        bar_console = None if self.quiet else self.err
        return RangeScanner(self.bootstrap, self.store, console=bar_console)

    async def plan_or_resume(
        self, resume: str | None, topics: list[str], since: str | None, until: str | None, options: dict[str, JsonValue]
    ) -> RunPlan:
        if resume:
            plan = self.store.load(resume)
            if plan.command != self.command:
                raise ReplayUsageError(f"run {resume} is a `replay {plan.command}` run, not `replay {self.command}`")
        else:
            time_range = TimeRange.parse(since, until, datetime.now(UTC))
            plan = await self.scanner().plan(self.command, topics, time_range, options)
        self.run_id = plan.run_id
        return plan

    def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run the command; an interrupt says how to resume.

        A ReplayError (an AtbError) becomes one line and its exit code in AtbGroup
        (atb/cli/errors.py), which also keeps aiokafka's retry warnings off the terminal.
        """
        try:
            return asyncio.run(work())  # type: ignore[arg-type]
        except KeyboardInterrupt as exc:
            hint = f": resume with `atb replay {self.command} --resume {self.run_id}`" if self.run_id else ""
            self.err.print(f"[yellow]interrupted{hint}[/yellow]")
            raise typer.Exit(130) from exc

    def footer(self, result: ScanResult) -> None:
        if self.json_out:
            return
        state = "complete" if result.complete else f"stopped: resume with --resume {result.run_id}"
        self.err.print(
            f"run {result.run_id}: {result.handled} records in {result.seconds:.1f}s ({state})", highlight=False
        )


# -- redrive ------------------------------------------------------------------------------

REDRIVE_REFUSED_EXIT = 3
"""Some selected letter could not be re-driven: its original is gone or not the letter's bytes."""


def _redrive_table(redriver: Redriver, execute: bool) -> Table:
    table = Table(title="dead letters" + ("" if execute else " (dry run: nothing sent)"))
    for column in ("dlq", "consumer", "error", "original", "request", "target", "status"):
        table.add_column(column)
    sent = {str(r.ref) for r in redriver.sent}
    for r in redriver.seen:
        letter = r.letter
        if str(r.ref) in sent:
            status = "[green]sent[/green]"
        elif r.status == "already_redriven":
            status = "already re-driven"
        elif r.refused:
            status = f"[red]refused: {r.why}[/red]"
        else:
            status = "would send"
        original = f"{letter.original_topic}:{letter.original_partition}:{letter.original_offset}"
        table.add_row(
            f"{r.ref.partition}:{r.ref.offset}", letter.consumer, letter.error_code, original,
            letter.request_id or "", r.target, status,
        )  # fmt: skip
    return table


def _redrive_json(redriver: Redriver, result: ScanResult, execute: bool) -> str:
    sent = {str(r.ref) for r in redriver.sent}
    items = [
        {
            "dlq": str(r.ref),
            "consumer": r.letter.consumer,
            "error_code": r.letter.error_code,
            "original_topic": r.letter.original_topic,
            "original_partition": r.letter.original_partition,
            "original_offset": r.letter.original_offset,
            "request_id": r.letter.request_id,
            "target_topic": r.target,
            "status": "sent" if str(r.ref) in sent else r.status,
            "why": r.why or None,
        }
        for r in redriver.seen
    ]
    doc = {
        "run_id": result.run_id,
        "complete": result.complete,
        "dry_run": not execute,
        "records": result.handled,
        "not_dead_letters": redriver.undecodable,
        "sent": len(redriver.sent),
        "refused": len(redriver.refused),
        "redrives": items,
    }
    return json.dumps(doc, indent=2)


@replay_app.command("redrive")
def redrive(
    source: str = typer.Option(Topic.DLQ.value, "--from", help="The dead-letter topic."),
    filters: list[str] = typer.Option(  # noqa: B008
        [], "--filter", help="key=value (consumer, error_code, original_topic, request_id); repeatable, all must match."
    ),
    to: str | None = typer.Option(None, "--to", help="Send to this topic instead of each letter's original topic."),
    execute: bool = typer.Option(False, "--execute", help="Really send (default: dry run, nothing is sent)."),
    again: bool = typer.Option(False, "--again", help="Also send letters that were already re-driven."),
    since: str | None = SINCE,
    until: str | None = UNTIL,
    resume: str | None = RESUME,
    limit: int | None = LIMIT,
    quiet: bool = QUIET,
    json_out: bool = JSON_OUT,
) -> None:
    """Send dead-lettered records back to their topic (dry run unless --execute); each re-drive is audited.

    Each original is read back from its letter's coordinates; one that is gone or no
    longer matches the letter's SHA-256 is refused (listed with why; exit code 3).
    """
    session = _Session(json_out, quiet, command="redrive")

    async def work() -> tuple[Redriver, ScanResult, bool]:
        options: dict[str, JsonValue] = {
            "filters": list(filters),
            "to": resolve_topic(to, session.namespace) if to else None,
            "execute": execute,
            "again": again,
        }
        LetterFilter.parse(filters)  # refuse a bad filter before planning anything
        dlq = _dlq_topic(source, session.namespace)
        plan = await session.plan_or_resume(resume, [dlq], since, until, options)
        opts = _redrive_options(plan, session.namespace)
        done = await redriven_refs(session.bootstrap, session.namespace)
        async with Redriver(session.bootstrap, opts, session.store, plan, done) as redriver:
            result = await session.scanner().run(plan, redriver.handle, limit=limit)
        return redriver, result, opts.execute

    redriver, result, executed = session.run(work)
    if json_out:
        session.out.print_json(_redrive_json(redriver, result, executed))
    else:
        session.out.print(_redrive_table(redriver, executed))
        verb = "sent" if executed else "would send"
        count = len(redriver.sent) if executed else sum(1 for r in redriver.seen if r.status == "send")
        session.out.print(f"{verb} {count} of {len(redriver.seen)} matching dead letters", highlight=False)
        for r in redriver.refused:
            session.err.print(f"[red]refused {r.ref}: {r.why}[/red]", soft_wrap=True, highlight=False)
    session.footer(result)
    if redriver.refused:
        raise typer.Exit(REDRIVE_REFUSED_EXIT)


def _dlq_topic(source: str, namespace: str) -> str:
    base = source[len(namespace) :] if namespace and source.startswith(namespace) else source
    if base != Topic.DLQ.value:
        raise ReplayUsageError(f"--from {source!r}: re-drives read the dead-letter topic {Topic.DLQ.value}")
    return namespace + base


def _redrive_options(plan: RunPlan, namespace: str) -> RedriveOptions:
    """The options a run was started with (a resumed run keeps them)."""
    opts = plan.options
    raw_filters = opts.get("filters") or []
    target = opts.get("to")
    return RedriveOptions(
        namespace=namespace,
        letter_filter=LetterFilter.parse([str(f) for f in raw_filters] if isinstance(raw_filters, list) else []),
        target=target if isinstance(target, str) else None,
        execute=opts.get("execute") is True,
        again=opts.get("again") is True,
        who=getpass.getuser(),
    )


# -- policy -------------------------------------------------------------------------------------

_KIND_STYLE = {
    "would_deny": "[red]would deny[/red]",
    "would_allow": "[yellow]would allow[/yellow]",
    "tier_change": "tier change",
    "requirements_change": "requirements change",
}


def _policy_table(report: WhatIfReport) -> Table:
    table = Table(title=f"what the candidate policy ({report.candidate_version}) changes")
    for column in ("change", "request", "action id", "action", "recorded", "candidate", "tier", "why"):
        table.add_column(column)
    for c in report.changes:
        tier = f"{c.tier_before or '?'} → {c.tier_after}" if c.tier_before != c.tier_after else (c.tier_after or "")
        table.add_row(
            _KIND_STYLE[c.kind], c.request_id, c.action_id or "", c.action, c.recorded, c.candidate, tier,
            "; ".join(str(r) for r in c.reasons),
        )  # fmt: skip
    return table


@replay_app.command("policy")
def policy(
    policy_dir: Path | None = typer.Option(  # noqa: B008
        None, "--policy", help="The candidate policy folder (.rego files and their data.json)."
    ),
    since: str | None = SINCE,
    until: str | None = UNTIL,
    resume: str | None = RESUME,
    limit: int | None = LIMIT,
    quiet: bool = QUIET,
    json_out: bool = JSON_OUT,
    fail_on_change: bool = typer.Option(False, "--fail-on-change", help="Exit 3 when any decision or tier changes."),
    unmandated: bool = typer.Option(
        False,
        "--allow-unmandated-low-risk",
        help="Evaluate PoA-less presentations as a broker with ALLOW_UNMANDATED_LOW_RISK=true would.",
    ),
    live_opa: str | None = typer.Option(
        None, "--live-opa", help="Running OPA, asked (read-only) for requirements not recorded. Default: ATB_OPA_URL."
    ),
) -> None:
    """What-if: re-evaluate recorded requests and broker decisions against a candidate policy."""
    session = _Session(json_out, quiet, command="policy")
    folder_given = policy_dir.resolve() if policy_dir else None

    async def work() -> tuple[WhatIfReport | None, ScanResult]:
        if policy_dir is None and resume is None:
            raise ReplayUsageError("--policy <folder> is required (the candidate policy)")
        options: dict[str, JsonValue] = {
            "policy": str(folder_given) if folder_given else None,
            "allow_unmandated_low_risk": unmandated,
        }
        if policy_dir is not None:
            CandidateOpa(policy_dir, session.store.root)  # refuse a wrong folder before scanning
        topics = [topic_name(t, session.namespace) for t in POLICY_TOPICS]
        plan = await session.plan_or_resume(resume, topics, since, until, options)
        folder = folder_given or Path(str(plan.options.get("policy")))
        result = await session.scanner().run(plan, Spooler(session.store, plan.run_id), limit=limit)
        if not result.complete:
            return None, result
        history = build_history(session.store.spooled(plan.run_id))
        await fill_context(history, session.bootstrap, session.namespace)
        live = live_opa or os.environ.get("ATB_OPA_URL", "").strip() or DevConfig.from_env().opa_url
        async with CandidateOpa(folder, session.store.root / f"{plan.run_id}-opa") as opa:
            flag = unmandated or plan.options.get("allow_unmandated_low_risk") is True
            report = await what_if(history, opa.url, live, allow_unmandated_low_risk=flag)
        return report, result

    report, result = session.run(work)
    if report is None:  # --limit stopped the scan: the report needs the whole range
        if json_out:
            session.out.print_json(json.dumps({"run_id": result.run_id, "complete": False, "records": result.handled}))
        session.footer(result)
        return
    if json_out:
        session.out.print_json(report_json(report, result.run_id).decode())
    else:
        session.out.print(_policy_table(report))
        session.out.print(
            f"{len(report.changes)} changes over {report.requests} requests and {report.decisions} decisions;"
            f" {len(report.skipped)} not re-evaluated" + (" (see --json)" if report.skipped else ""),
            highlight=False,
        )
    session.footer(result)
    if fail_on_change and report.changed:
        raise typer.Exit(3)


# -- audit -------------------------------------------------------------------------------------


def _rebuild_url(root: Path, run_id: str) -> str:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return f"sqlite:///{root / f'{run_id}-audit.db'}"


def _audit_topics(namespace: str) -> list[str]:
    return [topic_name(t, namespace) for t in Topic]


@replay_app.command("audit")
def audit(
    live_db: str = typer.Option("", "--live-db", help="The live audit store (read only). Default: the sink's."),
    into: str = typer.Option("", "--into", help="Where to rebuild (a fresh database). Default: a file per run."),
    since: str | None = SINCE,
    until: str | None = UNTIL,
    resume: str | None = RESUME,
    limit: int | None = LIMIT,
    quiet: bool = QUIET,
    json_out: bool = JSON_OUT,
    fail_on_difference: bool = typer.Option(False, "--fail-on-difference", help="Exit 3 unless identical."),
) -> None:
    """Rebuild the audit store of a range from Kafka into a fresh database; compare it with the live one."""
    from atb.replay.audit import AuditRebuild, compare_stores
    from audit_sink.adapters.db import make_engine
    from audit_sink.domain.retention import RetentionPolicy
    from audit_sink.settings import AuditSinkSettings

    session = _Session(json_out, quiet, command="audit")
    sink = AuditSinkSettings()

    async def work() -> tuple[AuditComparison | None, ScanResult, str]:
        plan = await session.plan_or_resume(resume, _audit_topics(session.namespace), since, until, {"into": into})
        target = str(plan.options.get("into") or "") or _rebuild_url(session.store.root, plan.run_id)
        rebuild = AuditRebuild(target, RetentionPolicy(sink.retention_years, sink.retention_days_by_event_type))
        result = await session.scanner().run(plan, rebuild.handle, limit=limit)
        if not result.complete:
            return None, result, target
        live = make_engine(live_db or sink.db_url())
        try:
            comparison = await asyncio.to_thread(compare_stores, live, rebuild.engine, plan.spans)
        finally:
            live.dispose()
        return comparison, result, target

    comparison, result, target = session.run(work)
    session.footer(result)
    if comparison is None:
        return
    if json_out:
        doc = {
            "run_id": result.run_id,
            "rebuilt_into": target,
            "compared": comparison.compared,
            "identical": comparison.identical,
            "missing": list(comparison.missing),
            "extra": list(comparison.extra),
            "different": [{"record": d.coordinate, "fields": list(d.fields)} for d in comparison.different],
        }
        session.out.print_json(json.dumps(doc))
    else:
        session.out.print(f"rebuilt {comparison.compared} records into {target}", highlight=False)
        for label, keys in (
            ("missing from the live store", comparison.missing),
            ("only in the live store", comparison.extra),
        ):
            for key in keys:
                session.out.print(f"  [red]{label}[/red]: {key}")
        for d in comparison.different:
            session.out.print(f"  [red]different[/red]: {d.coordinate} ({', '.join(d.fields)})")
        verdict = "[green]identical[/green]" if comparison.identical else "[red]the stores differ[/red]"
        session.out.print(f"live store vs Kafka over the range: {verdict}")
    if fail_on_difference and not comparison.identical:
        raise typer.Exit(3)
