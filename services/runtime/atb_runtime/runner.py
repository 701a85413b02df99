"""A service runner: the transactional processor plus the ops endpoints.

Every consume-transform-produce service (approvals, issuer, broker) is this
runner around its own handler. With no topics it runs only its start/close
steps and the ops endpoints (an HTTP-only broker replica).

The processor always has a poison hook: a service that gives none gets a dead
letter under the runner's name. Without one, the processor would hand a record
placed on another partition than its key's to the handler, and skip a record
that fails alone with no letter at all (docs/hostile-input.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from atb_runtime.eos import (
    AssignHook,
    Handler,
    PoisonHook,
    ProcessorConfig,
    RewindHook,
    TickHook,
    TransactionalProcessor,
)
from atb_runtime.ops import Handler as HttpHandler
from atb_runtime.ops import OpsServer
from atb_runtime.records import DeadLetters
from atb_runtime.settings import CommonSettings

__all__ = ["ServiceRunner"]


class ServiceRunner:
    def __init__(
        self,
        settings: CommonSettings,
        *,
        name: str,
        group_id: str,
        topics: tuple[str, ...],
        handler: Handler,
        on_rewind: RewindHook | None = None,
        on_assigned: AssignHook | None = None,
        tick: TickHook | None = None,
        poison: PoisonHook | None = None,
        before_start: Sequence[Callable[[], Awaitable[None]]] = (),
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
        routes: Sequence[tuple[str, HttpHandler]] = (),
    ) -> None:
        ns = settings.topic_namespace.rstrip(".") or "default"
        self.poison: PoisonHook = poison or _dead_letters(name, settings)
        """What a record set aside by the processor costs: its dead letter and audit event."""
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
        self.processor: TransactionalProcessor | None = (
            TransactionalProcessor(config, handler, on_rewind, on_assigned=on_assigned, tick=tick, poison=self.poison)
            if topics
            else None
        )
        self._stopping = asyncio.Event()
        self._before_start = before_start
        self._closers = closers
        self._running = False
        self._ops = OpsServer(
            settings.ops_port,
            lambda: self._running,
            settings.ops_host,
            routes,
            service=name,
            instance=settings.instance,
        )

    async def start(self) -> None:
        for step in self._before_start:
            await step()
        if self.processor is not None:
            await self.processor.start()
        await self._ops.start()

    async def run(self) -> None:
        self._running = True
        try:
            if self.processor is not None:
                await self.processor.run()
            else:
                await self._stopping.wait()
        finally:
            self._running = False

    async def stop(self) -> None:
        self._stopping.set()
        if self.processor is not None:
            await self.processor.stop()
        await self._ops.stop()
        for close in self._closers:
            await close()


def _dead_letters(name: str, settings: CommonSettings) -> DeadLetters:
    """Letters under the service's name, from its SPIFFE ID (every service's settings name one)."""
    source = getattr(settings, "service_id", None)
    if not isinstance(source, str) or not source:
        source = f"spiffe://{settings.trust_domain}/svc/{name}"
    return DeadLetters(name, source, settings.topic_namespace)
