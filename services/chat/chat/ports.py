"""What the chat service depends on, as `Protocol`s: its store, Slack and the Teams Bot Connector.

`adapters.store.ChatStore` (SQL, alembic), `adapters.slack.SlackClient`
(the Web API) and `adapters.teams_connector.TeamsConnector` implement them; a test may hand the service in-memory ones.
Publishing goes through `atb_runtime.publisher.RecordPublisher`.
"""

from __future__ import annotations

from typing import Protocol

from chat.adapters.store import PostedMessage, TeamsCard
from chat.domain import Card
from contracts import JsonObject

__all__ = ["ChatStorage", "SlackApi", "TeamsApi", "TeamsStorage"]


class ChatStorage(Protocol):
    """Posted cards, seen interactions and the one chat vote per approver and request."""

    def messages(self, request_id: str) -> list[PostedMessage]: ...

    def save_message(self, request_id: str, message: PostedMessage) -> None: ...

    def first_interaction(self, trigger_id: str, received_at: float) -> bool:
        """True the first time `trigger_id` is seen (Slack retries and replays are refused after)."""
        ...

    def has_voted(self, request_id: str, principal: str) -> bool: ...

    def claim_vote(self, request_id: str, principal: str, choice: str, vote_id: str) -> bool:
        """Claim the approver's one chat vote on the request; False when it is taken."""
        ...

    def release_vote(self, request_id: str, principal: str) -> None:
        """Give a claim back (its vote could not be published)."""
        ...

    def claim_notice(self, notice_id: str, request_id: str, at: float) -> bool:
        """Claim one direct message before sending it (`chat.domain.notices`); False when already claimed."""
        ...

    def release_notice(self, notice_id: str) -> None:
        """Give a notice's claim back (it could not be sent)."""
        ...


class SlackApi(Protocol):
    """The Slack Web API calls the service makes; each raises `SlackCallError` when Slack refuses."""

    async def post(self, channel: str, card: Card) -> tuple[str, str]:
        """Post a card; returns (channel, ts) of the message."""
        ...

    async def update(self, channel: str, ts: str, card: Card) -> None: ...

    async def ephemeral(self, channel: str, user: str, text: str) -> None: ...

    async def open_dm(self, user: str) -> str:
        """The direct-message channel with `user`."""
        ...


class TeamsStorage(ChatStorage, Protocol):
    """The chat store's Teams tables besides: activity ids seen, cards posted."""

    def first_activity(self, activity_id: str, received_at: float) -> bool:
        """True the first time this Teams activity id is seen (a replayed activity is refused after)."""
        ...

    def teams_cards(self, request_id: str) -> list[TeamsCard]: ...

    def save_teams_card(self, request_id: str, card: TeamsCard) -> None: ...


class TeamsApi(Protocol):
    """The Bot Connector calls; each raises `TeamsCallError` when the connector refuses or is unreachable."""

    async def post(self, service_url: str, conversation_id: str, card: JsonObject) -> str:
        """Post a card; returns the activity id."""
        ...

    async def update(self, service_url: str, conversation_id: str, activity_id: str, card: JsonObject) -> None: ...

    async def direct(self, service_url: str, tenant_id: str, user_id: str, text: str) -> str:
        """A proactive one-to-one message to a user (their Entra object id): creates the conversation
        (``POST /v3/conversations``), then posts the text; returns the activity id."""
        ...
