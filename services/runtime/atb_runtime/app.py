"""Turn a service runner into a FastStream application.

`faststream run <pkg>.main:app` runs the service; `faststream docs gen
<pkg>.main:app` writes its AsyncAPI document. The exactly-once loops are our own
(FastStream 0.7 has no Kafka transactions; docs/architecture.md §7.2), so the app has no
FastStream subscribers of its own: a never-started specification broker
describes the channels, and the lifespan runs the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from atb_runtime.logs import configure_logging
from atb_runtime.ops import EXIT_PORT_UNAVAILABLE, PortBindError
from atb_runtime.settings import CommonSettings
from atb_runtime.tracing import configure_tracing
from contracts import EventPayload, topic_name

__all__ = ["EXIT_START_FAILED", "Channel", "Runner", "service_app", "service_name"]

log = logging.getLogger(__name__)

EXIT_START_FAILED = 1
"""Exit status of a service whose build or start raised (the error is logged first)."""


class Runner(Protocol):
    async def start(self) -> None: ...
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Channel:
    direction: Literal["consumes", "produces"]
    model: type[EventPayload]


def _specification(title: str, description: str, channels: Sequence[Channel], group: str) -> AsyncAPI:
    broker = KafkaBroker("127.0.0.1:19092")
    for channel in channels:
        topic = topic_name(channel.model.topic)
        name = channel.model.__name__
        if channel.direction == "produces":
            broker.publisher(topic, title=f"{topic}:{name}", schema=channel.model, description=channel.model.__doc__)
        else:
            _declare_subscriber(broker, topic, group, channel.model)
    return AsyncAPI(broker, title=title, version="0.1.0", description=description)


def _declare_subscriber(broker: KafkaBroker, topic: str, group: str, model: type[BaseModel]) -> None:
    async def handler(body: BaseModel) -> None:  # documentation only, never started
        return None

    # The annotation must be the model class itself (not a postponed string) for
    # FastStream's schema generator to describe the payload.
    handler.__annotations__["body"] = model
    handler.__name__ = f"consume_{model.__name__}"
    broker.subscriber(topic, group_id=group, title=f"{topic}:{model.__name__}", description=model.__doc__)(handler)


def service_app(
    *,
    title: str,
    description: str,
    group: str,
    channels: Sequence[Channel],
    build: Callable[[], Awaitable[Runner]],
    bootstrap: str,
) -> FastStream:
    """A FastStream app whose lifespan builds, starts and runs the service until shutdown."""

    service = service_name(build)

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        instance = _instance()
        configure_logging(service, instance)  # ATB_LOG_FORMAT: json (default) or text (docs/observability.md)
        spans = configure_tracing(service, instance)  # exported only when asked (OTEL_EXPORTER_OTLP_ENDPOINT)
        faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _dump_tasks)  # ... and USR2 every task's
        try:
            runner = await build()
            await runner.start()
        except PortBindError as exc:
            # One line naming the port, and out at once: a service without its port must not
            # linger (nor unwind half-started clients) while a supervisor waits for it.
            log.critical("%s; exiting", exc)
            logging.shutdown()
            os._exit(EXIT_PORT_UNAVAILABLE)
        except Exception:
            # Logged in the process's format (a JSON line with error.*), not as the CLI's traceback page.
            log.critical("%s failed to start; exiting", service, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_START_FAILED)
        task = asyncio.create_task(runner.run(), name=f"{title}-loop")
        task.add_done_callback(_exit_on_crash)
        watchdog = _watch_parent()
        try:
            yield
        finally:
            if watchdog is not None:
                watchdog.cancel()
            task.remove_done_callback(_exit_on_crash)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await runner.stop()
            if spans is not None:
                spans.shutdown()  # exports what is left

    # FastStream needs a broker to run; ours declares nothing, so it consumes nothing.
    idle = KafkaBroker(bootstrap)
    return FastStream(
        idle, lifespan=lifespan, logger=log, specification=_specification(title, description, channels, group)
    )


def service_name(build: Callable[..., object]) -> str:
    """The service a `main.build` belongs to, by its package: `gateway`, ..., `audit-sink`."""
    return build.__module__.split(".", 1)[0].replace("_", "-")


def _instance() -> str:
    try:
        return CommonSettings().instance
    except ValueError:
        return os.environ.get("ATB_INSTANCE", "0")  # refused again, with its reason, when the service is built


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=sys.stderr)
    sys.stderr.flush()


def _watch_parent() -> asyncio.Task[None] | None:
    """With ATB_EXIT_WITH_PARENT=<pid>, shut down gracefully once that parent is gone.

    Test runs and the demo start services as detached processes; if the test run is
    killed, its services must not live on and compete for the machine.
    """
    expected = os.environ.get("ATB_EXIT_WITH_PARENT")
    if not expected:
        return None

    async def watch() -> None:
        while os.getppid() == int(expected):
            await asyncio.sleep(1.0)
        log.warning("parent %s is gone; shutting down", expected)
        os.kill(os.getpid(), signal.SIGTERM)

    return asyncio.create_task(watch(), name="parent-watchdog")


def _exit_on_crash(task: asyncio.Task[None]) -> None:
    # A dead processing loop must not leave a process that looks alive: exit and
    # let the supervisor restart it (its committed state makes that safe).
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.critical("processing loop crashed: %r; exiting", exc)
        os._exit(70)
