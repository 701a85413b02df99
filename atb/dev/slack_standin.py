"""A local stand-in for Slack: the Web API methods ATB calls, and signed button clicks.

`SlackStandIn` serves `POST /api/<method>` on 127.0.0.1 for `chat.postMessage`,
`chat.update`, `chat.postEphemeral`, `conversations.open` and `auth.test`,
answering as Slack does (`{"ok": true, ...}`) and recording every call, so tests
and the demo can see exactly what the chat service sent through `slack_sdk`.
It keeps the current content of each message, like a channel would.

`SlackClicker` plays Slack's side of interactivity: it builds the
`block_actions` payload of a click on a card's button, signs it with the app's
signing secret (v0 HMAC-SHA256) and posts it to the chat service's
`/slack/interactions`. Nothing here talks to the real Slack.
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

from chat.adapters.signature import sign_slack_request

__all__ = ["RecordedCall", "SlackClicker", "SlackStandIn", "click_body", "signed_headers"]


@dataclass(frozen=True)
class RecordedCall:
    method: str
    args: dict[str, Any]
    token: str


@dataclass
class SlackStandIn:
    """Start with `await standin.start()`; `api_url` is what `ATB_SLACK_API_URL` should be."""

    host: str = "127.0.0.1"
    port: int = 0
    calls: list[RecordedCall] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if self.port == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((self.host, 0))
                self.port = int(probe.getsockname()[1])
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    def calls_of(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    def cards_for(self, request_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(channel, ts, message) of every message whose text names the request."""
        return [(ch, ts, m) for (ch, ts), m in self.messages.items() if request_id in str(m.get("text", ""))]

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _arguments(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append(RecordedCall(method, args, token))
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        return web.json_response(self._answer(method, args))

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "team_id": "TATBDEV", "user_id": "UATBBOT"}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(args.get("users", "")).split(",")[0]}}
        if method == "chat.postMessage":
            channel = _channel_id(str(args.get("channel", "")))
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            self.messages[(channel, ts)] = {"text": args.get("text"), "blocks": args.get("blocks")}
            return {"ok": True, "channel": channel, "ts": ts, "message": self.messages[(channel, ts)]}
        if method == "chat.update":
            key = (str(args.get("channel")), str(args.get("ts")))
            if key not in self.messages:
                return {"ok": False, "error": "message_not_found"}
            self.messages[key] = {"text": args.get("text"), "blocks": args.get("blocks")}
            return {"ok": True, "channel": key[0], "ts": key[1]}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"{int(time.time())}.{next(self._ts):06d}"}
        return {"ok": False, "error": "unknown_method"}


async def _arguments(request: web.Request) -> dict[str, Any]:
    """slack_sdk sends JSON for methods with blocks, a form otherwise (and sometimes a query)."""
    args: dict[str, Any] = dict(request.query)
    raw = await request.read()
    if request.content_type == "application/json":
        loaded = json.loads(raw or b"{}")
        args.update(loaded if isinstance(loaded, dict) else {})
    elif raw:
        args.update(parse_qsl(raw.decode()))
    if isinstance(args.get("blocks"), str):
        args["blocks"] = json.loads(args["blocks"])
    return args


def _channel_id(name: str) -> str:
    """`#atb-approvals` → a stable C... id, as Slack answers with ids, never names."""
    if name.startswith("#"):
        return "C" + "".join(ch for ch in name.upper() if ch.isalnum())[:10]
    return name


def click_body(
    *,
    user_id: str,
    request_id: str,
    action_id: str,
    channel: str = "CATBAPPROVA",
    message_ts: str = "1.000001",
    trigger_id: str | None = None,
    team_id: str = "TATBDEV",
) -> bytes:
    """The form body Slack posts when `user_id` clicks a button of a card."""
    payload = {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "atb-dev"},
        "user": {"id": user_id, "username": "ignored-display-name", "team_id": team_id},
        "api_app_id": "AATBDEV",
        "trigger_id": trigger_id or f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}",
        "container": {"type": "message", "channel_id": channel, "message_ts": message_ts},
        "channel": {"id": channel},
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": f"atb:{request_id}",
                "value": request_id,
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed_headers(secret: bytes, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sign_slack_request(secret, ts, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }


@dataclass
class SlackClicker:
    """Posts signed (or deliberately forged) interaction requests to the chat service."""

    interactions_url: str
    secret: bytes

    async def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.interactions_url, data=body, headers=dict(headers)) as response,
        ):
            answer = await response.json(content_type=None)
            return response.status, answer if isinstance(answer, dict) else {}

    async def click(
        self, user_id: str, request_id: str, action_id: str, *, timestamp: int | None = None, **extra: str
    ) -> tuple[int, dict[str, Any]]:
        body = click_body(user_id=user_id, request_id=request_id, action_id=action_id, **extra)
        return await self.post(body, signed_headers(self.secret, body, timestamp))
