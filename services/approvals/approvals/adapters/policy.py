"""Ask OPA what a request needs (`data.atb.poa.requirements`)."""

from __future__ import annotations

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
    PATH = "atb/poa/requirements"

    def __init__(self, opa: OpaClient) -> None:
        self._opa = opa

    async def for_request(self, request: IssuanceRequested) -> Requirements:
        result = await self._opa.evaluate(
            self.PATH,
            {"action": request.action, "tenant": request.tenant, "target_tenant": request.target_tenant},
        )
        try:
            answer = _Answer.model_validate(result)
        except ValidationError as exc:
            raise PolicyUnavailableError(f"policy answer malformed: {exc.error_count()} errors") from exc
        return Requirements(**answer.model_dump())
