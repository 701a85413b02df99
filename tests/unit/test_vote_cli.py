"""`atb pending`: which open requests await an approver (pure filter over changelog states)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from atb.cli.vote import awaiting
from contracts import (
    AccountableParty,
    ApprovalStateChanged,
    BallotRecord,
    IssuanceRequested,
    LegitimateInterest,
    RequirementsRecord,
    Tier,
    VoteChoice,
)
from contracts.directory import Directory

NOW = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
DIRECTORY = Directory.from_mapping(
    json.loads((Path(__file__).resolve().parents[2] / "config" / "approvers.json").read_text())
)


def _state(request_id: str, tier: Tier = Tier.MEDIUM, party: str = "emp-300", **extra: object) -> ApprovalStateChanged:
    request = IssuanceRequested(
        request_id=request_id,
        agent_id="spiffe://atb.local/agent/bot",
        tenant="acme",
        action="crm.contact.update",
        resource="crm:contact/1",
        leg=LegitimateInterest(
            ref="LI-1", jurisdiction="US", accountable_party=AccountableParty(type="employee", id=party)
        ),
        requested_at=NOW,
    )
    requirements = RequirementsRecord(
        tier=tier,
        approvals=1,
        ticket_required=False,
        eligible_groups=("manager",),
        pending_seconds=60,
        poa_ttl_seconds=300,
        policy_version="t",
    )
    values: dict[str, object] = {
        "request_id": request_id,
        "status": "open",
        "request": request,
        "requirements": requirements,
        "deadline": NOW + timedelta(minutes=5),
        "updated_at": NOW,
        **extra,
    }
    return ApprovalStateChanged.model_validate(values)


def test_awaiting_lists_only_what_the_approver_can_still_vote_on() -> None:
    alice = DIRECTORY.resolve("alice")
    assert alice is not None
    ballot = BallotRecord(
        vote_id="v",
        identity="slack:UALICE01",
        choice=VoteChoice.APPROVE,
        digest="sha256:" + "0" * 64,
        received_at=NOW,
        channel="slack",
        vote_event="{}",
    )
    states = [
        _state("open-later", deadline=NOW + timedelta(minutes=9)),
        _state("open-soon"),
        _state("closed", status="closed", outcome="denied"),
        _state("expired", deadline=NOW - timedelta(seconds=1)),
        _state("own", party="emp-101"),  # alice is emp-101
        _state("critical", tier=Tier.CRITICAL),  # alice may not approve critical
        _state("voted", ballots=(ballot,)),
    ]
    assert [s.request_id for s in awaiting(states, alice, DIRECTORY, NOW)] == ["open-soon", "open-later"]
