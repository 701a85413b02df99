"""audit_sink.domain.facets: which stored event gives which search facet (agent, action, tier, outcome)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_sink.domain import facets as facets_module
from audit_sink.domain.facets import FACET_EVENT_TYPES, OUTCOMES, Facets, facets_in, facets_of
from contracts import (
    ActionRequested,
    ApprovalRequired,
    ApprovalStateChanged,
    AuditEvent,
    BrokerDecision,
    BrokerDecisionV1,
    Decision,
    EventPayload,
    IssuanceRequested,
    LegitimateInterest,
    PoaIssued,
    PoaRevoked,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    Tier,
    VoteCast,
    VoteChoice,
    encode_envelope,
    make_envelope,
)
from contracts.approval_events import ApprovalEscalated, ReminderDue

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
AGENT = "spiffe://atb.local/agent/finance-bot"
ACTION = "sap.payment.execute"
DIGEST = "sha256v2:" + "ab" * 32


def _bytes(payload: EventPayload) -> bytes:
    return encode_envelope(make_envelope(payload, source="spiffe://atb.local/svc/test", event_id="e-1", time=NOW))


def _request() -> IssuanceRequested:
    leg = {
        "basis": "LI",
        "ref": "LI-1",
        "description": "payment",
        "jurisdiction": "DE",
        "accountable_party": {"type": "employee", "id": "emp-200"},
    }
    return IssuanceRequested(
        request_id="req-1",
        agent_id=AGENT,
        tenant="acme",
        action=ACTION,
        resource="sap:vendor/1",
        params={"amount": 5},
        leg=LegitimateInterest.model_validate(leg),
        requested_at=NOW,
    )


def _facets(payload: EventPayload) -> Facets:
    return facets_of(payload.event_type, _bytes(payload))


def _cases() -> list[tuple[EventPayload, Facets]]:
    request = _request()
    deadline = NOW + timedelta(minutes=10)
    return [
        (request, Facets(AGENT, ACTION)),
        (
            ApprovalRequired(
                request_id="req-1",
                tier=Tier.HIGH,
                required_approvals=2,
                eligible_groups=("manager",),
                ticket_required=False,
                deadline=deadline,
                request_digest=DIGEST,
                agent_id=AGENT,
                action=ACTION,
                resource="sap:vendor/1",
                accountable_party_id="emp-200",
            ),
            Facets(AGENT, ACTION, "high"),
        ),
        (
            QuorumReached(
                request_id="req-1",
                tier=Tier.CRITICAL,
                required_approvals=0,
                request_digest=DIGEST,
                poa_ttl_seconds=60,
                request=request,
                request_event="e-0",
                decided_at=NOW,
            ),
            Facets(AGENT, ACTION, "critical", "quorum_reached"),
        ),
        (
            RequestDenied(request_id="req-1", code="vote_denied", reason="no", denied_by="alice", decided_at=NOW),
            Facets(outcome="denied"),
        ),
        (
            RequestExpired(request_id="req-1", deadline=NOW, approvals_counted=1, required_approvals=2),
            Facets(outcome="expired"),
        ),
        (
            PoaIssued(
                request_id="req-1",
                jti="j-1",
                kid="k-1",
                agent_id=AGENT,
                action=ACTION,
                tier=Tier.MEDIUM,
                issued_at=NOW,
                expires_at=NOW + timedelta(minutes=1),
                token="",
                token_sha256="sha256:" + "cd" * 32,
            ),
            Facets(AGENT, ACTION, "medium", "issued"),
        ),
        (
            PoaRevoked(request_id="req-1", jti="j-1", reason="leak", revoked_by="carol", revoked_at=NOW),
            Facets(outcome="revoked"),
        ),
        (
            ActionRequested(
                request_id="req-1",
                action_id="a-1",
                agent_id=AGENT,
                tenant="acme",
                action=ACTION,
                resource="sap:vendor/1",
                requested_at=NOW,
            ),
            Facets(AGENT, ACTION),
        ),
        (
            BrokerDecision(
                request_id="req-1",
                action_id="a-1",
                agent_id=AGENT,
                action=ACTION,
                decision=Decision.DENY,
                reasons=(),
                action_tier=Tier.LOW,
                policy_version="v1",
                decided_at=NOW,
            ),
            Facets(AGENT, ACTION, "low", "deny"),
        ),
        (
            BrokerDecisionV1(
                request_id="req-1",
                action_id="a-1",
                agent_id=AGENT,
                action=ACTION,
                decision=Decision.ALLOW,
                reasons=(),
                policy_version="v1",
                decided_at=NOW,
            ),
            Facets(AGENT, ACTION, None, "allow"),
        ),
        (
            ReminderDue(
                request_id="req-1",
                tier=Tier.HIGH,
                reminder=1,
                of=2,
                missing=1,
                eligible_groups=("manager",),
                request_digest=DIGEST,
                deadline=deadline,
                sent_at=NOW,
            ),
            Facets(tier="high"),
        ),
        (
            ApprovalEscalated(
                request_id="req-1",
                tier=Tier.CRITICAL,
                escalate_to=("security",),
                missing=1,
                request_digest=DIGEST,
                deadline=deadline,
                escalated_at=NOW,
            ),
            Facets(tier="critical"),
        ),
        (
            ApprovalStateChanged(request_id="req-1", status="closed", outcome="expired", updated_at=NOW),
            Facets(outcome="expired"),
        ),
        (
            ApprovalStateChanged(request_id="req-1", status="open", request=request, updated_at=NOW),
            Facets(AGENT, ACTION),
        ),
        (
            AuditEvent(
                audit_type="poa_issued",
                request_id="req-1",
                actor="issuer",
                outcome="success",
                details={"agent_id": AGENT, "action": ACTION, "tier": "high", "jti": "j-1"},
                occurred_at=NOW,
            ),
            Facets(AGENT, ACTION, "high", "success"),
        ),
        (
            AuditEvent(
                audit_type="event_dead_lettered",
                actor="issuer",
                outcome="failure",
                details={"agent_id": 7, "action": ["x"], "tier": "extreme"},
                occurred_at=NOW,
            ),
            Facets(outcome="failure"),
        ),
        (
            VoteCast(
                request_id="req-1",
                vote_id="v-1",
                approver_id="alice",
                choice=VoteChoice.APPROVE,
                request_digest=DIGEST,
                channel="cli",
                cast_at=NOW,
            ),
            Facets(),
        ),
    ]


@pytest.mark.parametrize(("payload", "expected"), _cases(), ids=lambda v: type(v).__name__)
def test_each_event_type_gives_its_facets(payload: EventPayload, expected: Facets) -> None:
    assert _facets(payload) == expected
    assert bool(expected) == (expected != Facets())


def test_every_type_that_gives_a_facet_is_covered_and_every_outcome_is_known() -> None:
    covered = {payload.event_type for payload, found in _cases() if found}
    assert covered == FACET_EVENT_TYPES
    assert {found.outcome for _, found in _cases() if found.outcome} <= OUTCOMES


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00garbage",
        b"[1, 2]",
        b'{"data": 5}',
        b'{"data": {"agent_id": {"x": 1}, "tier": 3}}',
        b'{"data": {"request": "not an object"}}',
        b'{"data": {"agent_id": "a' + b"x" * 100,
    ],
)
def test_bad_bytes_give_no_facet_and_never_raise(raw: bytes) -> None:
    for event_type in FACET_EVENT_TYPES:
        found = facets_of(event_type, raw)
        assert found.tier is None
        assert found.agent_id is None


def test_an_unknown_tier_or_decision_is_dropped_and_long_text_is_bounded() -> None:
    raw = b'{"data": {"agent_id": "%s", "action": "a\\u0000b", "action_tier": "extreme", "decision": "maybe"}}' % (
        b"s" * 400
    )
    found = facets_of(BrokerDecision.event_type, raw)
    assert found == Facets("s" * 255, "a\ufffdb", None, None)
    assert facets_of("atb.something.else.v1", _bytes(_request())) == Facets()


# The reading of facets before `facets_in` (msgspec structs over the bytes), kept as the oracle
# that `facets_of` and `facets_in` must agree with on any data.
class _OldNested(msgspec.Struct):
    agent_id: object = None
    action: object = None
    tier: object = None


class _OldData(msgspec.Struct):
    agent_id: object = None
    action: object = None
    tier: object = None
    action_tier: object = None
    decision: object = None
    outcome: object = None
    status: object = None
    request: _OldNested | None = None
    requirements: _OldNested | None = None
    details: _OldNested | None = None


class _OldEnvelope(msgspec.Struct):
    data: _OldData


def _old_facets(event_type: str, raw: bytes) -> Facets:
    """facets_of as it was, branch for branch."""
    if event_type not in FACET_EVENT_TYPES:
        return Facets()
    try:
        data = msgspec.json.decode(raw, type=_OldEnvelope).data
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Facets()
    text, tier_of, outcome_of = facets_module._text, facets_module._tier, facets_module._outcome
    agent_max, action_max = facets_module._AGENT_MAX, facets_module._ACTION_MAX
    if event_type in (QuorumReached.event_type, ApprovalStateChanged.event_type):
        inner = data.request or _OldNested()
        agent, action = text(inner.agent_id, agent_max), text(inner.action, action_max)
    elif event_type == AuditEvent.event_type:
        inner = data.details or _OldNested()
        agent, action = text(inner.agent_id, agent_max), text(inner.action, action_max)
    elif event_type in (
        IssuanceRequested.event_type,
        ApprovalRequired.event_type,
        PoaIssued.event_type,
        ActionRequested.event_type,
        BrokerDecision.event_type,
        BrokerDecisionV1.event_type,
    ):
        agent, action = text(data.agent_id, agent_max), text(data.action, action_max)
    else:
        agent = action = None
    if event_type in (
        ApprovalRequired.event_type,
        QuorumReached.event_type,
        PoaIssued.event_type,
        ReminderDue.event_type,
        ApprovalEscalated.event_type,
    ):
        tier = tier_of(data.tier)
    elif event_type == BrokerDecision.event_type:
        tier = tier_of(data.action_tier)
    elif event_type == ApprovalStateChanged.event_type:
        tier = tier_of((data.requirements or _OldNested()).tier)
    elif event_type == AuditEvent.event_type:
        tier = tier_of((data.details or _OldNested()).tier)
    else:
        tier = None
    fixed = facets_module._FIXED_OUTCOME
    if event_type in fixed:
        outcome: str | None = fixed[event_type]
    elif event_type in (BrokerDecision.event_type, BrokerDecisionV1.event_type):
        outcome = outcome_of(data.decision) if data.decision in ("allow", "deny") else None
    elif event_type == ApprovalStateChanged.event_type:
        closed = data.status == "closed" and data.outcome in ("quorum_reached", "denied", "expired")
        outcome = outcome_of(data.outcome) if closed else None
    elif event_type == AuditEvent.event_type:
        outcome = outcome_of(data.outcome) if data.outcome in ("success", "failure", "denied", "info") else None
    else:
        outcome = None
    return Facets(agent, action, tier, outcome)


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["", "x", AGENT, ACTION, "low", "high", "bogus", "allow", "deny", "closed", "open"]),
    st.sampled_from(["quorum_reached", "denied", "expired", "success", "failure", "info", "issued"]),
    st.lists(st.integers(-5, 5), max_size=2),
)
_nested = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.text(max_size=3),
    st.lists(st.integers(-5, 5), max_size=2),
    st.dictionaries(st.sampled_from(["agent_id", "action", "tier", "other"]), _values, max_size=4),
)
_data = st.dictionaries(
    st.sampled_from(["agent_id", "action", "tier", "action_tier", "decision", "outcome", "status", "other"]),
    _values,
    max_size=8,
).flatmap(
    lambda flat: st.dictionaries(st.sampled_from(["request", "requirements", "details"]), _nested, max_size=3).map(
        lambda nested: {**flat, **nested}
    )
)


@given(event_type=st.sampled_from(sorted(FACET_EVENT_TYPES | {VoteCast.event_type})), data=_data)
@settings(max_examples=500, deadline=None)
def test_facets_of_bytes_and_in_read_data_agree_with_the_struct_reading(event_type: str, data: dict[str, Any]) -> None:
    raw = orjson.dumps({"type": event_type, "data": data})
    old = _old_facets(event_type, raw)
    assert facets_of(event_type, raw) == old
    assert facets_in(event_type, data) == old
