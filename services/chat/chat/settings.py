"""Chat service settings (`ATB_` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from atb_runtime.settings import CommonSettings
from chat.domain.step_up import StepUp
from contracts import Tier

__all__ = ["DEFAULT_DIRECTORY", "ChatSettings"]

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[3] / "config" / "approvers.json"


class ChatSettings(CommonSettings):
    service_id: str = "spiffe://atb.local/svc/chat"
    """This service's SPIFFE ID: it signs the votes it attests (approvals lists it in ATB_VOTE_ATTESTERS)."""
    svid_cert_path: Path | None = None
    svid_key_path: Path | None = None
    approver_directory_path: Path | None = None
    """The approver directory (Slack user id → principal); default config/approvers.json."""
    chat_tiers: list[Tier] = Field(default_factory=lambda: [Tier.MEDIUM, Tier.HIGH])
    """Tiers that may be approved by a Slack click; others (critical) need `atb vote` with the approver's SVID."""
    console_url: str = ""
    """The console's public origin (https://console.example). When set, the Approve button of a `step_up_tiers`
    card opens the console's request page, where the vote carries the approver's passkey, and an approve click
    on such a card is refused (`step_up_required`); Deny still works from chat. Empty: no console."""
    step_up_tiers: list[Tier] = Field(default_factory=lambda: [Tier.HIGH, Tier.CRITICAL])
    """Tiers approved only in the console with a passkey (when `console_url` is set)."""

    def step_up(self) -> StepUp | None:
        return StepUp(self.console_url, frozenset(self.step_up_tiers)) if self.console_url else None

    chat_host: str = "127.0.0.1"
    chat_port: int = 18444
    """Port of `POST /slack/interactions` (put TLS in front of it: Slack calls an https URL)."""
    slack_api_url: str = "https://slack.com/api/"
    slack_bot_token: SecretStr | None = None
    """Bot token (xoxb-...); without one no cards are posted (interactions still work)."""
    slack_signing_secret: SecretStr | None = None
    slack_signing_secret_file: Path | None = None
    """Without either, a dev secret is generated once in <state>/chat/slack_signing_secret."""
    slack_channel: str = "#atb-approvals"
    """Where cards are posted; empty: direct messages only."""
    slack_direct_messages: bool = True
    """Also send each eligible approver (with a Slack id in the directory) the card directly."""
    slack_team_id: str = ""
    """If set, clicks from any other Slack workspace are refused."""
    teams_app_id: str = ""
    """The bot's Microsoft app id (Entra app registration): the audience of inbound tokens. Empty: Teams is off."""
    teams_app_password: SecretStr | None = None
    """The app registration's client secret, for the bot token (outgoing card posts and updates)."""
    teams_app_password_file: Path | None = None
    teams_tenant_id: str = ""
    """If set, actions from any other Microsoft Entra tenant are refused (`wrong_tenant`)."""
    teams_openid_metadata_url: str = "https://login.botframework.com/v1/.well-known/openidconfiguration"
    teams_issuer: str = "https://api.botframework.com"
    teams_token_url: str = "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"  # noqa: S105
    """Where the bot token is requested (single-tenant bots: .../<tenant id>/oauth2/v2.0/token)."""
    teams_token_leeway_seconds: int = Field(default=60, ge=0, le=300)
    """Clock skew allowed on an inbound token's exp / nbf."""
    teams_service_url: str = ""
    """The Bot Connector serviceUrl new cards are posted at (e.g. https://smba.trafficmanager.net/emea/)."""
    teams_conversation_id: str = ""
    """The Teams conversation (a channel the bot is installed in) cards are posted to; empty: none posted."""
    outcome_producers: list[str] = Field(default_factory=lambda: ["spiffe://atb.local/svc/approvals"])
    """Whose proof an ApprovalRequired must carry to get a card (as the issuer's ATB_QUORUM_PRODUCERS)."""
    trust_bundle_path: Path | None = None
    """PEM bundle the outcomes' proofs are verified against; default the dev CA's bundle in the state folder."""
    chat_db_path: Path | None = None
    """SQLite state (message ids, trigger ids, chat votes); default <state>/chat/<namespace>/chat.db."""
    chat_db_url: str = ""
    """SQLAlchemy URL of the chat store (e.g. PostgreSQL); when set, `chat_db_path` is not used."""
    chat_migrations_dir: Path | None = None
    """The chat store's alembic migrations, run on start; default the checkout's `migrations/chat/`."""

    def teams_password(self) -> str:
        if self.teams_app_password is not None:
            return self.teams_app_password.get_secret_value()
        if self.teams_app_password_file is not None:
            return self.teams_app_password_file.read_text(encoding="utf-8").strip()
        return ""

    def directory_path(self) -> Path:
        return self.approver_directory_path or DEFAULT_DIRECTORY

    def db_url(self) -> str:
        return self.chat_db_url or f"sqlite:///{self.db_path()}"

    def db_path(self) -> Path:
        return (
            self.chat_db_path or self.state_dir / "chat" / (self.topic_namespace.rstrip(".") or "default") / "chat.db"
        )
