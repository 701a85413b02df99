"""The SDK checks the gateway's SPIFFE ID on every connection, not once (review finding)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from atb.sdk import GatewayClient, GatewayError
from atb_identity import bundle_path, ensure_svid
from atb_identity.tls import server_context
from contracts import AccountableParty, LegitimateInterest

LEG = LegitimateInterest(ref="LI", jurisdiction="US", accountable_party=AccountableParty(type="e", id="e1"))


async def _accepted(_request: web.Request) -> web.Response:
    return web.json_response(
        {"request_id": "r1", "status": "pending", "agent_id": "spiffe://atb.local/agent/a"}, status=202
    )


@pytest.fixture
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    identity: str = request.param
    svid = ensure_svid(tmp_path, identity)
    assert svid.cert_path is not None
    assert svid.key_path is not None
    app = web.Application()
    app.router.add_post("/issue", _accepted)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(
        runner, "127.0.0.1", 0, ssl_context=server_context(svid.cert_path, svid.key_path, bundle_path(tmp_path))
    )
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("server", ["spiffe://atb.local/svc/gateway"], indirect=True)
async def test_the_real_gateway_identity_is_accepted(server: str, tmp_path: Path) -> None:
    agent = ensure_svid(tmp_path, "spiffe://atb.local/agent/a")
    async with GatewayClient(svid=agent, bundle_path=bundle_path(tmp_path), base_url=server) as client:
        for _ in range(3):  # several requests, each on a checked connection
            assert await client.request_poa("crm.contact.read", "r", tenant="acme", leg=LEG) == "r1"


@pytest.mark.parametrize("server", ["spiffe://atb.local/agent/impostor"], indirect=True)
async def test_another_workload_posing_as_the_gateway_gets_nothing(server: str, tmp_path: Path) -> None:
    agent = ensure_svid(tmp_path, "spiffe://atb.local/agent/a")
    async with GatewayClient(svid=agent, bundle_path=bundle_path(tmp_path), base_url=server) as client:
        with pytest.raises(GatewayError) as refused:
            await client.request_poa("crm.contact.read", "r", tenant="acme", leg=LEG, params={"secret": "x"})
    assert refused.value.body.error == "server_identity_refused"
    assert "impostor" in refused.value.body.message
