"""The `atb` command: local stack (`atb dev`), the end-to-end demo (`atb demo`)."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from atb.audit_cli import audit_app
from atb.dev.cli import dev_app
from atb.dev.errors import DevError
from atb.keys_cli import keys_app
from atb.pki_cli import pki_app
from atb.poa_cli import poa_app
from atb.replay.cli import replay_app
from atb.trace_cli import trace
from atb.vote_cli import pending, vote

app = typer.Typer(no_args_is_help=True, help="ATB: signed, single-use Powers of Attorney for AI agents.")
app.add_typer(dev_app, name="dev")
app.add_typer(pki_app, name="pki")
app.add_typer(keys_app, name="keys")
app.add_typer(poa_app, name="poa")
app.add_typer(replay_app, name="replay")
app.command()(vote)
app.command()(pending)
app.command()(trace)
app.add_typer(audit_app, name="audit")


@app.command()
def demo(
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave Kafka, OPA and the services running."),
) -> None:
    """Start everything on the embedded defaults and run the end-to-end scenario."""
    from atb.demo import run_demo  # imported late: pulls in every service

    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # logs and CI: do not squeeze the timeline
    try:
        asyncio.run(run_demo(console, keep_running=keep_running))
    except DevError as exc:
        console.print(f"[red]atb demo: {exc}[/red]")
        raise typer.Exit(2) from exc
    except Exception as exc:
        console.print(f"[red]atb demo failed: {type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from exc


def main() -> None:
    app()
