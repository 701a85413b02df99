"""The gateway over the in-memory bus: requests it attests, and views that show only what was proven.

`issue` and `status` are what `POST /issue` and `GET /requests/{id}` call once
mTLS has established the agent (that edge, TLS included, stays in tests/e2e);
the views are fed by the bus's follower with the gateway's own proof check.
The real approvals and issuer services answer the requests.
"""

from __future__ import annotations

from atb_identity import cert_thumbprint
from contracts import AccountableParty, AuditEvent, IssuanceRequested, LegitimateInterest, PoaIssued, Tier, Topic
from contracts.http import IssueAccepted, IssueRequest, RequestStatus
from gateway.service import GatewayRefusal, GatewayService
from tests.service.bus import Bus, MemoryBus, events_of
from tests.service.look import audits, dead_letters, kinds, outcomes, poas, required
from tests.service.world import AGENT, OTHER_AGENT, World

LOW, MEDIUM = "crm.contact.read", "crm.contact.update"
LEG = LegitimateInterest(
    ref="LI-2024-001", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-900")
)


async def _gateway(bus: Bus, world: World) -> tuple[MemoryBus, GatewayService]:
    assert isinstance(bus, MemoryBus), "the gateway's view follower runs on the in-memory bus"
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer()[1])
    return bus, world.gateway(bus)


async def _issue(world: World, gateway: GatewayService, request_id: str, action: str, tenant: str = "acme") -> object:
    body = IssueRequest(request_id=request_id, tenant=tenant, action=action, resource="crm:contact/7", leg=LEG)
    return await gateway.issue(AGENT, cert_thumbprint(world.svid(AGENT).leaf), body)


async def test_a_request_through_the_gateway_is_attested_judged_and_its_poa_shown_to_its_agent_only(
    bus: Bus, world: World
) -> None:
    bus, gateway = await _gateway(bus, world)
    accepted = await _issue(world, gateway, "req-gw-1", MEDIUM)
    assert accepted == IssueAccepted(request_id="req-gw-1", agent_id=AGENT)
    await bus.settle()
    # Signed by the gateway, attesting the agent: approvals accepted the attestation.
    [request] = [e for e in events_of(await bus.records(Topic.POA_REQUESTS)) if isinstance(e, IssuanceRequested)]
    assert (request.agent_id, request.agent_cert_thumbprint) == (AGENT, cert_thumbprint(world.svid(AGENT).leaf))
    status = await gateway.status(AGENT, "req-gw-1")
    assert isinstance(status, RequestStatus)
    assert (status.status, status.poa) == ("approval_required", None)

    await bus.publish([world.vote(await required(bus, "req-gw-1"), "alice")[1]])
    await bus.settle()
    [poa] = await poas(bus, "req-gw-1")
    status = await gateway.status(AGENT, "req-gw-1")
    assert isinstance(status, RequestStatus)
    assert status.status == "issued"
    assert status.poa is not None
    assert (status.poa.token, status.poa.jti) == (poa.token, poa.jti)

    other = await gateway.status(OTHER_AGENT, "req-gw-1")
    unknown = await gateway.status(AGENT, "req-gw-nope")
    assert (other, unknown) == (
        GatewayRefusal(403, "not_your_request", "only the agent that asked may see this request"),
        GatewayRefusal(404, "unknown_request", "no request 'req-gw-nope' is known to this gateway"),
    )
    refused = [
        (e.details["request_id"], e.details["presented"])
        for e in events_of(await bus.records(Topic.AUDIT))
        if isinstance(e, AuditEvent) and e.audit_type == "request_status_refused"
    ]
    assert refused == [("req-gw-1", [OTHER_AGENT])]


async def test_a_request_for_another_tenant_is_refused_at_the_edge_and_never_published(bus: Bus, world: World) -> None:
    bus, gateway = await _gateway(bus, world)
    refused = await _issue(world, gateway, "req-gw-tenant", LOW, tenant="globex")
    assert isinstance(refused, GatewayRefusal)
    assert (refused.status, refused.code, refused.field) == (403, "tenant_not_allowed", "tenant")
    await bus.settle()
    assert await bus.records(Topic.POA_REQUESTS) == []
    assert await audits(bus, "req-gw-tenant") == [("request_tenant_refused", "denied")]


async def test_a_poa_not_proven_by_the_issuer_never_reaches_the_view(bus: Bus, world: World) -> None:
    bus, gateway = await _gateway(bus, world)
    await _issue(world, gateway, "req-gw-forged", MEDIUM)
    await bus.settle()
    forged = PoaIssued(
        request_id="req-gw-forged",
        jti="forged-jti-0123456789",
        kid="forged-kid",
        agent_id=AGENT,
        action=MEDIUM,
        tier=Tier.MEDIUM,
        issued_at=world.clock.now(),
        expires_at=world.clock.now(),
        token="eyJhbGciOiJFZERTQSJ9.e30.c2ln",
        token_sha256="sha256:" + "0" * 64,
    )
    await bus.publish([world.signed(forged, AGENT)])  # proven, but by the agent, not the issuer
    await bus.settle()
    status = await gateway.status(AGENT, "req-gw-forged")
    assert isinstance(status, RequestStatus)
    assert (status.status, status.poa) == ("approval_required", None)
    assert [(c, code) for c, _, _, code in await dead_letters(bus)] == [("gateway-views@0", "claim_not_proven")]
    assert kinds(await outcomes(bus, "req-gw-forged")) == ["ApprovalRequired"]
