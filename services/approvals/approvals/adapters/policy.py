"""Ask OPA what a request needs (`data.atb.poa.requirements`)."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, ValidationError

from approvals.domain import Requirements
from atb_runtime import OpaClient, PolicyUnavailableError
from contracts import IssuanceRequested, Tier

__all__ = ["PolicyRequirements"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    tier: Tier
    approvals: int
    ticket_required: bool
    eligible_groups: tuple[str, ...]
    pending_seconds: int
    poa_ttl_seconds: int
    policy_version: str


class PolicyRequirements:
    """The policy's requirements per (action, tenant, target tenant), cached briefly.

    The answer depends on nothing else, so a short cache saves the OPA round trip
    for every request of a burst (the round trip dominated the approvals hot
    path in bench/e2e.py). A policy change takes effect within `cache_seconds`.
    """

    PATH = "atb/poa/requirements"

    def __init__(self, opa: OpaClient, cache_seconds: float = 1.0) -> None:
        self._opa = opa
        self._ttl = cache_seconds
        self._cache: dict[tuple[str, str, str | None], tuple[float, Requirements]] = {}

    async def for_request(self, request: IssuanceRequested) -> Requirements:
        key = (request.action, request.tenant, request.target_tenant)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        requirements = await self._ask(*key)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = (now, requirements)
        return requirements

    async def _ask(self, action: str, tenant: str, target_tenant: str | None) -> Requirements:
        result = await self._opa.evaluate(
            self.PATH, {"action": action, "tenant": tenant, "target_tenant": target_tenant}
        )
        try:
            answer = _Answer.model_validate(result)
        except ValidationError as exc:
            raise PolicyUnavailableError(f"policy answer malformed: {exc.error_count()} errors") from exc
        return Requirements(**answer.model_dump())
