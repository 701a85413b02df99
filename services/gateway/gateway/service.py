"""Gateway application service: agents' requests in → attested IssuanceRequested out; request views.

`issue` and `status` are what `POST /issue` and `GET /requests/{id}` do once
the HTTP edge (adapters/http.py) has established the agent from its mTLS
client certificate and parsed the body; `apply` folds the followed request,
outcome and PoA events into the views (the follower's sink).

Each accepted request is published as IssuanceRequested signed by the gateway's
own SVID: the gateway attests which agent authenticated over mTLS, and the
approvals service accepts that attestation only from configured attesters.
Every refusal is audited (docs/architecture.md §2.2, §6.5); a request for a
tenant the agent is not registered for is refused with `tenant_not_allowed`
and audited as `request_tenant_refused` (docs/tenants.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import JsonValue

from atb_identity import Svid, sign_envelope
from atb_runtime import outgoing_envelope
from atb_runtime.publisher import AuditTrail, RecordPublisher
from contracts import EventPayload, IssuanceRequested, JsonObject, make_envelope, topic_name
from contracts.agents import AgentRegistry
from contracts.http import IssueAccepted, IssueRequest, RequestStatus
from gateway.domain import Views, visible_to

__all__ = ["GatewayRefusal", "GatewayService"]


@dataclass(frozen=True)
class GatewayRefusal:
    """Why a call is refused: the HTTP status, a stable code, a message for the client, the field at fault."""

    status: int
    code: str
    message: str
    field: str | None = None


class GatewayService:
    def __init__(
        self,
        *,
        svid: Svid,
        publisher: RecordPublisher,
        agents: AgentRegistry,
        namespace: str,
        views: Views | None = None,
    ) -> None:
        self._svid = svid
        self._source = str(svid.spiffe_id)
        self._publisher = publisher
        self._agents = agents
        self._ns = namespace
        self._trail = AuditTrail(publisher, source=self._source, namespace=namespace, wait=False)
        self.views = views if views is not None else Views()

    # -- the HTTP API ------------------------------------------------------------------

    async def issue(self, agent_id: str, thumbprint: str, body: IssueRequest) -> IssueAccepted | GatewayRefusal:
        """Accept a request of `agent_id` (whose certificate has `thumbprint`) and publish it, attested."""
        refusal = self._agents.refusal_reason(agent_id, body.tenant)
        if refusal is not None:
            # The tenant is the registry's word for this certificate, never the body's.
            await self.audit(
                "request_tenant_refused",
                str(refusal),
                {
                    "code": refusal.code.value,
                    "presented": [agent_id],
                    "tenant": body.tenant,
                    "target_tenant": body.target_tenant,
                    "registered": list[JsonValue](sorted(self._agents.tenants_of(agent_id))),
                    "action": body.action,
                },
                body.request_id,
            )
            return GatewayRefusal(403, refusal.code.value, refusal.detail, "tenant")
        issuance = IssuanceRequested(
            request_id=body.request_id or f"req-{uuid.uuid4().hex}",
            agent_id=agent_id,
            tenant=body.tenant,
            target_tenant=body.target_tenant,
            action=body.action,
            resource=body.resource,
            params=body.params,
            leg=body.leg,
            requested_at=datetime.now(UTC),
            agent_cert_thumbprint=thumbprint,
            callback_url=body.callback_url,
        )
        self.views.apply(issuance)
        await self._submit(issuance)
        return IssueAccepted(request_id=issuance.request_id, agent_id=agent_id)

    async def status(self, agent_id: str, request_id: str) -> RequestStatus | GatewayRefusal:
        """Where a request stands, for the agent that asked it only."""
        view = self.views.get(request_id)
        if view is None:
            return GatewayRefusal(404, "unknown_request", f"no request {request_id!r} is known to this gateway")
        if not visible_to(view, agent_id):
            await self.audit(
                "request_status_refused",
                "another agent asked for this request",
                {"request_id": request_id, "presented": [agent_id]},
            )
            return GatewayRefusal(403, "not_your_request", "only the agent that asked may see this request")
        return view.as_status()

    async def identity_refused(self, endpoint: str, rule: str, reason: str, presented: Sequence[str] | None) -> None:
        """A client whose certificate is not an agent's we accept (audited as `identity_rejected`)."""
        shown: list[JsonValue] | None = list(presented) if presented is not None else None
        await self.audit("identity_rejected", reason, {"rule": rule, "presented": shown, "endpoint": endpoint})

    # -- the views (the follower's sink) ---------------------------------------------------

    async def apply(self, events: Sequence[EventPayload]) -> None:
        for payload in events:
            self.views.apply(payload)

    # -- publishing --------------------------------------------------------------------------

    async def _submit(self, request: IssuanceRequested) -> None:
        envelope = sign_envelope(make_envelope(request, source=self._source), self._svid)
        await self._publisher.publish([outgoing_envelope(envelope, topic_name(request.topic, self._ns))])
        await self._publisher.flush()

    async def audit(self, audit_type: str, reason: str, details: JsonObject, request_id: str | None = None) -> None:
        """A refusal, audited (enqueued: the answer does not wait for it)."""
        await self._trail(audit_type, reason, details, request_id)
