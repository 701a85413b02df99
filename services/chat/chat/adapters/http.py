"""`POST /slack/interactions`: the HTTP edge of the chat service (aiohttp).

Reads the raw body (at most `HTTP_MAX_BODY_BYTES`, 64 KiB: Slack's payloads are
far smaller; 413 with a JSON body above) and hands the exact bytes and the
headers to the service; answers with its status and JSON. Never raises into
aiohttp: an unexpected error is a 500 with a JSON body.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from atb_runtime.ops import start_site
from chat.service import Answer
from contracts.limits import HTTP_MAX_BODY_BYTES

__all__ = ["INTERACTIONS_PATH", "MAX_BODY", "InteractionsServer"]

log = logging.getLogger(__name__)

MAX_BODY = HTTP_MAX_BODY_BYTES
"""Slack's payloads are far smaller; the limit is the one every ATB HTTP body has (contracts/limits.py)."""
INTERACTIONS_PATH = "/slack/interactions"

Handle = Callable[[Mapping[str, str], bytes, str], Awaitable[Answer]]


class InteractionsServer:
    def __init__(self, host: str, port: int, handle: Handle) -> None:
        self._host = host
        self._port = port
        self._handle = handle
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(INTERACTIONS_PATH, self._interactions)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await start_site(self._runner, "chat", self._host, self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _interactions(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"ok": False, "error": "too_large"}, status=413)
        try:
            answer = await self._handle(request.headers, body, request.remote or "")
        except Exception:
            log.exception("interaction handling failed")
            return web.json_response({"ok": False, "error": "internal_error"}, status=500)
        return web.json_response(answer.body, status=answer.status)
