"""broker.domain.decision: the pure rules whose verdicts the broker hands out.

`check_bindings` is what the broker calls for every presentation whose PoA verified
(`Authorizer` in broker/service.py); an empty answer lets the presentation go on to
revocation, policy and the spent store. `policy_verdict` is what it calls with the
policy's answer for each presentation it asked about. Reasons are data: the tests
compare codes, never text.
"""

from __future__ import annotations

import pytest

from broker.domain.decision import (
    ALLOWED,
    PolicyDecision,
    Presentation,
    Verdict,
    check_bindings,
    policy_verdict,
)
from contracts import ActionRequested, Decision, DigestFields, LegitimateInterest, PoaClaims, Tier, request_digest
from contracts.reasons import Reason, ReasonCode

AGENT = "spiffe://atb.example/agent/crm-bot"
THUMB = "T" * 43
OTHER_AGENT = "spiffe://atb.example/agent/other-bot"

ACTION: dict[str, object] = {
    "request_id": "req-0001",
    "action_id": "act-1",
    "agent_id": AGENT,
    "tenant": "acme",
    "action": "crm.contact.update",
    "resource": "crm:contact/42",
    "params": {"email": "new@example.com", "fields": ["email"], "n": 3},
    "poa": "a.b.c",
    "requested_at": "2024-01-15T10:00:00Z",
}

LEG = LegitimateInterest.model_validate(
    {"ref": "LI-2024-001", "jurisdiction": "US", "accountable_party": {"type": "employee", "id": "emp-100"}}
)
"""The leg as the request named it; the PoA's adds the approval evidence, which the digest leaves out."""

CLAIMS = PoaClaims.model_validate(
    {
        "iss": "spiffe://atb.example/service/issuer",
        "sub": AGENT,
        "aud": "spiffe://atb.example/service/broker",
        "iat": 1705312800,
        "nbf": 1705312800,
        "exp": 1705313100,
        "jti": "0123456789abcdef",
        "act": "crm.contact.update",
        "res": "crm:contact/42",
        "req_digest": request_digest(
            DigestFields(
                request_id="req-0001",
                agent_id=AGENT,
                tenant="acme",
                target_tenant=None,
                action="crm.contact.update",
                resource="crm:contact/42",
                params={"email": "new@example.com", "fields": ["email"], "n": 3},
                leg=LEG,
                cnf=THUMB,
            )
        ),
        "req_id": "req-0001",
        "tier": "medium",
        "leg": {
            "basis": "LI",
            "ref": "LI-2024-001",
            "jurisdiction": "US",
            "accountable_party": {"type": "employee", "id": "emp-100"},
            "approval": {"approver_id": "manager-001", "approved_at": "2024-01-15T09:59:00Z"},
        },
        "cnf": {"x5t#S256": THUMB},
    }
)


def action(**changes: object) -> ActionRequested:
    return ActionRequested.model_validate({**ACTION, **changes})


def present(asked: ActionRequested, *, agent: str | None = None, thumb: str | None = THUMB) -> Presentation:
    """A presentation by the agent the action names (unless `agent` says who really proved itself)."""
    return Presentation(asked, agent or asked.agent_id, thumb, "http:1", "http")


def prefixes(reasons: tuple[Reason, ...]) -> tuple[str, ...]:
    return tuple(reason.code.value for reason in reasons)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, (), id="exact match"),
        pytest.param({"target_tenant": "acme"}, (), id="same tenant spelled out"),
        pytest.param(
            {"params": {"n": 3, "fields": ["email"], "email": "new@example.com"}},
            (),
            id="params in another key order",
        ),
        pytest.param(
            {"action_id": "act-9", "poa": None, "requested_at": "2024-01-15T10:01:00Z"},
            (),
            id="fields outside the binding",
        ),
        pytest.param({"agent_id": OTHER_AGENT}, ("sub_mismatch", "digest_mismatch"), id="another agent"),
        pytest.param({"agent_id": AGENT + "/x"}, ("sub_mismatch", "digest_mismatch"), id="agent id extended"),
        pytest.param({"action": "crm.contact.delete"}, ("action_mismatch", "digest_mismatch"), id="another action"),
        pytest.param({"resource": "crm:contact/43"}, ("resource_mismatch", "digest_mismatch"), id="another resource"),
        pytest.param(
            {"params": {"email": "evil@example.com", "fields": ["email"], "n": 3}},
            ("digest_mismatch",),
            id="changed param",
        ),
        pytest.param(
            {"params": {"email": "new@example.com", "fields": ["email"]}}, ("digest_mismatch",), id="dropped param"
        ),
        pytest.param(
            {"params": {"email": "new@example.com", "fields": ["email"], "n": 3, "x": None}},
            ("digest_mismatch",),
            id="added param",
        ),
        pytest.param(
            {"params": {"email": "new@example.com", "fields": ["email"], "n": "3"}},
            ("digest_mismatch",),
            id="param type",
        ),
        pytest.param(
            {"params": {"email": "new@example.com", "fields": ["email", "phone"], "n": 3}},
            ("digest_mismatch",),
            id="nested param",
        ),
        pytest.param({"tenant": "globex"}, ("digest_mismatch",), id="another tenant"),
        pytest.param({"target_tenant": "globex"}, ("digest_mismatch",), id="cross-tenant target"),
        pytest.param(
            {"agent_id": OTHER_AGENT, "params": {}}, ("sub_mismatch", "digest_mismatch"), id="agent and params"
        ),
        pytest.param(
            {"agent_id": OTHER_AGENT, "action": "crm.contact.delete", "resource": "crm:contact/1", "tenant": "g"},
            ("sub_mismatch", "action_mismatch", "resource_mismatch", "digest_mismatch"),
            id="everything",
        ),
    ],
)
def test_check_bindings(changes: dict[str, object], expected: tuple[str, ...]) -> None:
    reasons = check_bindings(present(action(**changes)), CLAIMS)
    assert prefixes(reasons) == expected
    assert all(isinstance(reason.code, ReasonCode) and reason.detail for reason in reasons)


@pytest.mark.parametrize(
    ("claim", "value", "expected"),
    [
        ("sub", OTHER_AGENT, ("sub_mismatch",)),
        ("act", "crm.contact.delete", ("action_mismatch",)),
        ("res", "crm:contact/1", ("resource_mismatch",)),
        ("req_digest", "sha256:" + "0" * 64, ("digest_mismatch",)),
    ],
)
def test_each_claim_binding_is_checked(claim: str, value: str, expected: tuple[str, ...]) -> None:
    assert prefixes(check_bindings(present(action()), CLAIMS.model_copy(update={claim: value}))) == expected


def test_verdict_is_frozen() -> None:
    verdict = Verdict(Decision.ALLOW, (Reason(ReasonCode.POA_VALID),))
    with pytest.raises(AttributeError):
        verdict.decision = Decision.DENY  # type: ignore[misc]


def test_poa_of_another_request_is_denied() -> None:
    reasons = check_bindings(present(action(request_id="req-0002")), CLAIMS)
    assert prefixes(reasons) == ("request_mismatch", "digest_mismatch")


@pytest.mark.parametrize(
    ("thumb", "cnf", "expected"),
    [
        pytest.param(THUMB, {"x5t#S256": THUMB}, (), id="same certificate"),
        pytest.param("U" * 43, {"x5t#S256": THUMB}, ("cnf_mismatch",), id="another certificate"),
        pytest.param(None, {"x5t#S256": THUMB}, ("cnf_unproven",), id="no certificate presented"),
        pytest.param(THUMB, None, ("cnf_missing", "digest_mismatch"), id="PoA without cnf"),
    ],
)
def test_the_poa_is_bound_to_the_presented_certificate(
    thumb: str | None, cnf: dict[str, str] | None, expected: tuple[str, ...]
) -> None:
    claims = PoaClaims.model_validate({**CLAIMS.model_dump(by_alias=True), "cnf": cnf})
    assert prefixes(check_bindings(present(action(), thumb=thumb), claims)) == expected


def test_the_proven_agent_counts_not_the_named_one() -> None:
    """An action that names the PoA's agent but was proven by another is denied twice over."""
    assert prefixes(check_bindings(present(action(), agent=OTHER_AGENT), CLAIMS)) == ("sub_mismatch", "agent_mismatch")


TOO_LOW = Reason(ReasonCode.TIER_TOO_LOW, "PoA was issued for medium, the action is high")


@pytest.mark.parametrize("with_poa", [True, False])
def test_a_policy_deny_is_final_with_the_policys_reasons(with_poa: bool) -> None:
    answer = PolicyDecision(False, (TOO_LOW, Reason(ReasonCode.TICKET_MISSING, "x")), Tier.HIGH, "v7")
    verdict = policy_verdict(answer, with_poa=with_poa)
    assert verdict is not None
    assert verdict.decision is Decision.DENY
    assert verdict.codes == (ReasonCode.TIER_TOO_LOW, ReasonCode.TICKET_MISSING)
    assert verdict.reasons[0] == TOO_LOW


def test_a_policy_allow_with_a_poa_waits_for_the_spent_store() -> None:
    assert policy_verdict(PolicyDecision(True, (), Tier.MEDIUM, "v7"), with_poa=True) is None


def test_a_policy_allow_without_a_poa_is_the_unmandated_low_risk_path() -> None:
    verdict = policy_verdict(PolicyDecision(True, (), Tier.LOW, "v7"), with_poa=False)
    assert verdict is not None
    assert verdict.allowed
    assert verdict.codes == (ReasonCode.UNMANDATED_LOW_RISK,)


def test_a_spent_poa_is_allowed_as_poa_valid() -> None:
    assert ALLOWED.allowed
    assert ALLOWED.codes == (ReasonCode.POA_VALID,)
