"""The `atb` command: local stack (`atb dev`), the end-to-end demo (`atb demo`), and the operator commands.

Every failure is one line on stderr and an exit code (atb/cli/errors.py); `atb --debug <command>` shows tracebacks.
"""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from atb.cli.audit import audit_app
from atb.cli.console import console_app
from atb.cli.delegate import delegate_app
from atb.cli.doctor import doctor
from atb.cli.errors import AtbGroup, debug_option
from atb.cli.keys import keys_app
from atb.cli.pki import pki_app
from atb.cli.poa import poa_app
from atb.cli.trace import trace
from atb.cli.vote import pending, vote
from atb.dev.cli import dev_app
from atb.policy.cli import policy_app
from atb.replay.cli import replay_app
from atb.witness.cli import witness_app

app = typer.Typer(cls=AtbGroup, no_args_is_help=True, help="ATB: signed, single-use Powers of Attorney for AI agents.")


@app.callback()
def _root(debug: bool = debug_option()) -> None:  # read by AtbGroup from ctx.params
    """ATB: signed, single-use Powers of Attorney for AI agents."""


app.add_typer(dev_app, name="dev")
app.add_typer(pki_app, name="pki")
app.add_typer(keys_app, name="keys")
app.add_typer(poa_app, name="poa")
app.add_typer(replay_app, name="replay")
app.add_typer(policy_app, name="policy")
app.command()(vote)
app.command()(pending)
app.command()(trace)
app.add_typer(audit_app, name="audit")
app.add_typer(witness_app, name="witness")
app.add_typer(console_app, name="console")
app.add_typer(delegate_app, name="delegate")
app.command()(doctor)


@app.command()
def demo(
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave Kafka, OPA and the services running."),
) -> None:
    """Start everything on the embedded defaults and run the end-to-end scenario."""
    from atb.demo.run import run_demo  # imported late: pulls in every service

    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # logs and CI: do not squeeze the timeline
    asyncio.run(run_demo(console, keep_running=keep_running))  # a failure: one line by AtbGroup


def main() -> None:
    app()
