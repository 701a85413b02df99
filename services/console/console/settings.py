"""Console settings (`ATB_` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from atb_runtime.settings import CommonSettings
from contracts import Tier

__all__ = ["DEFAULT_DIRECTORY", "ConsoleSettings"]

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[3] / "config" / "approvers.json"


class ConsoleSettings(CommonSettings):
    service_id: str = "spiffe://atb.local/svc/console"
    """This service's SPIFFE ID: it signs the votes it attests (approvals lists it in ATB_VOTE_ATTESTERS)."""
    svid_cert_path: Path | None = None
    svid_key_path: Path | None = None
    approver_directory_path: Path | None = None
    """The approver directory; default config/approvers.json."""
    console_host: str = "127.0.0.1"
    console_port: int = 18445
    console_tls: bool = False
    """Serve HTTPS with the console's SVID (then HSTS is sent); off behind a TLS terminator, which must set
    `X-Forwarded-Proto: https` only if `console_trust_forwarded_proto` is on."""
    console_trust_forwarded_proto: bool = False
    console_rp_id: str = "localhost"
    """The WebAuthn relying party id: the console's host name as the browser sees it."""
    console_origin: str = ""
    """The console's origin as the browser sees it (scheme://host[:port]); default http(s)://<rp id>:<port>."""
    console_rp_name: str = "ATB console"
    console_session_idle_s: int = Field(default=900, ge=10, le=86_400)
    """A session unused for this long is over (sign in again)."""
    console_enroll_ttl_s: int = Field(default=900, ge=10, le=3600)
    """How long an enrollment link works (it works once; at most an hour, as the officer's grant)."""
    passkey_enroller_groups: list[str] = Field(default_factory=lambda: ["security"])
    """Directory groups whose members may sign enrollment grants (`atb console enroll --as <officer>`);
    approvals and the issuer must be configured alike, or they refuse the passkeys enrolled."""
    console_challenge_ttl_s: int = Field(default=300, ge=10, le=3600)
    step_up_tiers: list[Tier] = Field(default_factory=lambda: [Tier.HIGH, Tier.CRITICAL])
    """Approvals on these tiers carry a passkey assertion with user verification."""
    outcome_producers: list[str] = Field(default_factory=lambda: ["spiffe://atb.local/svc/approvals"])
    """Whose proof an outcome (ApprovalRequired, QuorumReached, RequestExpired, RequestDenied) must carry."""
    trust_bundle_path: Path | None = None
    console_db_path: Path | None = None
    """SQLite state (credentials, enrollment links, sessions, challenges, console votes);
    default <state>/console/<namespace>/console.db."""
    console_db_url: str = ""
    """SQLAlchemy URL of the console store (e.g. PostgreSQL); when set, `console_db_path` is not used."""
    console_migrations_dir: Path | None = None
    console_audit_db_url: str = ""
    """The audit store, read only, for the compliance view (a read-only role on PostgreSQL); empty: no view."""
    console_audit_key_path: Path | None = None
    """The audit log's verifier key (`<name>+<id>+<key>`): checkpoints, verification and bundles are judged with
    it, never with a key read from the store; default <state>/audit/checkpoint.key.pub (the sink's)."""
    console_audit_archive_url: str = ""
    """The audit archive (`s3://bucket/prefix`, or `file:///copy`): the compliance views read the rows that hot
    retention removed from the store there; empty: the store only. S3 credentials: the usual AWS_* variables."""
    console_audit_archive_endpoint: str = ""
    """The S3 endpoint of the archive (an S3-compatible server); empty: AWS_ENDPOINT_URL or AWS itself."""
    console_verify_interval_s: int = Field(default=600, ge=0, le=86_400)
    """How often the console verifies the whole audit store for the checkpoint status (0: only when asked)."""
    compliance_group: str = "compliance"
    """Directory group whose members may use the compliance view."""

    def directory_path(self) -> Path:
        return self.approver_directory_path or DEFAULT_DIRECTORY

    def audit_key_path(self) -> Path:
        return self.console_audit_key_path or self.state_dir / "audit" / "checkpoint.key.pub"

    def db_url(self) -> str:
        return self.console_db_url or f"sqlite:///{self.db_path()}"

    def db_path(self) -> Path:
        ns = self.topic_namespace.rstrip(".") or "default"
        return self.console_db_path or self.state_dir / "console" / ns / "console.db"

    def origin(self) -> str:
        if self.console_origin:
            return self.console_origin.rstrip("/")
        scheme = "https" if self.console_tls else "http"
        return f"{scheme}://{self.console_rp_id}:{self.console_port}"
