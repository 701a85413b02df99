"""One handler for every `atb` command: a failure is one line on stderr and an exit code.

`AtbGroup` is the root command's class. Whatever a command raises (an `AtbError`,
Kafka or OPA unreachable, a database that cannot be opened, a bad argument) is
printed as `atb <command>: error: <what failed and what to do>` and exits with an
`ExitCode` (atb/errors.py, listed in the README). Click's usage errors (a missing
argument, an unknown option) are one line too, with exit 2. `atb --debug <command>`
(or `ATB_DEBUG=1`) lets the exception through with its traceback instead, and
keeps the libraries' logs.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer

# Typer carries its own copy of Click: its classes and exceptions are what commands see and raise.
from typer._click import exceptions as click_exc
from typer._click.core import Command, Context
from typer.core import TyperGroup

from atb.errors import ExitCode, describe

__all__ = ["DEBUG_ENV", "AtbGroup", "debug_option"]

DEBUG_ENV = "ATB_DEBUG"
QUIET_LOGGERS = ("aiokafka", "asyncio")
"""Loggers that report every refused connection, and an unclosed client after a failed start, on stderr."""


def debug_option() -> bool:
    """The root callback's `--debug` flag (handled by AtbGroup; the callback only declares it)."""
    flag: bool = typer.Option(False, "--debug", envvar=DEBUG_ENV, help="Show tracebacks and library logs on errors.")
    return flag


@contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence the noisy loggers for the command's duration (restored after: tests run commands in-process)."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _debug_env() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _command_path(group: TyperGroup, ctx: Context, args: Sequence[str]) -> str:
    """`atb trace`, `atb audit verify`: the command the arguments name (as far as they name one)."""
    names = ["atb"]
    command: Command = group
    for token in args:
        if not isinstance(command, TyperGroup) or token.startswith("-"):
            break
        sub = command.get_command(ctx, token)
        if sub is None:
            break
        names.append(token)
        command = sub
    return " ".join(names)


def _usage_line(path: str, exc: click_exc.UsageError) -> str:
    if exc.ctx is not None:  # the command that refused its arguments, with `atb` as program name
        path = " ".join(["atb", *exc.ctx.command_path.split()[1:]])
    return f"{path}: error: {exc.format_message()} (see `{path} --help`)"


def _fail(line: str, code: int) -> click_exc.Exit:
    typer.echo(" ".join(line.split()), err=True)  # one line, whatever the message held
    return click_exc.Exit(code)


class AtbGroup(TyperGroup):
    """The root `atb` group: parses and runs commands, and turns any failure into one line."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Context | None = None, **extra: Any
    ) -> Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click_exc.NoArgsIsHelpError:
            raise  # `atb` alone: the help, as Typer shows it
        except click_exc.UsageError as exc:  # an option of `atb` itself
            if _debug_env():
                raise
            raise _fail(_usage_line("atb", exc), ExitCode.USAGE) from None

    def invoke(self, ctx: Context) -> Any:
        debug = bool(ctx.params.get("debug")) or _debug_env()
        # Click keeps the not-yet-parsed arguments (the command and its arguments) here.
        try:
            path = _command_path(self, ctx, [*getattr(ctx, "_protected_args", []), *ctx.args])
        except Exception:
            path = "atb"
        with _quiet(not debug):
            try:
                return super().invoke(ctx)
            except (click_exc.Exit, click_exc.Abort, click_exc.NoArgsIsHelpError):
                raise  # a command's own exit code, Ctrl-C at a prompt, a group's help
            except click_exc.UsageError as exc:
                if debug:
                    raise
                line, code = _usage_line(path, exc), int(ExitCode.USAGE)
            except click_exc.ClickException as exc:
                if debug:
                    raise
                line, code = f"{path}: error: {exc.format_message()}", exc.exit_code
            except (Exception, KeyboardInterrupt) as exc:
                if debug:
                    raise
                failure = describe(exc)
                line, code = f"{path}: error: {failure.message}", failure.code
            # The failed command's clients (a Kafka consumer whose start failed) go now, while
            # their "Unclosed AIOKafkaConsumer" complaints are still silenced.
            gc.collect()
        raise _fail(line, code)
