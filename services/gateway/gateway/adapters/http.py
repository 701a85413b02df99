"""The gateway's HTTPS API: `POST /issue`, `GET /requests/{id}`, `/healthz`, `/metrics`.

Every identity refusal and every malformed body gets a JSON `HttpError` naming
what is wrong, and identity refusals are audited (docs/architecture.md §2.2, §6.5).
A request for a tenant the agent is not registered for is refused with 403
`tenant_not_allowed` and audited as `request_tenant_refused` (docs/tenants.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal, Protocol

from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import BaseModel, ConfigDict, JsonValue

from atb_identity import SpiffeId, TrustBundle, cert_thumbprint
from atb_runtime.http import Refusal, agent_of, error_response, read_body
from contracts import IssuanceRequested, JsonObject
from contracts.agents import AgentRegistry
from contracts.http import MAX_BODY_BYTES, IssueAccepted, IssueRequest
from gateway.domain import Views, visible_to

__all__ = ["GatewayApp", "Liveness", "build_app"]

log = logging.getLogger(__name__)

REQUESTS = Counter("atb_gateway_requests_total", "Gateway HTTP requests by endpoint and result", ["endpoint", "result"])
IDENTITY_REFUSALS = Counter("atb_gateway_identity_refusals_total", "Refused client identities by rule", ["rule"])


class Liveness(BaseModel):
    """`GET /healthz` on the gateway's HTTPS port: the server answers (readiness is on the ops port)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["ok"] = "ok"


Submit = Callable[[IssuanceRequested], Awaitable[None]]


class Audit(Protocol):
    """Publish an audit event (type, reason, details), keyed by a request id when there is one."""

    def __call__(
        self, audit_type: str, reason: str, details: JsonObject, request_id: str | None = None
    ) -> Awaitable[None]: ...


class GatewayApp:
    def __init__(
        self, *, bundle: TrustBundle, views: Views, submit: Submit, audit: Audit, agents: AgentRegistry
    ) -> None:
        self._bundle = bundle
        self._agents = agents
        self._views = views
        self._submit = submit
        self._audit = audit

    async def _identify(self, request: web.Request, endpoint: str) -> tuple[SpiffeId, x509.Certificate] | web.Response:
        who = agent_of(request, self._bundle)
        if isinstance(who, Refusal):
            presented = list(who.presented) if who.presented is not None else None
            await self._refused(endpoint, who.rule, who.reason, presented)
            return who.response()
        return who

    async def _refused(self, endpoint: str, rule: str, reason: str, presented: list[str] | None) -> None:
        json_presented: list[JsonValue] | None = list(presented) if presented is not None else None
        IDENTITY_REFUSALS.labels(rule).inc()
        REQUESTS.labels(endpoint, "identity_refused").inc()
        await self._audit(
            "identity_rejected", reason, {"rule": rule, "presented": json_presented, "endpoint": endpoint}
        )

    async def issue(self, request: web.Request) -> web.Response:
        who = await self._identify(request, "issue")
        if isinstance(who, web.Response):
            return who
        spiffe_id, cert = who
        parsed = await read_body(request, IssueRequest, canonical=True)
        if isinstance(parsed, web.Response):
            REQUESTS.labels("issue", "bad_body").inc()
            return parsed
        refusal = self._agents.refusal(str(spiffe_id), parsed.tenant)
        if refusal is not None:
            # The tenant is the registry's word for this certificate, never the body's.
            REQUESTS.labels("issue", "tenant_not_allowed").inc()
            await self._audit(
                "request_tenant_refused",
                refusal,
                {
                    "code": "tenant_not_allowed",
                    "presented": [str(spiffe_id)],
                    "tenant": parsed.tenant,
                    "target_tenant": parsed.target_tenant,
                    "registered": list[JsonValue](sorted(self._agents.tenants_of(str(spiffe_id)))),
                    "action": parsed.action,
                },
                parsed.request_id,
            )
            return error_response(403, "tenant_not_allowed", refusal.removeprefix("tenant_not_allowed: "), "tenant")
        issuance = IssuanceRequested(
            request_id=parsed.request_id or f"req-{uuid.uuid4().hex}",
            agent_id=str(spiffe_id),
            tenant=parsed.tenant,
            target_tenant=parsed.target_tenant,
            action=parsed.action,
            resource=parsed.resource,
            params=parsed.params,
            leg=parsed.leg,
            requested_at=datetime.now(UTC),
            agent_cert_thumbprint=cert_thumbprint(cert),
        )
        self._views.apply(issuance)
        await self._submit(issuance)
        REQUESTS.labels("issue", "accepted").inc()
        accepted = IssueAccepted(request_id=issuance.request_id, agent_id=str(spiffe_id))
        return web.Response(status=202, body=accepted.model_dump_json(), content_type="application/json")

    async def status(self, request: web.Request) -> web.Response:
        who = await self._identify(request, "status")
        if isinstance(who, web.Response):
            return who
        spiffe_id, _cert = who
        request_id = request.match_info["request_id"]
        view = self._views.get(request_id)
        if view is None:
            REQUESTS.labels("status", "unknown").inc()
            return error_response(404, "unknown_request", f"no request {request_id!r} is known to this gateway")
        if not visible_to(view, str(spiffe_id)):
            REQUESTS.labels("status", "not_yours").inc()
            await self._audit(
                "request_status_refused",
                "another agent asked for this request",
                {"request_id": request_id, "presented": [str(spiffe_id)]},
            )
            return error_response(403, "not_your_request", "only the agent that asked may see this request")
        REQUESTS.labels("status", view.status).inc()
        return web.Response(body=view.as_status().model_dump_json(), content_type="application/json")


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(body=Liveness().model_dump_json(), content_type="application/json")


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(gateway: GatewayApp) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/issue", gateway.issue)
    app.router.add_get("/requests/{request_id}", gateway.status)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app
