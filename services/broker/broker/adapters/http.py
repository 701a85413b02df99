"""The broker's HTTPS API: `POST /v1/authorize` over mTLS.

The agent is the SPIFFE ID of its client certificate, and the certificate's
thumbprint is what the PoA's `cnf` must name: a copied token is useless without
the agent's key. Identity refusals and malformed bodies get a JSON `HttpError`
and are audited; every well-formed call gets a decision (200 with allow, 403
with deny), whose BrokerDecision is in the outbox before the answer leaves. The
site (its own mTLS port; the ops port stays plain HTTP for scrapers) is run by
the service runner (`atb_runtime.ops.HttpSite`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web
from pydantic import JsonValue

from atb_identity import TrustBundle, cert_thumbprint
from atb_runtime.http import Refusal, agent_of, error_response, read_body
from broker.adapters.connectors import ConnectorCall, ConnectorError, Invoker
from broker.domain import Outcome, Presentation
from contracts import ActionRequested, JsonObject
from contracts.http import MAX_BODY_BYTES, AuthorizeRequest, AuthorizeResponse, ConnectorResult

__all__ = ["AuthorizeApp", "build_app"]

Audit = Callable[[str, str, JsonObject, str | None], Awaitable[None]]


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
        who = agent_of(request, self._bundle)
        if isinstance(who, Refusal):
            presented: JsonValue = list(who.presented) if who.presented is not None else None
            details: JsonObject = {"endpoint": "authorize", "rule": who.rule, "presented": presented}
            await self._audit("identity_rejected", who.reason, details, None)
            return who.response()
        agent, cert = who
        body = await read_body(request, AuthorizeRequest)
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
            return error_response(
                503, "decision_unavailable", "the decision could not be recorded; nothing was executed"
            )
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


def build_app(api: AuthorizeApp) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/authorize", api.authorize)
    return app
