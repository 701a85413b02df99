"""The v2 request digest covers who asks and on whose behalf; v1 binds only inside its window.

Issue 21: the v1 digest (action, resource, params, tenants) let a vote for one
request fit another that differs only in `agent_id` or `leg`. v2 covers them; a
v1 digest is accepted only for a request asked before the cut-over, and only
until the cut-over plus the grace (`contracts.poa.V1Window`), so a new request
cannot be downgraded to v1.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import contracts.poa
from approvals.domain.tally import Ballot, tally
from contracts import DigestFields, IssuanceRequested, Tier, V1Window, VoteChoice, digest_binds, digest_of
from contracts import request_digest as compute
from contracts.directory import Approver, Directory
from contracts.requirements import Requirements
from issuer.domain.claims import check_evidence
from issuer.errors import QuorumEvidenceError
from tests.unit import test_issuer_claims as issuer_case

CUTOVER = datetime(2024, 1, 15, 9, 57, tzinfo=UTC)
"""Between the pre-upgrade request (asked at 09:55) and the new one (asked at 09:58)."""
WINDOW = V1Window(CUTOVER, timedelta(hours=1))
OTHER_AGENT = "spiffe://atb.example/agent/other-bot"


def v1(request: IssuanceRequested) -> str:
    return compute(DigestFields.of_request(request), 1)


def variant(request: IssuanceRequested, **changes: Any) -> IssuanceRequested:
    return IssuanceRequested.model_validate({**request.model_dump(mode="json"), **changes})


def other_party(request: IssuanceRequested) -> IssuanceRequested:
    leg = request.leg.model_dump(mode="json") | {"accountable_party": {"type": "employee", "id": "emp-999"}}
    return variant(request, leg=leg)


BASE = issuer_case.make_request()
TWINS = {
    "agent_id": variant(BASE, agent_id=OTHER_AGENT),
    "accountable_party": other_party(BASE),
}


@pytest.fixture(autouse=True)
def _window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contracts.poa, "DIGEST_V1_WINDOW", WINDOW)


def test_v1_could_not_tell_the_twins_apart() -> None:
    for twin in TWINS.values():
        assert v1(twin) == v1(BASE)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_a_vote_for_a_does_not_count_for_b(name: str) -> None:
    twin = TWINS[name]
    assert digest_of(twin) != digest_of(BASE)
    assert not digest_binds(twin, digest_of(BASE), at=None)
    directory = Directory(
        (Approver("alice", "manager", frozenset({"manager"}), frozenset({Tier.MEDIUM}), frozenset({"alice"})),)
    )
    ballot = Ballot("v-1", "alice", VoteChoice.APPROVE, digest_of(BASE), issuer_case.NOW, "cli", "{}")
    result = tally(
        (ballot,),
        requirements=Requirements(Tier.MEDIUM, 1, False, ("manager",), 3600, 300, "t"),
        digest=digest_of(twin),
        requester_ids=(twin.agent_id, twin.leg.accountable_party.id),
        directory=directory,
        deadline=issuer_case.NOW + timedelta(hours=1),
    )
    assert not result.verified
    assert [r.reason for r in result.refused] == ["digest_mismatch"]


@pytest.mark.parametrize("name", sorted(TWINS))
def test_the_issuer_refuses_a_quorum_forged_from_the_twins_votes(name: str) -> None:
    """A compromised approvals service embeds B but reuses the digest (and votes) of A."""
    forged = issuer_case.quorum(Tier.HIGH, request=TWINS[name], request_digest=digest_of(BASE))
    with pytest.raises(QuorumEvidenceError) as refused:
        check_evidence(forged)
    assert refused.value.code == "digest_mismatch"


def test_a_v1_vote_for_a_pre_upgrade_request_still_counts() -> None:
    before = variant(BASE, requested_at="2024-01-15T09:55:00Z")
    assert digest_binds(before, v1(before), at=issuer_case.NOW)
    check_evidence(issuer_case.quorum(Tier.HIGH, request=before, request_digest=v1(before)))


def test_a_v1_digest_for_a_new_request_is_refused() -> None:
    new = variant(BASE, requested_at="2024-01-15T09:58:00Z")
    assert not digest_binds(new, v1(new), at=issuer_case.NOW)
    assert digest_binds(new, digest_of(new), at=issuer_case.NOW)
    with pytest.raises(QuorumEvidenceError) as refused:
        check_evidence(issuer_case.quorum(Tier.HIGH, request=new, request_digest=v1(new)))
    assert refused.value.code == "digest_mismatch"


def test_a_backdated_request_cannot_downgrade_once_the_window_closed() -> None:
    backdated = variant(BASE, requested_at="2020-01-01T00:00:00Z")
    late = CUTOVER + WINDOW.grace
    assert digest_binds(backdated, v1(backdated), at=late - timedelta(seconds=1))
    assert not digest_binds(backdated, v1(backdated), at=late)


@pytest.mark.parametrize("digest", ["", "sha256v3:" + "0" * 64, "md5:" + "0" * 32, "SHA256V2:" + "0" * 64])
def test_an_unknown_version_never_binds(digest: str) -> None:
    assert not digest_binds(BASE, digest, at=None)


def test_the_window_comes_from_the_environment() -> None:
    window = V1Window.from_env(
        {"ATB_DIGEST_V1_CUTOVER": "2027-01-01T00:00:00+00:00", "ATB_DIGEST_V1_GRACE_SECONDS": "60"}
    )
    assert window == V1Window(datetime(2027, 1, 1, tzinfo=UTC), timedelta(seconds=60))
    with pytest.raises(ValueError, match="UTC offset"):
        V1Window.from_env({"ATB_DIGEST_V1_CUTOVER": "2027-01-01T00:00:00"})
