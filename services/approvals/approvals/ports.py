"""What the approvals service depends on, as `Protocol`s: the policy and its state changelog.

`adapters.policy.PolicyRequirements` (OPA, through `atb_runtime.policy`) and
`adapters.state.StateStore` (`atb.approvals.state`) implement them; a test may
hand the service in-memory ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from atb_runtime import Outgoing
from atb_runtime.policy import RequirementsSource
from contracts import ApprovalStateChanged

__all__ = ["RequirementsSource", "StateLog"]


class StateLog(Protocol):
    """Each request's state as records on the compacted changelog, and read back per partition."""

    def record(self, state: ApprovalStateChanged) -> Outgoing:
        """The record that states `state` (published in the service's transaction)."""
        ...

    def tombstone(self, request_id: str) -> Outgoing:
        """The record that forgets a request."""
        ...

    async def load(
        self, partitions: Iterable[int], *, since: datetime | None = None
    ) -> dict[int, dict[str, ApprovalStateChanged]]:
        """Per partition, the latest state of every request written since `since` and not forgotten."""
        ...
