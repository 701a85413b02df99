"""The service runner: one loop, the parts that live beside it, the HTTP sites and the ops endpoints.

Every service is run by a `ServiceRunner`; `main.py` builds the service and its
adapters and hands them here, and the runner owns every lifecycle:

- the loop, one of
  - the Kafka-transaction loop (`eos.TransactionalProcessor`), built here from
    `topics` and `handler` (approvals, issuer, broker);
  - a loop given as `loop`: the database-tracking loop
    (`tracking.TrackingConsumer`, the audit sink) or a foreground follower
    (`follow.TopicFollower.foreground`, chat);
  - none: the runner waits for the stop (gateway, an HTTP-only broker replica);
- `components`: what lives as long as the process beside the loop, started in
  order before it and stopped in reverse order after it (a publisher, background
  followers, a decision queue, the service's own start and close steps);
- `sites`: the HTTP servers (`ops.HttpSite`), started once everything else runs
  and stopped first;
- the ops server (`/healthz`, `/metrics`, `routes` such as the issuer's JWKS);
- the renewal of the process's SVID and trust bundle when their files change
  (`identity.IdentityRenewal`, first component, every `identity_check_s`).

`/healthz` is 200 while the loop runs.

The processor always has a poison hook: a service that gives none gets a dead
letter under the runner's name. Without one, the processor would hand a record
placed on another partition than its key's to the handler, and skip a record
that fails alone with no letter at all (docs/hostile-input.md).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from atb_runtime.eos import (
    AssignHook,
    Handler,
    PoisonHook,
    ProcessorConfig,
    RewindHook,
    TickHook,
    TransactionalProcessor,
)
from atb_runtime.identity import IdentityRenewal, identity_files
from atb_runtime.ops import Handler as HttpHandler
from atb_runtime.ops import HttpSite, OpsServer
from atb_runtime.records import DeadLetters
from atb_runtime.settings import CommonSettings

__all__ = ["Component", "Loop", "ServiceRunner", "Steps"]

Step = Callable[[], Awaitable[None]]


class Component(Protocol):
    """Something that is started before the loop and stopped after it."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class Loop(Component, Protocol):
    """A service's one loop: `run` returns when stopped (or raises, and the process exits)."""

    async def run(self) -> None: ...


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Steps:
    """A component made of a start step and a stop step (either may be left out; a start step may be plain)."""

    on_start: Callable[[], Awaitable[None] | None] = _nothing
    on_stop: Step = _nothing

    async def start(self) -> None:
        started = self.on_start()
        if inspect.isawaitable(started):
            await started

    async def stop(self) -> None:
        await self.on_stop()


class ServiceRunner:
    def __init__(
        self,
        settings: CommonSettings,
        *,
        name: str,
        group_id: str = "",
        topics: tuple[str, ...] = (),
        handler: Handler | None = None,
        on_rewind: RewindHook | None = None,
        on_assigned: AssignHook | None = None,
        tick: TickHook | None = None,
        poison: PoisonHook | None = None,
        loop: Loop | None = None,
        components: Sequence[Component] = (),
        sites: Sequence[HttpSite] = (),
        before_start: Sequence[Step] = (),
        closers: Sequence[Step] = (),
        routes: Sequence[tuple[str, HttpHandler]] = (),
        freeze_gc: bool = False,
    ) -> None:
        """`freeze_gc`: once built, move everything out of the cyclic GC's reach (`gc.freeze`): it lives as
        long as the process, and full collections over it would show in the latency's tail."""
        ns = settings.topic_namespace.rstrip(".") or "default"
        self.poison: PoisonHook = poison or _dead_letters(name, settings)
        """What a record set aside by the processor costs: its dead letter and audit event."""
        self.processor: TransactionalProcessor | None = None
        if topics:
            if handler is None or loop is not None:
                raise ValueError("a runner with topics runs the transactional processor over `handler`")
            config = ProcessorConfig(
                bootstrap=settings.kafka_bootstrap_servers,
                topics=topics,
                group_id=f"{group_id}.{ns}",
                # One producer per partition, the same id on every instance: the one that
                # owns a partition fences every other (docs/scaling.md).
                transactional_prefix=f"atb-{name}-{ns}",
                member_id=f"atb-{name}-{ns}-{settings.instance}",
                client_id=f"atb-{name}-{settings.instance}",
                service=name,
            )
            self.processor = TransactionalProcessor(
                config, handler, on_rewind, on_assigned=on_assigned, tick=tick, poison=self.poison
            )
        self._loop: Loop | None = self.processor or loop
        renewal = IdentityRenewal(identity_files(), settings.identity_check_s)
        self._components: list[Component] = [renewal, *(Steps(step) for step in before_start), *components]
        self._sites = tuple(sites)
        self._closers = closers
        self._started: list[Component] = []
        self._stopping = asyncio.Event()
        self._running = False
        self._freeze_gc = freeze_gc
        self._ops = OpsServer(
            settings.ops_port,
            lambda: self._running,
            settings.ops_host,
            routes,
            service=name,
            instance=settings.instance,
        )

    @property
    def running(self) -> bool:
        """Whether the loop runs (what `/healthz` answers)."""
        return self._running

    async def start(self) -> None:
        if self._freeze_gc:
            gc.collect()
            gc.freeze()
        for component in self._components:
            await component.start()
            self._started.append(component)
        if self._loop is not None:
            await self._loop.start()
        for site in self._sites:
            await site.start()
        await self._ops.start()

    async def run(self) -> None:
        self._running = True
        try:
            if self._loop is not None:
                await self._loop.run()
            else:
                await self._stopping.wait()
        finally:
            self._running = False

    async def stop(self) -> None:
        self._stopping.set()
        for site in reversed(self._sites):
            await site.stop()
        if self._loop is not None:
            await self._loop.stop()
        await self._ops.stop()
        while self._started:
            await self._started.pop().stop()
        for close in self._closers:
            await close()


def _dead_letters(name: str, settings: CommonSettings) -> DeadLetters:
    """Letters under the service's name, from its SPIFFE ID (every service's settings name one)."""
    source = getattr(settings, "service_id", None)
    if not isinstance(source, str) or not source:
        source = f"spiffe://{settings.trust_domain}/svc/{name}"
    return DeadLetters(name, source, settings.topic_namespace)
