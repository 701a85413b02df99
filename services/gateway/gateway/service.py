"""The gateway runner: HTTPS server + request-view follower + a publisher.

Each accepted request is published as IssuanceRequested signed by the gateway's
own SVID: the gateway attests which agent authenticated over mTLS, and the
approvals service accepts that attestation only from configured attesters.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from atb_identity import Svid, TrustBundle, sign_envelope
from atb_identity.tls import server_context
from atb_runtime import DeadLetters, Publisher, audit, outgoing_envelope
from atb_runtime.follow import FollowerDeadLetters, follower_consumer
from atb_runtime.ops import OpsServer, start_site
from atb_runtime.proofs import ProofCheck, outcome_rules
from atb_runtime.web import app_runner
from contracts import IssuanceRequested, JsonObject, make_envelope, topic_name
from contracts.agents import AgentRegistry
from gateway.adapters.follower import ViewFollower
from gateway.adapters.http import GatewayApp, build_app
from gateway.domain import Views
from gateway.settings import GatewaySettings

__all__ = ["GatewayRunner"]


class GatewayRunner:
    def __init__(self, settings: GatewaySettings, svid: Svid, bundle_path: Path, agents: AgentRegistry) -> None:
        self._settings = settings
        self._agents = agents
        self._svid = svid
        self._bundle_path = bundle_path
        self._bundle = TrustBundle.load(bundle_path, settings.trust_domain)
        self._views = Views()
        self._publisher = Publisher(settings.kafka_bootstrap_servers, f"atb-gateway-{settings.instance}")
        consumer = follower_consumer("gateway", "views", settings.instance)
        self._follower = ViewFollower(
            settings.kafka_bootstrap_servers,
            settings.topic_namespace,
            self._views,
            dead_letters=FollowerDeadLetters(
                DeadLetters(consumer, str(svid.spiffe_id), settings.topic_namespace),
                self._publisher.send_and_wait,
            ),
            # The views report only what its producer proved (docs/architecture.md §3.1).
            check=ProofCheck(
                self._bundle,
                outcome_rules(
                    settings.outcome_producers, settings.issuers, request_attesters=settings.request_attesters
                ),
                source=str(svid.spiffe_id),
                namespace=settings.topic_namespace,
                consumer=consumer,
            ),
        )
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._ops = OpsServer(
            settings.ops_port,
            lambda: self._runner is not None,
            settings.ops_host,
            service="gateway",
            instance=settings.instance,
        )

    async def _submit(self, request: IssuanceRequested) -> None:
        envelope = sign_envelope(make_envelope(request, source=self._svid_id()), self._svid)
        record = outgoing_envelope(envelope, topic_name(request.topic, self._settings.topic_namespace))
        await self._publisher.publish([record])
        await self._publisher.flush()

    async def _audit(self, audit_type: str, reason: str, details: JsonObject, request_id: str | None = None) -> None:
        record = audit(
            audit_type,
            source=self._svid_id(),
            namespace=self._settings.topic_namespace,
            outcome="denied",
            request_id=request_id,
            reason=reason[:1024],
            details=details,
        )
        await self._publisher.publish([record])

    def _svid_id(self) -> str:
        return str(self._svid.spiffe_id)

    async def start(self) -> None:
        await self._publisher.start()
        await self._follower.start()
        app = build_app(
            GatewayApp(
                bundle=self._bundle, views=self._views, submit=self._submit, audit=self._audit, agents=self._agents
            )
        )
        self._runner = app_runner(app)
        await self._runner.setup()
        assert self._svid.cert_path is not None
        assert self._svid.key_path is not None
        context = server_context(self._svid.cert_path, self._svid.key_path, self._bundle_path)
        await start_site(
            self._runner, "gateway", self._settings.gateway_host, self._settings.gateway_port, ssl_context=context
        )
        await self._ops.start()

    async def run(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
        await self._ops.stop()
        await self._follower.stop()
        await self._publisher.stop()
