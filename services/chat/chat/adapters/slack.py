"""Slack's Web API through the official `slack_sdk` AsyncWebClient.

`base_url` is configurable (`ATB_SLACK_API_URL`): `https://slack.com/api/` in
production, the local stand-in (`atb.dev.slack_standin`) in tests and the demo.
Slack failures are wrapped as `SlackCallError`; the caller decides to retry.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from chat.domain import Card
from chat.errors import ChatError

__all__ = ["SlackCallError", "SlackClient"]


class SlackCallError(ChatError):
    """A Slack Web API call failed (HTTP error, `ok: false`, unreachable)."""


class SlackClient:
    def __init__(self, token: str, base_url: str, timeout: int = 5) -> None:
        base = base_url if base_url.endswith("/") else base_url + "/"
        self._client = AsyncWebClient(token=token, base_url=base, timeout=timeout)

    async def post(self, channel: str, card: Card) -> tuple[str, str]:
        """Post a card; returns the (channel id, ts) that identify the message."""
        response = await self._call("chat_postMessage", channel=channel, text=card.text, blocks=list(card.blocks))
        return str(response["channel"]), str(response["ts"])

    async def update(self, channel: str, ts: str, card: Card) -> None:
        await self._call("chat_update", channel=channel, ts=ts, text=card.text, blocks=list(card.blocks))

    async def ephemeral(self, channel: str, user: str, text: str) -> None:
        await self._call("chat_postEphemeral", channel=channel, user=user, text=text)

    async def open_dm(self, user: str) -> str:
        response = await self._call("conversations_open", users=user)
        channel = response.get("channel")
        if not isinstance(channel, dict) or not isinstance(channel.get("id"), str):
            raise SlackCallError("conversations.open returned no channel id")
        return str(channel["id"])

    async def close(self) -> None:
        session = getattr(self._client, "session", None)
        if session is not None:
            await session.close()

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            response = await getattr(self._client, method)(**kwargs)
        except (SlackApiError, SlackClientError, OSError, TimeoutError) as exc:
            raise SlackCallError(f"{method}: {exc}") from exc
        return response
