"""`/healthz` and `/metrics` for every service, on a small aiohttp server.

Health is "the processing loop is alive"; metrics are prometheus-client's
default registry. Nothing here touches Kafka.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["Handler", "OpsServer"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OpsServer:
    def __init__(
        self,
        port: int,
        healthy: Callable[[], bool],
        host: str = "127.0.0.1",
        routes: Sequence[tuple[str, Handler]] = (),
    ) -> None:
        self._port = port
        self._host = host
        self._routes = routes
        self._healthy = healthy
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._port == 0:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        for path, handler in self._routes:
            app.router.add_get(path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        ok = self._healthy()
        return web.json_response({"status": "ok" if ok else "failing"}, status=200 if ok else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
