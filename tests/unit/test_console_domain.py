"""console.domain: the views the console folds from the outcomes, whom it shows a request to, and whose vote
it may publish (the one eligibility rule, then the console's own: closed, late, duplicate, reason, step-up)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.domain import (
    ApprovalView,
    VoteDecision,
    VoteRefused,
    decide_on_behalf,
    decide_vote,
    eligible,
    evolve,
    explain,
)
from console.domain.view import RESULT_CODES
from contracts import (
    ApprovalRequired,
    ApprovalStateChanged,
    IssuanceRequested,
    JsonObject,
    LegitimateInterest,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    Tier,
    VoteChoice,
    digest_of,
)
from contracts.approval_events import ApprovalEscalated, ReminderDue
from contracts.delegation import Delegation
from contracts.directory import Approver, Directory

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
AGENT = "spiffe://atb.local/agent/finance-bot"
STEP_UP = frozenset({Tier.HIGH, Tier.CRITICAL})
DIRECTORY = Directory.from_mapping(
    {
        "approvers": [
            {"principal": "alice", "type": "manager", "groups": ["manager"], "tiers": ["medium", "high"],
             "identities": ["emp-101"]},
            {"principal": "carol", "type": "security", "groups": ["security"], "tiers": ["medium", "high", "critical"],
             "identities": ["emp-103"]},
            {"principal": "dave", "type": "manager", "groups": ["manager"], "tiers": ["medium", "high"],
             "identities": ["emp-200"]},
            {"principal": "erin", "type": "finance", "groups": ["finance"], "tiers": ["medium", "high"],
             "identities": ["emp-300"]},
        ]
    }
)  # fmt: skip


def _approver(name: str) -> Approver:
    approver = DIRECTORY.resolve(name)
    assert approver is not None
    return approver


def _request(params: JsonObject | None = None) -> IssuanceRequested:
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
        action="sap.payment.execute",
        resource="sap:vendor/1",
        params=params if params is not None else {"amount": 5},
        leg=LegitimateInterest.model_validate(leg),
        requested_at=NOW,
    )


def _required(tier: Tier = Tier.HIGH, request: IssuanceRequested | None = None) -> ApprovalRequired:
    request = request or _request()
    return ApprovalRequired(
        request_id="req-1",
        tier=tier,
        required_approvals=2,
        eligible_groups=("manager", "security"),
        ticket_required=False,
        deadline=NOW + timedelta(minutes=10),
        request_digest=digest_of(request),
        agent_id=AGENT,
        action=request.action,
        resource=request.resource,
        accountable_party_id="emp-200",
    )


def _view(tier: Tier = Tier.HIGH) -> ApprovalView:
    view = evolve(None, _required(tier))
    view = evolve(view, ApprovalStateChanged(request_id="req-1", status="open", request=_request(), updated_at=NOW))
    assert view is not None
    return view


def _decide(view: ApprovalView | None, who: str, choice: VoteChoice = VoteChoice.APPROVE, **kw: object) -> object:
    options: dict[str, object] = {
        "reason": "",
        "already_voted": False,
        "now": NOW,
        "step_up_tiers": STEP_UP,
        "has_assertion": True,
    }
    options.update(kw)
    return decide_vote(view, _approver(who), choice, **options)  # type: ignore[arg-type]


def test_the_details_are_shown_only_when_they_hash_to_the_digest() -> None:
    view = _view()
    assert view.verified_request == _request()
    other = ApprovalStateChanged(request_id="req-1", status="open", request=_request({"amount": 9}), updated_at=NOW)
    swapped = evolve(view, other)
    assert swapped is not None
    assert swapped.verified_request is None


def test_the_inbox_rule_is_the_eligibility_rule() -> None:
    view = _view()
    assert eligible(view, _approver("alice"), NOW)
    assert eligible(view, _approver("carol"), NOW)
    assert not eligible(view, _approver("dave"), NOW)  # the accountable party (emp-200)
    assert not eligible(view, _approver("erin"), NOW)  # no eligible group
    assert not eligible(_view(Tier.CRITICAL), _approver("alice"), NOW)  # may not approve critical


def _reminder(n: int) -> ReminderDue:
    return ReminderDue(
        request_id="req-1",
        tier=Tier.HIGH,
        reminder=n,
        of=2,
        missing=1,
        eligible_groups=("manager", "security"),
        request_digest=_required().request_digest,
        deadline=NOW + timedelta(minutes=10),
        sent_at=NOW + timedelta(minutes=n),
    )


def _escalation(to: tuple[str, ...] = ("finance",), at: datetime = NOW + timedelta(minutes=8)) -> ApprovalEscalated:
    return ApprovalEscalated(
        request_id="req-1",
        tier=Tier.HIGH,
        escalate_to=to,
        missing=1,
        request_digest=_required().request_digest,
        deadline=NOW + timedelta(minutes=10),
        escalated_at=at,
    )


def test_reminders_keep_the_latest_and_the_first_escalation_stays() -> None:
    view = evolve(evolve(_view(), _reminder(2)), _reminder(1))  # the older one, after: changes nothing
    assert view is not None
    assert view.reminder is not None
    assert (view.reminder.reminder, view.reminder.of) == (2, 2)
    escalated = evolve(evolve(view, _escalation()), _escalation(("security",)))
    assert escalated is not None
    assert escalated.escalation is not None
    assert escalated.escalation.escalate_to == ("finance",)
    assert evolve(None, _reminder(1)) is not None  # before its ApprovalRequired: kept, shown once it comes


def test_an_escalated_group_is_eligible_from_the_escalation_on() -> None:
    at = NOW + timedelta(minutes=8)
    view = evolve(_view(), _escalation(("finance",), at))
    assert view is not None
    erin = _approver("erin")  # finance: not in the request's groups
    assert not eligible(view, erin, at - timedelta(seconds=1))
    assert eligible(view, erin, at)
    assert _decide(view, "erin", now=at - timedelta(seconds=1)) == VoteRefused("not_eligible", "erin")
    assert isinstance(_decide(view, "erin", now=at), VoteDecision)
    assert not eligible(view, _approver("dave"), at)  # the escalation does not lift the self-approval rule
    assert not eligible(_view(), erin, at)  # without the escalation: not eligible


@pytest.mark.parametrize(
    ("who", "code"),
    [("dave", "self_approval"), ("erin", "not_eligible")],
)
def test_ineligible_approvers_are_refused(who: str, code: str) -> None:
    assert _decide(_view(), who) == VoteRefused(code, who)


def test_tier_not_allowed() -> None:
    assert _decide(_view(Tier.CRITICAL), "alice") == VoteRefused("tier_not_allowed", "alice")


def test_unknown_closed_and_late_requests_are_refused() -> None:
    assert _decide(None, "alice") == VoteRefused("unknown_request", "alice")
    denied = evolve(_view(), RequestDenied(request_id="req-1", code="vote_deny", reason="no", denied_by="carol",
                                           decided_at=NOW))  # fmt: skip
    assert _decide(denied, "alice") == VoteRefused("closed", "alice")
    assert _decide(_view(), "alice", now=NOW + timedelta(minutes=11)) == VoteRefused("late", "alice")


def test_second_votes_and_reasonless_denies_are_refused() -> None:
    assert _decide(_view(), "alice", already_voted=True) == VoteRefused("duplicate", "alice")
    assert _decide(_view(), "alice", VoteChoice.DENY, reason="  ") == VoteRefused("reason_required", "alice")
    deny = _decide(_view(), "alice", VoteChoice.DENY, reason="wrong vendor", has_assertion=False)
    assert isinstance(deny, VoteDecision)
    assert not deny.step_up


def test_approvals_on_step_up_tiers_need_an_assertion() -> None:
    assert _decide(_view(), "alice", has_assertion=False) == VoteRefused("step_up_required", "alice")
    approve = _decide(_view(), "alice")
    assert isinstance(approve, VoteDecision)
    assert approve.step_up
    assert approve.request_digest == digest_of(_request())
    medium = _decide(_view(Tier.MEDIUM), "alice", has_assertion=False)
    assert isinstance(medium, VoteDecision)
    assert not medium.step_up


def test_outcomes_and_the_poa_close_the_view() -> None:
    view = _view()
    quorum = QuorumReached(
        request_id="req-1",
        tier=Tier.HIGH,
        required_approvals=2,
        request_digest=digest_of(_request()),
        poa_ttl_seconds=60,
        request=_request(),
        request_event="{}",
        decided_at=NOW,
    )
    approved = evolve(view, quorum)
    assert approved is not None
    assert approved.resolution is not None
    assert approved.resolution.kind == "approved"
    poa = PoaIssued(
        request_id="req-1",
        jti="jti-1",
        kid="k1",
        agent_id=AGENT,
        action="sap.payment.execute",
        tier=Tier.HIGH,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=1),
        token="t",
        token_sha256="sha256:" + "0" * 64,
    )
    issued = evolve(evolve(approved, poa), quorum)  # a redelivered quorum does not undo the PoA
    assert issued is not None
    assert issued.resolution is not None
    assert (issued.resolution.kind, issued.resolution.poa_jti) == ("issued", "jti-1")
    assert not issued.open_at(NOW)


def test_every_code_is_explained() -> None:
    fallback = {code for code in RESULT_CODES if explain(code) == f"The vote was refused ({code})."}
    assert fallback == {"vote_cast"}
    assert explain("something_new") == "The vote was refused (something_new)."


def _delegation(delegator: str = "alice", delegate: str = "carol", **kw: object) -> Delegation:
    terms: dict[str, object] = {
        "delegation_id": "dlg-1",
        "delegator": delegator,
        "delegate": delegate,
        "not_before": NOW - timedelta(hours=1),
        "until": NOW + timedelta(hours=8),
        "tiers": frozenset({Tier.HIGH}),
    }
    terms.update(kw)
    return Delegation(**terms)  # type: ignore[arg-type]


def _on_behalf(delegate: str, delegator: str, delegation: Delegation, **kw: object) -> object:
    options: dict[str, object] = {"already_voted": False, "now": NOW, "has_assertion": True}
    options.update(kw)
    return decide_on_behalf(_view(), _approver(delegate), _approver(delegator), delegation, **options)  # type: ignore[arg-type]


def test_an_approval_in_a_delegators_place_follows_the_delegation_rule() -> None:
    decided = _on_behalf("carol", "alice", _delegation())
    assert isinstance(decided, VoteDecision)
    assert (decided.principal, decided.choice, decided.step_up) == ("alice", VoteChoice.APPROVE, True)
    refusals = {
        "window": _on_behalf("carol", "alice", _delegation(until=NOW - timedelta(minutes=1))),
        "tier": _on_behalf("carol", "alice", _delegation(tiers=frozenset({Tier.MEDIUM}))),
        "other delegate": _on_behalf("carol", "alice", _delegation(delegate="erin")),
        "requester's place": _on_behalf("carol", "dave", _delegation(delegator="dave")),  # dave: emp-200
        "requester delegates": _on_behalf("dave", "alice", _delegation(delegate="dave")),
        "ineligible delegate": _on_behalf("erin", "alice", _delegation(delegate="erin")),
        "voted": _on_behalf("carol", "alice", _delegation(), already_voted=True),
        "no passkey": _on_behalf("carol", "alice", _delegation(), has_assertion=False),
    }
    assert {k: v.code for k, v in refusals.items() if isinstance(v, VoteRefused)} == {
        "window": "delegation_not_in_force",
        "tier": "delegation_not_in_force",
        "other delegate": "delegation_invalid",
        "requester's place": "self_approval",
        "requester delegates": "self_approval",
        "ineligible delegate": "not_eligible",
        "voted": "duplicate",
        "no passkey": "step_up_required",
    }
