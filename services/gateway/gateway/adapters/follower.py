"""Follow the request, outcome and PoA topics into the gateway's request views (`GatewayService.apply`).

No consumer group: every gateway replica reads everything from the beginning
(of retention), so any replica can answer `GET /requests/{id}`. With
`dead_letters`, what does not decode or does not belong on its topic is
dead-lettered as `gateway-views@<instance>` (docs/hostile-input.md).

With `check` (`atb_runtime.proofs.ProofCheck`), an outcome, PoA or request whose
proof is not by a party allowed to state it (a forged QuorumReached,
RequestDenied or PoaIssued written to the topic) never reaches the views: it is
dead-lettered and audited as `identity_proof_rejected`, and `GET /requests/{id}`
does not report it.
"""

from __future__ import annotations

from atb_runtime.follow import Check, FollowerDeadLetters, Sink, TopicFollower
from contracts import Topic

__all__ = ["ViewFollower"]

_FOLLOWED = (Topic.POA_REQUESTS, Topic.OUTCOMES, Topic.POA_ISSUED)


class ViewFollower:
    def __init__(
        self,
        bootstrap: str,
        namespace: str,
        sink: Sink,
        *,
        dead_letters: FollowerDeadLetters | None = None,
        check: Check | None = None,
    ) -> None:
        self._follower = TopicFollower(
            bootstrap,
            namespace,
            _FOLLOWED,
            sink,
            name="atb-gateway-views",
            dead_letters=dead_letters,
            check=check,
        )

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()
