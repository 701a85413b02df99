"""The Bot Connector REST API calls the chat service makes for Teams (aiohttp).

- A bot token: OAuth 2 client credentials at `ATB_TEAMS_TOKEN_URL` (Microsoft
  Entra: `https://login.microsoftonline.com/<tenant or botframework.com>/oauth2/v2.0/token`,
  scope `https://api.botframework.com/.default`), kept until a minute before it expires.
- Post a card: `POST {serviceUrl}/v3/conversations/{conversationId}/activities`
  → the new activity's id.
- A direct message (reminders, escalations, outcomes): `POST {serviceUrl}/v3/conversations`
  with the user's Entra object id as the member, then `POST .../activities` with the text.
- Update a card: `PUT {serviceUrl}/v3/conversations/{conversationId}/activities/{activityId}`,
  at the serviceUrl the card was posted (or last acted on) at.

Failures are `TeamsCallError`; the caller retries on the request's next event.
In tests and the demo the URLs point at the local stand-in (atb.dev.teams_standin).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from chat.domain.teams import CARD_CONTENT_TYPE
from chat.errors import TeamsCallError
from contracts import JsonObject

__all__ = ["BOT_SCOPE", "TeamsConnector"]

BOT_SCOPE = "https://api.botframework.com/.default"


class TeamsConnector:
    def __init__(
        self, app_id: str, app_password: str, token_url: str, *, scope: str = BOT_SCOPE, timeout: float = 5
    ) -> None:
        self._app_id = app_id
        self._password = app_password
        self._token_url = token_url
        self._scope = scope
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._token = ""
        self._token_until = 0.0
        self._lock = asyncio.Lock()

    async def post(self, service_url: str, conversation_id: str, card: JsonObject) -> str:
        """Post the card into the conversation; returns the new activity's id."""
        url = f"{_base(service_url)}v3/conversations/{quote(conversation_id, safe='')}/activities"
        answer = await self._call("POST", url, _activity(card))
        activity_id = answer.get("id")
        if not isinstance(activity_id, str) or not activity_id:
            raise TeamsCallError("the Bot Connector returned no activity id")
        return activity_id

    async def update(self, service_url: str, conversation_id: str, activity_id: str, card: JsonObject) -> None:
        conversation, activity = quote(conversation_id, safe=""), quote(activity_id, safe="")
        url = f"{_base(service_url)}v3/conversations/{conversation}/activities/{activity}"
        await self._call("PUT", url, {**_activity(card), "id": activity_id})

    async def direct(self, service_url: str, tenant_id: str, user_id: str, text: str) -> str:
        """A proactive one-to-one message: open the conversation with the user, then post the text."""
        created = await self._call(
            "POST",
            f"{_base(service_url)}v3/conversations",
            {
                "isGroup": False,
                "bot": {"id": self._app_id},
                "members": [{"id": user_id, "aadObjectId": user_id}],
                "tenantId": tenant_id,
                "channelData": {"tenant": {"id": tenant_id}},
            },
        )
        conversation_id = created.get("id")
        if not isinstance(conversation_id, str) or not conversation_id:
            raise TeamsCallError("the Bot Connector returned no conversation id")
        url = f"{_base(service_url)}v3/conversations/{quote(conversation_id, safe='')}/activities"
        answer = await self._call("POST", url, {"type": "message", "text": text, "textFormat": "plain"})
        activity_id = answer.get("id")
        if not isinstance(activity_id, str) or not activity_id:
            raise TeamsCallError("the Bot Connector returned no activity id")
        return activity_id

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, url: str, body: JsonObject) -> dict[str, Any]:
        token = await self._bot_token()
        try:
            async with self._client().request(
                method, url, json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                if response.status >= 300:
                    raise TeamsCallError(f"{method} {url}: HTTP {response.status}")
                answer = await response.json(content_type=None) if response.content_length != 0 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TeamsCallError(f"{method} {url}: {exc!r}") from exc
        return answer if isinstance(answer, dict) else {}

    async def _bot_token(self) -> str:
        async with self._lock:
            if self._token and time.monotonic() < self._token_until:
                return self._token
            form = {
                "grant_type": "client_credentials",
                "client_id": self._app_id,
                "client_secret": self._password,
                "scope": self._scope,
            }
            try:
                async with self._client().post(self._token_url, data=form) as response:
                    if response.status != 200:
                        raise TeamsCallError(f"bot token: HTTP {response.status}")
                    answer = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise TeamsCallError(f"bot token: {exc!r}") from exc
            token = answer.get("access_token") if isinstance(answer, dict) else None
            if not isinstance(token, str) or not token:
                raise TeamsCallError("bot token: no access_token in the answer")
            expires_in = answer.get("expires_in", 3600)
            lifetime = int(expires_in) if isinstance(expires_in, int | str) and str(expires_in).isdigit() else 3600
            self._token, self._token_until = token, time.monotonic() + max(0, lifetime - 60)
            return token

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


def _base(service_url: str) -> str:
    return service_url if service_url.endswith("/") else service_url + "/"


def _activity(card: JsonObject) -> JsonObject:
    return {"type": "message", "attachments": [{"contentType": CARD_CONTENT_TYPE, "content": card}]}
