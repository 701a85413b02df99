"""The service runner's lifecycle (atb_runtime.runner): what starts and stops in which order, and health.

Components start in order before the loop and stop in reverse after it; the
sites start last and stop first; closers run at the very end. `/healthz` is
200 only while the loop runs. A plain (not awaitable) start step is run too.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from aiohttp import web

from atb_runtime.ops import HttpSite
from atb_runtime.runner import ServiceRunner, Steps
from atb_runtime.settings import CommonSettings


class _Part:
    def __init__(self, name: str, log: list[str]) -> None:
        self._name = name
        self._log = log

    async def start(self) -> None:
        self._log.append(f"start {self._name}")

    async def stop(self) -> None:
        self._log.append(f"stop {self._name}")


class _Loop(_Part):
    def __init__(self, log: list[str]) -> None:
        super().__init__("loop", log)
        self.entered = asyncio.Event()
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        self.entered.set()
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
        await super().stop()


class _Site(HttpSite):
    def __init__(self, log: list[str]) -> None:
        super().__init__("test", web.Application(), "127.0.0.1", 0)
        self._log = log

    async def start(self) -> None:
        self._log.append("start site")

    async def stop(self) -> None:
        self._log.append("stop site")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _health(port: int) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as answer:
        return answer.status


async def test_parts_start_in_order_and_stop_in_reverse_and_health_follows_the_loop() -> None:
    log: list[str] = []
    port = _free_port()
    loop = _Loop(log)

    async def close() -> None:
        log.append("close")

    def plain() -> None:
        log.append("plain start")

    runner = ServiceRunner(
        CommonSettings(ops_port=port),
        name="test",
        loop=loop,
        components=(_Part("publisher", log), Steps(plain), _Part("service", log)),
        sites=(_Site(log),),
        closers=(close,),
    )
    await runner.start()
    assert log == ["start publisher", "plain start", "start service", "start loop", "start site"]
    assert await _health(port) == 503  # started, but the loop does not run yet
    task = asyncio.create_task(runner.run())
    await loop.entered.wait()
    assert runner.running
    assert await _health(port) == 200
    log.clear()
    await runner.stop()
    await task
    assert not runner.running
    assert log == ["stop site", "stop loop", "stop service", "stop publisher", "close"]


async def test_an_http_site_serves_its_app_and_releases_its_port() -> None:
    async def hello(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/hello", hello)
    port = _free_port()
    site = HttpSite("test", app, "127.0.0.1", port)
    await site.start()
    assert site.serving
    assert site.port == port
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/hello") as answer:
        assert (answer.status, await answer.json()) == (200, {"ok": True})
    await site.stop()
    assert not site.serving
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))  # free again
