"""atb_runtime.logs: the JSON line schema, and the ECS access line and server span of an HTTP edge."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from atb_runtime.logs import REQUIRED_FIELDS, configure_logging, log_format
from atb_runtime.ops import HttpSite
from tests.unit.test_trace_context import PARENT, TRACE_ID, recording


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """configure_logging into a buffer; the root logger's handlers and level are put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging("gateway", "gw-1", fmt="json", level="INFO", stream=out)
    try:
        yield out
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = recording()
    yield exporter
    exporter.clear()


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    for line in lines:
        assert set(REQUIRED_FIELDS) <= set(line), line
    return lines


def test_the_format_is_json_unless_text_is_asked_for() -> None:
    assert log_format({}) == "json"
    assert log_format({"ATB_LOG_FORMAT": "TEXT"}) == "text"
    with pytest.raises(ValueError, match="json or text"):
        log_format({"ATB_LOG_FORMAT": "yaml"})


def test_every_line_is_json_with_the_schema_and_errors_are_fields(captured: io.StringIO) -> None:
    log = logging.getLogger("atb.test")
    log.info("hello %s", "world")
    try:
        raise ValueError('bad "input"\nsecond line')
    except ValueError:
        log.exception("it failed")
    hello, failed = _lines(captured)
    assert hello["message"] == "hello world"
    assert hello["log.level"] == "info"
    assert hello["log.logger"] == "atb.test"
    assert hello["service.name"] == "gateway"
    assert hello["service.instance"] == "gw-1"
    assert str(hello["@timestamp"]).endswith("Z")
    assert "trace.id" not in hello
    assert failed["log.level"] == "error"
    assert failed["error.type"] == "ValueError"
    assert failed["error.message"] == 'bad "input"\nsecond line'
    assert "Traceback" in str(failed["error.stack_trace"])
    assert len(captured.getvalue().splitlines()) == 2  # the multi-line error stayed inside one line


def test_a_line_inside_a_span_names_its_trace(captured: io.StringIO, spans: InMemorySpanExporter) -> None:
    from opentelemetry import trace

    with trace.get_tracer("test").start_as_current_span("work") as span:
        logging.getLogger("atb.test").warning("inside")
    (line,) = _lines(captured)
    assert line["trace.id"] == f"{span.get_span_context().trace_id:032x}"
    assert line["span.id"] == f"{span.get_span_context().span_id:016x}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_an_edge_site_writes_an_ecs_access_line_and_continues_the_callers_trace(
    captured: io.StringIO, spans: InMemorySpanExporter
) -> None:
    async def issue(_request: web.Request) -> web.Response:
        logging.getLogger("gateway.test").info("handling")
        return web.json_response({"ok": True}, status=202)

    app = web.Application()
    app.router.add_post("/issue", issue)
    port = _free_port()
    site = HttpSite("gateway", app, "127.0.0.1", port)
    await site.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"http://127.0.0.1:{port}/issue?token=secret",
                data=b"{}",
                headers={"traceparent": PARENT, "User-Agent": "probe/1"},
            ) as answer:
                assert answer.status == 202
                returned = answer.headers["traceparent"]
            async with session.get(f"http://127.0.0.1:{port}/nowhere") as missing:
                assert missing.status == 404
    finally:
        await site.stop()
    lines = _lines(captured)
    handling = next(line for line in lines if line["message"] == "handling")
    access = [line for line in lines if line["log.logger"] == "atb.access"]
    assert len(access) == 2, lines
    posted, not_found = access
    assert posted["http.request.method"] == "POST"
    assert posted["url.path"] == "/issue"
    assert posted["http.response.status_code"] == 202
    assert isinstance(posted["event.duration"], int)
    assert posted["event.duration"] > 0
    assert posted["client.address"] == "127.0.0.1"
    assert posted["user_agent.original"] == "probe/1"
    assert "secret" not in json.dumps(posted)  # no query string in the access line
    assert posted["trace.id"] == TRACE_ID == handling["trace.id"]
    assert not_found["http.response.status_code"] == 404
    # The answer names the server span, a child of the caller's.
    (server,) = [s for s in spans.get_finished_spans() if s.name == "POST /issue"]
    assert returned.split("-")[1:3] == [TRACE_ID, f"{server.context.span_id:016x}"]
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == PARENT.split("-")[2]
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 202


async def test_the_ops_port_writes_no_access_line(captured: io.StringIO) -> None:
    from atb_runtime.ops import OpsServer

    port = _free_port()
    ops = OpsServer(port, lambda: True, service="gateway", instance="gw-1")
    await ops.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as answer:
            assert answer.status == 200
    finally:
        await ops.stop()
    assert not [line for line in _lines(captured) if line["log.logger"] == "atb.access"]
