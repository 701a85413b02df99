"""The search facets of a stored event: agent, action, tier and outcome, read from its bytes.

These values live only inside an event's JSON, so the compliance search (console)
could not filter on them through an index. The audit sink stores them beside each
row in `audit_event_facets` (migration 0010), in the same transaction as the row,
and the migration fills them in for rows stored before it, with this function:
the one definition of which event gives which facet.

event type                      agent_id / action               tier               outcome
IssuanceRequested               agent_id / action
ApprovalRequired                agent_id / action               tier
QuorumReached                   request.agent_id / .action      tier               quorum_reached
RequestDenied                                                                      denied
RequestExpired                                                                     expired
PoaIssued                       agent_id / action               tier               issued
PoaRevoked                                                                         revoked
ActionRequested                 agent_id / action
BrokerDecision v2               agent_id / action               action_tier        decision (allow, deny)
BrokerDecision v1               agent_id / action                                  decision (allow, deny)
ReminderDue, ApprovalEscalated                                  tier
ApprovalStateChanged            request.agent_id / .action      requirements.tier  outcome, once closed
AuditEvent                      details.agent_id / .action      details.tier       outcome (success, failure,
                                                                                   denied, info)

Any other event type, a record that does not parse, or a value of the wrong
shape gives no facet (an empty field, never an error): the row is stored all the
same, it just cannot be found by that facet. A tier must be one of the four
tiers; text values are bounded and without NUL like the row's other derived
columns. Pure: JSON only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec

from contracts import (
    ActionRequested,
    ApprovalRequired,
    ApprovalStateChanged,
    AuditEvent,
    BrokerDecision,
    BrokerDecisionV1,
    IssuanceRequested,
    PoaIssued,
    PoaRevoked,
    QuorumReached,
    RequestDenied,
    RequestExpired,
)
from contracts.approval_events import ApprovalEscalated, ReminderDue

__all__ = ["FACET_EVENT_TYPES", "OUTCOMES", "TIERS", "Facets", "facets_in", "facets_of"]

TIERS = frozenset({"low", "medium", "high", "critical"})
OUTCOMES = frozenset(
    {"quorum_reached", "denied", "expired", "issued", "revoked", "allow", "deny", "success", "failure", "info"}
)
"""Every outcome value a facet can hold (the console offers these)."""

_ISSUANCE = IssuanceRequested.event_type
_APPROVAL_REQUIRED = ApprovalRequired.event_type
_QUORUM = QuorumReached.event_type
_DENIED = RequestDenied.event_type
_EXPIRED = RequestExpired.event_type
_ISSUED = PoaIssued.event_type
_REVOKED = PoaRevoked.event_type
_ACTION = ActionRequested.event_type
_DECISION_V2 = BrokerDecision.event_type
_DECISION_V1 = BrokerDecisionV1.event_type
_REMINDER = ReminderDue.event_type
_ESCALATED = ApprovalEscalated.event_type
_STATE = ApprovalStateChanged.event_type
_AUDIT = AuditEvent.event_type

FACET_EVENT_TYPES = frozenset(
    {
        _ISSUANCE,
        _APPROVAL_REQUIRED,
        _QUORUM,
        _DENIED,
        _EXPIRED,
        _ISSUED,
        _REVOKED,
        _ACTION,
        _DECISION_V2,
        _DECISION_V1,
        _REMINDER,
        _ESCALATED,
        _STATE,
        _AUDIT,
    }
)
"""The event types that can give a facet (the migration reads only these rows)."""

_FIXED_OUTCOME = {
    _QUORUM: "quorum_reached",
    _DENIED: "denied",
    _EXPIRED: "expired",
    _ISSUED: "issued",
    _REVOKED: "revoked",
}
_AGENT_MAX = 255
_ACTION_MAX = 128


class Facets(NamedTuple):
    agent_id: str | None = None
    action: str | None = None
    tier: str | None = None
    outcome: str | None = None

    def __bool__(self) -> bool:
        return any(value is not None for value in self)


class _Envelope(msgspec.Struct):
    data: dict[str, Any]


_decoder = msgspec.json.Decoder(_Envelope)
_NESTED = ("request", "requirements", "details")


def _text(value: object, limit: int) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value.replace("\x00", "\ufffd")[:limit]


def _tier(value: object) -> str | None:
    return value if isinstance(value, str) and value in TIERS else None


def _outcome(value: object) -> str | None:
    return value if isinstance(value, str) and value in OUTCOMES else None


def facets_of(event_type: str, raw: bytes) -> Facets:
    """The facets of one stored event (see the module's table); empty for anything else. Never raises."""
    if event_type not in FACET_EVENT_TYPES:
        return Facets()
    try:
        data = _decoder.decode(raw).data
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return Facets()
    return facets_in(event_type, data)


def facets_in(event_type: str, data: Mapping[str, Any]) -> Facets:
    """The facets of an event whose `data` object is read already (the audit sink reads it once per
    record, with the envelope's attributes); `facets_of` of its bytes is this. Never raises.

    A `request`, `requirements` or `details` that is there but neither an object nor null makes
    the data unreadable for facets: no facet at all.
    """
    if event_type not in FACET_EVENT_TYPES:
        return Facets()
    for key in _NESTED:
        value = data.get(key)
        if value is not None and not isinstance(value, dict):
            return Facets()
    agent = action = tier = outcome = None
    where = _AGENT_IN.get(event_type)
    if where is not None:
        inner = data.get(where) or _EMPTY if where else data
        agent, action = _text(inner.get("agent_id"), _AGENT_MAX), _text(inner.get("action"), _ACTION_MAX)
    spot = _TIER_IN.get(event_type)
    if spot is not None:
        container, name = spot
        tier = _tier((data.get(container) or _EMPTY if container else data).get(name))
    said = data.get("outcome")
    if event_type in _FIXED_OUTCOME:
        outcome = _FIXED_OUTCOME[event_type]
    elif event_type in (_DECISION_V2, _DECISION_V1):
        decision = data.get("decision")
        outcome = _outcome(decision) if decision in ("allow", "deny") else None
    elif event_type == _STATE:
        closed = data.get("status") == "closed" and said in ("quorum_reached", "denied", "expired")
        outcome = _outcome(said) if closed else None
    elif event_type == _AUDIT:
        outcome = _outcome(said) if said in ("success", "failure", "denied", "info") else None
    return Facets(agent, action, tier, outcome)


_EMPTY: Mapping[str, Any] = {}
_AGENT_IN = {
    _QUORUM: "request",
    _STATE: "request",
    _AUDIT: "details",
    **dict.fromkeys((_ISSUANCE, _APPROVAL_REQUIRED, _ISSUED, _ACTION, _DECISION_V2, _DECISION_V1), ""),
}
"""Where an event type keeps `agent_id` and `action`: in that object of its data ("": the data itself)."""
_TIER_IN = {
    **dict.fromkeys((_APPROVAL_REQUIRED, _QUORUM, _ISSUED, _REMINDER, _ESCALATED), ("", "tier")),
    _DECISION_V2: ("", "action_tier"),
    _STATE: ("requirements", "tier"),
    _AUDIT: ("details", "tier"),
}
"""Where an event type keeps its tier: (object of its data, "" for the data itself; field)."""
