"""Ask OPA what a request needs (`data.atb.poa.requirements`), with a short cache.

The answer depends only on (action, tenant, target tenant, the agent's registered
tenants), so a short cache saves the OPA round trip for every request of a burst
(the round trip dominated the approvals hot path in bench/e2e.py). A policy
change takes effect within `cache_seconds`. Approvals decides with it; the
issuer re-checks with it.

The agent's tenants come from the agent registry, never from the request
(docs/tenants.md): the policy finds a request cross-tenant, hence critical, when
its tenant or target tenant is not one of them.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from atb_runtime.opa import OpaClient, PolicyUnavailableError
from contracts import IssuanceRequested, Tier
from contracts.agents import AgentRegistry

__all__ = ["PolicyAnswer", "RequirementsClient"]


class PolicyAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    tier: Tier
    approvals: int
    ticket_required: bool
    eligible_groups: tuple[str, ...]
    pending_seconds: int
    poa_ttl_seconds: int
    policy_version: str


class RequirementsClient:
    PATH = "atb/poa/requirements"

    def __init__(self, opa: OpaClient, cache_seconds: float = 1.0, *, agents: AgentRegistry) -> None:
        self._opa = opa
        self._ttl = cache_seconds
        self._agents = agents
        self._cache: dict[tuple[str, str, str | None, tuple[str, ...]], tuple[float, PolicyAnswer]] = {}

    async def for_request(self, request: IssuanceRequested) -> PolicyAnswer:
        tenants = tuple(sorted(self._agents.tenants_of(request.agent_id)))
        key = (request.action, request.tenant, request.target_tenant, tenants)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        policy_input: dict[str, JsonValue] = {
            "action": key[0],
            "tenant": key[1],
            "target_tenant": key[2],
            "agent_tenants": list(tenants),
        }
        result = await self._opa.evaluate(self.PATH, policy_input)
        try:
            answer = PolicyAnswer.model_validate(result)
        except ValidationError as exc:
            raise PolicyUnavailableError(f"policy answer malformed: {exc.error_count()} errors") from exc
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = (now, answer)
        return answer
