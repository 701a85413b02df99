"""The request states one approvals instance holds, indexed for the work done on every batch and tick.

A closed request's state is held for `closed_retention_seconds` (two hours by default) so that
a replayed request or a late vote still finds it. At a steady 200 requests/s that is over a
million states, nearly all closed. Scanning them all on every batch (the pending gauge) or every
second (the deadlines) made the work per request grow with the traffic of the last two hours.
So this class keeps, beside the states:

- the number of open requests per tier (the pending gauge), updated on every change;
- the requests not closed (open, or votes held for a request not seen yet), in the order they
  were first held: the only ones a deadline, a reminder or a hold can act on;
- the closed requests in a heap by the time they closed: forgetting takes from the top while
  the top is older than the cut-off, whatever order the states were put in (a restore puts
  one partition after another; a rewind puts states back).

Forgetting is never early: a request is handed out only when the state held *now* is closed
and older than the cut-off. An entry left by a state since replaced is skipped.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

from contracts import ApprovalStateChanged

__all__ = ["HeldStates"]


class HeldStates:
    def __init__(self) -> None:
        self._states: dict[str, ApprovalStateChanged] = {}
        self._active: dict[str, None] = {}
        """Request ids whose state is not closed, in the order they were first held (a dict as an ordered set)."""
        self._closed: list[tuple[datetime, str]] = []
        """A heap of (when it closed, request id); may hold entries of states since replaced."""
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
        self._uncount(request_id)
        self._states[request_id] = state
        if state.status == "closed":
            self._active.pop(request_id, None)
            heapq.heappush(self._closed, (state.updated_at, request_id))
        else:
            self._active.setdefault(request_id, None)  # a request already held keeps its place
            if state.status == "open" and state.requirements is not None:
                self._pending[state.requirements.tier.value] += 1

    def pop(self, request_id: str) -> ApprovalStateChanged | None:
        self._uncount(request_id)
        self._active.pop(request_id, None)
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
        """The states not closed, in the order first held (a copy: the caller may change states as it goes)."""
        return [(request_id, self._states[request_id]) for request_id in self._active]

    def closed_before(self, cutoff: datetime) -> list[str]:
        """Take the closed requests whose state closed before `cutoff`, for forgetting (each once).

        Their entries leave the heap; the states stay until `pop`."""
        due: list[str] = []
        seen: set[str] = set()
        while self._closed and self._closed[0][0] < cutoff:
            _closed_at, request_id = heapq.heappop(self._closed)
            state = self._states.get(request_id)
            if state is None or state.status != "closed" or state.updated_at >= cutoff or request_id in seen:
                continue  # replaced since, or forgotten already: its own entry decides
            seen.add(request_id)
            due.append(request_id)
        return due

    def _uncount(self, request_id: str) -> None:
        old = self._states.get(request_id)
        if old is not None and old.status == "open" and old.requirements is not None:
            self._pending[old.requirements.tier.value] -= 1
