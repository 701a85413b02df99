"""The gateway's HTTPS API: `POST /issue`, `GET /requests/{id}`, `/healthz`, `/metrics`.

The edge only: the agent is the SPIFFE ID its mTLS client certificate proves,
the body is parsed, and `GatewayService` does the rest. Every identity refusal
and every malformed body gets a JSON `HttpError` naming what is wrong, and
identity refusals are audited (docs/architecture.md §2.2, §6.5). The site is
run by the service runner (`atb_runtime.ops.HttpSite`).
"""

from __future__ import annotations

import logging
from typing import Literal

from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import BaseModel, ConfigDict

from atb_identity import SpiffeId, TrustBundle, cert_thumbprint
from atb_runtime.http import Refusal, agent_of, error_response, read_body
from contracts.http import MAX_BODY_BYTES, IssueRequest
from gateway.service import GatewayRefusal, GatewayService

__all__ = ["GatewayApp", "Liveness", "build_app"]

log = logging.getLogger(__name__)

REQUESTS = Counter("atb_gateway_requests_total", "Gateway HTTP requests by endpoint and result", ["endpoint", "result"])
IDENTITY_REFUSALS = Counter("atb_gateway_identity_refusals_total", "Refused client identities by rule", ["rule"])


class Liveness(BaseModel):
    """`GET /healthz` on the gateway's HTTPS port: the server answers (readiness is on the ops port)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["ok"] = "ok"


class GatewayApp:
    """The HTTP edge: the agent from the TLS handshake, the body parsed; the rest is `GatewayService`'s."""

    def __init__(self, *, bundle: TrustBundle, service: GatewayService) -> None:
        self._bundle = bundle
        self._service = service

    async def _identify(self, request: web.Request, endpoint: str) -> tuple[SpiffeId, x509.Certificate] | web.Response:
        who = agent_of(request, self._bundle)
        if isinstance(who, Refusal):
            IDENTITY_REFUSALS.labels(who.rule).inc()
            REQUESTS.labels(endpoint, "identity_refused").inc()
            await self._service.identity_refused(endpoint, who.rule, who.reason, who.presented)
            return who.response()
        return who

    async def issue(self, request: web.Request) -> web.Response:
        who = await self._identify(request, "issue")
        if isinstance(who, web.Response):
            return who
        spiffe_id, cert = who
        parsed = await read_body(request, IssueRequest, canonical=True)
        if isinstance(parsed, web.Response):
            REQUESTS.labels("issue", "bad_body").inc()
            return parsed
        answer = await self._service.issue(str(spiffe_id), cert_thumbprint(cert), parsed)
        if isinstance(answer, GatewayRefusal):
            REQUESTS.labels("issue", answer.code).inc()
            return error_response(answer.status, answer.code, answer.message, answer.field)
        REQUESTS.labels("issue", "accepted").inc()
        return web.Response(status=202, body=answer.model_dump_json(), content_type="application/json")

    async def status(self, request: web.Request) -> web.Response:
        who = await self._identify(request, "status")
        if isinstance(who, web.Response):
            return who
        spiffe_id, _cert = who
        answer = await self._service.status(str(spiffe_id), request.match_info["request_id"])
        if isinstance(answer, GatewayRefusal):
            REQUESTS.labels("status", _STATUS_RESULTS.get(answer.code, answer.code)).inc()
            return error_response(answer.status, answer.code, answer.message, answer.field)
        REQUESTS.labels("status", answer.status).inc()
        return web.Response(body=answer.model_dump_json(), content_type="application/json")


_STATUS_RESULTS = {"unknown_request": "unknown", "not_your_request": "not_yours"}


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
