"""Delegation: contracts.delegation's one rule, as approvals' tally and the issuer's re-check apply it.

A delegate votes in the delegator's place within the grant's window and tiers;
both must be eligible and neither the requester; one human fills one place; a
revoked delegation does not count from its revocation on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from approvals.domain.tally import Ballot, tally
from contracts import (
    AccountableParty,
    IssuanceRequested,
    LegitimateInterest,
    QuorumReached,
    ReasonCode,
    Tier,
    VoteCast,
    VoteChoice,
    encode_envelope,
    make_envelope,
)
from contracts.approval_events import DelegationGranted, DelegationRevoked, VoteOnBehalf
from contracts.delegation import Delegation, DelegationBook, OnBehalf, PersonCount, judge_on_behalf
from contracts.directory import Approver, Directory
from contracts.eligibility import ApproverRules, Count
from contracts.requirements import Requirements
from issuer.domain.evidence import VerifiedVote, check_quorum
from issuer.errors import QuorumEvidenceError

NOW = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
AGENT = "spiffe://atb.local/agent/crm-bot"
ACCOUNTABLE = "emp-100"
ALL = frozenset({Tier.MEDIUM, Tier.HIGH, Tier.CRITICAL})


def _approver(principal: str, group: str, tiers: frozenset[Tier] = ALL, *extra: str) -> Approver:
    ids = frozenset({f"spiffe://atb.local/user/{principal}", *extra})
    return Approver(principal, group, frozenset({group}), tiers, ids)


DIRECTORY = Directory(
    (
        _approver("alice", "manager"),
        _approver("bob", "compliance"),
        _approver("carol", "security"),
        _approver("dave", "manager", frozenset({Tier.MEDIUM})),  # may not approve high
        _approver("erin", "finance"),  # in no eligible group
        _approver("pat", "manager", ALL, ACCOUNTABLE),  # the accountable party
    )
)
HIGH = Requirements(Tier.HIGH, 2, False, ("manager", "compliance", "security"), 3600, 120, "test-1")
RULES = ApproverRules.of(Tier.HIGH, HIGH.eligible_groups, (AGENT, ACCOUNTABLE))


def uid(name: str) -> str:
    return f"spiffe://atb.local/user/{name}"


def grant(
    delegator: str = "alice",
    delegate: str = "carol",
    *,
    hours: float = 8,
    tiers: tuple[Tier, ...] = (),
    delegation_id: str = "dlg-1",
) -> DelegationGranted:
    return DelegationGranted(
        delegation_id=delegation_id,
        delegator=uid(delegator),
        delegate=uid(delegate),
        tiers=tiers,
        not_before=NOW - timedelta(hours=1),
        until=NOW + timedelta(hours=hours),
        granted_at=NOW - timedelta(hours=1),
    )


def judge(delegation: Delegation, delegate: str, delegator: str, at: datetime = NOW) -> object:
    return judge_on_behalf(
        RULES, delegation, delegate_id=uid(delegate), delegator_id=uid(delegator), directory=DIRECTORY, at=at
    )


# -- the rule --------------------------------------------------------------------------------


def test_a_delegate_votes_in_the_delegators_place_within_window_and_tiers() -> None:
    judged = judge(Delegation.of(grant()), "carol", "alice")
    assert isinstance(judged, OnBehalf)
    assert (judged.delegator.principal, judged.delegate.principal, judged.delegation_id) == ("alice", "carol", "dlg-1")


def test_a_vote_after_the_window_or_outside_its_tiers_is_refused() -> None:
    assert judge(Delegation.of(grant(hours=1)), "carol", "alice", NOW + timedelta(hours=2)) == (
        ReasonCode.DELEGATION_NOT_IN_FORCE
    )
    assert judge(Delegation.of(grant()), "carol", "alice", NOW - timedelta(hours=2)) == (
        ReasonCode.DELEGATION_NOT_IN_FORCE
    )
    assert judge(Delegation.of(grant(tiers=(Tier.MEDIUM,))), "carol", "alice") == ReasonCode.DELEGATION_NOT_IN_FORCE


@pytest.mark.parametrize(
    ("delegator", "delegate", "code"),
    [
        ("alice", "pat", ReasonCode.SELF_APPROVAL),  # the delegate is the accountable party: their own request
        ("pat", "carol", ReasonCode.SELF_APPROVAL),  # voting for the accountable party is voting for the requester
        ("alice", "dave", ReasonCode.TIER_NOT_ALLOWED),  # the delegate may not approve high
        ("alice", "erin", ReasonCode.NOT_ELIGIBLE),  # the delegate is in no eligible group
        ("dave", "carol", ReasonCode.TIER_NOT_ALLOWED),  # nor may the delegator
        ("alice", "alice", ReasonCode.DELEGATION_INVALID),
    ],
)
def test_both_must_be_eligible_and_neither_the_requester(delegator: str, delegate: str, code: ReasonCode) -> None:
    assert judge(Delegation.of(grant(delegator, delegate)), delegate, delegator) == code


def test_a_grant_for_someone_else_is_no_grant() -> None:
    assert judge(Delegation.of(grant("alice", "carol")), "bob", "alice") == ReasonCode.DELEGATION_INVALID
    assert judge(Delegation.of(grant("alice", "carol")), "carol", "bob") == ReasonCode.DELEGATION_INVALID


def test_one_human_fills_one_place() -> None:
    alice, bob, carol = (DIRECTORY.resolve(uid(n)) for n in ("alice", "bob", "carol"))
    assert alice is not None
    assert bob is not None
    assert carol is not None
    count: Count[str] = Count(2)
    people = PersonCount(count)
    people.add(alice, "alice-own", approves=True)
    people.add(alice, "carol-for-alice", approves=True, cast_by=carol)  # the same person again
    people.add(carol, "carol-own", approves=True)
    people.add(bob, "carol-for-bob", approves=True, cast_by=carol)  # carol already filled a place
    result = count.result()
    assert [c.ballot for c in result.counted] == ["alice-own", "carol-own"]
    assert [(r.ballot, r.reason) for r in result.refused] == [
        ("carol-for-alice", ReasonCode.DUPLICATE),
        ("carol-for-bob", ReasonCode.DUPLICATE),
    ]


def test_a_revocation_counts_from_its_time_on() -> None:
    book = DelegationBook()
    book.note(grant())
    alice = uid("alice")
    assert not book.revoked("dlg-1", NOW, alice)
    book.note(DelegationRevoked(delegation_id="dlg-1", delegator=alice, revoked_by=alice, revoked_at=NOW))
    assert not book.revoked("dlg-1", NOW - timedelta(seconds=1), alice)
    assert book.revoked("dlg-1", NOW, alice)
    assert not book.revoked("dlg-2", NOW, alice)


def test_a_revocation_by_someone_else_for_anothers_delegation_id_ends_nothing() -> None:
    """Mallory signs a revocation naming herself as delegator, for alice's delegation id: alice's stands."""
    book = DelegationBook()
    mallory = uid("mallory")
    book.note(DelegationRevoked(delegation_id="dlg-1", delegator=mallory, revoked_by=mallory, revoked_at=NOW))
    assert not book.revoked("dlg-1", NOW, uid("alice"))
    assert book.revoked("dlg-1", NOW, mallory)


# -- approvals' tally ------------------------------------------------------------------------


def _ballot(voter: str, vote_id: str, *, for_: str | None = None, g: DelegationGranted | None = None) -> Ballot:
    payload: VoteCast | VoteOnBehalf
    if for_ is None:
        payload = VoteCast(
            request_id="req-1",
            vote_id=vote_id,
            approver_id=uid(voter),
            choice=VoteChoice.APPROVE,
            request_digest=DIGEST,
            channel="cli",
            cast_at=NOW,
        )
    else:
        payload = VoteOnBehalf(
            request_id="req-1",
            vote_id=vote_id,
            approver_id=uid(voter),
            on_behalf_of=uid(for_),
            choice=VoteChoice.APPROVE,
            request_digest=DIGEST,
            channel="cli",
            cast_at=NOW,
            delegation_event=encode_envelope(make_envelope(g or grant(for_, voter), source=uid(for_))).decode(),
        )
    text = encode_envelope(make_envelope(payload, source=uid(voter))).decode()
    return Ballot(vote_id, uid(voter), VoteChoice.APPROVE, DIGEST, NOW, "cli", text)


def _tally(*ballots: Ballot) -> list[tuple[str, str]]:
    result = tally(
        ballots,
        requirements=HIGH,
        digest=DIGEST,
        requester_ids=(AGENT, ACCOUNTABLE),
        directory=DIRECTORY,
        deadline=NOW + timedelta(hours=1),
    )
    return [(c.principal, c.ballot.vote_id) for c in result.counted] + [
        (r.reason.value, r.ballot.vote_id) for r in result.refused
    ]


def test_tally_counts_a_delegates_vote_as_the_delegators() -> None:
    assert _tally(_ballot("carol", "v1", for_="alice"), _ballot("bob", "own-bob")) == [
        ("alice", "v1"),
        ("bob", "own-bob"),
    ]


def test_tally_delegate_and_delegator_both_voting_count_once() -> None:
    assert _tally(_ballot("alice", "own-alice"), _ballot("carol", "v1", for_="alice")) == [
        ("alice", "own-alice"),
        ("duplicate", "v1"),
    ]
    assert _tally(_ballot("carol", "v1", for_="alice"), _ballot("alice", "own-alice")) == [
        ("alice", "v1"),
        ("duplicate", "own-alice"),
    ]


def test_tally_refuses_a_delegate_approving_their_own_request() -> None:
    assert _tally(_ballot("pat", "v1", for_="alice")) == [("self_approval", "v1")]


def test_tally_refuses_a_vote_after_the_window() -> None:
    expired = grant("alice", "carol", hours=-0.5)
    assert _tally(_ballot("carol", "v1", for_="alice", g=expired)) == [("delegation_not_in_force", "v1")]


def test_tally_refuses_a_vote_whose_grant_is_for_another_delegate() -> None:
    assert _tally(_ballot("bob", "v1", for_="alice", g=grant("alice", "carol"))) == [("delegation_invalid", "v1")]


# -- the issuer's re-check ---------------------------------------------------------------------


def _verified(principal: str, *, cast_by: str | None = None, g: DelegationGranted | None = None) -> VerifiedVote:
    approver = DIRECTORY.resolve(uid(principal))
    assert approver is not None
    return VerifiedVote(
        approver=approver,
        approves=True,
        request_id="req-1",
        digest=DIGEST,
        vote_digest="sha256:" + "c" * 64,
        received_at=NOW,
        claimed_principal=principal,
        claimed_type=approver.type,
        claimed_vote_digest="sha256:" + "c" * 64,
        cast_by=DIRECTORY.resolve(uid(cast_by)) if cast_by else None,
        delegation=Delegation.of(g) if g else None,
    )


REQUEST = IssuanceRequested(
    request_id="req-1",
    agent_id=AGENT,
    tenant="acme",
    action="iam.role.assign",
    resource="iam:role/admin",
    leg=LegitimateInterest(
        ref="LI-1", jurisdiction="US", accountable_party=AccountableParty(type="employee", id=ACCOUNTABLE)
    ),
    requested_at=NOW - timedelta(minutes=5),
)


def test_issuer_refuses_on_behalf_evidence_without_a_grant_or_outside_it() -> None:
    quorum = QuorumReached(
        request_id="req-1",
        tier=Tier.HIGH,
        required_approvals=2,
        request_digest=DIGEST,
        poa_ttl_seconds=120,
        request=REQUEST,
        request_event="{}",
        decided_at=NOW + timedelta(seconds=1),
    )
    own = _verified("bob")
    check_quorum(quorum, [own, _verified("alice", cast_by="carol", g=grant())], HIGH)
    with pytest.raises(QuorumEvidenceError) as missing:
        check_quorum(quorum, [own, _verified("alice", cast_by="carol")], HIGH)
    assert missing.value.code is ReasonCode.DELEGATION_INVALID
    with pytest.raises(QuorumEvidenceError) as forged:
        check_quorum(quorum, [own, _verified("alice", cast_by="carol", g=grant("alice", "bob"))], HIGH)
    assert forged.value.code is ReasonCode.DELEGATION_INVALID
    with pytest.raises(QuorumEvidenceError) as late:
        check_quorum(quorum, [own, _verified("alice", cast_by="carol", g=grant(hours=-0.5))], HIGH)
    assert late.value.code is ReasonCode.DELEGATION_NOT_IN_FORCE
    with pytest.raises(QuorumEvidenceError) as twice:
        check_quorum(quorum, [_verified("carol"), _verified("alice", cast_by="carol", g=grant())], HIGH)
    assert twice.value.code is ReasonCode.DUPLICATE_APPROVER
