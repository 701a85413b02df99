"""Verify a quorum's evidence with our own keys, directory and policy (the issuer trusts no one).

For the embedded request and every counted vote: parse the exact envelope that
was counted, verify its proof of origin (directly, or by a configured attester),
check that the agent acts for the request's tenant (the agent registry,
docs/tenants.md), resolve the approver in the directory, then hand the verified
facts to the pure `check_quorum`. Any failure is an EvidenceError with a stable code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from datetime import UTC, datetime

from atb_identity import IdentityError, TrustBundle, verify_origin
from atb_runtime.policy import RequirementsClient
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
from contracts.directory import Directory, normalize
from issuer.domain.claims import EvidenceError
from issuer.domain.evidence import PolicyFacts, VerifiedVote, check_quorum

__all__ = ["EvidenceVerifier"]


class EvidenceVerifier:
    def __init__(
        self,
        *,
        bundle: TrustBundle,
        directory: Directory,
        policy: RequirementsClient,
        agents: AgentRegistry,
        request_attesters: Collection[str],
        vote_attesters: Collection[str],
        vote_attester_tiers: Mapping[str, Collection[Tier]] | None = None,
    ) -> None:
        self._bundle = bundle
        self._directory = directory
        self._policy = policy
        self._agents = agents
        self._request_attesters = frozenset(request_attesters)
        self._vote_attesters = frozenset(vote_attesters)
        self._attester_tiers = {k: frozenset(v) for k, v in (vote_attester_tiers or {}).items()}

    async def verify(self, quorum: QuorumReached) -> None:
        """Raise EvidenceError unless the request and every counted vote are proven and make the quorum."""
        self._check_request(quorum)
        refusal = self._agents.refusal(quorum.request.agent_id, quorum.request.tenant)
        if refusal is not None:
            raise EvidenceError("tenant_not_allowed", refusal.removeprefix("tenant_not_allowed: "))
        # The policy is asked with the agent's registered tenants, as approvals asked it.
        answer = await self._policy.for_request(quorum.request)
        facts = PolicyFacts(
            tier=answer.tier,
            approvals=answer.approvals,
            eligible_groups=answer.eligible_groups,
            pending_seconds=answer.pending_seconds,
            poa_ttl_seconds=answer.poa_ttl_seconds,
        )
        votes = [self._verified_vote(quorum, counted, answer.tier) for counted in quorum.votes]
        check_quorum(quorum, votes, facts)

    def _check_request(self, quorum: QuorumReached) -> None:
        try:
            envelope = decode_envelope(quorum.request_event.encode())
            embedded = payload_of(envelope)
        except EventDecodeError as exc:
            raise EvidenceError("request_event_invalid", exc.reason) from exc
        if embedded != quorum.request:
            raise EvidenceError("request_event_mismatch", "embedded request event differs from the request")
        try:
            verify_origin(
                envelope,
                quorum.request.agent_id,
                self._bundle,
                attesters=self._request_attesters,
                at=datetime.now(UTC),
            )
        except IdentityError as exc:
            raise EvidenceError("request_not_proven", f"{exc.code}: {exc}") from exc

    def _verified_vote(self, quorum: QuorumReached, counted: CountedVote, tier: Tier) -> VerifiedVote:
        try:
            envelope = decode_envelope(counted.vote_event.encode())
            vote = payload_of(envelope)
        except EventDecodeError as exc:
            raise EvidenceError("vote_event_invalid", exc.reason) from exc
        if not isinstance(vote, VoteCast):
            raise EvidenceError("vote_event_invalid", f"counted evidence is a {type(vote).__name__}, not a vote")
        now = datetime.now(UTC)
        if counted.cast_at > now:
            raise EvidenceError("vote_from_the_future", f"vote {vote.vote_id} counted at {counted.cast_at}")
        try:
            # The proof had to hold when the vote was received, not necessarily now
            # (SVIDs are short-lived); that time must not lie in the future.
            origin = verify_origin(
                envelope, vote.approver_id, self._bundle, attesters=self._vote_attesters, at=counted.cast_at
            )
        except IdentityError as exc:
            raise EvidenceError("vote_not_proven", f"vote {vote.vote_id}: {exc.code}: {exc}") from exc
        allowed = self._attester_tiers.get(origin.proven_by) if origin.attested else None
        if allowed is not None and tier not in allowed:
            raise EvidenceError(
                "attester_tier", f"vote {vote.vote_id}: {origin.proven_by} may not vouch for {tier.value} votes"
            )
        approver = self._directory.resolve(vote.approver_id)
        if approver is None:
            raise EvidenceError("unknown_approver", f"{vote.approver_id} is not in the approver directory")
        requester_ids = (quorum.request.agent_id, quorum.request.leg.accountable_party.id)
        is_requester = any(
            normalize(requester) in approver.keys or self._directory.same_person(vote.approver_id, requester)
            for requester in requester_ids
        )
        return VerifiedVote(
            principal=approver.principal,
            approver_type=approver.type,
            groups=approver.groups,
            tiers=approver.tiers,
            is_requester=is_requester,
            approves=vote.choice is VoteChoice.APPROVE,
            request_id=vote.request_id,
            digest=vote.request_digest,
            vote_digest="sha256:" + hashlib.sha256(counted.vote_event.encode()).hexdigest(),
            received_at=counted.cast_at,
            claimed_principal=counted.approver_id,
            claimed_type=counted.approver_type,
            claimed_vote_digest=counted.vote_digest,
        )
