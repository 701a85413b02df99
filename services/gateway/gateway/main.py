"""Wiring only: `faststream run gateway.main:app`."""

from __future__ import annotations

from atb_runtime import Publisher
from atb_runtime.agents import load_agent_registry
from atb_runtime.app import Channel, service_app
from atb_runtime.follow import follower_consumer, follower_dead_letters
from atb_runtime.identity import load_bundle, server_tls, service_svid
from atb_runtime.ops import HttpSite
from atb_runtime.proofs import ProofCheck, outcome_rules
from atb_runtime.runner import ServiceRunner
from contracts import AuditEvent, IssuanceRequested
from gateway.adapters.follower import ViewFollower
from gateway.adapters.http import GatewayApp, build_app
from gateway.service import GatewayService
from gateway.settings import GatewaySettings

settings = GatewaySettings()


async def build() -> ServiceRunner:
    svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    ns, source = settings.topic_namespace, str(svid.spiffe_id)
    publisher = Publisher(settings.kafka_bootstrap_servers, f"atb-gateway-{settings.instance}")
    agents = load_agent_registry(settings.agent_registry_path)
    service = GatewayService(svid=svid, publisher=publisher, agents=agents, namespace=ns)
    consumer = follower_consumer("gateway", "views", settings.instance)
    # The views report only what its producer proved (docs/architecture.md §3.1).
    rules = outcome_rules(settings.outcome_producers, settings.issuers, request_attesters=settings.request_attesters)
    follower = ViewFollower(
        settings.kafka_bootstrap_servers,
        ns,
        service.apply,
        dead_letters=follower_dead_letters(
            "gateway", "views", settings.instance, source=source, namespace=ns, publish=publisher.send_and_wait
        ),
        check=ProofCheck(bundle, rules, source=source, namespace=ns, consumer=consumer),
    )
    site = HttpSite(
        "gateway",
        build_app(GatewayApp(bundle=bundle, service=service)),
        settings.gateway_host,
        settings.gateway_port,
        ssl_context=server_tls(svid, settings.trust_bundle_path, settings.state_dir),
    )
    return ServiceRunner(settings, name="gateway", components=(publisher, follower), sites=(site,))


app = service_app(
    title="ATB AgentAuth gateway",
    description="POST /issue over mTLS (X.509-SVID): validates and publishes IssuanceRequested; "
    "GET /requests/{id} returns status and the PoA to the requesting agent only.",
    group="atb-gateway",
    channels=(Channel("produces", IssuanceRequested), Channel("produces", AuditEvent)),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
