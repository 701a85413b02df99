"""Approvals settings (`ATB_` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from atb_runtime.settings import CommonSettings

__all__ = ["ApprovalsSettings"]


class ApprovalsSettings(CommonSettings):
    service_id: str = "spiffe://atb.local/svc/approvals"
    group_id: str = "atb-approvals"
    ticket_pattern: str = r"^[A-Z][A-Z0-9]{1,9}-[0-9]{1,9}$"
    """Format of an external ticket reference (e.g. `CHG-1234`), required for tier critical."""
    trust_bundle_path: Path | None = None
    """PEM bundle of the trust domain's CA(s); default the dev CA's bundle in the state folder."""
    request_attesters: list[str] = Field(default_factory=lambda: ["spiffe://atb.local/svc/gateway"])
    """Services whose proof may vouch for a request's `agent_id` (the mTLS gateway)."""
    policy_cache_seconds: float = 1.0
    """How long a policy answer per (action, tenant, target tenant) is reused."""
