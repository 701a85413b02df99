"""The approvals changelog: read each request's state back from `atb.approvals.state`.

Writes happen in the processor's transactions (with the outcomes they cause);
this adapter only reads, `read_committed`, so aborted writes of a crashed
instance are never loaded.
"""

from __future__ import annotations

from collections.abc import Iterable

from atb_runtime import Outgoing, outgoing
from atb_runtime.readback import read_committed
from contracts import ApprovalStateChanged, Topic, topic_name

__all__ = ["StateStore"]


class StateStore:
    def __init__(self, bootstrap: str, namespace: str, source: str) -> None:
        self._bootstrap = bootstrap
        self._namespace = namespace
        self._topic = topic_name(Topic.APPROVALS_STATE, namespace)
        self._source = source

    def record(self, state: ApprovalStateChanged) -> Outgoing:
        return outgoing(state, source=self._source, namespace=self._namespace)

    async def load(self, partitions: Iterable[int]) -> dict[str, ApprovalStateChanged]:
        """The latest state of every request on the given partitions."""
        states: dict[str, ApprovalStateChanged] = {}
        for payload in await read_committed(self._bootstrap, self._topic, partitions):
            if isinstance(payload, ApprovalStateChanged):
                states[payload.request_id] = payload
        return states
