"""`atb witness serve|key`: run the witness, print its verifier key (docs/audit.md, "Witnessed checkpoints")."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import typer

from atb.errors import AtbUsageError

__all__ = ["witness_app"]

witness_app = typer.Typer(no_args_is_help=True, help="A C2SP tlog-witness that cosigns the audit log's checkpoints.")

_STATE = typer.Option(None, "--state-dir", help="Its key and state (default ATB_WITNESS_STATE_DIR or <state>/witness).")
_NAME = typer.Option("", "--name", help="Its key name (default ATB_WITNESS_NAME, atb.local/witness).")


def _settings(state_dir: Path | None, name: str, **extra: object):  # type: ignore[no-untyped-def]
    from atb.witness.settings import WitnessSettings

    settings = WitnessSettings()
    updates = {k: v for k, v in {"witness_state_dir": state_dir, "witness_name": name, **extra}.items() if v}
    return settings.model_copy(update=updates)


@witness_app.command("key")
def key(state_dir: Path | None = _STATE, name: str = _NAME) -> None:
    """Print the witness's verifier key (vkey) for `--witness-key` and `ATB_AUDIT_WITNESSES` (creates the key)."""
    from atb.witness.adapters.keys import load_or_create_cosigner

    settings = _settings(state_dir, name)
    typer.echo(str(load_or_create_cosigner(settings.key_path(), settings.witness_name).key))


@witness_app.command("serve")
def serve(
    state_dir: Path | None = _STATE,
    name: str = _NAME,
    host: str = typer.Option("", "--host", help="Address (default ATB_WITNESS_HOST, 127.0.0.1)."),
    port: int = typer.Option(-1, "--port", help="Port (default ATB_WITNESS_PORT, 18190; 0 picks a free one)."),
    log_key: list[str] = typer.Option(  # noqa: B008 - typer's idiom
        [], "--log-key", help="ORIGIN=VKEY (or a file holding it): a log this witness cosigns; repeatable."
    ),
) -> None:
    """Serve POST /add-checkpoint until SIGTERM / Ctrl-C."""
    logs: dict[str, list[str]] = {}
    for item in log_key:
        origin, sep, vkey = item.partition("=")
        if not sep or not origin or not vkey:
            raise AtbUsageError(f"--log-key takes ORIGIN=VKEY, not {item!r}")
        logs.setdefault(origin, []).append(vkey)
    settings = _settings(state_dir, name, witness_host=host, witness_logs=logs)
    if port >= 0:
        settings = settings.model_copy(update={"witness_port": port})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(settings))


async def _serve(settings) -> None:  # type: ignore[no-untyped-def]
    from aiohttp import web

    from atb.witness.adapters.keys import load_or_create_cosigner
    from atb.witness.adapters.state import StateBusyError, WitnessState
    from atb.witness.server import make_app
    from atb_runtime.ops import start_site
    from audit_sink.adapters.signing import load_verifier
    from audit_sink.domain.checkpoint import NoteError

    try:
        logs = {origin: [load_verifier(v) for v in keys] for origin, keys in settings.logs().items()}
    except (NoteError, OSError) as exc:
        raise AtbUsageError(f"no usable log key ({exc}): pass --log-key ORIGIN=VKEY or ATB_WITNESS_LOGS") from exc
    cosigner = load_or_create_cosigner(settings.key_path(), settings.witness_name)
    try:
        state = WitnessState(settings.folder())
    except StateBusyError as exc:
        raise AtbUsageError(str(exc)) from exc
    runner = web.AppRunner(make_app(cosigner, state, logs), access_log=None)
    await runner.setup()
    # The socket a supervisor (ServiceStack) holds for the port, else a fresh bind (atb_runtime.ops).
    port = await start_site(runner, "witness", settings.witness_host, settings.witness_port)
    bound = runner.addresses[0][1] if runner.addresses else port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"witness {settings.witness_name} listening on http://{settings.witness_host}:{bound} "
        f"for {', '.join(sorted(logs))}; vkey {cosigner.key}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        state.close()
