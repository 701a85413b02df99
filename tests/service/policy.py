"""The policy for the service tier: OPA's two questions answered from `opa/policy/data.json`, in process.

`TableOpa` is an `OpaClient` whose `evaluate` answers `atb/poa/requirements`
and `atb/poa/decisions` without a server, so the services' own policy adapters
(`RequirementsClient`, `PolicyGate`) run unchanged over it and their parsing is
exercised. It reads the tier lists and per-tier requirements from the policy's
data file (the same numbers OPA serves), and applies the tier rules of
docs/architecture.md §2.5 (unlisted → high, another tenant → critical) and the
broker's evidence rules in their simplest form. It is a stand-in, not the
policy: `opa test opa/policy` and tests/e2e test the real one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from atb_runtime import OpaClient, PolicyUnavailableError

__all__ = ["DATA", "TableOpa"]

DATA = Path(__file__).resolve().parents[2] / "opa" / "policy" / "data.json"
_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class TableOpa(OpaClient):
    def __init__(self, data: Path = DATA) -> None:
        super().__init__("http://policy.invalid")  # never contacted: `evaluate` answers in process
        self._policy: dict[str, Any] = json.loads(data.read_text(encoding="utf-8"))["atb_policy"]
        self.version = str(self._policy["version"])
        self.down = False
        """True: every question fails as an unreachable OPA does."""
        self.asked: list[str] = []

    def tier_of(self, action: str, tenant: str, target: str | None, agent_tenants: list[str]) -> str:
        if tenant not in agent_tenants or (target is not None and target not in agent_tenants):
            return "critical"
        p = self._policy
        for tier, listed in (
            ("critical", p["critical_actions"]),
            ("high", p["high_risk_actions"]),
            ("medium", p["medium_risk_actions"]),
            ("low", p["low_risk_allowlist"]),
        ):
            if action in listed:
                return tier
        return "high"  # fail safe: an action on no list is high, never low

    async def evaluate(self, path: str, input_doc: dict[str, JsonValue]) -> JsonValue:
        self.asked.append(path)
        if self.down:
            raise PolicyUnavailableError("OPA unreachable (stand-in switched off)")
        if path == "atb/poa/requirements":
            return self._requirements(input_doc)
        if path == "atb/poa/decisions":
            batch = input_doc["batch"]
            assert isinstance(batch, list)
            return [self._decision(item) for item in batch]
        raise PolicyUnavailableError(f"no decision for {path} (undefined)")

    def _requirements(self, doc: dict[str, JsonValue]) -> JsonValue:
        tenants = doc["agent_tenants"]
        action, tenant, target = doc["action"], doc["tenant"], doc.get("target_tenant")
        assert isinstance(action, str)
        assert isinstance(tenant, str)
        assert isinstance(tenants, list)
        tier = self.tier_of(action, tenant, target if isinstance(target, str) else None, [str(t) for t in tenants])
        answer: dict[str, JsonValue] = {"tier": tier, "policy_version": self.version}
        answer.update(self._policy["tiers"][tier])
        reminders = self._policy.get("reminders", {})
        assert isinstance(reminders, dict)
        answer["reminders"] = reminders.get(tier, {})
        return answer

    def _decision(self, item: JsonValue) -> JsonValue:
        assert isinstance(item, dict)
        request, claims = item["request"], item["claims"]
        assert isinstance(request, dict)
        tenants = request["agent_tenants"]
        assert isinstance(tenants, list)
        target = request.get("target_tenant")
        tier = self.tier_of(
            str(request["action"]),
            str(request["tenant"]),
            target if isinstance(target, str) else None,
            [str(t) for t in tenants],
        )
        reasons: list[JsonValue] = []
        if claims is None:
            if not (item["allow_unmandated_low_risk"] and tier == "low"):
                reasons.append({"code": "poa_required", "detail": f"{tier} actions need a PoA"})
        else:
            assert isinstance(claims, dict)
            leg = claims["leg"]
            assert isinstance(leg, dict)
            if _RANK[str(claims["tier"])] < _RANK[tier]:
                reasons.append({"code": "tier_too_low", "detail": f"PoA tier {claims['tier']} < {tier}"})
            elif tier == "medium" and "approval" not in leg:
                reasons.append({"code": "approval_missing", "detail": "medium needs an approver"})
            elif tier in ("high", "critical"):
                dual = leg.get("dual_control")
                approvers = dual.get("approvers") if isinstance(dual, dict) else None
                if not isinstance(approvers, list) or len(approvers) < 2:
                    reasons.append({"code": "dual_control_missing", "detail": f"{tier} needs two approvers"})
        return {"allow": not reasons, "reasons": reasons, "tier": tier, "policy_version": self.version}
