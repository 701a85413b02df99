"""Follow the outcomes, the approvals changelog and the PoAs into the chat service.

No consumer group: the one chat process reads these topics from the beginning of
their retention on every start (the changelog is compacted), rebuilding its
views; its store remembers which cards exist, so nothing is posted twice.
Records it cannot decode are skipped: their owners (approvals, issuer)
dead-letter them.
"""

from __future__ import annotations

from atb_runtime.follow import Sink, TopicFollower
from contracts import Topic

__all__ = ["FOLLOWED", "EventFollower"]

FOLLOWED = (Topic.OUTCOMES, Topic.APPROVALS_STATE, Topic.POA_ISSUED)


class EventFollower:
    """The chat service runs the follow loop itself (`run`), next to its HTTP endpoint."""

    def __init__(self, bootstrap: str, namespace: str, sink: Sink) -> None:
        self._follower = TopicFollower(bootstrap, namespace, FOLLOWED, sink, name="atb-chat", max_records=500)

    async def start(self) -> None:
        await self._follower.start(background=False)

    async def stop(self) -> None:
        await self._follower.stop()

    async def run(self) -> None:
        await self._follower.run()
