"""Turn a service runner into a FastStream application.

`faststream run <pkg>.main:app` runs the service; `faststream docs gen
<pkg>.main:app` writes its AsyncAPI document. The exactly-once loops are our own
(FastStream 0.7 has no Kafka transactions, REFERENCE.md), so the app has no
FastStream subscribers of its own: a never-started specification broker
describes the channels, and the lifespan runs the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from contracts import EventPayload, topic_name

__all__ = ["Channel", "Runner", "service_app"]

log = logging.getLogger(__name__)


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
    async def handler(body: model) -> None:  # type: ignore[valid-type]  # documentation only, never started
        return None

    handler.__name__ = f"consume_{model.__name__}"
    broker.subscriber(topic, group_id=group, title=f"{topic}:{model.__name__}", description=model.__doc__)(handler)


def service_app(
    *,
    title: str,
    description: str,
    group: str,
    channels: Sequence[Channel],
    build: Callable[[], Awaitable[Runner]],
) -> FastStream:
    """A FastStream app whose lifespan builds, starts and runs the service until shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        runner = await build()
        await runner.start()
        task = asyncio.create_task(runner.run(), name=f"{title}-loop")
        task.add_done_callback(_exit_on_crash)
        try:
            yield
        finally:
            task.remove_done_callback(_exit_on_crash)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await runner.stop()

    return FastStream(lifespan=lifespan, specification=_specification(title, description, channels, group))


def _exit_on_crash(task: asyncio.Task[None]) -> None:
    # A dead processing loop must not leave a process that looks alive: exit and
    # let the supervisor restart it (its committed state makes that safe).
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.critical("processing loop crashed: %r; exiting", exc)
        import os

        os._exit(70)
