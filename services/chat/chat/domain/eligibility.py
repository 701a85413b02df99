"""Who may approve a request from chat, and which Slack users to ask.

Pure functions of the approver directory (`contracts.directory`), the request's
ApprovalRequired and the configured chat tiers. The approvals service decides
what counts; these rules only keep the chat service from publishing votes that
must not exist (an unknown user, the requester's accountable party, a tier the
approver may not approve, a tier that chat must not approve at all). Who may
approve is `contracts.eligibility.ApproverRules`, the rules approvals counts with;
chat adds only ``tier_requires_cli``. What a quorum still lacks (one compliance
approver, say) is `contracts.quorum.assign`, the assignment approvals and the
issuer judge with (`quorum_hint`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

from contracts import ApprovalRequired, Tier
from contracts.directory import Approver, Directory, normalize
from contracts.eligibility import ApproverRules
from contracts.quorum import Member, QuorumResult, assign
from contracts.reasons import ReasonCode
from contracts.requirements import composition_of

__all__ = [
    "NOT_ELIGIBLE",
    "SELF_APPROVAL",
    "SLACK_PREFIX",
    "TIER_NOT_ALLOWED",
    "TIER_REQUIRES_CLI",
    "eligibility_refusal",
    "eligible_slack_users",
    "quorum_hint",
    "rules_for",
    "slack_identity",
]

SLACK_PREFIX = "slack:"
"""Directory identities of Slack users: `slack:<immutable user id>` (never an email or a name)."""

TIER_REQUIRES_CLI = ReasonCode.TIER_REQUIRES_CLI
SELF_APPROVAL = ReasonCode.SELF_APPROVAL
TIER_NOT_ALLOWED = ReasonCode.TIER_NOT_ALLOWED
NOT_ELIGIBLE = ReasonCode.NOT_ELIGIBLE


def slack_identity(user_id: str) -> str:
    return f"{SLACK_PREFIX}{user_id}"


def rules_for(required: ApprovalRequired) -> ApproverRules:
    """The approver rules of this request, as approvals will judge its votes."""
    return ApproverRules.of(required.tier, required.eligible_groups, (required.agent_id, required.accountable_party_id))


def eligibility_refusal(
    approver: Approver,
    required: ApprovalRequired,
    directory: Directory,
    chat_tiers: Collection[Tier],
    *,
    escalation: tuple[Iterable[str], datetime] | None = None,
    at: datetime | None = None,
) -> ReasonCode | None:
    """The first rule the approver fails for this request, or None if chat may publish their vote.

    `directory` is the one `approver` was resolved in: `Approver.keys` holds every
    alias it knows, which is what the self-approval rule compares. With `escalation`
    (groups, from when) and `at` (now), the escalation groups are eligible from that
    point on, as approvals judges the vote.
    """
    if required.tier not in chat_tiers:
        return TIER_REQUIRES_CLI
    rules = rules_for(required)
    if escalation is not None and at is not None:
        rules = rules.escalating(*escalation).at(at)
    return rules.refusal(approver)


def eligible_slack_users(required: ApprovalRequired, directory: Directory) -> tuple[str, ...]:
    """Slack user ids of every approver who may approve this request (for direct messages).

    Every tier, including those chat may not approve: the card then tells them to
    use `atb vote`. Directory identities are stored case-folded; Slack user ids are
    upper-case alphanumerics, so upper-casing restores them exactly.
    """
    users: list[str] = []
    everyone = frozenset(Tier) - {Tier.LOW}
    for approver in directory.approvers:
        if eligibility_refusal(approver, required, directory, everyone) is not None:
            continue
        prefix = normalize(SLACK_PREFIX)
        users.extend(i[len(prefix) :].upper() for i in sorted(approver.identities) if i.startswith(prefix))
    return tuple(users)


def quorum_hint(required: ApprovalRequired, approvers: Iterable[Approver]) -> QuorumResult:
    """Who of these eligible approvers fills which group, and what the quorum still lacks (for the card)."""
    members = (Member(a.principal, a.groups) for a in approvers)
    return assign(required.required_approvals, composition_of(required.composition), members)
