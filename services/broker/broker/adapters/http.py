"""The broker's HTTPS API: `POST /v1/authorize` over mTLS.

The agent is the SPIFFE ID of its client certificate, and the certificate's
thumbprint is what the PoA's `cnf` must name: a copied token is useless without
the agent's key. Identity refusals and malformed bodies get a JSON `HttpError`
and are audited; every well-formed call gets a decision (200 with allow, 403
with deny), published as BrokerDecision before the answer leaves.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import orjson
from aiohttp import web
from pydantic import ValidationError

from atb_identity import IdentityError, TrustBundle, cert_thumbprint
from atb_identity.tls import peer_certificate, peer_identity
from broker.adapters.connectors import ConnectorCall, ConnectorError, Invoker
from broker.domain import Outcome, Presentation
from contracts import ActionRequested, JsonObject
from contracts.http import MAX_BODY_BYTES, AuthorizeRequest, AuthorizeResponse, ConnectorResult, HttpError

__all__ = ["AuthorizeApp", "HttpsServer", "build_app"]

Audit = Callable[[str, str, JsonObject, str | None], Awaitable[None]]


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body = HttpError(error=code, message=message, field=field).model_dump_json(exclude_none=True)
    return web.Response(status=status, body=body, content_type="application/json")


class AuthorizeApp:
    def __init__(
        self,
        *,
        bundle: TrustBundle,
        decide: Callable[[Presentation], Awaitable[Outcome]],
        invoker: Invoker,
        audit: Audit,
        new_presentation_id: Callable[[], str],
    ) -> None:
        self._bundle = bundle
        self._decide = decide
        self._invoker = invoker
        self._audit = audit
        self._new_id = new_presentation_id

    async def authorize(self, request: web.Request) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        cert = peer_certificate(ssl_object if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket) else None)
        if cert is None:
            await self._audit("identity_rejected", "no client certificate", {"endpoint": "authorize"}, None)
            return _error(401, "no_client_certificate", "this endpoint requires mutual TLS with an X.509-SVID")
        try:
            agent = peer_identity(cert, self._bundle)
        except IdentityError as exc:
            await self._audit("identity_rejected", str(exc), {"endpoint": "authorize", "rule": exc.code}, None)
            return _error(403, exc.code, f"client certificate refused: {exc}")
        if not agent.path.startswith("/agent/"):
            await self._audit("identity_rejected", "not an agent", {"endpoint": "authorize", "id": str(agent)}, None)
            return _error(403, "not_an_agent", f"{agent} is not an agent identity (spiffe://<td>/agent/...)")
        body = await _parse_body(request)
        if isinstance(body, web.Response):
            await self._audit("broker_request_rejected", "malformed body", {"agent_id": str(agent)}, None)
            return body
        presentation_id = self._new_id()
        action = ActionRequested(
            request_id=body.request_id,
            action_id=body.action_id or presentation_id.replace(":", "-"),
            agent_id=str(agent),
            tenant=body.tenant,
            target_tenant=body.target_tenant,
            action=body.action,
            resource=body.resource,
            params=body.params,
            poa=body.poa,
            requested_at=datetime.now(UTC),
        )
        presentation = Presentation(action, str(agent), cert_thumbprint(cert), presentation_id, "http", body.connector)
        try:
            outcome = await self._decide(presentation)
        except Exception:
            return _error(503, "decision_unavailable", "the decision could not be recorded; nothing was executed")
        return await self._answer(body, outcome)

    async def _answer(self, body: AuthorizeRequest, outcome: Outcome) -> web.Response:
        result: ConnectorResult | None = None
        status = 200 if outcome.allowed else 403
        connector = outcome.connector
        if outcome.allowed and body.execute and connector is not None and connector.endpoint is not None:
            action = outcome.presentation.action
            call = ConnectorCall(
                action.action, action.resource, dict(action.params), action.request_id, outcome.jti, action.agent_id
            )
            try:
                code, answer = await self._invoker.invoke(connector, call)
            except ConnectorError as exc:
                await self._audit(
                    "connector_call_failed",
                    str(exc)[:1024],
                    {"connector": connector.name, "jti": outcome.jti},
                    action.request_id,
                )
                code, answer, status = 502, {"error": str(exc)[:1024]}, 502
            result = ConnectorResult(connector=connector.name, status=code, body=answer)
        response = AuthorizeResponse(
            request_id=outcome.presentation.action.request_id,
            action_id=outcome.presentation.action.action_id,
            decision=outcome.verdict.decision,
            reasons=outcome.verdict.reasons,
            policy_version=outcome.policy_version,
            jti=outcome.jti,
            tier=outcome.tier,
            result=result,
        )
        return web.Response(status=status, body=response.model_dump_json(), content_type="application/json")


async def _parse_body(request: web.Request) -> AuthorizeRequest | web.Response:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "body_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(400, "invalid_json", f"body is not JSON: {exc}")
    try:
        return AuthorizeRequest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or None
        return _error(422, "invalid_body", f"{field}: {first.get('msg', 'invalid')}", field)


def build_app(api: AuthorizeApp) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/authorize", api.authorize)
    return app


class HttpsServer:
    """`POST /v1/authorize` on its own mTLS port (the ops port stays plain HTTP for scrapers)."""

    def __init__(self, app: web.Application, host: str, port: int, context: ssl.SSLContext) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._context = context
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, ssl_context=self._context, backlog=1024).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
