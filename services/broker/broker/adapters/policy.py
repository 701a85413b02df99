"""Ask OPA, in one round trip per batch, whether each verified PoA may run its action.

`data.atb.poa.decisions` answers `input.batch` item by item (opa/policy/poa.rego).
The OPA client reuses one keep-alive connection pool; batching amortises the
HTTP and JSON cost over every presentation that arrived together. Anything but a
well-formed answer of the right length is `PolicyUnavailableError`: the caller
denies (fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import JsonValue

from atb_runtime.opa import OpaClient, PolicyUnavailableError
from broker.domain import Presentation
from contracts import PoaClaims, Tier

__all__ = ["PolicyDecision", "PolicyGate"]

_TIERS: dict[str, Tier] = {t.value: t for t in Tier}


@dataclass(frozen=True)
class PolicyDecision:
    allow: bool
    reasons: tuple[str, ...]
    tier: Tier
    policy_version: str


class PolicyGate:
    PATH = "atb/poa/decisions"

    def __init__(self, opa: OpaClient, *, allow_unmandated_low_risk: bool) -> None:
        self._opa = opa
        self._unmandated = allow_unmandated_low_risk

    def _item(self, presentation: Presentation, claims: PoaClaims | None) -> JsonValue:
        action = presentation.action
        request: dict[str, JsonValue] = {"action": action.action, "resource": action.resource, "tenant": action.tenant}
        if action.target_tenant is not None:
            request["target_tenant"] = action.target_tenant
        return {
            "request": request,
            "claims": None if claims is None else claims.model_dump(mode="json", by_alias=True),
            "agent_id": presentation.agent_id,
            "allow_unmandated_low_risk": self._unmandated,
        }

    async def decide(self, items: Sequence[tuple[Presentation, PoaClaims | None]]) -> list[PolicyDecision]:
        if not items:
            return []
        result = await self._opa.evaluate(self.PATH, {"batch": [self._item(p, c) for p, c in items]})
        if not isinstance(result, list) or len(result) != len(items):
            raise PolicyUnavailableError(f"OPA answered {self.PATH} with no decision per item")
        return [_parse(entry) for entry in result]


def _parse(entry: JsonValue) -> PolicyDecision:
    if not isinstance(entry, dict):
        raise PolicyUnavailableError("OPA decision is not an object")
    allow, reasons, tier, version = (entry.get(k) for k in ("allow", "reasons", "tier", "policy_version"))
    if not isinstance(allow, bool) or not isinstance(reasons, list) or not isinstance(version, str):
        raise PolicyUnavailableError("OPA decision lacks allow/reasons/policy_version")
    if not isinstance(tier, str) or tier not in _TIERS:
        raise PolicyUnavailableError(f"OPA decision has an unknown tier {tier!r}")
    return PolicyDecision(allow, tuple(str(r) for r in reasons), _TIERS[tier], version)
