"""Bodies of the HTTP APIs: the gateway's `POST /issue`, `GET /requests/{id}`, the broker's `POST /v1/authorize`.

The requester is never in the body: it is the SPIFFE ID of the client
certificate the gateway authenticated (docs/architecture.md §2.2: the SPIFFE identity is validated over mTLS).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.events import ActionName, CallbackUrl, Decision, JsonObject, RequestId, Tier
from contracts.leg import Leg
from contracts.limits import HTTP_MAX_BODY_BYTES
from contracts.reasons import Reason, ReasonCode

__all__ = [
    "MAX_BODY_BYTES",
    "AuthorizeRequest",
    "AuthorizeResponse",
    "ConnectorResult",
    "HttpError",
    "IssueAccepted",
    "IssueRequest",
    "IssuedPoa",
    "RequestStatus",
]

MAX_BODY_BYTES = HTTP_MAX_BODY_BYTES
"""Request bodies of the gateway and the broker (413 above): see contracts/limits.py."""


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
    callback_url: CallbackUrl | None = None
    """Optional: an HTTPS URL the issuer POSTs the outcome to (PoA issued, denied, expired), signed with
    the issuer's key (header `ATB-Signature`); only to a host on the operator's allowlist."""


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


class AuthorizeRequest(BaseModel):
    """`POST /v1/authorize`: run one action with a PoA. The agent is the client certificate's SPIFFE ID."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: RequestId
    action_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    tenant: Annotated[str, Field(min_length=1, max_length=64)]
    target_tenant: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    action: ActionName
    resource: Annotated[str, Field(min_length=1, max_length=512)]
    params: JsonObject = Field(default_factory=dict)
    poa: Annotated[str, Field(max_length=16 * 1024)] | None = None
    connector: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """Optional: the connector the agent expects; must be the one the registry assigns."""
    execute: bool = True
    """Call the connector on allow (when it has an endpoint); False only asks for the decision."""


class ConnectorResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    connector: str
    status: int
    body: JsonObject = Field(default_factory=dict)


class AuthorizeResponse(BaseModel):
    """The decision (also published as BrokerDecision) and, on allow, what the connector returned.

    Each reason is `{"code", "detail"}` (`contracts.reasons.Reason`): compare the code.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    action_id: str
    decision: Decision
    reasons: tuple[Reason, ...]
    policy_version: str
    jti: str | None = None
    tier: Tier | None = None
    result: ConnectorResult | None = None

    @property
    def codes(self) -> tuple[ReasonCode, ...]:
        return tuple(r.code for r in self.reasons)
