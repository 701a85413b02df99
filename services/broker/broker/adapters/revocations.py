"""Revoked PoAs, learned from `atb.poa.revoked` by every replica.

Like the key ring, a group-less reader follows the topic from the beginning:
each replica must see every revocation, and quickly (the consumer's fetch wait
is 200 ms, so a revocation is in force everywhere well within 2 seconds).
With `dead_letters`, garbage on the topic is dead-lettered as
`broker-revocations@<instance>` (docs/hostile-input.md).

A revocation is forgotten once the PoA it revokes has expired (plus the
verifier's leeway): from then on the PoA is refused as `expired` anyway. The
expiry is the event's `expires_at`; a revocation published before that field
existed is kept for the longest a PoA could still be valid after `revoked_at`
(5 minutes for one PoA, 15 for a whole request). So memory holds only the
revocations of the last few minutes, however long the topic is, and a replica
that reads the topic from the beginning keeps none of the old ones.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence

from atb_runtime.follow import FollowerDeadLetters, TopicFollower
from broker.adapters.metrics import REVOCATIONS_APPLIED
from contracts import MAX_LIFETIME_SECONDS, EventPayload, PoaRevoked, Topic

__all__ = ["REQUEST_REVOCATION_S", "RevocationList"]

REQUEST_REVOCATION_S = 15 * 60
"""A request-wide revocation without `expires_at` is kept this long: the issuer signs only within
10 minutes of the quorum, and a PoA lives at most 5 (contracts.MAX_LIFETIME_SECONDS)."""


class RevocationList:
    def __init__(
        self,
        bootstrap: str,
        namespace: str,
        *,
        dead_letters: FollowerDeadLetters | None = None,
        leeway_s: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._jtis: dict[str, tuple[str, float]] = {}
        self._requests: dict[str, tuple[str, float]] = {}
        # (forget at, is a request, key): the earliest expiry first, so pruning pops only what is due.
        self._expiry: list[tuple[float, bool, str]] = []
        self._leeway = leeway_s
        self._clock = clock
        # The fetch waits at most 200 ms: a revocation is in force everywhere well within 2 s.
        self._follower = TopicFollower(
            bootstrap,
            namespace,
            (Topic.POA_REVOKED,),
            self._apply,
            name="atb-revocations",
            fetch_max_wait_ms=200,
            dead_letters=dead_letters,
        )

    def __len__(self) -> int:
        return len(self._jtis) + len(self._requests)

    def revoked(self, jti: str, request_id: str) -> str | None:
        """The revocation reason when either the PoA or its whole request is revoked."""
        self.prune()
        hit = self._jtis.get(jti) or self._requests.get(request_id)
        return hit[0] if hit else None

    def add(self, revocation: PoaRevoked) -> None:
        whole_request = not revocation.jti or revocation.jti == "*"
        forget_at = _until(revocation, whole_request) + self._leeway
        if forget_at <= self._clock():
            return  # the PoA has expired: it is refused as such, nothing to remember
        table, key = (self._requests, revocation.request_id) if whole_request else (self._jtis, revocation.jti)
        known = table.get(key)
        if known is not None and known[1] >= forget_at:
            return
        table[key] = (revocation.reason, forget_at)
        REVOCATIONS_APPLIED.inc()
        heapq.heappush(self._expiry, (forget_at, whole_request, key))
        self.prune()

    def prune(self) -> None:
        """Forget the revocations whose PoA has expired."""
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            forget_at, whole_request, key = heapq.heappop(self._expiry)
            table = self._requests if whole_request else self._jtis
            known = table.get(key)
            if known is not None and known[1] <= forget_at:  # not extended by a later revocation
                del table[key]

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    async def _apply(self, events: Sequence[EventPayload]) -> None:
        for payload in events:
            if isinstance(payload, PoaRevoked):
                self.add(payload)


def _until(revocation: PoaRevoked, whole_request: bool) -> float:
    """When the revoked PoA (or the last PoA of the revoked request) expires, in epoch seconds."""
    if revocation.expires_at is not None:
        return revocation.expires_at.timestamp()
    bound = REQUEST_REVOCATION_S if whole_request else MAX_LIFETIME_SECONDS
    return revocation.revoked_at.timestamp() + bound
