"""Follow the outcomes, the approvals changelog and the PoAs into the chat service.

No consumer group: the one chat process reads these topics from the beginning of
their retention on every start (the changelog is compacted), rebuilding its
views; its store remembers which cards exist, so nothing is posted twice.

Nothing reaches the cards that the follower cannot use: records that do not
decode or do not belong on their topic, and an ApprovalRequired whose proof is
not an approvals service's (`outcome_producers`, verified as the issuer verifies
a QuorumReached: no attesters). With `dead_letters`, each is dead-lettered as
`chat-cards@<instance>`, the forged ApprovalRequired also audited as
`identity_proof_rejected`; it never gets a card (docs/hostile-input.md).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

from atb_identity import ClaimNotProvenError, IdentityError, TrustBundle, verify_origin
from atb_runtime import audit
from atb_runtime.follow import FollowerDeadLetters, Refused, Sink, TopicFollower
from contracts import ApprovalRequired, Envelope, EventPayload, Topic

__all__ = ["FOLLOWED", "EventFollower", "OutcomeProofCheck"]

FOLLOWED = (Topic.OUTCOMES, Topic.APPROVALS_STATE, Topic.POA_ISSUED)


class OutcomeProofCheck:
    """Refuses an ApprovalRequired unless its proof is by one of `producers` (the approvals service)."""

    def __init__(
        self, bundle: TrustBundle, producers: Collection[str], *, source: str, namespace: str, consumer: str
    ) -> None:
        self._bundle = bundle
        self._producers = frozenset(producers)
        self._source = source
        self._namespace = namespace
        self._consumer = consumer

    def __call__(self, envelope: Envelope, payload: EventPayload) -> Refused | None:
        if not isinstance(payload, ApprovalRequired):
            return None
        try:
            verify_origin(envelope, envelope.source, self._bundle, attesters=(), at=datetime.now(UTC))
            if envelope.source not in self._producers:
                raise ClaimNotProvenError(f"{envelope.source} may not announce that approval is required")
        except IdentityError as exc:
            rejected = audit(
                "identity_proof_rejected",
                source=self._source,
                namespace=self._namespace,
                outcome="denied",
                request_id=payload.request_id,
                reason=str(exc)[:1024],
                details={"rule": exc.code, "presented": envelope.source[:2048], "consumer": self._consumer},
            )
            return Refused(exc.code, str(exc), (rejected,))
        return None


class EventFollower:
    """The chat service runs the follow loop itself (`run`), next to its HTTP endpoint."""

    def __init__(
        self,
        bootstrap: str,
        namespace: str,
        sink: Sink,
        *,
        dead_letters: FollowerDeadLetters | None = None,
        check: OutcomeProofCheck | None = None,
    ) -> None:
        self._follower = TopicFollower(
            bootstrap,
            namespace,
            FOLLOWED,
            sink,
            name="atb-chat",
            max_records=500,
            dead_letters=dead_letters,
            check=check,
        )

    async def start(self) -> None:
        await self._follower.start(background=False)

    async def stop(self) -> None:
        await self._follower.stop()

    async def run(self) -> None:
        await self._follower.run()
