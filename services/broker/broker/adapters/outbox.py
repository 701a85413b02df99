"""The outbox relay: decisions stored with their spends go to Kafka right after, and after a crash.

The HTTP way in answers once a batch's decision events are in the spent store's
outbox (same transaction as the spends). This relay publishes them, oldest first,
and marks them published; a replica restarted under the same instance id
publishes what it had not. A crash between Kafka's acknowledgement and the mark
can publish a batch twice: the events keep their ids, so readers can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import orjson

from atb_runtime import Outgoing
from broker.adapters.spent import SpentStore

__all__ = ["OutboxRelay", "decode_outbox", "encode_outbox"]

log = logging.getLogger(__name__)

Send = Callable[[Sequence[Outgoing]], Awaitable[None]]


def encode_outbox(records: Sequence[Outgoing]) -> bytes:
    """The broker's events of one batch (never tombstones: a null value is kept as null).

    Only what a record is survives the outbox: a record with an after-commit effect is refused, since the effect
    could not be run once the relay has published it."""
    if any(r.after_commit is not None for r in records):
        raise ValueError("the outbox keeps records, not their after-commit effects")
    return orjson.dumps([[r.topic, r.key.decode(), None if r.value is None else r.value.decode()] for r in records])


def decode_outbox(blob: bytes) -> list[Outgoing]:
    return [
        Outgoing(topic=t, key=k.encode(), value=None if v is None else v.encode()) for t, k, v in orjson.loads(blob)
    ]


class OutboxRelay:
    def __init__(self, store: SpentStore, send: Send, instance: str, *, sweep_s: float = 1.0) -> None:
        self._store = store
        self._send = send
        self._instance = instance
        self._sweep = sweep_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def notify(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.drain(), 5)

    async def send_now(self, events: Sequence[Outgoing]) -> None:
        """Publish directly (when the outbox itself could not be written)."""
        await self._send(events)

    ROWS_PER_ROUND = 16
    """Small rounds: handing records to the Kafka client is CPU work in the event loop,
    and deciding (the latency that matters) shares that loop."""

    async def drain(self) -> int:
        """Publish every unpublished row of this instance; returns how many rows."""
        total = 0
        while True:
            rows = await self._store.unpublished(self._instance, limit=self.ROWS_PER_ROUND)
            if not rows:
                return total
            records = [r for row in rows for r in decode_outbox(row.records)]
            await self._send(records)
            await self._store.mark_published([row.id for row in rows])
            total += len(rows)
            self.published += len(records)

    async def _run(self) -> None:
        last_checkpoint = asyncio.get_running_loop().time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sweep)
            self._wake.clear()
            try:
                await self.drain()
                if asyncio.get_running_loop().time() - last_checkpoint >= self._sweep:
                    await self._store.checkpoint()
                    last_checkpoint = asyncio.get_running_loop().time()
            except Exception:  # Kafka or the store unavailable: retry on the next wake or sweep
                log.exception("outbox relay failed; retrying")
                await asyncio.sleep(self._sweep)
