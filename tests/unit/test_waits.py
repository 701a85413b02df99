"""The shared poll: it returns the observation that satisfied it, or fails naming what and what it last saw."""

from __future__ import annotations

import pytest

from tests.waits import until


async def test_until_returns_the_observation_that_satisfied_it() -> None:
    seen = iter(range(10))

    async def observe() -> int:
        return next(seen)

    assert await until(observe, lambda n: n >= 3, timeout=5, what="three", interval=0) == 3


async def test_until_fails_naming_what_and_the_last_observation() -> None:
    async def observe() -> str:
        return "still pending"

    with pytest.raises(AssertionError, match=r"the thing: not within 0.1s; last observed: 'still pending'"):
        await until(observe, lambda s: s == "done", timeout=0.1, what="the thing", interval=0.01)
