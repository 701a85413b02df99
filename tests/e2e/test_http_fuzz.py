"""Property-based fuzzing of every HTTP API, and hostile clients, against the real services.

Schemathesis generates requests from the committed OpenAPI documents
(docs/openapi/, tools/gen_openapi.py): bodies that fit the schema and bodies
that do not (wrong types, missing and extra fields, odd strings), derandomized
so that a run is repeatable. They go to gateway, issuer, broker and chat
started as processes by `ServiceStack` on the real Kafka and OPA: over mTLS
with an agent SVID from the dev PKI for the gateway and the broker, and signed
with the stack's Slack signing secret for chat, so that fuzzed bodies reach
the handlers instead of stopping at the signature check. Every answer must be
documented, with its documented content type and schema, and no 5xx.

The hostile clients below go under HTTP: a body over the limit (announced and
chunked), headers over the limits, a slow client that sends its headers or its
body byte by byte, wrong content types and encodings, nesting deeper than the
recursion limit. Each must get a JSON error within the configured timeouts, and
the services' memory must stay bounded.

`make test` runs `FUZZ_EXAMPLES` examples per operation (about a minute in
all); the `soak`-marked test runs `ATB_SOAK_FUZZ_EXAMPLES` (default 2,000).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import os
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from requests.adapters import HTTPAdapter
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from atb.dev.slack_standin import SlackStandIn
from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb_identity import ensure_svid
from atb_identity.pki import bundle_path
from atb_identity.tls import client_context
from audit_sink.adapters.db import migrate
from chat.adapters.secret import dev_secret_path, read_secret
from chat.adapters.signature import sign_slack_request
from console.adapters.http import COOKIE
from console.adapters.store import ConsoleStore
from console.settings import ConsoleSettings
from contracts.limits import HTTP_MAX_BODY_BYTES

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
AGENT = "spiffe://atb.local/agent/fuzz-bot"
SERVICES = ("gateway", "issuer", "broker", "chat", "console")
IDLE_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 2.0
FUZZ_EXAMPLES = int(os.environ.get("ATB_FUZZ_EXAMPLES", "60"))
SOAK_EXAMPLES = int(os.environ.get("ATB_SOAK_FUZZ_EXAMPLES", "2000"))
RSS_GROWTH_LIMIT = 64 * 1024 * 1024
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass(frozen=True)
class Targets:
    stack: ServiceStack
    base: dict[str, str]
    """Document name → base URL of the site it describes."""
    sessions: dict[str, requests.Session]
    ssl: ssl.SSLContext
    secret: bytes

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.stack.processes.items() if proc.pid is not None}


class _SvidAdapter(HTTPAdapter):
    """requests over mTLS with an SVID: SVIDs name a SPIFFE ID, not a host, so no hostname check."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        kwargs["assert_hostname"] = False
        super().init_poolmanager(*args, **kwargs)


class _SlackSigner(requests.auth.AuthBase):
    """Sign every request's exact body as Slack does, now: the fuzzed body must pass the signature check."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        assert isinstance(body, str | bytes), "schemathesis sends whole bodies, never streams"
        raw = body.encode("utf-8") if isinstance(body, str) else body
        stamp = str(int(time.time()))
        request.headers["X-Slack-Request-Timestamp"] = stamp
        request.headers["X-Slack-Signature"] = sign_slack_request(self._secret, stamp, raw)
        return request


def _session(adapter: HTTPAdapter | None = None, auth: requests.auth.AuthBase | None = None) -> requests.Session:
    session = requests.Session()
    if adapter is not None:
        session.mount("https://", adapter)
    session.auth = auth
    return session


@pytest.fixture(scope="module")
async def targets(
    kafka_bootstrap: str, opa_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Targets]:
    ns = f"f{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    state = tmp_path_factory.mktemp("fuzz")
    standin = SlackStandIn()
    await standin.start()
    env = {"ATB_HTTP_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S), "ATB_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    config = StackConfig(
        kafka_bootstrap,
        opa_url,
        state,
        namespace=ns,
        audit_db_url=f"sqlite:///{state / 'audit.db'}",
        slack_api_url=standin.api_url,
        extra_env=env,
    )
    migrate(config.audit_db_url)  # the store the console's compliance view reads (no sink writes it here)
    stack = ServiceStack(config, services=SERVICES)
    await stack.start(ready_timeout=90)
    try:
        svid = ensure_svid(state, AGENT)
        assert svid.cert_path is not None
        assert svid.key_path is not None
        context = client_context(svid.cert_path, svid.key_path, bundle_path(state))
        secret = read_secret(dev_secret_path(state))
        mtls = _session(_SvidAdapter(context))
        plain = _session()
        # The console: fuzzed as a signed-in compliance officer (a session opened in its store, the cookie and
        # the CSRF token on every request), so fuzzed bodies and queries reach the handlers behind sign-in.
        store = ConsoleStore(ConsoleSettings(state_dir=state, topic_namespace=ns).db_url())
        sid, csrf = store.create_session("bob", now=time.time())
        store.close()
        console = _session()
        console.headers.update({"Cookie": f"{COOKIE}={sid}", "X-CSRF-Token": csrf})
        yield Targets(
            stack,
            base={
                "gateway": stack.gateway_url,
                "broker": stack.broker_url(),
                "chat": f"http://127.0.0.1:{stack.chat_port}",
                "issuer": f"http://127.0.0.1:{stack.ops_ports['issuer']}",
                "ops": f"http://127.0.0.1:{stack.ops_ports['broker']}",
                "console": stack.console_url,
            },
            sessions={
                "gateway": mtls,
                "broker": mtls,
                "chat": _session(auth=_SlackSigner(secret)),
                "issuer": plain,
                "ops": plain,
                "console": console,
            },
            ssl=context,
            secret=secret,
        )
        for session in (mtls, plain, console):
            session.close()
    finally:
        await stack.stop()
        await standin.stop()
        await delete_topics(kafka_bootstrap, ns)


def _schema(name: str, examples: int) -> Any:
    schema = schemathesis.openapi.from_path(DOCS / f"{name}.json")
    schema.config.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
        max_examples=examples,
        deterministic=True,
        database="none",
    )
    return schema


_SETTINGS = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


def _call(case: Any, targets: Targets, name: str) -> None:
    case.call_and_validate(base_url=targets.base[name], session=targets.sessions[name], checks=CHECKS, timeout=30)


def _call_console(case: Any, targets: Targets) -> None:
    """Redirects are answers here (to sign-in, to the result), not followed. `/updates` streams for as long as
    the client stays: it is called without the session (401); signed in, its stream is opened by the browser tests."""
    session = targets.sessions["console"] if case.path != "/updates" else requests.Session()
    try:
        case.call_and_validate(
            base_url=targets.base["console"], session=session, checks=CHECKS, timeout=30, allow_redirects=False
        )
    finally:
        if session is not targets.sessions["console"]:
            session.close()


Test = Callable[[Any, Targets], None]


def _fuzz(schema: Any) -> Callable[[Test], Test]:
    """`schema.parametrize()`, typed: one test per operation of the document."""
    return cast("Callable[[Test], Test]", schema.parametrize())


GATEWAY, BROKER, CHAT, ISSUER, OPS, CONSOLE = (
    _schema(n, FUZZ_EXAMPLES) for n in ("gateway", "broker", "chat", "issuer", "ops", "console")
)


@_fuzz(GATEWAY)
@_SETTINGS
def test_fuzz_gateway(case: Any, targets: Targets) -> None:
    _call(case, targets, "gateway")


@_fuzz(BROKER)
@_SETTINGS
def test_fuzz_broker(case: Any, targets: Targets) -> None:
    _call(case, targets, "broker")


@_fuzz(CHAT)
@_SETTINGS
def test_fuzz_chat(case: Any, targets: Targets) -> None:
    _call(case, targets, "chat")


@_fuzz(ISSUER)
@_SETTINGS
def test_fuzz_issuer_ops_port(case: Any, targets: Targets) -> None:
    _call(case, targets, "issuer")


@_fuzz(OPS)
@_SETTINGS
def test_fuzz_ops_port(case: Any, targets: Targets) -> None:
    _call(case, targets, "ops")


@_fuzz(CONSOLE)
@_SETTINGS
def test_fuzz_console(case: Any, targets: Targets) -> None:
    _call_console(case, targets)


SOAK_GATEWAY, SOAK_BROKER, SOAK_CHAT = (_schema(n, SOAK_EXAMPLES) for n in ("gateway", "broker", "chat"))


@pytest.mark.soak
@_fuzz(SOAK_GATEWAY)
@_SETTINGS
def test_soak_fuzz_gateway(case: Any, targets: Targets) -> None:
    _call(case, targets, "gateway")


@pytest.mark.soak
@_fuzz(SOAK_BROKER)
@_SETTINGS
def test_soak_fuzz_broker(case: Any, targets: Targets) -> None:
    _call(case, targets, "broker")


@pytest.mark.soak
@_fuzz(SOAK_CHAT)
@_SETTINGS
def test_soak_fuzz_chat(case: Any, targets: Targets) -> None:
    _call(case, targets, "chat")


# Hostile clients under HTTP, against every site of the running services.

SITES = {"gateway": "/issue", "broker": "/v1/authorize", "chat": "/slack/interactions", "ops": "/healthz"}


async def _exchange(
    targets: Targets, site: str, *parts: bytes, pause: float = 0.0, limit: float = 15.0
) -> tuple[int, str, bytes]:
    """Send `parts` to `site` while reading its answer until it closes: (status, content type, body); 0: no answer."""
    host, port = targets.base[site].rsplit("//", 1)[1].split(":")
    context = targets.ssl if targets.base[site].startswith("https") else None
    reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
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
            try:
                raw = await answer
            except (ConnectionError, ssl.SSLError):
                raw = b""
    finally:
        answer.cancel()
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0]:
        return 0, "", b""
    types = [line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("content-type:")]
    return int(lines[0].split()[1]), types[0] if types else "", body


def _head(site: str, length: int, extra: str = "") -> bytes:
    method = "GET" if site == "ops" else "POST"
    return (
        f"{method} {SITES[site]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _is_json_error(status: int, content_type: str, body: bytes) -> bool:
    if not 400 <= status < 500 or not content_type.startswith("application/json"):
        return False
    document = json.loads(body)
    return isinstance(document, dict) and isinstance(document.get("error"), str)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.parametrize("site", ["gateway", "broker", "chat"])
async def test_a_body_over_the_limit_is_413_json(targets: Targets, site: str) -> None:
    status, content_type, body = await _exchange(targets, site, _head(site, 50 * 1024 * 1024), *([b"x" * 65_536] * 4))
    assert status == 413, body[:300]
    assert _is_json_error(status, content_type, body)


@pytest.mark.parametrize("site", ["gateway", "broker", "chat", "ops"])
async def test_oversized_headers_are_400_json(targets: Targets, site: str) -> None:
    status, content_type, body = await _exchange(targets, site, _head(site, 0, f"X-Big: {'a' * 20_000}\r\n"))
    assert status == 400, body[:300]
    assert _is_json_error(status, content_type, body)


@pytest.mark.parametrize("site", ["gateway", "broker", "chat"])
async def test_a_body_sent_byte_by_byte_is_408_json_in_bounded_time(targets: Targets, site: str) -> None:
    body = b"{" + b" " * 200 + b"}"
    started = time.monotonic()
    status, content_type, answer = await _exchange(
        targets, site, _head(site, len(body)), *(body[i : i + 1] for i in range(len(body))), pause=0.05
    )
    assert status == 408, answer[:300]
    assert _is_json_error(status, content_type, answer)
    assert time.monotonic() - started < BODY_TIMEOUT_S + 4


@pytest.mark.parametrize("site", ["gateway", "broker", "chat", "ops"])
async def test_headers_sent_byte_by_byte_are_cut_off_in_bounded_time(targets: Targets, site: str) -> None:
    request = _head(site, 2) + b"{}"
    started = time.monotonic()
    status, _type, _body = await _exchange(targets, site, *(request[i : i + 1] for i in range(len(request))), pause=0.1)
    assert status in (0, 408)  # closed without an answer once the idle timeout passed
    assert time.monotonic() - started < IDLE_TIMEOUT_S + 4


async def test_a_flood_of_large_and_odd_bodies_keeps_memory_bounded(targets: Targets) -> None:
    pids = targets.pids()
    before = {name: _rss(pid) for name, pid in pids.items()}
    odd = [
        b"x" * (HTTP_MAX_BODY_BYTES - 1),
        b"[" * 60_000,
        gzip.compress(b"{" * 10_000_000),
        '{"tenant": "\u00e9\ud800"}'.encode("utf-8", "surrogatepass"),
        b"\xff\xfe" + "{}".encode("utf-16-le"),
        b"\x00" * 60_000,
    ]
    for _round in range(10):
        for site in ("gateway", "broker", "chat"):
            for body in odd:
                status, content_type, answer = await _exchange(targets, site, _head(site, len(body)) + body)
                assert _is_json_error(status, content_type, answer), (site, status, answer[:200])
            status, content_type, answer = await _exchange(targets, site, _head(site, 10**9), b"y" * 300_000)
            assert status == 413
    after = {name: _rss(pid) for name, pid in targets.pids().items()}
    growth = {name: after[name] - before[name] for name in before}
    print("RSS growth (bytes):", growth)
    assert all(g < RSS_GROWTH_LIMIT for g in growth.values()), growth


def test_signed_deep_slack_payload_is_a_json_4xx(targets: Targets) -> None:
    # Regression, found by fuzzing: a signed `payload=[[[[...` crashed chat's parser (RecursionError, 500).
    body = ("payload=" + "%5B" * 20_000).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0="
        + hmac.new(targets.secret, b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest(),
    }
    response = targets.sessions["issuer"].post(
        targets.base["chat"] + SITES["chat"], data=body, headers=headers, timeout=30
    )
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"] == "bad_body"


def test_deeply_nested_bodies_are_a_json_422(targets: Targets) -> None:
    # Regression, found by fuzzing: a float 990 levels down made the gateway's canonical check recurse (500).
    body = b'{"tenant":"acme","action":"crm.contact.read","resource":"r","leg":{},"params":{"x":'
    body += b"[" * 990 + b"1.5" + b"]" * 990 + b"}}"
    for site in ("gateway", "broker"):
        response = targets.sessions[site].post(
            targets.base[site] + SITES[site], data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert response.status_code == 422, response.text[:300]
        assert response.json()["error"] == "too_deep"
