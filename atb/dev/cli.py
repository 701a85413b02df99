"""`atb dev up|down|status|tools`: the local Kafka + OPA stack, no Docker.

Errors are one line on stderr and an exit code: 2 for what the user must fix
(a missing tool, a taken port, a bad setting), 1 for a failed start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from atb.dev.config import DevConfig
from atb.dev.errors import DevError
from atb.dev.gotools import CHART_TOOLS
from atb.dev.launcher import ensure_infra, ensure_tools, infra_status, stop_infra
from atb.dev.toolchain import LINT_TOOLS, TEST_TOOLS

__all__ = ["dev_app"]

T = TypeVar("T")

dev_app = typer.Typer(
    name="dev",
    help="Run the local stack (Kafka KRaft node + OPA) from project-built binaries, without Docker.",
    no_args_is_help=True,
)

_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True, highlight=False)


def _progress(message: str) -> None:
    _err.print(f"• {message}", markup=False)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run the coroutine; a launcher error becomes one line on stderr and its exit code."""
    # The readiness probe expects refused connections; aiokafka would log each one.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(coro)
    except (DevError, ValueError) as exc:
        typer.echo(f"atb dev: error: {exc}", err=True)
        raise typer.Exit(exc.exit_code if isinstance(exc, DevError) else 2) from None


def _config() -> DevConfig:
    try:
        return DevConfig.from_env()
    except ValueError as exc:
        typer.echo(f"atb dev: error: {exc}", err=True)
        raise typer.Exit(2) from None


@dev_app.command()
def up(
    timeout: float = typer.Option(180.0, help="Seconds to wait for each component to become ready."),
    services: bool = typer.Option(
        False,
        "--services",
        help="Also start the services (gateway, approvals, issuer, broker, audit sink), left running.",
    ),
    instances: int = typer.Option(
        1, "--instances", min=1, max=16, help="With --services: instances of approvals, issuer, broker and audit sink."
    ),
) -> None:
    """Build what is missing, start Kafka and OPA, create the catalogue topics. Fast when already up."""
    config = _config()
    infra = _run(ensure_infra(_progress, config=config, ready_timeout=timeout))
    _out.print(f"KAFKA_BOOTSTRAP_SERVERS={infra.kafka_bootstrap}", markup=False, highlight=False)
    _out.print(f"ATB_OPA_URL={infra.opa_url}", markup=False, highlight=False)
    if services:
        _run(_start_services(infra.kafka_bootstrap, infra.opa_url, config.state_dir, instances, timeout))
    elif instances != 1:
        typer.echo("atb dev: error: --instances needs --services", err=True)
        raise typer.Exit(2)


async def _start_services(kafka: str, opa: str, state_dir: Path, instances: int, timeout: float) -> None:
    from atb.dev.stack import ServiceStack, StackConfig  # the services' stack: only when asked for

    stack = ServiceStack(StackConfig(kafka, opa, state_dir, exit_with_parent=False), instances=instances)
    _progress(f"starting {', '.join(stack.processes)} (logs in {_short(stack.config.run_dir())})")
    await stack.start(ready_timeout=timeout)
    _out.print(f"ATB_GATEWAY_URL={stack.gateway_url}", markup=False, highlight=False)
    for name, proc in stack.processes.items():
        _out.print(f"{name}: pid {proc.pid}, /healthz on 127.0.0.1:{stack.ops_ports[name]}", markup=False)


@dev_app.command()
def down(
    timeout: float = typer.Option(30.0, help="Seconds between SIGTERM and SIGKILL."),
) -> None:
    """Stop the processes `up` started (and nothing else), services first."""
    from atb.dev.stack import stop_recorded

    config = _config()
    services = _run(stop_recorded(config.state_dir, min(timeout, 10.0)))
    stopped = services + _run(stop_infra(config=config, grace=timeout))
    _progress(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


def _short(path: Path) -> str:
    """A path relative to the current folder when it lies inside it (keeps the table narrow)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dev_app.command()
def status() -> None:
    """Show each component's pid, address, state and log files."""
    rows = _run(infra_status(_config()))
    table = Table(title="atb dev")
    for column in ("component", "pid", "address", "state", "log"):
        table.add_column(column, overflow="fold")
    for row in rows:
        colour = {"ready": "green", "not ready": "yellow"}.get(row.state, "red")
        table.add_row(
            row.name,
            str(row.pid or "-"),
            row.address,
            f"[{colour}]{row.state}[/]",
            "\n".join(_short(p) for p in row.log_files),
        )
    if not _out.is_terminal:  # piped or captured: 80 columns would fold the log paths
        _out.width = max(_out.width, 140)
    _out.print(table)


@dev_app.command()
def tools() -> None:
    """Resolve the Kafka jars, build OPA (what `up` does first), the lint, test and chart tools; start nothing."""
    jars, opa = _run(ensure_tools(_config(), _progress))
    lint = {tool.name: _run(tool.build(_config(), _progress)) for tool in (*LINT_TOOLS, *TEST_TOOLS, *CHART_TOOLS)}
    lines = [f"kafka jars: {jars}", f"opa: {opa}", *(f"{name}: {path}" for name, path in lint.items())]
    _out.print("\n".join(lines), markup=False, highlight=False)
