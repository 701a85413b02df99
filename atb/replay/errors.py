"""Errors of `atb replay`.

ReplayError                  base: a one-line diagnosis, never a traceback
├── ReplayUsageError         bad arguments: a time, a filter, an unknown topic (exit 2)
├── RunNotFoundError         `--resume` names a run with no run file (exit 2)
└── ReplayInfraError         Kafka or the throw-away OPA could not be used (exit 1)
"""

from __future__ import annotations

__all__ = ["ReplayError", "ReplayInfraError", "ReplayUsageError", "RunNotFoundError"]


class ReplayError(Exception):
    """Base of every replay error; `exit_code` is what the CLI exits with."""

    exit_code = 1


class ReplayUsageError(ReplayError):
    exit_code = 2


class RunNotFoundError(ReplayUsageError):
    """`--resume` named a run id that has no run file (a typo, or another state folder)."""


class ReplayInfraError(ReplayError):
    exit_code = 1
