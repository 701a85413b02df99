"""Gateway settings (`ATB_` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from atb_runtime.proofs import APPROVALS, GATEWAY, ISSUER
from atb_runtime.settings import CommonSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(CommonSettings):
    service_id: str = "spiffe://atb.local/svc/gateway"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 18443
    svid_cert_path: Path | None = None
    """The gateway's own SVID (chain PEM); default: issued from the dev CA on first use."""
    svid_key_path: Path | None = None
    trust_bundle_path: Path | None = None
    """PEM bundle of the trust domain's CA(s); default the dev CA's bundle. SPIRE: the bundle file it writes."""
    agent_registry_path: Path | None = None
    """JSON agent registry (agent SPIFFE ID → tenants it acts for; docs/tenants.md); default config/agents.json."""
    outcome_producers: list[str] = Field(default_factory=lambda: [APPROVALS])
    """Whose proof an outcome the views use must carry (the approvals service)."""
    issuers: list[str] = Field(default_factory=lambda: [ISSUER])
    """Whose proof a PoaIssued (and an issuer's RequestDenied) the views use must carry."""
    request_attesters: list[str] = Field(default_factory=lambda: [GATEWAY])
    """Who may vouch for an IssuanceRequested's agent besides the agent itself (the gateway)."""
