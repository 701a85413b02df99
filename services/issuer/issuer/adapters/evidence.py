"""Verify a quorum's evidence with our own keys, directory and policy (the issuer trusts no one).

For the embedded request and every counted vote: parse the exact envelope that
was counted, verify its proof of origin (directly, or by a configured attester),
check that the agent acts for the request's tenant (the agent registry,
docs/tenants.md), resolve the approver in the directory, then hand the verified
facts to the pure `check_quorum`. A vote cast on someone's behalf
(`VoteOnBehalf`) is proven by its delegate, and the grant it embeds by the
delegator's own SVID (no attester may vouch for a grant). A vote from the console
(`VoteCastV2`) on a high or critical request counts only with its approver's passkey
assertion, verified again here against the issuer's own passkey registry (followed
from atb.keys, the console's announcements only: `atb_runtime.passkeys`). Any failure
is a QuorumEvidenceError with a stable code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from datetime import UTC, datetime

from atb_identity import IdentityError, TrustBundle, verify_origin
from atb_runtime.passkeys import (
    CONSOLE,
    PasskeyRegistry,
    console_vote_refusal,
    delegation_refusal,
    on_behalf_proof_refusal,
)
from atb_runtime.policy import RequirementsSource
from contracts import (
    CountedVote,
    EventDecodeError,
    QuorumReached,
    Tier,
    VoteCast,
    VoteChoice,
    decode_envelope,
    payload_of,
)
from contracts.agents import AgentRegistry
from contracts.approval_events import DelegationGranted, VoteOnBehalf
from contracts.console_events import VoteCastV2
from contracts.delegation import Delegation
from contracts.directory import Approver, Directory
from contracts.reasons import ReasonCode
from issuer.domain.evidence import VerifiedVote, check_quorum
from issuer.errors import QuorumEvidenceError

__all__ = ["EvidenceVerifier"]


class EvidenceVerifier:
    def __init__(
        self,
        *,
        bundle: TrustBundle,
        directory: Directory,
        policy: RequirementsSource,
        agents: AgentRegistry,
        request_attesters: Collection[str],
        vote_attesters: Collection[str],
        vote_attester_tiers: Mapping[str, Collection[Tier]] | None = None,
        passkeys: PasskeyRegistry | None = None,
        passkey_announcers: Collection[str] = (CONSOLE,),
        max_pending_seconds: int | None = None,
    ) -> None:
        self._max_pending = max_pending_seconds
        """Approvals' cap on the pending window (the same setting): where the escalation point falls."""
        self._passkeys = passkeys or PasskeyRegistry()
        """The console's passkeys in force; empty, every console vote on a step-up tier is refused."""
        self._announcers = frozenset(passkey_announcers)
        self._bundle = bundle
        self._directory = directory
        self._policy = policy
        self._agents = agents
        self._request_attesters = frozenset(request_attesters)
        self._vote_attesters = frozenset(vote_attesters)
        self._attester_tiers = {k: frozenset(v) for k, v in (vote_attester_tiers or {}).items()}

    async def verify(self, quorum: QuorumReached) -> None:
        """Raise QuorumEvidenceError unless the request and every counted vote are proven and make the quorum."""
        self._check_request(quorum)
        refusal = self._agents.refusal_reason(quorum.request.agent_id, quorum.request.tenant)
        if refusal is not None:
            raise QuorumEvidenceError(refusal.code, refusal.detail)
        # The policy is asked with the agent's registered tenants, as approvals asked it.
        requirements = await self._policy.for_request(quorum.request)
        votes = [self._verified_vote(counted, requirements.tier) for counted in quorum.votes]
        check_quorum(quorum, votes, requirements, max_pending_seconds=self._max_pending)

    def _check_request(self, quorum: QuorumReached) -> None:
        try:
            envelope = decode_envelope(quorum.request_event.encode())
            embedded = payload_of(envelope)
        except EventDecodeError as exc:
            raise QuorumEvidenceError(ReasonCode.REQUEST_EVENT_INVALID, exc.reason) from exc
        if embedded != quorum.request:
            raise QuorumEvidenceError(
                ReasonCode.REQUEST_EVENT_MISMATCH, "embedded request event differs from the request"
            )
        try:
            verify_origin(
                envelope,
                quorum.request.agent_id,
                self._bundle,
                attesters=self._request_attesters,
                at=datetime.now(UTC),
            )
        except IdentityError as exc:
            raise QuorumEvidenceError(ReasonCode.REQUEST_NOT_PROVEN, f"{exc.code}: {exc}") from exc

    def _verified_vote(self, counted: CountedVote, tier: Tier) -> VerifiedVote:
        try:
            envelope = decode_envelope(counted.vote_event.encode())
            vote = payload_of(envelope)
        except EventDecodeError as exc:
            raise QuorumEvidenceError(ReasonCode.VOTE_EVENT_INVALID, exc.reason) from exc
        if not isinstance(vote, (VoteCast, VoteOnBehalf, VoteCastV2)):
            raise QuorumEvidenceError(
                ReasonCode.VOTE_EVENT_INVALID, f"counted evidence is a {type(vote).__name__}, not a vote"
            )
        now = datetime.now(UTC)
        if counted.cast_at > now:
            raise QuorumEvidenceError(
                ReasonCode.VOTE_FROM_THE_FUTURE, f"vote {vote.vote_id} counted at {counted.cast_at}"
            )
        try:
            # The proof had to hold when the vote was received, not necessarily now
            # (SVIDs are short-lived); that time must not lie in the future.
            origin = verify_origin(
                envelope, vote.approver_id, self._bundle, attesters=self._vote_attesters, at=counted.cast_at
            )
        except IdentityError as exc:
            raise QuorumEvidenceError(ReasonCode.VOTE_NOT_PROVEN, f"vote {vote.vote_id}: {exc.code}: {exc}") from exc
        allowed = self._attester_tiers.get(origin.proven_by) if origin.attested else None
        if allowed is not None and tier not in allowed:
            raise QuorumEvidenceError(
                ReasonCode.ATTESTER_TIER,
                f"vote {vote.vote_id}: {origin.proven_by} may not vouch for {tier.value} votes",
            )
        # The registry's counter is the enrolled one: an assertion is bound to this request's
        # digest and decision, and approvals refused one whose counter did not go up.
        unverified = console_vote_refusal(
            vote,
            proven_by=origin.proven_by,
            tier=tier,
            registry=self._passkeys,
            directory=self._directory,
            announcers=self._announcers,
        )
        if unverified is not None:
            raise QuorumEvidenceError(ReasonCode.ASSERTION_INVALID, f"vote {vote.vote_id}: {unverified}")
        cast_by: Approver | None = None
        delegation: Delegation | None = None
        counts_for = vote.approver_id
        if isinstance(vote, VoteOnBehalf):
            unproven = on_behalf_proof_refusal(vote, proven_by=origin.proven_by, announcers=self._announcers)
            if unproven is not None:
                raise QuorumEvidenceError(ReasonCode.DELEGATION_INVALID, f"vote {vote.vote_id}: {unproven}")
            delegation = self._verified_grant(vote, counted)
            cast_by = self._resolve(vote.approver_id)
            counts_for = vote.on_behalf_of
        approver = self._resolve(counts_for)
        return VerifiedVote(
            cast_by=cast_by,
            delegation=delegation,
            approver=approver,
            approves=vote.choice is VoteChoice.APPROVE,
            request_id=vote.request_id,
            digest=vote.request_digest,
            vote_digest="sha256:" + hashlib.sha256(counted.vote_event.encode()).hexdigest(),
            received_at=counted.cast_at,
            claimed_principal=counted.approver_id,
            claimed_type=counted.approver_type,
            claimed_vote_digest=counted.vote_digest,
            claimed_groups=counted.approver_groups,
        )

    def _resolve(self, identity: str) -> Approver:
        approver = self._directory.resolve(identity)
        if approver is None:
            raise QuorumEvidenceError(ReasonCode.UNKNOWN_APPROVER, f"{identity} is not in the approver directory")
        return approver

    def _verified_grant(self, vote: VoteOnBehalf, counted: CountedVote) -> Delegation:
        """The grant an on-behalf vote embeds, proven by the delegator's own SVID when it was granted, or by
        the console with the delegator's passkey assertion (`atb_runtime.passkeys.delegation_refusal`)."""
        try:
            envelope = decode_envelope(vote.delegation_event.encode())
            grant = payload_of(envelope)
        except EventDecodeError as exc:
            raise QuorumEvidenceError(ReasonCode.DELEGATION_INVALID, f"vote {vote.vote_id}: {exc.reason}") from exc
        if not isinstance(grant, DelegationGranted):
            raise QuorumEvidenceError(
                ReasonCode.DELEGATION_INVALID, f"vote {vote.vote_id}: the embedded grant is a {type(grant).__name__}"
            )
        if grant.granted_at > counted.cast_at:
            raise QuorumEvidenceError(
                ReasonCode.DELEGATION_INVALID, f"vote {vote.vote_id}: granted after the vote was received"
            )
        try:
            origin = verify_origin(
                envelope, grant.delegator, self._bundle, attesters=self._announcers, at=grant.granted_at
            )
        except IdentityError as exc:
            raise QuorumEvidenceError(
                ReasonCode.DELEGATION_INVALID, f"vote {vote.vote_id}: the grant is not proven: {exc.code}: {exc}"
            ) from exc
        if origin.attested:  # made in the console: the delegator's passkey assertion over it
            unproven = delegation_refusal(
                grant,
                proven_by=origin.proven_by,
                registry=self._passkeys,
                directory=self._directory,
                announcers=self._announcers,
            )
            if unproven is not None:
                raise QuorumEvidenceError(
                    ReasonCode.DELEGATION_INVALID, f"vote {vote.vote_id}: the grant is not the delegator's: {unproven}"
                )
        return Delegation.of(grant)
