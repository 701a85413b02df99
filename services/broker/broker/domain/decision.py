"""Decide one action request against the claims of its (already verified) PoA.

Pure: signature and expiry checks happened in the adapter; this module checks
that the PoA was issued for *this* agent, *this* action and resource, and *this*
exact request (the digest over action + parameters + tenants).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts import ActionRequested, Decision, PoaClaims, digest_of

__all__ = ["Verdict", "decide"]


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reasons: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


def decide(action: ActionRequested, claims: PoaClaims) -> Verdict:
    """Allow only when every binding of the PoA matches the request; list every mismatch."""
    reasons: list[str] = []
    if claims.req_id != action.request_id:
        reasons.append("request_mismatch: PoA belongs to another request")
    if claims.sub != action.agent_id:
        reasons.append("sub_mismatch: PoA was issued to another agent")
    if claims.act != action.action:
        reasons.append("action_mismatch: PoA allows another action")
    if claims.res != action.resource:
        reasons.append("resource_mismatch: PoA allows another resource")
    if claims.req_digest != digest_of(action):
        reasons.append("digest_mismatch: parameters differ from what was approved")
    if reasons:
        return Verdict(Decision.DENY, tuple(reasons))
    return Verdict(Decision.ALLOW, ("poa_valid",))
