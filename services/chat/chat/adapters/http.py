"""`POST /slack/interactions` and `POST /api/messages` (Teams): the HTTP edge of the chat service (aiohttp).

Reads the raw body (at most `HTTP_MAX_BODY_BYTES`, 64 KiB: Slack's payloads are
far smaller; 413 with a JSON body above; 408 when it does not arrive within the
body timeout, atb_runtime.web) and hands the exact bytes and the headers to the
service (`ChatService.handle_interaction`); answers with its status and JSON. The site
is run by the service runner (`atb_runtime.ops.HttpSite`). Never raises into aiohttp: an
unexpected error is a 500 with a JSON body.

`InteractionForm` and `InteractionAnswer` describe the request and every answer
(docs/openapi/chat.json is generated from them, tools/gen_openapi.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from atb_runtime.web import BodyTimeoutError, read_body_within
from chat.service import Answer
from contracts.limits import HTTP_MAX_BODY_BYTES

__all__ = ["INTERACTIONS_PATH", "MAX_BODY", "MESSAGES_PATH", "InteractionAnswer", "InteractionForm", "build_app"]

log = logging.getLogger(__name__)

MAX_BODY = HTTP_MAX_BODY_BYTES
"""Slack's payloads are far smaller; the limit is the one every ATB HTTP body has (contracts/limits.py)."""
INTERACTIONS_PATH = "/slack/interactions"
MESSAGES_PATH = "/api/messages"
"""The Teams bot endpoint (the messaging endpoint of the Azure Bot resource)."""

Handle = Callable[[Mapping[str, str], bytes, str], Awaitable[Answer]]


class InteractionForm(BaseModel):
    """The body Slack posts (`application/x-www-form-urlencoded`), signed as received (chat.adapters.signature)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    payload: str = Field(description="the interaction as JSON: a `block_actions` click on an ATB approve/deny button")


class InteractionAnswer(BaseModel):
    """Every answer of `POST /slack/interactions`: a counted vote, or why not (`error`, `reason`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    error: str | None = None
    """A stable code: a signature rule, a malformed interaction, a refused click, `too_large`, `body_timeout`."""
    reason: str | None = None
    vote_id: str | None = None
    principal: str | None = None
    choice: str | None = None


def _refused(status: int, error: str, reason: str) -> web.Response:
    body = InteractionAnswer(ok=False, error=error, reason=reason).model_dump_json(exclude_none=True)
    return web.Response(status=status, body=body, content_type="application/json")


def _closing(response: web.Response) -> web.Response:
    """Close the connection after this answer: the rest of the body is not read (aiohttp would linger on it)."""
    response.force_close()
    return response


def build_app(handle: Handle, teams: Handle | None = None) -> web.Application:
    """`POST /slack/interactions` calls `handle`; `POST /api/messages` (Teams activities) calls `teams`."""

    def endpoint(call: Handle) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            return await _serve(call, request)

        return serve

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(INTERACTIONS_PATH, endpoint(handle))
    if teams is not None:
        app.router.add_post(MESSAGES_PATH, endpoint(teams))
    return app


async def _serve(handle: Handle, request: web.Request) -> web.Response:
    try:
        body = await read_body_within(request)
    except web.HTTPRequestEntityTooLarge:
        return _closing(_refused(413, "too_large", f"bodies are limited to {MAX_BODY} bytes"))
    except BodyTimeoutError as exc:
        return _closing(_refused(408, "body_timeout", str(exc)))
    try:
        answer = await handle(request.headers, body, request.remote or "")
    except Exception:
        log.exception("interaction handling failed")
        return _refused(500, "internal_error", "the interaction could not be handled")
    return web.json_response(answer.body, status=answer.status)
