"""approvals.domain.intake: what a newly arrived request gets (docs/architecture.md §2.5 risk tiers)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from approvals.domain.intake import IntakeResult, Requirements, decide_intake, digest_of
from approvals.settings import ApprovalsSettings
from contracts import (
    ApprovalRequired,
    DigestFields,
    IssuanceRequested,
    QuorumReached,
    RequestDenied,
    Tier,
    request_digest,
    sha256_digest,
)

NOW = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
AGENT = "spiffe://atb.example/agent/crm-bot"
DECIDER = "spiffe://atb.example/service/approvals"
REQUEST_EVENT = '{"id":"evt-1"}'
TICKETS = re.compile(ApprovalsSettings.model_fields["ticket_pattern"].default)

BASE: dict[str, object] = {
    "request_id": "req-0001",
    "agent_id": AGENT,
    "tenant": "acme",
    "action": "crm.contact.update",
    "resource": "crm:contact/42",
    "params": {"email": "new@example.com", "n": 3},
    "leg": {
        "basis": "LI",
        "ref": "LI-2024-001",
        "jurisdiction": "US",
        "accountable_party": {"type": "employee", "id": "emp-100"},
    },
    "requested_at": "2024-01-15T09:59:00Z",
}


BASE_LEG: dict[str, object] = dict(BASE["leg"])  # type: ignore[call-overload]


def make_request(ticket: str | None = None, overrides: dict[str, object] | None = None) -> IssuanceRequested:
    request = IssuanceRequested.model_validate({**BASE, **(overrides or {})})
    if ticket is None:
        return request
    leg = request.leg.model_dump(mode="json") | {"ticket_ref": ticket}
    return IssuanceRequested.model_validate({**BASE, **(overrides or {}), "leg": leg})


def _policy(tier: Tier, approvals: int, ticket: bool, groups: tuple[str, ...], pending: int, ttl: int) -> Requirements:
    return Requirements(tier, approvals, ticket, groups, pending, ttl, "test-1")


# The shipped policy data (opa/policy/data.json), per tier.
POLICY: dict[Tier, Requirements] = {
    Tier.LOW: _policy(Tier.LOW, 0, False, (), 0, 300),
    Tier.MEDIUM: _policy(Tier.MEDIUM, 1, False, ("manager", "team-lead"), 3600, 300),
    Tier.HIGH: _policy(Tier.HIGH, 2, False, ("manager", "compliance", "security"), 3600, 120),
    Tier.CRITICAL: _policy(Tier.CRITICAL, 2, True, ("security", "compliance"), 7200, 60),
}


def requirements(tier: Tier, **overrides: Any) -> Requirements:
    """The policy's answer for `tier`, with some fields changed (re-validated by the constructor)."""
    return replace(POLICY[tier], **overrides)


def decide(
    request: IssuanceRequested, reqs: Requirements, agent_tenants: frozenset[str] = frozenset({"acme"})
) -> IntakeResult:
    return decide_intake(
        request,
        REQUEST_EVENT,
        reqs,
        now=NOW,
        decided_by=DECIDER,
        ticket_pattern=TICKETS,
        agent_tenants=agent_tenants,
    )


EXPECTED_DIGEST = "sha256v2:3da05c9822eadae183911aff9308dedbd6f759333e5a1df2cb9fe6ce97ebf5b6"
"""Golden v2 vector for `make_request()`: pinned, so any change to the digest's input is seen."""
EXPECTED_V1 = "sha256:3b94aed5d56d2d784404516a2950cd9acccd05afbd49c100f65051fcccd771da"


def test_digest_of_is_the_contract_digest() -> None:
    assert digest_of(make_request()) == EXPECTED_DIGEST
    assert (
        "sha256v2:"
        + sha256_digest(
            {
                "v": 2,
                "request_id": "req-0001",
                "agent_id": AGENT,
                "action": "crm.contact.update",
                "resource": "crm:contact/42",
                "params": {"email": "new@example.com", "n": 3},
                "tenant": "acme",
                "target_tenant": "acme",
                "leg": {
                    "basis": "LI",
                    "ref": "LI-2024-001",
                    "description": "",
                    "jurisdiction": "US",
                    "accountable_party": {"type": "employee", "id": "emp-100"},
                    "ticket_ref": None,
                },
                "cnf": None,
            }
        ).removeprefix("sha256:")
        == EXPECTED_DIGEST
    )


def test_v1_stays_computable() -> None:
    fields = DigestFields.of_request(make_request())
    assert request_digest(fields, 1) == EXPECTED_V1
    assert (
        sha256_digest(
            {
                "action": "crm.contact.update",
                "resource": "crm:contact/42",
                "params": {"email": "new@example.com", "n": 3},
                "tenant": "acme",
                "target_tenant": "acme",
            }
        )
        == EXPECTED_V1
    )
    assert request_digest(fields, 2) == EXPECTED_DIGEST
    with pytest.raises(ValueError, match="version 3"):
        request_digest(fields, 3)


@pytest.mark.parametrize("ttl", [1, 60, 300])
def test_low_gets_quorum_with_zero_votes(ttl: int) -> None:
    request = make_request()
    result = decide(request, requirements(Tier.LOW, poa_ttl_seconds=ttl))
    assert len(result.events) == 1
    quorum = result.events[0]
    assert isinstance(quorum, QuorumReached)
    assert quorum.tier is Tier.LOW
    assert quorum.required_approvals == 0
    assert quorum.votes == ()
    assert quorum.request_digest == EXPECTED_DIGEST
    assert quorum.poa_ttl_seconds == ttl
    assert quorum.request == request
    assert quorum.request_event == REQUEST_EVENT
    assert quorum.request_id == request.request_id
    assert quorum.decided_at == NOW
    assert (result.audit_type, result.outcome) == ("approval_quorum_reached", "success")


@pytest.mark.parametrize(
    ("tier", "ticket", "approvals", "groups", "pending", "ticket_required"),
    [
        (Tier.MEDIUM, None, 1, ("manager", "team-lead"), 3600, False),
        (Tier.HIGH, None, 2, ("manager", "compliance", "security"), 3600, False),
        (Tier.HIGH, "CHG-1", 2, ("manager", "compliance", "security"), 3600, False),
        (Tier.CRITICAL, "CHG-1234", 2, ("security", "compliance"), 7200, True),
        (Tier.CRITICAL, "INC42-987654321", 2, ("security", "compliance"), 7200, True),
    ],
)
def test_medium_high_and_ticketed_critical_need_approval(
    tier: Tier, ticket: str | None, approvals: int, groups: tuple[str, ...], pending: int, ticket_required: bool
) -> None:
    request = make_request(ticket)
    result = decide(request, requirements(tier))
    assert len(result.events) == 1
    required = result.events[0]
    assert isinstance(required, ApprovalRequired)
    assert required.tier is tier
    assert required.required_approvals == approvals
    assert required.eligible_groups == groups
    assert required.ticket_required is ticket_required
    assert required.deadline == NOW + timedelta(seconds=pending)
    assert required.request_digest == (EXPECTED_DIGEST if ticket is None else digest_of(request))
    assert required.request_id == request.request_id
    assert required.agent_id == AGENT
    assert required.action == request.action
    assert required.resource == request.resource
    assert required.accountable_party_id == "emp-100"
    assert (result.audit_type, result.outcome) == ("approval_required", "info")


@pytest.mark.parametrize("pending", [1, 59, 86400])
def test_deadline_is_now_plus_pending_seconds(pending: int) -> None:
    result = decide(make_request(), requirements(Tier.MEDIUM, pending_seconds=pending))
    assert isinstance(result.events[0], ApprovalRequired)
    assert result.events[0].deadline - NOW == timedelta(seconds=pending)


@pytest.mark.parametrize(
    "ticket",
    [
        pytest.param(None, id="no ticket"),
        pytest.param("", id="empty"),
        pytest.param("chg-1234", id="lower case"),
        pytest.param("CHG1234", id="no dash"),
        pytest.param("CHG-", id="no number"),
        pytest.param("-1234", id="no project"),
        pytest.param("C-1234", id="project too short"),
        pytest.param("ABCDEFGHIJK-1", id="project too long"),
        pytest.param("CHG-1234567890", id="number too long"),
        pytest.param("CHG-1234\n", id="trailing newline"),
        pytest.param(" CHG-1234", id="leading space"),
        pytest.param("CHG-1234 ", id="trailing space"),
        pytest.param("CHG-12a4", id="letter in number"),
        pytest.param("CHG-1234; DROP", id="suffix"),
    ],
)
def test_critical_without_valid_ticket_is_denied(ticket: str | None) -> None:
    request = make_request(ticket)
    result = decide(request, requirements(Tier.CRITICAL))
    assert len(result.events) == 1
    denied = result.events[0]
    assert isinstance(denied, RequestDenied)
    assert denied.code == "ticket_required"
    assert denied.request_id == request.request_id
    assert denied.denied_by == DECIDER
    assert denied.decided_at == NOW
    assert "ticket" in denied.reason
    assert (result.audit_type, result.outcome) == ("approval_request_denied", "denied")


@pytest.mark.parametrize(
    ("tier", "overrides", "message"),
    [
        pytest.param(Tier.MEDIUM, {"approvals": 0}, "approvals", id="medium with 0 approvals"),
        pytest.param(Tier.HIGH, {"approvals": 0}, "approvals", id="high with 0 approvals"),
        pytest.param(Tier.CRITICAL, {"approvals": 0}, "approvals", id="critical with 0 approvals"),
        pytest.param(Tier.LOW, {"approvals": -1}, "approvals", id="negative approvals"),
        pytest.param(Tier.LOW, {"poa_ttl_seconds": 0}, "TTL", id="TTL 0"),
        pytest.param(Tier.MEDIUM, {"poa_ttl_seconds": -5}, "TTL", id="TTL negative"),
        pytest.param(Tier.MEDIUM, {"poa_ttl_seconds": 301}, "TTL", id="TTL 301"),
        pytest.param(Tier.HIGH, {"poa_ttl_seconds": 3600}, "TTL", id="TTL an hour"),
        pytest.param(
            Tier.HIGH,
            {"approvals": 1},
            "approvals",
            id="high with 1 approval",
        ),
        pytest.param(
            Tier.CRITICAL,
            {"approvals": 1},
            "approvals",
            id="critical with 1 approval",
        ),
        pytest.param(
            Tier.CRITICAL,
            {"ticket_required": False},
            "ticket",
            id="critical without ticket requirement",
        ),
        pytest.param(
            Tier.MEDIUM,
            {"pending_seconds": 0},
            "pending",
            id="medium with no time to approve",
        ),
        pytest.param(
            Tier.LOW,
            {"pending_seconds": -1},
            "pending",
            id="negative pending seconds",
        ),
    ],
)
def test_requirements_reject_nonsense(tier: Tier, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        requirements(tier, **overrides)


@pytest.mark.parametrize(
    ("tier", "overrides"),
    [
        (Tier.LOW, {"approvals": 0, "poa_ttl_seconds": 1}),
        (Tier.LOW, {"poa_ttl_seconds": 300}),
        (Tier.MEDIUM, {"approvals": 1}),
        (Tier.HIGH, {"approvals": 3}),
        (Tier.CRITICAL, {"approvals": 2}),
    ],
)
def test_requirements_accept_sense(tier: Tier, overrides: dict[str, object]) -> None:
    assert requirements(tier, **overrides).tier is tier


def test_requirements_are_frozen() -> None:
    reqs = requirements(Tier.LOW)
    with pytest.raises(AttributeError):
        reqs.approvals = 5  # type: ignore[misc]
    assert replace(reqs, poa_ttl_seconds=10).poa_ttl_seconds == 10


DIGEST_CHANGES: list[tuple[str, object]] = [
    ("action", "crm.contact.delete"),
    ("resource", "crm:contact/43"),
    ("params", {"email": "new@example.com", "n": 4}),
    ("params", {"email": "new@example.com"}),
    ("params", {"email": "new@example.com", "n": 3, "extra": None}),
    ("params", {"email": "NEW@example.com", "n": 3}),
    ("params", {"email": "new@example.com", "n": "3"}),
    ("params", {}),
    ("tenant", "acme2"),
    ("target_tenant", "other"),
    ("request_id", "req-0002"),
    ("agent_id", "spiffe://atb.example/agent/other-bot"),
    ("agent_cert_thumbprint", "A" * 43),
    ("leg", {**BASE_LEG, "accountable_party": {"type": "employee", "id": "emp-101"}}),
    ("leg", {**BASE_LEG, "accountable_party": {"type": "contractor", "id": "emp-100"}}),
    ("leg", {**BASE_LEG, "ref": "LI-2024-002"}),
    ("leg", {**BASE_LEG, "jurisdiction": "DE"}),
    ("leg", {**BASE_LEG, "description": "why"}),
    ("leg", {**BASE_LEG, "ticket_ref": "CHG-1234"}),
    ("leg", {**BASE_LEG, "basis": "CONTRACT"}),
]


@pytest.mark.parametrize(("field", "value"), DIGEST_CHANGES)
def test_digest_changes_when_any_bound_field_changes(field: str, value: object) -> None:
    changed = make_request(overrides={field: value})
    assert digest_of(changed) != EXPECTED_DIGEST
    result = decide(changed, requirements(Tier.MEDIUM), agent_tenants=frozenset({"acme", "acme2"}))
    assert isinstance(result.events[0], ApprovalRequired)
    assert result.events[0].request_digest == digest_of(changed)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requested_at", "2024-01-15T09:00:00Z"),
        ("target_tenant", "acme"),  # the same tenant spelled out
        ("params", {"n": 3, "email": "new@example.com"}),  # key order
    ],
)
def test_digest_ignores_what_is_not_the_action(field: str, value: object) -> None:
    assert digest_of(make_request(overrides={field: value})) == EXPECTED_DIGEST


# --- tenants bound to identity (docs/tenants.md) -----------------------------


@pytest.mark.parametrize("tier", list(Tier))
def test_a_request_for_a_tenant_the_agent_does_not_act_for_is_refused(tier: Tier) -> None:
    # Issue 14: an agent of acme declared tenant globex and got tier low and a PoA.
    request = make_request("CHG-1234", {"tenant": "globex"})
    result = decide(request, requirements(tier))
    (denied,) = result.events
    assert isinstance(denied, RequestDenied)
    assert denied.code == "tenant_not_allowed"
    assert "globex" in denied.reason
    assert result.audit_type == "approval_request_denied"
    assert result.reason.startswith("tenant_not_allowed")


def test_an_unregistered_agent_acts_for_no_tenant() -> None:
    result = decide(make_request(), requirements(Tier.LOW), agent_tenants=frozenset())
    (denied,) = result.events
    assert isinstance(denied, RequestDenied)
    assert denied.code == "tenant_not_allowed"
    assert "not in the agent registry" in denied.reason


def test_an_agent_with_two_tenants_may_ask_for_either() -> None:
    both = frozenset({"acme", "globex"})
    for tenant in ("acme", "globex"):
        result = decide(make_request(overrides={"tenant": tenant}), requirements(Tier.LOW), agent_tenants=both)
        assert isinstance(result.events[0], QuorumReached)
    refused = decide(make_request(overrides={"tenant": "initech"}), requirements(Tier.LOW), agent_tenants=both)
    assert isinstance(refused.events[0], RequestDenied)
    assert refused.events[0].code == "tenant_not_allowed"


def test_tenants_are_compared_exactly() -> None:
    result = decide(make_request(overrides={"tenant": "ACME"}), requirements(Tier.LOW))
    assert isinstance(result.events[0], RequestDenied)


def test_a_very_long_agent_id_still_fits_the_refusal() -> None:
    agent = "spiffe://atb.local/agent/" + "a" * 2000
    result = decide(make_request(overrides={"agent_id": agent}), requirements(Tier.LOW), agent_tenants=frozenset())
    assert isinstance(result.events[0], RequestDenied)
