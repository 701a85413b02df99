"""The committed OpenAPI documents (docs/openapi/) match the pydantic models and routes of the HTTP apps.

Regenerate with `python tools/gen_openapi.py` after changing a body model or a route.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from aiohttp import web

from atb_runtime.ops import OpsServer
from broker.adapters.http import AuthorizeApp
from broker.adapters.http import build_app as broker_app
from chat.adapters.http import build_app as chat_app
from chat.service import Answer
from console.adapters.http import build_app as console_app
from console.service import ConsoleService
from gateway.adapters.http import GatewayApp
from gateway.adapters.http import build_app as gateway_app
from issuer.adapters.http import JWKS_PATH, jwks_handler

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "gen_openapi.py"


def _generator() -> ModuleType:
    """tools/ is not a package on sys.path, so load the generator from its file."""
    name = "_atb_tools_gen_openapi"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stale(directory: Path) -> list[str]:
    return [p.name for p in cast("list[Path]", _generator().stale_docs(directory))]


def test_committed_openapi_documents_are_fresh() -> None:
    stale = _stale(cast("Path", _generator().DOCS_DIR))
    assert not stale, f"stale OpenAPI documents, run `python tools/gen_openapi.py`: {stale}"


def test_check_detects_an_edited_document(tmp_path: Path) -> None:
    committed = cast("Path", _generator().DOCS_DIR)
    for path in committed.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    edited = tmp_path / "broker.json"
    edited.write_text(edited.read_text(encoding="utf-8").replace('"poa"', '"token"'), encoding="utf-8")
    (tmp_path / "retired-api.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "chat.json").unlink()

    assert sorted(_stale(tmp_path)) == ["broker.json", "chat.json", "retired-api.json"]


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def _documented(name: str) -> set[tuple[str, str]]:
    document = json.loads((cast("Path", _generator().DOCS_DIR) / f"{name}.json").read_text(encoding="utf-8"))
    return {(method, path) for path, item in document["paths"].items() for method in item}


async def _handle(_headers: object, _body: bytes, _remote: str) -> Answer:
    return Answer(200, {"ok": True})


def _apps() -> dict[str, web.Application]:
    # The handlers are only registered, never called: the apps need no identity, Kafka or keys.
    gateway = object.__new__(GatewayApp)
    broker = object.__new__(AuthorizeApp)
    ops = OpsServer(0, lambda: True)
    issuer = OpsServer(0, lambda: True, routes=((JWKS_PATH, jwks_handler(list)),))
    console = object.__new__(ConsoleService)
    console._origin = "http://localhost:18445"
    console._step_up = frozenset()
    return {
        "gateway": gateway_app(gateway),
        "broker": broker_app(broker),
        "chat": chat_app(cast("Any", _handle)),
        "issuer": issuer.build_app(),
        "ops": ops.build_app(),
        "console": console_app(console, cast("Any", None), idle_s=900, tls=False),
    }


def test_every_route_is_documented_and_nothing_else() -> None:
    apps = _apps()
    assert set(apps) == set(cast("dict[str, object]", _generator().DOCUMENTS))
    for name, app in apps.items():
        assert _documented(name) == _routes(app), name


def test_every_error_answer_is_json() -> None:
    for name in _apps():
        document = json.loads((cast("Path", _generator().DOCS_DIR) / f"{name}.json").read_text(encoding="utf-8"))
        for path, item in document["paths"].items():
            for method, operation in item.items():
                for status, answer in operation["responses"].items():
                    if int(status) >= 400:
                        # The console answers a browser that did not ask for JSON with the same refusal as a page.
                        allowed = [["application/json"], *([["application/json", "text/html"]] * (name == "console"))]
                        assert list(answer["content"]) in allowed, (name, method, path, status)
