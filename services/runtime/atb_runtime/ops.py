"""`/healthz` and `/metrics` for every service, and how every server of a service is run.

Health is "the processing loop is alive"; metrics are prometheus-client's
default registry. Nothing here touches Kafka.

Sites. Every listening server of a service — the ops port (with the issuer's
JWKS route), the gateway's and the broker's mTLS APIs, chat's interactions
endpoint — is an `HttpSite`: the service builds the aiohttp application and its
handlers, the site runs it (`web.app_runner`: limits, JSON errors) and the
service runner (`runner.ServiceRunner`) starts and stops it. No service starts
or stops a server itself.

Ports (the readiness contract, README "Readiness"). Every site gets its port
through `start_site`:

- A supervisor that already holds a bound socket for the port (`ServiceStack`,
  atb/dev/stack.py) passes it down: its file descriptor is listed in
  `ATB_LISTEN_FDS` (comma-separated), and the site whose configured port is
  that socket's port serves on it instead of binding. There is no window
  between choosing a port and binding it.
- Otherwise (docker-compose, fixed ports) the site binds `host:port` itself.
- A port that cannot be bound raises `PortBindError`; the app lifespan
  (`atb_runtime/app.py`) logs it as one line and exits with
  `EXIT_PORT_UNAVAILABLE` at once.

`/healthz` answers `{"status", "service", "instance", "pid", "ports"}`: a
supervisor calls a service ready only when the pid it started answers, and
`ports` names every site this very process serves (`{"ops": 18080, ...}`).
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict

from atb_runtime.web import app_runner

__all__ = [
    "EXIT_PORT_UNAVAILABLE",
    "LISTEN_FDS_ENV",
    "Handler",
    "Health",
    "HttpSite",
    "OpsServer",
    "PortBindError",
    "bound_ports",
    "start_site",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LISTEN_FDS_ENV = "ATB_LISTEN_FDS"
"""Listening sockets handed down by the supervisor: file descriptors, comma-separated."""

EXIT_PORT_UNAVAILABLE = 71
"""Exit status of a service that could not bind one of its ports (sysexits EX_OSERR)."""

_BOUND: dict[str, int] = {}


class PortBindError(Exception):
    """A site of this service could not listen on its port."""

    def __init__(self, site: str, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot bind the {site} port {host}:{port}: {reason}")
        self.site = site
        self.host = host
        self.port = port


def bound_ports() -> dict[str, int]:
    """The ports this process serves, by site name (`ops`, `gateway`, `broker`, `chat`)."""
    return dict(_BOUND)


@functools.cache
def _inherited() -> dict[int, int]:
    """Port -> descriptor of the sockets listed in LISTEN_FDS_ENV (read once; taken sockets are popped)."""
    found: dict[int, int] = {}
    for part in os.environ.get(LISTEN_FDS_ENV, "").split(","):
        if not part.strip().isdigit():
            continue
        fd = int(part)
        try:
            probe = socket.socket(fileno=fd)
        except OSError:
            continue  # not an open socket in this process
        try:
            found[probe.getsockname()[1]] = fd
        finally:
            probe.detach()  # keep the descriptor open: a site takes it below
    return found


def _inherited_socket(port: int) -> socket.socket | None:
    fd = _inherited().pop(port, None) if port else None
    return None if fd is None else socket.socket(fileno=fd)


async def start_site(
    runner: web.AppRunner,
    site: str,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = 128,
) -> int:
    """Serve `runner` on `port`: the socket handed down for it, else a fresh bind. Returns the port."""
    sock = _inherited_socket(port)
    try:
        if sock is not None:
            await web.SockSite(runner, sock, ssl_context=ssl_context, backlog=backlog).start()
            port = sock.getsockname()[1]
        else:
            await web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=backlog).start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise PortBindError(site, host, port, reason.lower()) from exc
    _BOUND[site] = port
    return port


class HttpSite:
    """`app` served on `host:port` under the site name `name` (`ops`, `gateway`, `broker`, `chat`).

    `app` and `ssl_context` may be given as callables: they are then built on start. Every site but the
    ops port is an `edge` (ECS access log and a server span per request, `web.app_runner`).
    """

    def __init__(
        self,
        name: str,
        app: web.Application | Callable[[], web.Application],
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
        backlog: int = 128,
        edge: bool | None = None,
    ) -> None:
        self.name = name
        self._edge = name != "ops" if edge is None else edge
        self._app = app
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._backlog = backlog
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The port served, once started."""

    @property
    def serving(self) -> bool:
        return self.port is not None

    async def start(self) -> None:
        app = self._app if isinstance(self._app, web.Application) else self._app()
        context = self._ssl() if callable(self._ssl) else self._ssl
        self._runner = app_runner(app, edge=self._edge)
        await self._runner.setup()
        self.port = await start_site(
            self._runner, self.name, self._host, self._port, ssl_context=context, backlog=self._backlog
        )

    async def stop(self) -> None:
        self.port = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Health(BaseModel):
    """`GET /healthz` on the ops port: 200 when the processing loop is alive, 503 otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["ok", "failing"]
    service: str
    instance: str
    pid: int
    ports: dict[str, int]
    """Every site this very process serves, by name (`ops`, `gateway`, `broker`, `chat`)."""


class OpsServer:
    def __init__(
        self,
        port: int,
        healthy: Callable[[], bool],
        host: str = "127.0.0.1",
        routes: Sequence[tuple[str, Handler]] = (),
        *,
        service: str = "",
        instance: str = "",
    ) -> None:
        self._port = port
        self._host = host
        self._routes = routes
        self._healthy = healthy
        self._service = service
        self._instance = instance
        self._site: HttpSite | None = None

    def build_app(self) -> web.Application:
        """The ops routes: `/healthz`, `/metrics` and the service's own (docs/openapi/ops.json)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        for path, handler in self._routes:
            app.router.add_get(path, handler)
        return app

    async def start(self) -> None:
        if self._port == 0:
            return
        self._site = HttpSite("ops", self.build_app(), self._host, self._port)
        await self._site.start()

    async def stop(self) -> None:
        if self._site is not None:
            await self._site.stop()

    async def _healthz(self, _request: web.Request) -> web.Response:
        ok = self._healthy()
        body = Health(
            status="ok" if ok else "failing",
            service=self._service,
            instance=self._instance,
            pid=os.getpid(),
            ports=bound_ports(),
        )
        return web.Response(body=body.model_dump_json(), status=200 if ok else 503, content_type="application/json")

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
