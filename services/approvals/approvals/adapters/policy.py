"""The policy's requirements for a request (`contracts.requirements.Requirements`)."""

from __future__ import annotations

from atb_runtime import OpaClient
from atb_runtime.policy import RequirementsClient
from contracts import IssuanceRequested
from contracts.agents import AgentRegistry
from contracts.requirements import Requirements

__all__ = ["PolicyRequirements"]


class PolicyRequirements:
    def __init__(self, opa: OpaClient, cache_seconds: float = 1.0, *, agents: AgentRegistry) -> None:
        self._client = RequirementsClient(opa, cache_seconds, agents=agents)

    async def for_request(self, request: IssuanceRequested) -> Requirements:
        return await self._client.for_request(request)
