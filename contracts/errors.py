"""Every error the contracts raise, in one tree.

    ContractsError                 base (a ValueError): a value two services exchange is not usable
    ├── CanonicalJsonError         a value has no canonical JSON (a float, a non-string key)
    ├── EventDecodeError           a record is not a valid ATB event; `code` and `reason`
    ├── DirectoryError             the approver directory is malformed
    ├── AgentRegistryError         the agent registry is malformed
    ├── RequirementsError          the policy's requirements break a rule of docs/architecture.md §2.5
    └── ThresholdError             a threshold result that cannot exist (negative, one person counted twice)

Each is raised where its value is parsed or built (`canonical.py`, `envelope.py`,
`directory.py`, `agents.py`, `requirements.py`, `eligibility.py`) and imported
from there or from here. Every name is unique across the project
(tests/unit/test_error_names.py).
"""

from __future__ import annotations

__all__ = [
    "AgentRegistryError",
    "CanonicalJsonError",
    "ContractsError",
    "DirectoryError",
    "EventDecodeError",
    "RequirementsError",
    "ThresholdError",
]


class ContractsError(ValueError):
    """Base of every contracts error."""


class CanonicalJsonError(ContractsError):
    """A value cannot be serialised canonically (a float, a non-string key, ...)."""


class EventDecodeError(ContractsError):
    """A record is not a valid ATB event. `code` is a stable, machine-readable reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class DirectoryError(ContractsError):
    """The approver directory is malformed; the message names the entry and field."""


class AgentRegistryError(ContractsError):
    """The agent registry is malformed; the message names the entry and field."""


class RequirementsError(ContractsError):
    """The policy asked for requirements that break a rule (a tier floor, the PoA lifetime, ...)."""


class ThresholdError(ContractsError):
    """A threshold result that cannot exist: a negative threshold, one principal counted twice."""
