"""Bodies of the AgentAuth gateway's HTTP API (`POST /issue`, `GET /requests/{id}`).

The requester is never in the body: it is the SPIFFE ID of the client
certificate the gateway authenticated (seed §2.1, "validate SPIFFE identity").
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.events import ActionName, JsonObject, RequestId, Tier
from contracts.leg import Leg

__all__ = ["MAX_BODY_BYTES", "HttpError", "IssueAccepted", "IssueRequest", "IssuedPoa", "RequestStatus"]

MAX_BODY_BYTES = 64 * 1024


class IssueRequest(BaseModel):
    """`POST /issue`: the exact action an agent asks a PoA for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: RequestId | None = None
    tenant: Annotated[str, Field(min_length=1, max_length=64)]
    target_tenant: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    action: ActionName
    resource: Annotated[str, Field(min_length=1, max_length=512)]
    params: JsonObject = Field(default_factory=dict)
    leg: Leg


class IssueAccepted(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    status: Literal["pending"] = "pending"
    agent_id: str


class IssuedPoa(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str
    jti: str
    expires_at: AwareDatetime


class RequestStatus(BaseModel):
    """`GET /requests/{id}`: where a request stands; the PoA once issued (to its agent only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    status: Literal["pending", "approval_required", "approved", "issued", "denied", "expired"]
    tier: Tier | None = None
    reason: str = ""
    poa: IssuedPoa | None = None


class HttpError(BaseModel):
    """Every 4xx/5xx body: a stable code, a message, and the offending field if any."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error: str
    message: str
    field: str | None = None
