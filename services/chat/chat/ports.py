"""What the chat service depends on, as `Protocol`s: its store and Slack.

`adapters.store.ChatStore` (SQL, alembic) and `adapters.slack.SlackClient`
(the Web API) implement them; a test may hand the service in-memory ones.
Publishing goes through `atb_runtime.publisher.RecordPublisher`.
"""

from __future__ import annotations

from typing import Protocol

from chat.adapters.store import PostedMessage
from chat.domain import Card

__all__ = ["ChatStorage", "SlackApi"]


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
