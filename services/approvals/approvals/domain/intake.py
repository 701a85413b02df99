"""What happens when a request arrives: approve at once, ask humans, or refuse.

Pure: the policy's answer (`contracts.requirements.Requirements`, which holds the
tier floors) is an input, so is the clock. Tier
low needs no human (docs/architecture.md §2.5): a QuorumReached with zero votes. Every other tier
gets an ApprovalRequired naming who must approve and until when. A critical
request without a well-formed external ticket reference is refused at intake,
and so is a request for a tenant its agent does not act for (the agent registry,
docs/tenants.md): agents can publish to Kafka without the gateway's check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts import (
    ApprovalRequired,
    EventPayload,
    IssuanceRequested,
    QuorumReached,
    RequestDenied,
    digest_of,
)
from contracts.requirements import Requirements, composition_record

__all__ = ["IntakeResult", "Requirements", "decide_intake", "digest_of"]


@dataclass(frozen=True)
class IntakeResult:
    events: tuple[EventPayload, ...]
    audit_type: str
    outcome: str
    reason: str = ""


def decide_intake(
    request: IssuanceRequested,
    request_event: str,
    requirements: Requirements,
    *,
    now: datetime,
    decided_by: str,
    ticket_pattern: re.Pattern[str],
    agent_tenants: frozenset[str],
) -> IntakeResult:
    """The outcome events for a newly arrived, verified request.

    `agent_tenants` are the tenants the agent's proven identity is registered for
    (empty for an unregistered agent): a request for any other tenant is refused.
    """
    digest = digest_of(request)
    if request.tenant not in agent_tenants:
        if agent_tenants:
            reason = f"agent {request.agent_id} does not act for tenant {request.tenant!r}"
        else:
            reason = f"agent {request.agent_id} is not in the agent registry, it acts for no tenant"
        reason = reason[:1000]  # a SPIFFE ID may be 2048 bytes; RequestDenied.reason holds 1024
        denied = RequestDenied(
            request_id=request.request_id,
            code="tenant_not_allowed",
            reason=reason,
            denied_by=decided_by,
            decided_at=now,
            callback_url=request.callback_url,
        )
        return IntakeResult((denied,), "approval_request_denied", "denied", f"tenant_not_allowed: {reason}")
    if request.leg.approval is not None or request.leg.dual_control is not None:
        reason = "approval evidence (leg.approval, leg.dual_control) comes from votes, not from the request"
        denied = RequestDenied(
            request_id=request.request_id,
            code="approval_evidence_in_request",
            reason=reason,
            denied_by=decided_by,
            decided_at=now,
            callback_url=request.callback_url,
        )
        return IntakeResult((denied,), "approval_request_denied", "denied", reason)
    if requirements.ticket_required and not _valid_ticket(request, ticket_pattern):
        reason = "critical request needs an external ticket reference (leg.ticket_ref) of the configured format"
        denied = RequestDenied(
            request_id=request.request_id,
            code="ticket_required",
            reason=reason,
            denied_by=decided_by,
            decided_at=now,
            callback_url=request.callback_url,
        )
        return IntakeResult((denied,), "approval_request_denied", "denied", reason)
    if requirements.approvals == 0:
        quorum = QuorumReached(
            request_id=request.request_id,
            tier=requirements.tier,
            required_approvals=0,
            request_digest=digest,
            poa_ttl_seconds=requirements.poa_ttl_seconds,
            request=request,
            request_event=request_event,
            votes=(),
            decided_at=now,
        )
        return IntakeResult((quorum,), "approval_quorum_reached", "success", "tier low: no human approval required")
    required = ApprovalRequired(
        request_id=request.request_id,
        tier=requirements.tier,
        required_approvals=requirements.approvals,
        eligible_groups=requirements.eligible_groups,
        ticket_required=requirements.ticket_required,
        deadline=now + timedelta(seconds=requirements.pending_seconds),
        request_digest=digest,
        agent_id=request.agent_id,
        action=request.action,
        resource=request.resource,
        accountable_party_id=request.leg.accountable_party.id,
        composition=composition_record(requirements.composition),
    )
    return IntakeResult((required,), "approval_required", "info", f"tier {requirements.tier.value}")


def _valid_ticket(request: IssuanceRequested, pattern: re.Pattern[str]) -> bool:
    ticket = request.leg.ticket_ref
    return ticket is not None and pattern.fullmatch(ticket) is not None
