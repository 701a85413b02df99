"""How every ATB HTTP server is run: explicit limits, bounded reads, JSON errors only.

Every site of every service (the ops port, the gateway's and the broker's mTLS
ports, chat's interactions port) is run by `app_runner`, which sets:

- `max_line_size` / `max_field_size` (8 KiB): the request line and each header
  line; above, the request is refused;
- `max_headers` (64): how many header lines a request may have;
- `keepalive_timeout` (`HttpLimits.idle_timeout_s`, 15 s by default): how long a
  connection may stay without a complete request, from its opening or its last
  answer. A client that sends its headers byte by byte is cut off then;
- `lingering_time` (`LINGER_S`, 2 s): after an answer given before the body
  was read to its end (413, 408), the rest is read and dropped for at most
  this long, then the connection is closed;
- `auto_decompress=False`: a `Content-Encoding: gzip` body is read as it came
  (and is then not JSON), so no body is ever inflated (no decompression bomb);
- the body limit (`client_max_size`, `contracts.limits.HTTP_MAX_BODY_BYTES`) is
  the application's, set where each app is built.

aiohttp puts no time limit on reading a body once the headers are in: handlers
read bodies with `read_body_within` (`HttpLimits.body_timeout_s`, 10 s by
default), which raises `BodyTimeoutError` for a body that trickles in (408).

Requests for no route or with a method the route does not take get the same
JSON body (`not_found`, `method_not_allowed` with `Allow`) from `json_http_errors`,
a middleware `app_runner` adds. Requests that never reach a handler (a malformed request line, a header line
over the limit, too many headers, a broken chunked encoding) and any exception
a handler lets out are answered by `JsonErrorHandler`: the status aiohttp chose
with an `HttpError` JSON body, instead of aiohttp's text/plain page.

Sites that face clients (every site but the ops port) are run with `edge=True`:
one ECS access line per answered request (`logs.EcsAccessLogger`, logger
`atb.access`) and a server span continuing the request's W3C trace context
(`tracing.http_tracing`); see docs/observability.md.

The timeouts can be tightened per process with `ATB_HTTP_IDLE_TIMEOUT_S` and
`ATB_HTTP_BODY_TIMEOUT_S` (the tests do, to stay fast). See docs/hostile-input.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from pydantic_settings import BaseSettings, SettingsConfigDict

from atb_runtime.logs import ACCESS_LOGGER, EcsAccessLogger
from atb_runtime.tracing import http_tracing
from contracts.http import HttpError

__all__ = [
    "LINGER_S",
    "MAX_FIELD_SIZE",
    "MAX_HEADERS",
    "MAX_JSON_DEPTH",
    "MAX_LINE_SIZE",
    "BodyTimeoutError",
    "HttpLimits",
    "JsonErrorHandler",
    "app_runner",
    "http_limits",
    "json_depth",
    "json_http_errors",
    "read_body_within",
]

MAX_LINE_SIZE = 8 * 1024
"""The request line (method, target, version), in bytes."""
MAX_FIELD_SIZE = 8 * 1024
"""One header line, in bytes."""
MAX_HEADERS = 64
"""Header lines per request."""
LINGER_S = 2.0
"""After answering a request whose body was not read to its end (413, 408), how long the rest is read and
dropped before the connection is closed (so the client can read the answer before a reset)."""
MAX_JSON_DEPTH = 64
"""How deeply a JSON body may nest arrays and objects (422 `too_deep` above): far more than any ATB body
needs, far less than what would exhaust Python's recursion limit in code that walks a document."""


class HttpLimits(BaseSettings):
    """The timeouts of every ATB HTTP server (`ATB_HTTP_*`)."""

    model_config = SettingsConfigDict(env_prefix="ATB_HTTP_", extra="ignore")

    idle_timeout_s: float = 15.0
    """A connection without a complete request for this long is closed (headers included)."""
    body_timeout_s: float = 10.0
    """A body not fully received this long after its headers is answered 408."""


@functools.cache
def http_limits() -> HttpLimits:
    return HttpLimits()


class BodyTimeoutError(Exception):
    """The body did not arrive within `HttpLimits.body_timeout_s`."""


async def read_body_within(request: web.Request) -> bytes:
    """The whole body, read within the body timeout.

    Raises `BodyTimeoutError`, or aiohttp's `HTTPRequestEntityTooLarge` above
    the app's `client_max_size`.
    """
    try:
        async with asyncio.timeout(http_limits().body_timeout_s):
            return await request.read()
    except TimeoutError as exc:
        raise BodyTimeoutError(f"the body did not arrive within {http_limits().body_timeout_s:g}s") from exc


def json_depth(document: object, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply `document` nests (a scalar is 0), counted without recursion; stops once above `limit`."""
    deepest = 0
    stack: list[tuple[object, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: list[object] = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


_CODES = {
    HTTPStatus.BAD_REQUEST: "bad_request",
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.METHOD_NOT_ALLOWED: "method_not_allowed",
    HTTPStatus.REQUEST_TIMEOUT: "body_timeout",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "body_too_large",
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "headers_too_large",
    HTTPStatus.INTERNAL_SERVER_ERROR: "internal_error",
}


def _code(status: int) -> str:
    known = {int(k): v for k, v in _CODES.items()}
    return known.get(status, "internal_error" if status >= 500 else "bad_request")


@web.middleware
async def json_http_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 4xx answers (no route, wrong method, ...) as `HttpError` JSON bodies."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        body = HttpError(error=_code(exc.status), message=exc.reason).model_dump_json(exclude_none=True)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.Response(status=exc.status, body=body, content_type="application/json", headers=headers)


class JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering protocol errors and crashes with an `HttpError` JSON body."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp logs the error and refuses when an answer was already started; its text page is dropped.
        super().handle_error(request, status, exc, None)
        code = _code(status)
        text = "the server could not handle the request" if status >= 500 else (message or HTTPStatus(status).phrase)
        body = HttpError(error=code, message=text[:512]).model_dump_json(exclude_none=True)
        response = web.Response(status=status, body=body, content_type="application/json")
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _JsonErrorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )


def app_runner(app: web.Application, *, edge: bool = False, **kwargs: Any) -> web.AppRunner:
    """An `AppRunner` for `app` with the limits above and JSON protocol errors.

    With `edge` (a site that faces clients), also an ECS access line per request and a server span per
    request (outermost, so both see the final status); without, no access log (the ops port, scraped often).
    """
    if json_http_errors not in app.middlewares:
        app.middlewares.append(json_http_errors)
    if edge and http_tracing not in app.middlewares:
        app.middlewares.insert(0, http_tracing)
    limits = http_limits()
    access: dict[str, Any] = (
        {"access_log": logging.getLogger(ACCESS_LOGGER), "access_log_class": EcsAccessLogger}
        if edge
        else {"access_log": None}
    )
    settings: dict[str, Any] = {
        **access,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "keepalive_timeout": limits.idle_timeout_s,
        "lingering_time": LINGER_S,
        "auto_decompress": False,
    }
    settings.update(kwargs)
    return _Runner(app, **settings)
