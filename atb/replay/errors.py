"""Errors of `atb replay`.

ReplayError                  base (an atb.errors.AtbError): a one-line diagnosis, never a traceback
├── ReplayUsageError         bad arguments: a time, a filter, an unknown topic (exit 2)
├── RunNotFoundError         `--resume` names a run with no run file (exit 2)
└── ReplayInfraError         Kafka or the throw-away OPA could not be used (exit 4)
"""

from __future__ import annotations

from atb.errors import AtbError, ExitCode

__all__ = ["ReplayError", "ReplayInfraError", "ReplayUsageError", "RunNotFoundError"]


class ReplayError(AtbError):
    """Base of every replay error; `exit_code` is what the CLI exits with."""

    exit_code = ExitCode.FAILED


class ReplayUsageError(ReplayError):
    exit_code = ExitCode.USAGE


class RunNotFoundError(ReplayUsageError):
    """`--resume` named a run id that has no run file (a typo, or another state folder)."""


class ReplayInfraError(ReplayError):
    exit_code = ExitCode.UNAVAILABLE
