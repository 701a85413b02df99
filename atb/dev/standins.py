"""A stand-in for a business system behind a connector (tests and the demo; never production).

A small HTTP server that records every call the broker's HTTP connector makes
(path, body, `Idempotency-Key`) and answers like a system that executed it.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["RecordedCall", "SystemStandIn"]


@dataclass(frozen=True)
class RecordedCall:
    path: str
    body: dict[str, Any]
    idempotency_key: str | None


@dataclass
class SystemStandIn:
    """`async with SystemStandIn("sap") as sap:` ... `sap.url`, `sap.calls`."""

    name: str
    host: str = "127.0.0.1"
    port: int = 0
    calls: list[RecordedCall] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        call = RecordedCall(
            request.path, body if isinstance(body, dict) else {}, request.headers.get("Idempotency-Key")
        )
        self.calls.append(call)
        return web.json_response({"system": self.name, "executed": call.path.lstrip("/"), "call": len(self.calls)})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> SystemStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
