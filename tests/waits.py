"""The two ways a test waits for something: a Kafka consumer wait, or a bounded poll where nothing can notify it.

`records` (and `events`, of records that decode) follows topics from their beginning
with a real consumer and returns as soon as enough matching records are committed:
the record is the event, nothing is timed.

`until` is the one poll loop of the test suite. Polling is the only signal where the
state lives in another process that offers no notification: OPA's `/v1/status` and
its metrics, a database or an archive written by another process (the audit sink's
stored positions, a witness's cosignatures), a process's own counters or log file,
the chat stand-in's list of cards. A test never sleeps in a loop of its own; it
calls `until`, which fails naming what it waited for and what it last saw.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing, suppress
from typing import TypeVar

from atb_runtime.readback import StoredEvent, StoredRecord, decode, iter_records

__all__ = ["events", "records", "until"]

T = TypeVar("T")


async def until(
    observe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Observe until `done(observed)`; return that observation, or raise AssertionError naming `what`.

    Only for state that cannot notify the test (see the module): polling is the only
    signal there, and `interval` bounds how often the other process is asked.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = await observe()
        if done(seen):
            return seen
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s; last observed: {_short(seen)}")
        await asyncio.sleep(interval)  # polls another process's state: nothing notifies the test of it


async def records(
    bootstrap: str,
    topics: Iterable[str] | Mapping[str, Iterable[int] | None],
    match: Callable[[StoredRecord], bool],
    *,
    count: int = 1,
    timeout: float = 30.0,
    what: str,
    key: str | bytes | None = None,
) -> list[StoredRecord]:
    """The first `count` committed records on `topics` that `match`, read from the beginning as they are committed.

    A consumer wait: it returns when the `count`-th matching record is read, and raises
    AssertionError naming `what` (and what matched) if they are not all there within
    `timeout`. With `key`, only the partition of that key is read on each topic.
    """
    found: list[StoredRecord] = []

    async def follow() -> None:
        async with aclosing(iter_records(bootstrap, topics, key=key, follow_s=math.inf, poll_ms=200)) as committed:
            async for record in committed:
                if match(record):
                    found.append(record)
                    if len(found) >= count:
                        return

    with suppress(TimeoutError):
        await asyncio.wait_for(follow(), timeout)
    if len(found) < count:
        seen = [(r.topic, r.partition, r.offset, r.key) for r in found]
        raise AssertionError(f"{what}: {len(found)} of {count} within {timeout:g}s; matched: {seen[:10]}")
    return found


async def events(
    bootstrap: str,
    topics: Iterable[str] | Mapping[str, Iterable[int] | None],
    match: Callable[[StoredEvent], bool],
    *,
    count: int = 1,
    timeout: float = 30.0,
    what: str,
    key: str | bytes | None = None,
) -> list[StoredEvent]:
    """`records`, of the records that decode as events and whose event `match`es."""

    def matches(record: StoredRecord) -> bool:
        event = decode(record)
        return event is not None and match(event)

    found = await records(bootstrap, topics, matches, count=count, timeout=timeout, what=what, key=key)
    return [event for record in found if (event := decode(record)) is not None]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 600 else text[:600] + "..."
