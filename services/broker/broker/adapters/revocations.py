"""Revoked PoAs, learned from `atb.poa.revoked` by every replica.

Like the key ring, a group-less reader follows the topic from the beginning:
each replica must see every revocation, and quickly (the consumer's fetch wait
is 200 ms, so a revocation is in force everywhere well within 2 seconds).
With `dead_letters`, garbage on the topic is dead-lettered as
`broker-revocations@<instance>` (docs/hostile-input.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from atb_runtime.follow import FollowerDeadLetters, TopicFollower
from contracts import EventPayload, PoaRevoked, Topic

__all__ = ["RevocationList"]


class RevocationList:
    def __init__(self, bootstrap: str, namespace: str, *, dead_letters: FollowerDeadLetters | None = None) -> None:
        self._jtis: dict[str, str] = {}
        self._requests: dict[str, str] = {}
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

    def revoked(self, jti: str, request_id: str) -> str | None:
        """The revocation reason when either the PoA or its whole request is revoked."""
        return self._jtis.get(jti) or self._requests.get(request_id)

    def add(self, revocation: PoaRevoked) -> None:
        if revocation.jti and revocation.jti != "*":
            self._jtis[revocation.jti] = revocation.reason
        else:
            self._requests[revocation.request_id] = revocation.reason

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    async def _apply(self, events: Sequence[EventPayload]) -> None:
        for payload in events:
            if isinstance(payload, PoaRevoked):
                self.add(payload)
