"""Delegation, reminder and escalation events of the approvals area.

- `DelegationGranted` (`atb.approvals.delegation_granted.v1`): a delegator lets a
  delegate vote in their place from `not_before` to `until`, for some tiers (none
  listed: every tier). Published with the delegator's own SVID proof of origin
  (`atb delegate`), on the compacted keys topic, keyed `delegation:<id>`. Made in
  the console instead, it is the console's, and carries the delegator's passkey
  assertion over `delegation_challenge(grant, nonce)`: approvals and the issuer
  verify that assertion against the delegator's enrolled passkey on their own.
- `DelegationRevoked` (`atb.approvals.delegation_revoked.v1`): the delegation is no
  longer in force from `revoked_at` on; keyed `delegation-revoked:<id>`, apart
  from the grant, so that compaction keeps it for good: a revocation is final,
  and a grant published again later (a replay) does not undo it.
- `VoteOnBehalf` (`atb.approvals.vote_on_behalf.v1`): a delegate's vote in the
  delegator's place. It is signed by the delegate and embeds the exact signed
  `DelegationGranted` envelope, so approvals and the issuer can verify both
  proofs on their own. The rule it is judged by is `contracts.delegation`'s.
- `ReminderDue` (`atb.approvals.reminder_due.v1`) and `ApprovalEscalated`
  (`atb.approvals.escalated.v1`): published by the approvals service's timer on
  the outcomes topic while a request still lacks its quorum (`contracts.reminders`);
  chat and the console tell the approvers (and the escalation groups) through
  every channel they have. Neither is an outcome: the issuer lets them pass.

Models only: no Kafka, no crypto, no policy.
"""

from __future__ import annotations

import hashlib
from datetime import UTC
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, Field

from contracts.console_events import PasskeyAssertion
from contracts.events import EventPayload, RequestDigest, RequestId, Tier, VoteChoice
from contracts.topics import Topic

__all__ = [
    "APPROVAL_EVENT_TYPES",
    "DELEGATION_CHALLENGE_DOMAIN",
    "ApprovalEscalated",
    "DelegationGranted",
    "DelegationRevoked",
    "ReminderDue",
    "VoteOnBehalf",
    "delegation_challenge",
    "delegation_key",
    "delegation_revoked_key",
]

Principal = Annotated[str, Field(min_length=1, max_length=256)]
DelegationId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
MAX_DELEGATION_EVENT_CHARS = 12 * 1024
"""A signed DelegationGranted envelope (payload, proof and certificate chain) fits in this."""


def delegation_key(delegation_id: str) -> str:
    """The Kafka key of a delegation's grant."""
    return f"delegation:{delegation_id}"


def delegation_revoked_key(delegation_id: str) -> str:
    """The Kafka key of a delegation's revocation: its own, so that compaction keeps it whatever is published
    under the grant's key later (a replayed grant cannot push a revocation out of the compacted topic)."""
    return f"delegation-revoked:{delegation_id}"


class DelegationGranted(EventPayload):
    """`delegator` lets `delegate` vote in their place within the window and tiers."""

    event_type: ClassVar[str] = "atb.approvals.delegation_granted.v1"
    topic: ClassVar[Topic] = Topic.KEYS

    delegation_id: DelegationId
    delegator: Principal
    """The identity that signs this event (its SVID's SPIFFE ID)."""
    delegate: Principal
    tiers: tuple[Tier, ...] = ()
    """The tiers the delegate may vote on in the delegator's place; empty: every tier."""
    not_before: AwareDatetime
    until: AwareDatetime
    reason: Annotated[str, Field(max_length=1024)] = ""
    granted_at: AwareDatetime
    assertion: PasskeyAssertion | None = None
    """Made in the console: the delegator's passkey assertion over `delegation_challenge(self, nonce)`."""

    def partition_key(self) -> str:
        return delegation_key(self.delegation_id)


DELEGATION_CHALLENGE_DOMAIN = b"atb.console.delegation.v1"
"""Separates delegation challenges from vote challenges and every other use of a passkey."""


def delegation_challenge(grant: DelegationGranted, nonce: str) -> bytes:
    """The WebAuthn challenge of a grant made in the console: SHA-256 over the domain and every term of it.

    Each part is length-prefixed; times are in UTC, tiers sorted. The assertion itself is not a term.
    """
    parts = (
        grant.delegation_id,
        grant.delegator,
        grant.delegate,
        ",".join(sorted(t.value for t in grant.tiers)),
        grant.not_before.astimezone(UTC).isoformat(),
        grant.until.astimezone(UTC).isoformat(),
        grant.reason,
        grant.granted_at.astimezone(UTC).isoformat(),
        nonce,
    )
    h = hashlib.sha256(DELEGATION_CHALLENGE_DOMAIN)
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.digest()


class DelegationRevoked(EventPayload):
    """The delegation is no longer in force from `revoked_at` on."""

    event_type: ClassVar[str] = "atb.approvals.delegation_revoked.v1"
    topic: ClassVar[Topic] = Topic.KEYS

    delegation_id: DelegationId
    delegator: Principal
    revoked_by: Principal
    reason: Annotated[str, Field(max_length=1024)] = ""
    revoked_at: AwareDatetime

    def partition_key(self) -> str:
        return delegation_revoked_key(self.delegation_id)


class VoteOnBehalf(EventPayload):
    """A delegate's vote in the delegator's place, bound to the digest of the exact request.

    `approver_id` is the delegate (who signs it, or whose passkey assertion the console's
    proof carries); `on_behalf_of` the delegator; `delegation_event` the exact signed
    DelegationGranted envelope that allows it.
    """

    event_type: ClassVar[str] = "atb.approvals.vote_on_behalf.v1"
    topic: ClassVar[Topic] = Topic.VOTES

    request_id: RequestId
    vote_id: Annotated[str, Field(min_length=1, max_length=128)]
    approver_id: Principal
    on_behalf_of: Principal
    choice: VoteChoice
    request_digest: RequestDigest
    channel: Literal["cli", "slack", "teams", "console"]
    cast_at: AwareDatetime
    reason: Annotated[str, Field(max_length=1024)] = ""
    delegation_event: Annotated[str, Field(min_length=1, max_length=MAX_DELEGATION_EVENT_CHARS)]
    assertion: PasskeyAssertion | None = None
    """Cast in the console (its proof, not the delegate's): the delegate's passkey assertion over
    `vote_challenge(request_digest, choice, nonce)`."""


class ReminderDue(EventPayload):
    """A pending request still lacks its quorum: remind whoever may still approve it (`reminder` of `of`)."""

    event_type: ClassVar[str] = "atb.approvals.reminder_due.v1"
    topic: ClassVar[Topic] = Topic.OUTCOMES

    request_id: RequestId
    tier: Tier
    reminder: Annotated[int, Field(ge=1, le=5)]
    of: Annotated[int, Field(ge=1, le=5)]
    missing: Annotated[int, Field(ge=0, le=10)]
    """The fewest more distinct approvals the quorum needs."""
    eligible_groups: tuple[str, ...]
    request_digest: RequestDigest
    deadline: AwareDatetime
    sent_at: AwareDatetime


class ApprovalEscalated(EventPayload):
    """The quorum is still missing at the policy's escalation point: `escalate_to` are told and asked."""

    event_type: ClassVar[str] = "atb.approvals.escalated.v1"
    topic: ClassVar[Topic] = Topic.OUTCOMES

    request_id: RequestId
    tier: Tier
    escalate_to: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...]
    missing: Annotated[int, Field(ge=0, le=10)]
    request_digest: RequestDigest
    deadline: AwareDatetime
    escalated_at: AwareDatetime


APPROVAL_EVENT_TYPES: dict[str, type[EventPayload]] = {
    cls.event_type: cls for cls in (DelegationGranted, DelegationRevoked, VoteOnBehalf, ReminderDue, ApprovalEscalated)
}
"""This module's event types, by CloudEvents `type` (merged into `contracts.events.EVENT_TYPES`)."""
