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

from atb_identity import TrustBundle
from atb_runtime.follow import FollowerDeadLetters, Sink, TopicFollower
from atb_runtime.proofs import ProofCheck, ProofRules
from contracts import ApprovalRequired, Topic
from contracts.approval_events import ApprovalEscalated, ReminderDue

__all__ = ["FOLLOWED", "EventFollower", "OutcomeProofCheck"]

FOLLOWED = (Topic.OUTCOMES, Topic.APPROVALS_STATE, Topic.POA_ISSUED)


class OutcomeProofCheck(ProofCheck):
    """Refuses an ApprovalRequired, ReminderDue or ApprovalEscalated unless its proof is by one of `producers`
    (the approvals service): a forged reminder or escalation would message people."""

    def __init__(
        self, bundle: TrustBundle, producers: Collection[str], *, source: str, namespace: str, consumer: str
    ) -> None:
        rules = ProofRules({kind: frozenset(producers) for kind in (ApprovalRequired, ReminderDue, ApprovalEscalated)})
        super().__init__(bundle, rules, source=source, namespace=namespace, consumer=consumer)


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
