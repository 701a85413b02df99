"""Wiring only: `faststream run gateway.main:app`."""

from __future__ import annotations

from atb_identity import bundle_path, ensure_svid, load_svid
from atb_runtime.agents import load_agent_registry
from atb_runtime.app import Channel, service_app
from contracts import AuditEvent, IssuanceRequested
from gateway.service import GatewayRunner
from gateway.settings import GatewaySettings

settings = GatewaySettings()


async def build() -> GatewayRunner:
    if settings.svid_cert_path and settings.svid_key_path:
        svid = load_svid(settings.svid_cert_path, settings.svid_key_path)
    else:
        svid = ensure_svid(settings.state_dir, settings.service_id)
    bundle = settings.trust_bundle_path or bundle_path(settings.state_dir)
    return GatewayRunner(settings, svid, bundle, load_agent_registry(settings.agent_registry_path))


app = service_app(
    title="ATB AgentAuth gateway",
    description="POST /issue over mTLS (X.509-SVID): validates and publishes IssuanceRequested; "
    "GET /requests/{id} returns status and the PoA to the requesting agent only.",
    group="atb-gateway",
    channels=(Channel("produces", IssuanceRequested), Channel("produces", AuditEvent)),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
