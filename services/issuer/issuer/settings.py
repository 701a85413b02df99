"""Issuer settings (`ATB_` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from atb_runtime.settings import CommonSettings
from contracts import Tier

__all__ = ["IssuerSettings"]

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[3] / "config" / "approvers.json"


class IssuerSettings(CommonSettings):
    service_id: str = "spiffe://atb.local/svc/issuer"
    group_id: str = "atb-issuer"
    audience: str = "spiffe://atb.local/svc/broker"
    signing_key_path: Path | None = None
    """A mounted Ed25519 signing key (production), used alone. Unset: the rotating keyring in the state folder."""

    svid_cert_path: Path | None = None
    """This service's X.509-SVID (chain PEM), which signs its PoaIssued and RequestDenied; default: the dev CA's."""
    svid_key_path: Path | None = None
    trust_bundle_path: Path | None = None
    """PEM bundle of the trust domain's CA(s); default the dev CA's bundle in the state folder."""
    request_attesters: list[str] = Field(default_factory=lambda: ["spiffe://atb.local/svc/gateway"])
    vote_attesters: list[str] = Field(
        default_factory=lambda: ["spiffe://atb.local/svc/chat", "spiffe://atb.local/svc/console"]
    )
    vote_attester_tiers: dict[str, list[Tier]] = Field(
        default_factory=lambda: {
            "spiffe://atb.local/svc/chat": [Tier.LOW, Tier.MEDIUM, Tier.HIGH],
            "spiffe://atb.local/svc/console": [Tier.LOW, Tier.MEDIUM, Tier.HIGH, Tier.CRITICAL],
        }
    )
    """As the approvals service's: the tiers each attester may vouch for (re-checked here)."""
    passkey_announcers: list[str] = Field(default_factory=lambda: ["spiffe://atb.local/svc/console"])
    """As the approvals service's: who may announce passkeys; their votes on high and critical
    requests count only with a passkey assertion the issuer verifies again."""
    passkey_enroller_groups: list[str] = Field(default_factory=lambda: ["security"])
    """Directory groups whose members may sign passkey enrollment grants (`atb console enroll --as`): a
    passkey the console announces counts only with such a grant inside it."""
    quorum_producers: list[str] = Field(default_factory=lambda: ["spiffe://atb.local/svc/approvals"])
    """Who may announce a QuorumReached (its proof must be theirs)."""
    max_pending_seconds: int = 86_400
    """As the approvals service's (ATB_MAX_PENDING_SECONDS): the cap on a pending window, which places
    the escalation point the issuer checks an escalation group's vote against."""
    approver_directory_path: Path = DEFAULT_DIRECTORY
    """The same approver directory the approvals service uses (config/approvers.json)."""
    agent_registry_path: Path | None = None
    """The agent registry approvals uses (agent → tenants; docs/tenants.md); default config/agents.json."""

    callback_hosts: list[str] = Field(default_factory=list)
    """The hosts an agent's outcome callback may point at (ATB_CALLBACK_HOSTS, a JSON list; exact names,
    HTTPS only). Empty: every callback is refused (and audited), none is called."""
    callback_ca_path: Path | None = None
    """A PEM bundle to verify callback receivers with instead of the system's (a private CA; the demo's
    local receiver)."""
    callback_max_attempts: int = Field(default=6, ge=1, le=20)
    callback_backoff_seconds: float = Field(default=1.0, gt=0, le=60)
    """The first retry's wait; each next one doubles it."""
    callback_max_age_seconds: int = Field(default=900, ge=60, le=86_400)
    """An outcome older than this is not told (issuer/callbacks.py): a new consumer group reads the topics
    from their beginning, and an issuer down for longer than this tells what it missed only this recent."""
    callback_max_pending: int = Field(default=10_000, ge=1, le=1_000_000)
    """Deliveries under way at once (each retried up to `callback_max_attempts`); beyond, reading waits."""
    callback_fetch_min_bytes: int = Field(default=65_536, ge=1, le=16 * 1024 * 1024)
    callback_fetch_max_wait_ms: int = Field(default=100, ge=1, le=10_000)
    """How the callbacks' reader fetches (Kafka's `fetch.min.bytes`, `fetch.max.wait.ms`): fewer, larger
    fetches cost the issuer less CPU per request; a callback waits at most this much more."""

    def keyring_dir(self) -> Path:
        return self.state_dir / "issuer" / "keys"
