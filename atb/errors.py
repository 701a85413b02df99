"""Errors of the `atb` command line, and how any failure becomes one line and an exit code.

    AtbError                  base: a one-line diagnosis that says what to do; `exit_code`
    ├── AtbUsageError         bad input or local setup to fix: an argument, a file, a setting (exit 2)
    ├── UnavailableError      a dependency did not answer: Kafka, OPA, a database, a service (exit 4)
    ├── DevError              the local launcher (atb/dev/errors.py: 2 to fix, 1 a failed start)
    └── ReplayError           `atb replay` (atb/replay/errors.py: 2 usage, 4 Kafka or OPA)

Commands raise these; `describe()` also turns what libraries raise (aiokafka,
aiohttp, SQLAlchemy, pydantic settings, the file system) into the same shape, so
`atb/cli/errors.py` can print one line for any failure. The exit codes are
`ExitCode` and are listed in the README ("Exit codes").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["AtbError", "AtbUsageError", "ExitCode", "Failure", "UnavailableError", "describe", "kafka_bootstrap"]


class ExitCode(IntEnum):
    """What every `atb` command exits with."""

    OK = 0
    FAILED = 1
    """The command ran and the answer is no: a check failed, an operation was refused, or a bug (see --debug)."""
    USAGE = 2
    """Bad input or local setup to fix: a malformed argument, an unknown id, a missing file or tool, a bad setting."""
    CHANGED = 3
    """`atb replay` found what it flags: a change, a difference, dead letters it refused to re-drive."""
    UNAVAILABLE = 4
    """A dependency did not answer: Kafka, OPA, a database, a service."""
    INTERRUPTED = 130
    """Ctrl-C."""


class AtbError(Exception):
    """Base of the CLI's errors: the message is the one line the user sees."""

    exit_code: int = ExitCode.FAILED


class AtbUsageError(AtbError):
    exit_code = ExitCode.USAGE


class UnavailableError(AtbError):
    exit_code = ExitCode.UNAVAILABLE


@dataclass(frozen=True)
class Failure:
    code: int
    message: str


START_STACK = "start the local stack with `atb dev up` (check with `atb doctor`)"


def kafka_bootstrap() -> str:
    """The Kafka the CLI talks to: `ATB_KAFKA_BOOTSTRAP_SERVERS`, else the local stack's port (`ATB_KAFKA_PORT`)."""
    configured = os.environ.get("ATB_KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        return configured
    from atb.dev.config import DevConfig

    return DevConfig.from_env().kafka_bootstrap


def _one_line(text: str, limit: int = 400) -> str:
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _kafka_hint() -> str:
    try:
        where = kafka_bootstrap()
    except ValueError:
        where = "(a bad ATB_KAFKA_PORT)"
    return f"Kafka is unreachable at {where}: {START_STACK}, or set ATB_KAFKA_BOOTSTRAP_SERVERS"


def _http_target(host: str, port: int | None) -> str:
    """Name what answers at host:port when it is a known setting (OPA)."""
    address = f"{host}:{port}" if port else host
    opa = os.environ.get("ATB_OPA_URL", "").strip()
    if opa and address in opa:
        return f"OPA at {opa}: {START_STACK}, or set ATB_OPA_URL"
    return f"the service at {address}: is it running? ({START_STACK})"


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside exception groups (asyncio.TaskGroup, gather)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, then what caused it (explicitly or while handling), without loops."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen) and len(seen) < 10:
        seen.append(_leaf(current))
        current = current.__cause__ or current.__context__
    return seen


def describe(exc: BaseException) -> Failure:
    """One line and an exit code for any failure; AtbErrors first, then known library errors, else a bug."""
    exc = _leaf(exc)
    if isinstance(exc, KeyboardInterrupt):
        return Failure(ExitCode.INTERRUPTED, "interrupted")
    if isinstance(exc, AtbError):
        return Failure(exc.exit_code, _one_line(str(exc)))
    for cause in _chain(exc):
        known = _known(cause)
        if known is not None:
            return known
    generic = _generic(exc)
    if generic is not None:
        return generic
    detail = _one_line(str(exc)) or "(no message)"
    return Failure(
        ExitCode.FAILED, f"unexpected {type(exc).__name__}: {detail} (run `atb --debug ...` for the traceback)"
    )


def _known(exc: BaseException) -> Failure | None:
    """What a library raised for an unreachable dependency or a bad setting (anywhere in the chain)."""
    if isinstance(exc, AtbError):
        return Failure(exc.exit_code, _one_line(str(exc)))
    if isinstance(exc, ConnectionError):
        return Failure(ExitCode.UNAVAILABLE, _one_line(f"connection failed ({exc}): {START_STACK}"))
    return _kafka(exc) or _http(exc) or _database(exc) or _settings(exc)


def _generic(exc: BaseException) -> Failure | None:
    """Built-in errors, read only from the error itself (a ValueError handled on the way is no diagnosis)."""
    if isinstance(exc, ValueError):
        return Failure(ExitCode.USAGE, _one_line(f"{exc} (see --help)"))
    if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError):
        name = exc.filename if exc.filename is not None else ""
        return Failure(ExitCode.USAGE, _one_line(f"{name}: {exc.strerror or exc}: check the path"))
    if isinstance(exc, TimeoutError):
        detail = f" ({_one_line(str(exc))})" if str(exc) else ""
        return Failure(ExitCode.UNAVAILABLE, f"timed out{detail}: is the stack up? ({START_STACK})")
    return None


def _kafka(exc: BaseException) -> Failure | None:
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, NodeNotReadyError

    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError | NodeNotReadyError):
        return Failure(ExitCode.UNAVAILABLE, _kafka_hint())
    if isinstance(exc, KafkaError):
        return Failure(ExitCode.UNAVAILABLE, _one_line(f"Kafka refused: {type(exc).__name__}: {exc}"))
    return None


def _http(exc: BaseException) -> Failure | None:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure(ExitCode.UNAVAILABLE, f"cannot connect to {_http_target(exc.host, exc.port)}")
    if isinstance(exc, aiohttp.ClientError):
        return Failure(ExitCode.UNAVAILABLE, _one_line(f"HTTP request failed: {type(exc).__name__}: {exc}"))
    return None


def _database(exc: BaseException) -> Failure | None:
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.ArgumentError | sa.NoSuchModuleError):
        return Failure(ExitCode.USAGE, _one_line(f"bad database URL: {exc}: check --db or ATB_AUDIT_DB_URL"))
    if isinstance(exc, sa.OperationalError | sa.InterfaceError):
        orig = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        return Failure(
            ExitCode.UNAVAILABLE,
            _one_line(f"the database cannot be used ({orig}): check --db or ATB_AUDIT_DB_URL, and that it runs"),
        )
    return None


def _settings(exc: BaseException) -> Failure | None:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"]) or exc.title
        return Failure(ExitCode.USAGE, _one_line(f"invalid {where} ({exc.title}): {first['msg']}"))
    return None
