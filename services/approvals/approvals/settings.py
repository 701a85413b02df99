"""Approvals settings (`ATB_` environment variables)."""

from __future__ import annotations

from atb_runtime.settings import CommonSettings

__all__ = ["ApprovalsSettings"]


class ApprovalsSettings(CommonSettings):
    service_id: str = "spiffe://atb.local/svc/approvals"
    group_id: str = "atb-approvals"
    ticket_pattern: str = r"^[A-Z][A-Z0-9]{1,9}-[0-9]{1,9}$"
    """Format of an external ticket reference (e.g. `CHG-1234`), required for tier critical."""
    policy_cache_seconds: float = 1.0
    """How long a policy answer per (action, tenant, target tenant) is reused."""
