"""The request states one approvals instance holds, indexed for the work done on every batch and tick.

A closed request's state is held for `closed_retention_seconds` (two hours by default) so that
a replayed request or a late vote still finds it. At a steady 200 requests/s that is over a
million states, nearly all closed. Scanning them all on every batch (the pending gauge) or every
second (the deadlines) made the work per request grow with the traffic of the last two hours.
So this class keeps, beside the states:

- the number of open requests per tier (the pending gauge), updated on every change;
- the requests not closed (open, or votes held for a request not seen yet), in arrival order:
  the only ones a deadline, a reminder or a hold can act on;
- the closed requests in the order they closed, with the time they closed: forgetting takes
  from the front while the front is old enough.

Forgetting may come late, never early: an entry is acted on only when the state held *now* is
closed and older than the cut-off, and an entry older than the one in front waits behind it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator
from datetime import datetime

from contracts import ApprovalStateChanged

__all__ = ["HeldStates"]


class HeldStates:
    def __init__(self) -> None:
        self._states: dict[str, ApprovalStateChanged] = {}
        self._active: dict[str, None] = {}
        """Request ids whose state is not closed, in the order they arrived (a dict as an ordered set)."""
        self._closed: deque[tuple[datetime, str]] = deque()
        """(when it closed, request id), in the order the states closed; may hold entries since replaced."""
        self._pending: Counter[str] = Counter()
        """Open requests with requirements, per tier value."""

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._states

    def get(self, request_id: str) -> ApprovalStateChanged | None:
        return self._states.get(request_id)

    def values(self) -> Iterator[ApprovalStateChanged]:
        return iter(list(self._states.values()))

    def put(self, request_id: str, state: ApprovalStateChanged) -> None:
        self._unindex(request_id)
        self._states[request_id] = state
        if state.status == "closed":
            self._closed.append((state.updated_at, request_id))
        else:
            self._active[request_id] = None
            if state.status == "open" and state.requirements is not None:
                self._pending[state.requirements.tier.value] += 1

    def pop(self, request_id: str) -> ApprovalStateChanged | None:
        self._unindex(request_id)
        return self._states.pop(request_id, None)

    def clear(self) -> None:
        self._states.clear()
        self._active.clear()
        self._closed.clear()
        self._pending.clear()

    def pending(self, tier: str) -> int:
        """Open requests of this tier (with their requirements decided)."""
        return self._pending[tier]

    def active(self) -> list[tuple[str, ApprovalStateChanged]]:
        """The states not closed, in arrival order (a copy: the caller may change states as it goes)."""
        return [(request_id, self._states[request_id]) for request_id in self._active]

    def closed_before(self, cutoff: datetime) -> list[str]:
        """Take the closed requests whose state closed before `cutoff`, oldest first, for forgetting.

        The entries are removed from the queue; the states stay until `pop`."""
        due: list[str] = []
        while self._closed and self._closed[0][0] < cutoff:
            _closed_at, request_id = self._closed.popleft()
            state = self._states.get(request_id)
            if state is not None and state.status == "closed" and state.updated_at < cutoff and request_id not in due:
                due.append(request_id)
        return due

    def _unindex(self, request_id: str) -> None:
        old = self._states.get(request_id)
        if old is None or old.status == "closed":
            return  # a closed state's queue entry is checked against the state held when it comes due
        self._active.pop(request_id, None)
        if old.status == "open" and old.requirements is not None:
            self._pending[old.requirements.tier.value] -= 1
