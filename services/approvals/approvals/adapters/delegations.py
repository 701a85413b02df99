"""Delegations as approvals sees them: grants proven by their delegators, revocations remembered.

A `VoteOnBehalf` embeds the signed `DelegationGranted` that allows it. Before the
vote becomes a ballot, `DelegationGate.refusal` verifies that grant's proof (the
delegator's own SVID; or the console's, and then the delegator's passkey assertion
over the grant, `atb_runtime.passkeys.delegation_refusal`: no other attester may
vouch for a grant) and that the delegation was not revoked by the time the vote
was received. The rest of the rule (window,
tiers, eligibility of both, the requester, one place per human) is
`contracts.delegation`'s, applied by the tally to the stored ballot.

`note` takes the delegation revocations of the keys topic (`DelegationFollower`
feeds it from the topic's start): a revocation counts only when proven by its
delegator (`revoked_by`), or by the console on the delegator's behalf (a
revocation only takes power away).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from atb_identity import IdentityError, TrustBundle, verify_origin
from atb_runtime.follow import FollowerDeadLetters, Refused, TopicFollower
from atb_runtime.passkeys import PasskeyRegistry, delegation_refusal, on_behalf_proof_refusal
from contracts import Envelope, EventDecodeError, EventPayload, Topic, decode_envelope, payload_of
from contracts.approval_events import DelegationGranted, DelegationRevoked, VoteOnBehalf
from contracts.delegation import DelegationBook
from contracts.directory import Directory
from contracts.reasons import ReasonCode

__all__ = ["DelegationFollower", "DelegationGate", "DelegationRefusal"]


@dataclass(frozen=True)
class DelegationRefusal:
    code: ReasonCode
    reason: str


class DelegationGate:
    def __init__(
        self,
        bundle: TrustBundle,
        book: DelegationBook | None = None,
        *,
        passkeys: PasskeyRegistry | None = None,
        directory: Directory | None = None,
        announcers: Collection[str] = (),
    ) -> None:
        self._bundle = bundle
        self._book = book or DelegationBook()
        self._passkeys = passkeys
        self._directory = directory
        self._announcers = tuple(announcers) if passkeys is not None and directory is not None else ()
        """Who may prove a grant made in the console (none without a passkey registry and a directory)."""

    def refusal(self, vote: VoteOnBehalf, now: datetime, proven_by: str | None = None) -> DelegationRefusal | None:
        """Why an on-behalf vote received `now` (proven by `proven_by`, default its delegate) cannot become a
        ballot, or None.

        An on-behalf vote is signed by its delegate, or cast in the console with the delegate's passkey
        assertion (`atb_runtime.passkeys.on_behalf_proof_refusal`, as the issuer judges it).
        """
        unproven = on_behalf_proof_refusal(vote, proven_by=proven_by or vote.approver_id, announcers=self._announcers)
        if unproven is not None:
            return DelegationRefusal(ReasonCode.DELEGATION_INVALID, unproven)
        try:
            envelope = decode_envelope(vote.delegation_event.encode())
            grant = payload_of(envelope)
        except EventDecodeError as exc:
            return DelegationRefusal(ReasonCode.DELEGATION_INVALID, f"the embedded grant does not decode: {exc.reason}")
        if not isinstance(grant, DelegationGranted):
            return DelegationRefusal(ReasonCode.DELEGATION_INVALID, f"the embedded grant is a {type(grant).__name__}")
        if grant.granted_at > now:
            return DelegationRefusal(ReasonCode.DELEGATION_INVALID, "the grant is dated after the vote was received")
        try:
            origin = verify_origin(
                envelope, grant.delegator, self._bundle, attesters=self._announcers, at=grant.granted_at
            )
        except IdentityError as exc:
            return DelegationRefusal(
                ReasonCode.DELEGATION_INVALID, f"the grant is not proven by {grant.delegator}: {exc}"
            )
        if origin.attested and self._passkeys is not None and self._directory is not None:
            unproven = delegation_refusal(
                grant,
                proven_by=origin.proven_by,
                registry=self._passkeys,
                directory=self._directory,
                announcers=self._announcers,
            )
            if unproven is not None:
                return DelegationRefusal(ReasonCode.DELEGATION_INVALID, f"the grant is not the delegator's: {unproven}")
        if self._book.revoked(grant.delegation_id, now, grant.delegator):
            return DelegationRefusal(
                ReasonCode.DELEGATION_NOT_IN_FORCE, f"delegation {grant.delegation_id} was revoked"
            )
        return None

    def note(self, envelope: Envelope, now: datetime) -> DelegationRevoked | None:
        """Remember a revocation proven by its delegator; None (nothing remembered) for anything else.

        Grants need no remembering: each on-behalf vote carries its own. A revocation is
        verified as of its own time, which may not lie ahead of `now`.
        """
        try:
            event = payload_of(envelope)
        except EventDecodeError:
            return None
        if not isinstance(event, DelegationRevoked) or event.revoked_by != event.delegator or event.revoked_at > now:
            return None
        try:
            verify_origin(envelope, event.revoked_by, self._bundle, attesters=self._announcers, at=event.revoked_at)
        except IdentityError:
            return None
        self._book.note(event)
        return event


class DelegationFollower:
    """Reads the keys topic from its start and hands every delegation revocation to the gate (a component).

    An unproven revocation (not signed by its delegator) is dead-lettered and changes nothing.
    """

    def __init__(
        self,
        gate: DelegationGate,
        bootstrap: str,
        namespace: str,
        *,
        dead_letters: FollowerDeadLetters | None = None,
    ) -> None:
        self._gate = gate
        self._follower = TopicFollower(
            bootstrap,
            namespace,
            (Topic.KEYS,),
            self._ignore,
            name="atb-delegations",
            dead_letters=dead_letters,
            check=self._check,
        )

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _check(self, envelope: Envelope, payload: EventPayload) -> Refused | None:
        if not isinstance(payload, DelegationRevoked):
            return None
        if self._gate.note(envelope, datetime.now(UTC)) is None:
            return Refused("delegation_unproven", "a revocation must be signed by its delegator, at its own time")
        return None

    async def _ignore(self, events: Sequence[EventPayload]) -> None:
        """The gate learnt what it needs in `_check`."""
