"""issuer.domain.claims: the re-check of a quorum's evidence (docs/architecture.md §6.1) and the PoA claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import (
    CountedVote,
    DigestFields,
    IssuanceRequested,
    PoaClaims,
    QuorumReached,
    Tier,
    request_digest,
    sha256_digest,
)
from issuer.domain.claims import MAX_TTL_SECONDS, QuorumEvidenceError, build_claims, check_evidence

NOW = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
EPOCH_NOW = int(NOW.timestamp())
AGENT = "spiffe://atb.example/agent/crm-bot"
PARTY = "emp-100"
ISSUER = "spiffe://atb.example/service/issuer"
AUDIENCE = "spiffe://atb.example/service/broker"
JTI = "0123456789abcdef0123456789abcdef"
THUMBPRINT = "x" * 43

LEG: dict[str, object] = {
    "basis": "CONTRACT",
    "ref": "MSA-12345",
    "description": "Fulfill customer order #789",
    "jurisdiction": "EU",
    "accountable_party": {"type": "employee", "id": PARTY},
}


def make_request(ticket: str | None = None, **leg_extra: Any) -> IssuanceRequested:
    leg = {**LEG, **leg_extra}
    if ticket is not None:
        leg["ticket_ref"] = ticket
    return IssuanceRequested.model_validate(
        {
            "request_id": "req-0001",
            "agent_id": AGENT,
            "tenant": "acme",
            "action": "sap.payment.execute",
            "resource": "sap:payment/9",
            "params": {"amount_cents": 125000, "currency": "EUR"},
            "leg": leg,
            "requested_at": NOW - timedelta(minutes=5),
        }
    )


def digest_of(request: IssuanceRequested) -> str:
    return request_digest(DigestFields.of_request(request))


def vote(approver: str, kind: str = "manager", minute: int = 1) -> CountedVote:
    return CountedVote(
        approver_id=approver,
        approver_type=kind,
        vote_digest=sha256_digest({"vote": approver}),
        cast_at=NOW - timedelta(minutes=minute),
        vote_event=f'{{"approver":"{approver}"}}',
    )


KINDS = ("manager", "compliance", "security")
FLOOR = {Tier.LOW: 0, Tier.MEDIUM: 1, Tier.HIGH: 2, Tier.CRITICAL: 2}
VOTES = {Tier.LOW: (), Tier.MEDIUM: ("manager-001",), Tier.HIGH: ("approver-a", "approver-b")}
VOTES[Tier.CRITICAL] = VOTES[Tier.HIGH]


def quorum(
    tier: Tier,
    *,
    approvers: tuple[str, ...] | None = None,
    required: int | None = None,
    request: IssuanceRequested | None = None,
    ttl: int = 300,
    **overrides: Any,
) -> QuorumReached:
    request = request or make_request("CHG-1234" if tier is Tier.CRITICAL else None)
    names = VOTES[tier] if approvers is None else approvers
    votes = tuple(vote(name, KINDS[i % len(KINDS)], i + 1) for i, name in enumerate(names))
    fields: dict[str, Any] = {
        "request_id": request.request_id,
        "tier": tier,
        "required_approvals": FLOOR[tier] if required is None else required,
        "request_digest": digest_of(request),
        "poa_ttl_seconds": ttl,
        "request": request,
        "request_event": "{}",
        "votes": votes,
        "decided_at": NOW,
    }
    return QuorumReached(**{**fields, **overrides})


OTHER_DIGEST = sha256_digest({"something": "else"})


@pytest.mark.parametrize(
    ("evidence", "code"),
    [
        pytest.param(lambda: quorum(Tier.LOW), None, id="low, no votes"),
        pytest.param(lambda: quorum(Tier.MEDIUM), None, id="medium, one vote"),
        pytest.param(lambda: quorum(Tier.HIGH), None, id="high, two votes"),
        pytest.param(lambda: quorum(Tier.HIGH, approvers=("a", "b", "c")), None, id="high, three votes"),
        pytest.param(lambda: quorum(Tier.CRITICAL), None, id="critical with ticket"),
        pytest.param(lambda: quorum(Tier.MEDIUM, required=2, approvers=("m1", "m2")), None, id="above the floor"),
        pytest.param(lambda: quorum(Tier.LOW, request_digest=OTHER_DIGEST), "digest_mismatch", id="digest low"),
        pytest.param(lambda: quorum(Tier.HIGH, request_digest=OTHER_DIGEST), "digest_mismatch", id="digest high"),
        pytest.param(
            lambda: quorum(Tier.MEDIUM, request_digest=digest_of(make_request())[:-1] + "f"),
            "digest_mismatch",
            id="digest one char off",
        ),
        pytest.param(lambda: quorum(Tier.LOW, request_id="req-0002"), "request_mismatch", id="request id low"),
        pytest.param(lambda: quorum(Tier.HIGH, request_id="req-0002"), "request_mismatch", id="request id high"),
        pytest.param(
            lambda: quorum(Tier.HIGH, approvers=("approver-a", "approver-a")), "duplicate_approver", id="duplicate"
        ),
        pytest.param(
            lambda: quorum(Tier.HIGH, approvers=("approver-a", "APPROVER-A")),
            "duplicate_approver",
            id="duplicate differing in case",
        ),
        pytest.param(
            lambda: quorum(Tier.HIGH, approvers=("Straße", "STRASSE")),
            "duplicate_approver",
            id="duplicate under casefold",
        ),
        pytest.param(
            lambda: quorum(Tier.HIGH, approvers=("a", "b", "A")), "duplicate_approver", id="duplicate among three"
        ),
        pytest.param(lambda: quorum(Tier.MEDIUM, approvers=()), "quorum_short", id="medium no vote"),
        pytest.param(lambda: quorum(Tier.HIGH, approvers=("approver-a",)), "quorum_short", id="high one vote"),
        pytest.param(lambda: quorum(Tier.CRITICAL, approvers=("approver-a",)), "quorum_short", id="critical one"),
        pytest.param(
            lambda: quorum(Tier.HIGH, required=3, approvers=("a", "b")), "quorum_short", id="short of a raised bar"
        ),
        pytest.param(lambda: quorum(Tier.MEDIUM, approvers=(AGENT,)), "self_approval", id="agent approves"),
        pytest.param(
            lambda: quorum(Tier.MEDIUM, approvers=(AGENT.upper(),)), "self_approval", id="agent approves, case"
        ),
        pytest.param(lambda: quorum(Tier.MEDIUM, approvers=(PARTY,)), "self_approval", id="party approves"),
        pytest.param(lambda: quorum(Tier.HIGH, approvers=("a", "EMP-100")), "self_approval", id="party, case"),
        pytest.param(lambda: quorum(Tier.HIGH, approvers=(AGENT, "b")), "self_approval", id="agent among two"),
        pytest.param(
            lambda: quorum(Tier.CRITICAL, request=make_request()), "ticket_missing", id="critical without ticket"
        ),
        pytest.param(
            lambda: quorum(Tier.CRITICAL, request=make_request("")), "ticket_missing", id="critical, empty ticket"
        ),
        pytest.param(lambda: quorum(Tier.MEDIUM, required=0, approvers=()), "too_few_required", id="medium 0"),
        pytest.param(lambda: quorum(Tier.HIGH, required=1, approvers=("a",)), "too_few_required", id="high 1"),
        pytest.param(lambda: quorum(Tier.HIGH, required=0, approvers=()), "too_few_required", id="high 0"),
        pytest.param(lambda: quorum(Tier.CRITICAL, required=1, approvers=("a",)), "too_few_required", id="crit 1"),
    ],
)
def test_check_evidence(evidence: Any, code: str | None) -> None:
    built = evidence()
    assert isinstance(built, QuorumReached)
    if code is None:
        check_evidence(built)
        return
    with pytest.raises(QuorumEvidenceError) as info:
        check_evidence(built)
    assert info.value.code == code
    assert info.value.reason
    assert str(info.value).startswith(f"{code}: ")


def test_tampered_params_after_digest_are_caught() -> None:
    honest = quorum(Tier.MEDIUM)
    tampered_request = honest.request.model_copy(update={"params": {"amount_cents": 999999, "currency": "EUR"}})
    with pytest.raises(QuorumEvidenceError) as info:
        check_evidence(honest.model_copy(update={"request": tampered_request}))
    assert info.value.code == "digest_mismatch"


@pytest.mark.parametrize(
    ("ttl", "lifetime"), [(1, 1), (60, 60), (299, 299), (300, 300), (301, 300), (3600, MAX_TTL_SECONDS)]
)
def test_exp_is_iat_plus_ttl_capped_at_five_minutes(ttl: int, lifetime: int) -> None:
    claims = build(quorum(Tier.MEDIUM, ttl=ttl))
    assert claims.iat == claims.nbf == EPOCH_NOW
    assert claims.exp == EPOCH_NOW + lifetime


def build(evidence: QuorumReached, cnf: str | None = None) -> PoaClaims:
    check_evidence(evidence)
    return build_claims(evidence, issuer=ISSUER, audience=AUDIENCE, now=EPOCH_NOW, jti=JTI, cnf_thumbprint=cnf)


@pytest.mark.parametrize("tier", list(Tier))
def test_claims_bind_the_request(tier: Tier) -> None:
    evidence = quorum(tier)
    claims = build(evidence)
    request = evidence.request
    assert (claims.iss, claims.sub, claims.aud, claims.jti) == (ISSUER, AGENT, AUDIENCE, JTI)
    assert (claims.act, claims.res) == (request.action, request.resource)
    assert claims.req_digest == digest_of(request)
    assert claims.req_id == request.request_id
    assert claims.tier is tier
    assert claims.leg.basis == "CONTRACT"
    assert claims.leg.ref == "MSA-12345"
    assert claims.leg.jurisdiction == "EU"
    assert claims.leg.accountable_party.id == PARTY
    assert claims.ver == 1


def test_medium_gets_leg_approval() -> None:
    evidence = quorum(Tier.MEDIUM)
    leg = build(evidence).leg
    assert leg.approval is not None
    assert leg.approval.approver_id == "manager-001"
    assert leg.approval.approved_at == evidence.votes[0].cast_at
    assert leg.dual_control is None


@pytest.mark.parametrize("tier", [Tier.HIGH, Tier.CRITICAL])
def test_high_and_critical_get_dual_control(tier: Tier) -> None:
    evidence = quorum(tier)
    leg = build(evidence).leg
    assert leg.dual_control is not None
    assert leg.dual_control.required is True
    assert [(a.id, a.type, a.vote_digest) for a in leg.dual_control.approvers] == [
        (v.approver_id, v.approver_type, v.vote_digest) for v in evidence.votes
    ]
    assert len({a.id for a in leg.dual_control.approvers}) >= 2
    assert leg.approval is None


def test_critical_keeps_its_ticket() -> None:
    assert build(quorum(Tier.CRITICAL)).leg.ticket_ref == "CHG-1234"


def test_low_gets_neither() -> None:
    leg = build(quorum(Tier.LOW)).leg
    assert leg.approval is None
    assert leg.dual_control is None


FORGED_APPROVAL = {"approver_id": "manager-001", "approved_at": "2024-01-15T09:00:00Z"}
FORGED_DUAL = {"required": True, "approvers": [{"id": "ceo", "type": "manager"}, {"id": "cfo", "type": "manager"}]}


@pytest.mark.parametrize(
    ("tier", "forged"),
    [
        pytest.param(Tier.LOW, {"approval": FORGED_APPROVAL}, id="low keeps a forged approval"),
        pytest.param(Tier.LOW, {"dual_control": FORGED_DUAL}, id="low keeps a forged dual control"),
        pytest.param(Tier.MEDIUM, {"dual_control": FORGED_DUAL}, id="medium keeps a forged dual control"),
        pytest.param(Tier.HIGH, {"approval": FORGED_APPROVAL}, id="high keeps a forged approval"),
    ],
)
def test_agent_supplied_approval_evidence_never_reaches_the_poa(tier: Tier, forged: dict[str, object]) -> None:
    ticket = "CHG-1234" if tier is Tier.CRITICAL else None
    evidence = quorum(tier, request=make_request(ticket, **forged))
    leg = build(evidence).leg
    expected_approval = evidence.votes[0].approver_id if tier is Tier.MEDIUM else None
    assert (leg.approval.approver_id if leg.approval else None) == expected_approval
    if tier in (Tier.HIGH, Tier.CRITICAL):
        assert leg.dual_control is not None
        assert [a.id for a in leg.dual_control.approvers] == [v.approver_id for v in evidence.votes]
    else:
        assert leg.dual_control is None


@pytest.mark.parametrize(
    ("thumbprint", "expected"),
    [(THUMBPRINT, THUMBPRINT), ("A-_" + "b" * 40, "A-_" + "b" * 40), (None, None), ("", None)],
)
def test_cnf_only_with_a_thumbprint(thumbprint: str | None, expected: str | None) -> None:
    claims = build(quorum(Tier.MEDIUM), cnf=thumbprint)
    if expected is None:
        assert claims.cnf is None
        assert "cnf" not in claims.model_dump(mode="json", exclude_none=True, by_alias=True)
    else:
        assert claims.cnf is not None
        assert claims.cnf.x5t_s256 == expected
        assert claims.model_dump(mode="json", exclude_none=True, by_alias=True)["cnf"] == {"x5t#S256": expected}


def test_build_claims_does_not_change_the_quorum() -> None:
    evidence = quorum(Tier.HIGH)
    before = evidence.model_dump()
    build(evidence)
    assert evidence.model_dump() == before
    assert evidence.request.leg.dual_control is None
