"""Follow the request, outcome and PoA topics into the gateway's request views.

No consumer group: every gateway replica reads everything from the beginning
(of retention), so any replica can answer `GET /requests/{id}`.
"""

from __future__ import annotations

from collections.abc import Sequence

from atb_runtime.follow import TopicFollower
from contracts import EventPayload, Topic
from gateway.domain import Views

__all__ = ["ViewFollower"]

_FOLLOWED = (Topic.POA_REQUESTS, Topic.OUTCOMES, Topic.POA_ISSUED)


class ViewFollower:
    def __init__(self, bootstrap: str, namespace: str, views: Views) -> None:
        self._views = views
        self._follower = TopicFollower(bootstrap, namespace, _FOLLOWED, self._apply, name="atb-gateway-views")

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    async def _apply(self, events: Sequence[EventPayload]) -> None:
        for payload in events:
            self._views.apply(payload)
