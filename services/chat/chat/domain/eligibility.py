"""Who may approve a request from chat, and which Slack users to ask.

Pure functions of the approver directory (`contracts.directory`), the request's
ApprovalRequired and the configured chat tiers. The approvals service decides
what counts; these rules only keep the chat service from publishing votes that
must not exist (an unknown user, the requester's accountable party, a tier the
approver may not approve, a tier that chat must not approve at all).
"""

from __future__ import annotations

from collections.abc import Collection

from contracts import ApprovalRequired, Tier
from contracts.directory import Approver, Directory, normalize

__all__ = [
    "NOT_ELIGIBLE",
    "SELF_APPROVAL",
    "SLACK_PREFIX",
    "TIER_NOT_ALLOWED",
    "TIER_REQUIRES_CLI",
    "eligibility_refusal",
    "eligible_slack_users",
    "slack_identity",
]

SLACK_PREFIX = "slack:"
"""Directory identities of Slack users: `slack:<immutable user id>` (never an email or a name)."""

TIER_REQUIRES_CLI = "tier_requires_cli"
SELF_APPROVAL = "self_approval"
TIER_NOT_ALLOWED = "tier_not_allowed"
NOT_ELIGIBLE = "not_eligible"


def slack_identity(user_id: str) -> str:
    return f"{SLACK_PREFIX}{user_id}"


def eligibility_refusal(
    approver: Approver, required: ApprovalRequired, directory: Directory, chat_tiers: Collection[Tier]
) -> str | None:
    """The first rule the approver fails for this request, or None if chat may publish their vote."""
    if required.tier not in chat_tiers:
        return TIER_REQUIRES_CLI
    requester = (required.agent_id, required.accountable_party_id)
    if any(directory.same_person(approver.principal, r) for r in requester):
        return SELF_APPROVAL
    if required.tier not in approver.tiers:
        return TIER_NOT_ALLOWED
    if approver.groups.isdisjoint(required.eligible_groups):
        return NOT_ELIGIBLE
    return None


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
