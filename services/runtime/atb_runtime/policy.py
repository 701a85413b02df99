"""Ask OPA what a request needs (`data.atb.poa.requirements`), with a short cache.

The answer depends only on (action, tenant, target tenant, the agent's registered
tenants, the request's parameters: a threshold on a parameter may raise the
tier, docs/quorum-and-risk.md), so a short cache saves the OPA round trip for every request of a burst
(the round trip dominated the approvals hot path in bench/e2e.py). A policy
change takes effect within `cache_seconds`. Approvals decides with it; the
issuer re-checks with it; both get `contracts.requirements.Requirements`, whose
constructor refuses an answer under a tier floor.

The agent's tenants come from the agent registry, never from the request
(docs/tenants.md): the policy finds a request cross-tenant, hence critical, when
its tenant or target tenant is not one of them.
"""

from __future__ import annotations

import time
from typing import Protocol

import orjson
from pydantic import JsonValue

from atb_runtime.opa import OpaClient, PolicyUnavailableError
from contracts import IssuanceRequested
from contracts.agents import AgentRegistry
from contracts.requirements import Requirements, RequirementsError

__all__ = ["RequirementsClient", "RequirementsSource"]


class RequirementsSource(Protocol):
    """The port of the services that ask what a request requires (approvals, issuer); `RequirementsClient`
    implements it over OPA. Raises `PolicyUnavailableError` when no answer can be had (fail closed)."""

    async def for_request(self, request: IssuanceRequested) -> Requirements: ...


class RequirementsClient:
    PATH = "atb/poa/requirements"

    def __init__(self, opa: OpaClient, cache_seconds: float = 1.0, *, agents: AgentRegistry) -> None:
        self._opa = opa
        self._ttl = cache_seconds
        self._agents = agents
        self._cache: dict[tuple[str, str, str | None, tuple[str, ...], bytes], tuple[float, Requirements]] = {}

    async def for_request(self, request: IssuanceRequested) -> Requirements:
        tenants = tuple(sorted(self._agents.tenants_of(request.agent_id)))
        # The parameters are part of the question: the policy may raise the tier on a threshold.
        params = orjson.dumps(request.params, option=orjson.OPT_SORT_KEYS)
        key = (request.action, request.tenant, request.target_tenant, tenants, params)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        policy_input: dict[str, JsonValue] = {
            "action": key[0],
            "tenant": key[1],
            "target_tenant": key[2],
            "agent_tenants": list(tenants),
            "params": request.params,
        }
        result = await self._opa.evaluate(self.PATH, policy_input)
        try:
            answer = Requirements.from_policy(result)
        except RequirementsError as exc:
            # A malformed answer, or one under a tier floor: nobody can decide with it (fail closed).
            raise PolicyUnavailableError(str(exc)) from exc
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = (now, answer)
        return answer
