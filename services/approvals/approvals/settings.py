"""Approvals settings (`ATB_` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from atb_runtime.settings import CommonSettings
from contracts import Tier

__all__ = ["DEFAULT_DIRECTORY", "ApprovalsSettings"]

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[3] / "config" / "approvers.json"


class ApprovalsSettings(CommonSettings):
    service_id: str = "spiffe://atb.local/svc/approvals"
    group_id: str = "atb-approvals"
    ticket_pattern: str = r"^[A-Z][A-Z0-9]{1,9}-[0-9]{1,9}$"
    """Format of an external ticket reference (e.g. `CHG-1234`), required for tier critical."""
    svid_cert_path: Path | None = None
    """This service's X.509-SVID (chain PEM), which signs its outcomes; default issued from the dev CA."""
    svid_key_path: Path | None = None
    trust_bundle_path: Path | None = None
    """PEM bundle of the trust domain's CA(s); default the dev CA's bundle in the state folder."""
    request_attesters: list[str] = Field(default_factory=lambda: ["spiffe://atb.local/svc/gateway"])
    """Services whose proof may vouch for a request's `agent_id` (the mTLS gateway)."""
    vote_attesters: list[str] = Field(
        default_factory=lambda: ["spiffe://atb.local/svc/chat", "spiffe://atb.local/svc/console"]
    )
    """Services whose proof may vouch for a vote's `approver_id` (the chat service, for Slack clicks;
    the console, for votes signed in the browser with the approver's passkey)."""
    vote_attester_tiers: dict[str, list[Tier]] = Field(
        default_factory=lambda: {
            "spiffe://atb.local/svc/chat": [Tier.LOW, Tier.MEDIUM, Tier.HIGH],
            "spiffe://atb.local/svc/console": [Tier.LOW, Tier.MEDIUM, Tier.HIGH, Tier.CRITICAL],
        }
    )
    """Per attester, the tiers whose votes it may vouch for (critical needs the approver's own SVID,
    `atb vote`, or the approver's passkey through the console). An attester not listed here is not limited."""
    passkey_announcers: list[str] = Field(default_factory=lambda: ["spiffe://atb.local/svc/console"])
    """Who may announce passkeys on the keys topic (PasskeyEnrolled, PasskeyRevoked); a vote any of
    them vouches for on a high or critical request counts only with a verified passkey assertion."""
    passkey_enroller_groups: list[str] = Field(default_factory=lambda: ["security"])
    """Directory groups whose members may sign passkey enrollment grants (`atb console enroll --as`): a
    passkey the console announces counts only with such a grant inside it."""
    approver_directory_path: Path | None = None
    """JSON approver directory (principal → identities, type, groups, tiers); default config/approvers.json."""
    agent_registry_path: Path | None = None
    """JSON agent registry (agent SPIFFE ID → tenants it acts for; docs/tenants.md); default config/agents.json."""
    max_pending_seconds: int = 86_400
    """Upper bound on any request's pending window, whatever the policy says."""
    vote_hold_seconds: int = 300
    """How long a vote that arrived before its request is kept."""
    max_request_age_seconds: int = 3_600
    """A request whose `requested_at` is older than this is dead-lettered (`stale_request`), not judged."""
    clock_skew_seconds: int = 300
    """How far a request's `requested_at` may be ahead of this service's clock."""
    closed_retention_seconds: int = 7_200
    """How long a closed request's state is kept (duplicates and late votes are refused by it); then it
    is tombstoned. Must exceed `max_request_age_seconds` + `clock_skew_seconds`: a replay of the request
    must meet either its state or the staleness rule."""
    policy_cache_seconds: float = 1.0
    """How long a policy answer per (action, tenant, target tenant, agent's tenants) is reused."""

    @model_validator(mode="after")
    def _retention_covers_replays(self) -> ApprovalsSettings:
        if self.closed_retention_seconds <= self.max_request_age_seconds + self.clock_skew_seconds:
            raise ValueError(
                "closed_retention_seconds must exceed max_request_age_seconds + clock_skew_seconds, "
                "or a replayed request could be judged twice"
            )
        return self

    def restore_window_seconds(self) -> int:
        """How far back a restore reads the changelog: every state that can still matter is newer."""
        return self.max_pending_seconds + self.vote_hold_seconds + self.closed_retention_seconds

    def directory_path(self) -> Path:
        return self.approver_directory_path or DEFAULT_DIRECTORY
