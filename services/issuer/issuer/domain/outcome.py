"""The body of an outcome notification to an agent's callback (pure).

One JSON object per outcome, the same bytes on every delivery of it::

    {"type": "atb.outcome.v1", "request_id": "...", "outcome": "issued" | "denied" | "expired",
     "decided_at": "...", ...}

``issued`` adds the PoA's ``jti``, ``kid`` and ``expires_at`` (never the token: the
agent fetches it from the gateway, over mTLS); ``denied`` adds ``code`` and
``reason``; ``expired`` adds ``approvals_counted`` and ``required_approvals``.
The delivery id is ``dlv-<request id>-<outcome>``: a receiver drops a repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from contracts import JsonObject, PoaIssued, RequestDenied, RequestExpired

__all__ = ["OUTCOME_TYPE", "OutcomeNotice", "outcome_notice"]

OUTCOME_TYPE = "atb.outcome.v1"


@dataclass(frozen=True)
class OutcomeNotice:
    request_id: str
    delivery_id: str
    body: bytes


def outcome_notice(event: PoaIssued | RequestDenied | RequestExpired) -> OutcomeNotice:
    """What to POST to the callback for this outcome."""
    body: JsonObject = {"type": OUTCOME_TYPE, "request_id": event.request_id}
    match event:
        case PoaIssued():
            body |= {
                "outcome": "issued",
                "decided_at": event.issued_at.isoformat(),
                "jti": event.jti,
                "kid": event.kid,
                "expires_at": event.expires_at.isoformat(),
            }
        case RequestDenied():
            body |= {
                "outcome": "denied",
                "decided_at": event.decided_at.isoformat(),
                "code": event.code,
                "reason": event.reason,
            }
        case RequestExpired():
            body |= {
                "outcome": "expired",
                "decided_at": event.deadline.isoformat(),
                "approvals_counted": event.approvals_counted,
                "required_approvals": event.required_approvals,
            }
    outcome = body["outcome"]
    return OutcomeNotice(event.request_id, f"dlv-{event.request_id}-{outcome}", orjson.dumps(body))
