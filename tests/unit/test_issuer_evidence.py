"""The issuer's own judgement of a quorum: every rule alone (table-driven)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts import AccountableParty, ContractualNecessity, IssuanceRequested, QuorumReached, Tier, digest_of
from contracts.directory import Approver
from contracts.requirements import Requirements
from issuer.domain import QuorumEvidenceError
from issuer.domain.evidence import VerifiedVote, check_quorum

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
REQUEST = IssuanceRequested(
    request_id="req-1",
    agent_id="spiffe://atb.local/agent/a",
    tenant="acme",
    action="sap.payment.execute",
    resource="sap:invoice/1",
    leg=ContractualNecessity(
        ref="MSA-1", jurisdiction="EU", accountable_party=AccountableParty(type="employee", id="emp-200")
    ),
    requested_at=T0,
)
DIGEST = digest_of(REQUEST)
POLICY = Requirements(
    tier=Tier.HIGH,
    approvals=2,
    ticket_required=False,
    eligible_groups=("manager", "compliance"),
    pending_seconds=3600,
    poa_ttl_seconds=120,
    policy_version="test",
)


def _approver(principal: str, kind: str, **changes: object) -> Approver:
    fields: dict[str, object] = {
        "principal": principal,
        "type": kind,
        "groups": frozenset({kind}),
        "tiers": frozenset({Tier.MEDIUM, Tier.HIGH}),
        "identities": frozenset({f"slack:{principal}"}),
        **changes,
    }
    return Approver(**fields)  # type: ignore[arg-type]


def _vote(principal: str, kind: str = "manager") -> VerifiedVote:
    return VerifiedVote(
        approver=_approver(principal, kind),
        approves=True,
        request_id="req-1",
        digest=DIGEST,
        vote_digest=f"sha256:{principal[0] * 64}",
        received_at=T0 + timedelta(minutes=1),
        claimed_principal=principal,
        claimed_type=kind,
        claimed_vote_digest=f"sha256:{principal[0] * 64}",
    )


def _quorum(**changes: object) -> QuorumReached:
    base = QuorumReached(
        request_id="req-1",
        tier=Tier.HIGH,
        required_approvals=2,
        request_digest=DIGEST,
        poa_ttl_seconds=120,
        request=REQUEST,
        request_event="{}",
        decided_at=T0 + timedelta(minutes=2),
    )
    return base.model_copy(update=changes)


ALICE, BOB = _vote("alice"), _vote("bob", "compliance")
BOB_THE_REQUESTER = replace(BOB, approver=_approver("bob", "compliance", identities=frozenset({"emp-200"})))
BOB_MEDIUM_ONLY = replace(BOB, approver=_approver("bob", "compliance", tiers=frozenset({Tier.MEDIUM})))
BOB_IN_SECURITY = replace(BOB, approver=_approver("bob", "compliance", groups=frozenset({"security"})))


def test_two_distinct_eligible_approvers_make_a_high_quorum() -> None:
    check_quorum(_quorum(), [ALICE, BOB], POLICY)


@pytest.mark.parametrize(
    ("quorum", "votes", "code"),
    [
        (_quorum(tier=Tier.LOW, required_approvals=0), [], "tier_mismatch"),
        (_quorum(required_approvals=1), [ALICE], "too_few_required"),
        (_quorum(poa_ttl_seconds=300), [ALICE, BOB], "ttl_too_long"),
        (_quorum(), [ALICE], "quorum_short"),
        (_quorum(), [ALICE, ALICE], "duplicate_approver"),
        (_quorum(), [ALICE, replace(BOB, digest="sha256:" + "0" * 64)], "vote_for_another_request"),
        (_quorum(), [ALICE, replace(BOB, request_id="req-2")], "vote_for_another_request"),
        (_quorum(), [ALICE, replace(BOB, approves=False)], "vote_not_approve"),
        (_quorum(), [ALICE, replace(BOB, claimed_principal="carol")], "evidence_mismatch"),
        (_quorum(), [ALICE, replace(BOB, claimed_type="security")], "evidence_mismatch"),
        (_quorum(), [ALICE, replace(BOB, claimed_vote_digest="sha256:" + "f" * 64)], "evidence_mismatch"),
        (
            _quorum(),
            [ALICE, BOB_THE_REQUESTER],
            "self_approval",
        ),
        (
            _quorum(),
            [ALICE, BOB_MEDIUM_ONLY],
            "tier_not_allowed",
        ),
        (
            _quorum(),
            [ALICE, BOB_IN_SECURITY],
            "not_eligible",
        ),
        (_quorum(), [ALICE, replace(BOB, received_at=T0 + timedelta(minutes=3))], "after_deadline"),
        (_quorum(decided_at=T0 + timedelta(hours=2)), [ALICE, BOB], "after_deadline"),
    ],
)
def test_each_broken_rule_is_refused_with_its_code(quorum: QuorumReached, votes: list[VerifiedVote], code: str) -> None:
    with pytest.raises(QuorumEvidenceError) as refused:
        check_quorum(quorum, votes, POLICY)
    assert refused.value.code == code


def test_a_low_quorum_needs_no_votes() -> None:
    low = Requirements(Tier.LOW, 0, False, (), 0, 300, "test")
    check_quorum(_quorum(tier=Tier.LOW, required_approvals=0, poa_ttl_seconds=300), [], low)
