"""Check a quorum's evidence and build the PoA claims for it.

Pure: the clock, the `jti` and the identities are inputs. The issuer never trusts
the approvals service's word alone (docs/architecture.md §6.1): the digest is recomputed
from the embedded request, and the vote count must match the tier.
Signature checks of the embedded evidence need crypto and live in the adapters.
"""

from __future__ import annotations

import unicodedata

from contracts import (
    MAX_LIFETIME_SECONDS,
    Approval,
    DualControl,
    DualControlApprover,
    EventDecodeError,
    PoaClaims,
    QuorumReached,
    Tier,
    decode_envelope,
    digest_binds,
    payload_of,
)
from contracts.approval_events import VoteOnBehalf
from contracts.console_events import VoteCastV2
from contracts.delegation import on_behalf_of_vote
from contracts.reasons import ReasonCode
from contracts.requirements import tier_floor
from issuer.errors import QuorumEvidenceError

__all__ = ["MAX_TTL_SECONDS", "QuorumEvidenceError", "build_claims", "check_evidence", "principal_key"]

MAX_TTL_SECONDS = MAX_LIFETIME_SECONDS
"""PoAs live 5 minutes at most (docs/architecture.md §5.4); the policy may ask for less."""


def principal_key(identity: str) -> str:
    """Compare identities after NFKC and case folding: look-alikes are one person."""
    return unicodedata.normalize("NFKC", identity).casefold().strip()


def check_evidence(quorum: QuorumReached) -> None:
    """Raise QuorumEvidenceError unless the quorum is consistent with its own request."""
    request = quorum.request
    if request.request_id != quorum.request_id:
        raise QuorumEvidenceError(ReasonCode.REQUEST_MISMATCH, "embedded request has another request_id")
    # In the version the quorum names; v1 only for a request asked before the cut-over.
    if not digest_binds(request, quorum.request_digest, at=quorum.decided_at):
        raise QuorumEvidenceError(ReasonCode.DIGEST_MISMATCH, "request digest does not match the embedded request")
    floor = tier_floor(quorum.tier)
    if quorum.required_approvals < floor:
        raise QuorumEvidenceError(
            ReasonCode.TOO_FEW_REQUIRED, f"tier {quorum.tier.value} needs at least {floor} approvals"
        )
    approvers = {principal_key(vote.approver_id) for vote in quorum.votes}
    if len(approvers) != len(quorum.votes):
        raise QuorumEvidenceError(ReasonCode.DUPLICATE_APPROVER, "the same approver is counted twice")
    if len(approvers) < quorum.required_approvals:
        raise QuorumEvidenceError(ReasonCode.QUORUM_SHORT, f"{len(approvers)} of {quorum.required_approvals} approvals")
    requesters = {principal_key(request.agent_id), principal_key(request.leg.accountable_party.id)}
    if approvers & requesters:
        raise QuorumEvidenceError(
            ReasonCode.SELF_APPROVAL, "the requester or its accountable party is among the approvers"
        )
    if quorum.tier is Tier.CRITICAL and not request.leg.ticket_ref:
        raise QuorumEvidenceError(ReasonCode.TICKET_MISSING, "critical request without an external ticket reference")


def build_claims(
    quorum: QuorumReached,
    *,
    issuer: str,
    audience: str,
    now: int,
    jti: str,
    cnf_thumbprint: str | None,
) -> PoaClaims:
    """The claims of the PoA for a quorum that passed `check_evidence`."""
    request = quorum.request
    ttl = min(quorum.poa_ttl_seconds, MAX_TTL_SECONDS)
    # Approval evidence comes from counted votes only, never from the request.
    leg = request.leg.model_copy(update={"approval": None, "dual_control": None})
    if quorum.tier is Tier.MEDIUM and quorum.votes:
        vote = quorum.votes[0]
        approval = Approval(approver_id=vote.approver_id, approved_at=vote.cast_at, delegate=_delegate(vote.vote_event))
        leg = leg.model_copy(update={"approval": approval})
    elif quorum.tier in (Tier.HIGH, Tier.CRITICAL):
        approvers = tuple(
            DualControlApprover(
                id=v.approver_id,
                type=v.approver_type,
                vote_digest=v.vote_digest,
                delegate=_delegate(v.vote_event),
                channel="console" if (console := _console_vote(v.vote_event)) is not None else None,
                device_bound=True if console is not None and console.assertion is not None else None,
            )
            for v in quorum.votes
        )
        leg = leg.model_copy(update={"dual_control": DualControl(required=True, approvers=approvers)})
    cnf = {"x5t#S256": cnf_thumbprint} if cnf_thumbprint else None
    return PoaClaims.model_validate(
        {
            "iss": issuer,
            "sub": request.agent_id,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": jti,
            "act": request.action,
            "res": request.resource,
            "req_digest": quorum.request_digest,
            "req_id": request.request_id,
            "tier": quorum.tier,
            "leg": leg.model_dump(mode="json"),
            "cnf": cnf,
        }
    )


def _console_vote(vote_event: str) -> VoteCastV2 | VoteOnBehalf | None:
    """A counted vote cast in the console, in one's own name or a delegator's (its assertion verified by
    `check_evidence`), None for any other."""
    try:
        vote = payload_of(decode_envelope(vote_event.encode()))
    except EventDecodeError:
        return None
    return vote if isinstance(vote, (VoteCastV2, VoteOnBehalf)) and vote.channel == "console" else None


def _delegate(vote_event: str) -> str | None:
    """Who cast a counted vote on behalf of its approver (the PoA records it), None for their own vote."""
    on_behalf = on_behalf_of_vote(vote_event)
    return on_behalf[0].approver_id if on_behalf is not None else None
