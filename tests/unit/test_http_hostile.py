"""Hostile HTTP clients against a server run the way every ATB site is (`atb_runtime.web.app_runner`).

In-process, on a loopback port, over raw sockets so that the client can break
HTTP: every answer is JSON with its status, slow clients are cut off within the
configured timeouts. The end-to-end twin is tests/e2e/test_http_fuzz.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web

from atb_runtime.http import read_body
from atb_runtime.web import MAX_FIELD_SIZE, MAX_HEADERS, MAX_JSON_DEPTH, app_runner, http_limits, json_depth
from chat.adapters.interaction import parse_interaction
from chat.errors import MalformedInteractionError
from contracts.http import IssueRequest
from contracts.limits import HTTP_MAX_BODY_BYTES

IDLE_S = 1.0
BODY_S = 0.5


async def _issue(request: web.Request) -> web.Response:
    parsed = await read_body(request, IssueRequest, canonical=True)
    if isinstance(parsed, web.Response):
        return parsed
    return web.json_response({"ok": True})


async def _crash(_request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


@pytest.fixture
def _short_timeouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ATB_HTTP_IDLE_TIMEOUT_S", str(IDLE_S))
    monkeypatch.setenv("ATB_HTTP_BODY_TIMEOUT_S", str(BODY_S))
    http_limits.cache_clear()
    yield
    http_limits.cache_clear()


@pytest.fixture
async def port(_short_timeouts: None) -> AsyncIterator[int]:
    app = web.Application(client_max_size=HTTP_MAX_BODY_BYTES)
    app.router.add_post("/issue", _issue)
    app.router.add_get("/crash", _crash)
    runner = app_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()


async def _exchange(
    port: int, *parts: bytes, pause: float = 0.0, limit: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Send `parts` (pausing between them) while reading the answer until the server closes: (status, headers, body).

    Sending stops as soon as the server has answered and closed; status 0 means it closed without an answer.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.read())
    try:
        async with asyncio.timeout(limit):
            for part in parts:
                if answer.done():
                    break
                try:
                    writer.write(part)
                    await writer.drain()
                except ConnectionError:
                    break
                if pause:
                    await asyncio.wait([answer], timeout=pause)
            raw = await answer
    finally:
        answer.cancel()
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0]:
        return 0, {}, b""
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _post(body: bytes, *, extra: str = "", content_type: str = "application/json") -> bytes:
    head = (
        f"POST /issue HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _json_error(status: int, headers: dict[str, str], body: bytes) -> str:
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
    document = orjson.loads(body)
    assert isinstance(document, dict)
    code = document.get("error")
    assert isinstance(code, str)
    return code


def _deep(depth: int, leaf: str = "1.5") -> bytes:
    return (
        b'{"tenant":"acme","action":"crm.contact.read","resource":"r","leg":{},"params":{"x":'
        + (b"[" * depth + leaf.encode() + b"]" * depth)
        + b"}}"
    )


def test_json_depth_counts_without_recursion() -> None:
    assert json_depth(1) == 0
    assert json_depth({"a": [1, {"b": [2]}]}) == 4
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    assert json_depth(deep) == MAX_JSON_DEPTH + 1  # stops as soon as it is over


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 990, 1020])
async def test_a_deeply_nested_body_is_422_not_a_crash(port: int, depth: int) -> None:
    # Found by fuzzing: a float 990 levels down made the canonical check recurse into a RecursionError (500).
    status, headers, body = await _exchange(port, _post(_deep(depth)))
    assert status == 422
    assert _json_error(status, headers, body) in ("too_deep", "not_canonical", "invalid_body")
    if depth > MAX_JSON_DEPTH:
        assert _json_error(status, headers, body) == "too_deep"


def test_a_deeply_nested_slack_payload_is_malformed_not_a_crash() -> None:
    # Found by fuzzing: json.loads recursed into a RecursionError (500) on `payload=[[[[...`.
    with pytest.raises(MalformedInteractionError):
        parse_interaction(("payload=" + quote("[" * 100_000)).encode())
    with pytest.raises(MalformedInteractionError):  # a lone surrogate is not text Slack sends
        parse_interaction(("payload=" + quote('{"type":"block_actions","user":"\\ud800"}')).encode())


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (_post(b"{"), 400, "invalid_json"),
        (_post(b"\xff\xfe{\x00}\x00", content_type="application/json; charset=utf-16"), 400, "invalid_json"),
        (_post(b"\xef\xbb\xbf{}"), 400, "invalid_json"),
        (_post(b'{"tenant": 5}'), 422, "invalid_body"),
        (_post(b'{"tenant":"acme","extra":1}'), 422, "invalid_body"),
        (_post(b"tenant=acme", content_type="application/x-www-form-urlencoded"), 400, "invalid_json"),
        (_post(b"\x1f\x8b\x08\x00garbage", extra="Content-Encoding: gzip\r\n"), 400, "invalid_json"),
        (_post(b"x" * (HTTP_MAX_BODY_BYTES + 1)), 413, "body_too_large"),
        (b"GET /crash HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 500, "internal_error"),
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "not_found"),
        (b"DELETE /issue HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "method_not_allowed"),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request"),
        (b"GET /" + b"a" * (MAX_FIELD_SIZE + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
        (_post(b"{}", extra=f"X-Big: {'a' * (MAX_FIELD_SIZE + 10)}\r\n"), 400, "bad_request"),
        (_post(b"{}", extra="".join(f"X-{i}: 1\r\n" for i in range(MAX_HEADERS + 1))), 400, "bad_request"),
        (_post(b"{}", extra="Transfer-Encoding: chunked\r\n"), 400, "bad_request"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_every_hostile_request_gets_a_json_error(port: int, request_bytes: bytes, status: int, code: str) -> None:
    got, headers, body = await _exchange(port, request_bytes)
    assert got == status, body[:300]
    assert _json_error(got, headers, body) == code


async def test_a_chunked_body_over_the_limit_is_413(port: int) -> None:
    head = b"POST /issue HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (16 * 1024, b"x" * 16 * 1024)
    status, headers, body = await _exchange(port, head, *([chunk] * 8), b"0\r\n\r\n")
    assert status == 413
    assert _json_error(status, headers, body) == "body_too_large"


async def test_a_405_names_the_allowed_methods(port: int) -> None:
    status, headers, _body = await _exchange(port, b"GET /issue HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 405
    assert "POST" in headers.get("allow", "")


async def test_a_body_sent_byte_by_byte_is_cut_off_with_408(port: int) -> None:
    body = b'{"tenant":"acme"}' * 4
    request = _post(body)
    head, payload = request[: len(request) - len(body)], request[len(request) - len(body) :]
    started = time.monotonic()
    status, headers, answer = await _exchange(port, head, *(payload[i : i + 1] for i in range(len(payload))), pause=0.1)
    assert status == 408
    assert _json_error(status, headers, answer) == "body_timeout"
    assert time.monotonic() - started < BODY_S + 3


async def test_headers_sent_byte_by_byte_are_cut_off(port: int) -> None:
    request = _post(b"{}")
    started = time.monotonic()
    status, _headers, _body = await _exchange(port, *(request[i : i + 1] for i in range(len(request))), pause=0.2)
    # The connection is closed when the idle timeout passes without a complete request.
    assert status == 0
    assert time.monotonic() - started < IDLE_S + 3


async def test_an_idle_connection_is_closed(port: int) -> None:
    started = time.monotonic()
    status, _headers, _body = await _exchange(port)
    assert status == 0
    assert time.monotonic() - started < IDLE_S + 3
