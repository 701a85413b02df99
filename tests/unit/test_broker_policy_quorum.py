"""The broker's policy input for a quorum by groups and for risk from parameters, judged by the real policy.

`PolicyGate` sends the presented parameters and each dual-control approver's
principal, PoA type and directory groups; `opa eval` over opa/policy answers
(docs/quorum-and-risk.md §1.4, §2.3).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker.adapters.policy import PolicyGate, load_directory
from broker.domain import Presentation
from contracts import JsonObject, PoaClaims
from contracts.agents import AgentRegistry, RegisteredAgent
from tests.unit.test_broker_corpus import ACTION, AGENT, THUMB, claims
from tests.unit.test_broker_parts import _OpaEval

SMALL: JsonObject = {"amount_cents": 120_000, "currency": "EUR"}
LARGE: JsonObject = {"amount_cents": 1_000_000, "currency": "EUR"}


def _payment_claims(approvers: list[tuple[str, str]], tier: str = "high") -> PoaClaims:
    body = claims()
    leg = dict(body["leg"], accountable_party={"type": "employee", "id": "emp-300"})
    leg.pop("approval", None)
    leg["dual_control"] = {"required": True, "approvers": [{"id": i, "type": t} for i, t in approvers]}
    body.update(leg=leg, tier=tier)
    return PoaClaims.model_validate(body)


class _Recording(_OpaEval):
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def evaluate(self, path: str, input_doc: dict[str, Any]) -> Any:
        self.seen.append(input_doc)
        return await super().evaluate(path, input_doc)


def _decide(opa: _OpaEval, approvers: list[tuple[str, str]], params: JsonObject, tier: str = "high") -> list[str]:
    if not (_OpaEval.ROOT / ".cache" / "bin" / "opa").exists():
        pytest.fail("OPA is not built (.cache/bin/opa): run `atb dev up` (make test builds it)", pytrace=False)
    gate = PolicyGate(
        opa,  # type: ignore[arg-type]
        agents=AgentRegistry((RegisteredAgent(AGENT, frozenset({"acme"})),)),
        allow_unmandated_low_risk=False,
        cache_seconds=0,
        directory=load_directory(),
    )
    action = ACTION.model_copy(update={"action": "sap.payment.execute", "params": params})
    presentation = Presentation(action, AGENT, THUMB, "http:1", "http")
    (answer,) = asyncio.run(gate.decide([(presentation, _payment_claims(approvers, tier))]))
    assert answer.allow == (not answer.reasons)
    return [r.code.value for r in answer.reasons]


def test_the_input_carries_the_params_and_each_approvers_type_and_groups() -> None:
    opa = _Recording()
    assert _decide(opa, [("ALICE", "manager"), ("slack:UBOB0002", "compliance")], SMALL) == []
    item = opa.seen[0]["batch"][0]
    assert item["request"]["params"] == SMALL
    assert item["principals"]["dual_control"] == [
        {"principal": "alice", "type": "manager", "groups": ["manager"]},
        {"principal": "bob", "type": "compliance", "groups": ["compliance"]},
    ]


@pytest.mark.parametrize(
    ("approvers", "params", "tier", "codes"),
    [
        ([("alice", "manager"), ("bob", "compliance")], SMALL, "high", []),
        ([("alice", "manager"), ("dave", "manager")], SMALL, "high", ["composition_not_met"]),
        (
            [("alice", "manager"), ("spiffe://atb.local/user/dave", "compliance")],
            SMALL,
            "high",
            ["approver_group_mismatch"],
        ),
        ([("alice", "manager"), ("mallory", "compliance")], SMALL, "high", ["approver_group_mismatch"]),  # unknown
        # The amount makes it critical: a high PoA is too low (and carries no ticket).
        ([("alice", "manager"), ("bob", "compliance")], LARGE, "high", ["ticket_missing", "tier_too_low"]),
        (
            [("alice", "manager"), ("bob", "compliance")],
            {"currency": "EUR"},
            "high",
            ["ticket_missing", "tier_too_low"],
        ),
    ],
)
def test_the_real_policy_judges_the_composition_and_the_tier_from_params(
    approvers: list[tuple[str, str]], params: JsonObject, tier: str, codes: list[str]
) -> None:
    assert sorted(_decide(_OpaEval(), approvers, params, tier)) == codes
