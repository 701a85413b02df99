"""Justification: which votes must carry a reason, per tier, from the policy's data.

The policy (opa/policy/data.json, `atb_policy.justification`) names, per tier,
the votes that need a written reason: ``none``, ``approve``, ``deny`` or
``both``. The policy's answer carries it (`Requirements.justification`), the
approvals service keeps it with the request (`RequirementsRecord.justification`)
and refuses a vote without the reason it needs (``reason_required``, audited),
whatever channel the vote came through: the card's reason field is a help, not
the rule.

A reason is the vote's own `reason` (VoteCast, VoteCastV2, VoteOnBehalf),
read from the exact signed envelope the approvals service keeps; blank or
whitespace is no reason. Pure: no I/O.
"""

from __future__ import annotations

from enum import StrEnum

from contracts.envelope import EventDecodeError, decode_envelope, payload_of
from contracts.events import VoteChoice

__all__ = ["Justification", "missing_reason", "needs_reason", "reason_of_vote"]


class Justification(StrEnum):
    NONE = "none"
    APPROVE = "approve"
    DENY = "deny"
    BOTH = "both"


def needs_reason(rule: Justification, choice: VoteChoice) -> bool:
    """Whether a vote of `choice` needs a reason under `rule`."""
    if rule is Justification.BOTH:
        return True
    if rule is Justification.APPROVE:
        return choice is VoteChoice.APPROVE
    if rule is Justification.DENY:
        return choice is VoteChoice.DENY
    return False


def reason_of_vote(vote_event: str) -> str:
    """The `reason` of a vote from its envelope's text ("" when it has none or does not decode).

    For evidence already verified (a ballot's `vote_event`): it decodes, it does not check proofs.
    """
    try:
        payload = payload_of(decode_envelope(vote_event.encode()))
    except EventDecodeError:
        return ""
    reason = getattr(payload, "reason", "")
    return reason if isinstance(reason, str) else ""


def missing_reason(rule: Justification, choice: VoteChoice, vote_event: str) -> bool:
    """True when the vote needs a reason under `rule` and its envelope carries none (blank counts as none)."""
    return needs_reason(rule, choice) and not reason_of_vote(vote_event).strip()
