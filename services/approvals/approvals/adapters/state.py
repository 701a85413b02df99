"""The approvals changelog: read each request's state back from `atb.approvals.state`.

Writes happen in the processor's transactions (with the outcomes they cause);
this adapter only reads, `read_committed`, so aborted writes of a crashed or
fenced instance are never loaded.

Restore reads a bounded window (`since`), not the topic's whole history: every
state that can still matter was written inside it (docs/scaling.md), and a
closed request's state is tombstoned once it no longer matters, so compaction
drops it from the topic too.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from atb_runtime import Outgoing, outgoing
from atb_runtime.readback import read_records
from contracts import (
    ApprovalStateChanged,
    EventDecodeError,
    Topic,
    decode_envelope,
    payload_of,
    topic_name,
)

__all__ = ["StateStore"]


class StateStore:
    def __init__(self, bootstrap: str, namespace: str, source: str) -> None:
        self._bootstrap = bootstrap
        self._namespace = namespace
        self._topic = topic_name(Topic.APPROVALS_STATE, namespace)
        self._source = source

    def record(self, state: ApprovalStateChanged) -> Outgoing:
        return outgoing(state, source=self._source, namespace=self._namespace)

    def tombstone(self, request_id: str) -> Outgoing:
        """Forget a request: compaction removes its states from the changelog."""
        return Outgoing(topic=self._topic, key=request_id.encode(), value=None, headers=())

    async def load(
        self, partitions: Iterable[int], *, since: datetime | None = None
    ) -> dict[int, dict[str, ApprovalStateChanged]]:
        """Per partition, the latest state of every request written since `since` and not tombstoned."""
        states: dict[int, dict[str, ApprovalStateChanged]] = {}
        for record in await read_records(self._bootstrap, self._topic, partitions, since=since):
            on_partition = states.setdefault(record.partition, {})
            if record.value is None:
                if record.key is not None:
                    on_partition.pop(record.key.decode("utf-8", "replace"), None)
                continue
            try:
                payload = payload_of(decode_envelope(record.value))
            except EventDecodeError:
                continue  # only this service writes here; anything else is not its state
            if isinstance(payload, ApprovalStateChanged):
                on_partition[payload.request_id] = payload
        return states
