"""Errors of the local launcher, one tree with a human-readable diagnosis each.

    DevError                    base (an atb.errors.AtbError); `exit_code` is what `atb dev` exits with
    ├── ToolchainMissingError   java / mvn / go not on PATH (exit 2)
    ├── PortInUseError          a port we need is held by a process that is not ours (exit 2)
    ├── ProcessStartError       a managed process died or never became ready (exit 1)
    ├── ToolError               Maven or `go install` failed (exit 1)
    └── TopicSetupError         Kafka refused a catalogue topic (topics.py, exit 1)

A bad setting (a port that is no number) is a ValueError, reported like these with exit 2.

Every message is one line that says what to do next (install what, change which
environment variable, read which log file).
"""

from __future__ import annotations

from atb.errors import AtbError

__all__ = ["DevError", "PortInUseError", "ProcessStartError", "ToolError", "ToolchainMissingError"]


class DevError(AtbError):
    """Base of the launcher's errors."""

    exit_code: int = 1


class ToolchainMissingError(DevError):
    """A required executable is not on PATH."""

    exit_code = 2


class PortInUseError(DevError):
    """A port the launcher needs is taken by a process it did not start."""

    exit_code = 2


class ProcessStartError(DevError):
    """A managed process exited early or did not become ready in time."""


class ToolError(DevError):
    """An external build tool (Maven, go install) failed."""
