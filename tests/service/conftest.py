"""Fixtures of the service tier: a clock, a bus (in memory unless a test asks for Kafka) and a world.

A test runs on the in-memory bus. A test parametrised with `ON_BOTH_BUSES`
runs twice: in memory, and on the real Kafka broker in a fresh namespace (that
variant is marked `kafka`, so `pytest -m "not kafka" tests/service` is the
hermetic tier).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.service.bus import Bus, KafkaBus, MemoryBus, install
from tests.service.clock import Clock
from tests.service.clock import install as install_clock
from tests.service.world import World

ON_BOTH_BUSES = pytest.mark.parametrize(
    "bus_target", ["memory", pytest.param("kafka", marks=pytest.mark.kafka)], indirect=True
)


@dataclass(frozen=True)
class BusTarget:
    kind: str
    bootstrap: str = ""
    namespace: str = ""


@pytest.fixture
def bus_target(request: pytest.FixtureRequest) -> BusTarget:
    """In memory, unless parametrised with "kafka": then the session's broker and a fresh namespace."""
    kind = getattr(request, "param", "memory")
    if kind == "memory":
        return BusTarget(kind)
    # Resolved here, outside the event loop: an async fixture cannot ask for another one by name.
    return BusTarget(kind, request.getfixturevalue("kafka_bootstrap"), request.getfixturevalue("namespace"))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return install_clock(monkeypatch, Clock())


@pytest.fixture
async def bus(bus_target: BusTarget, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bus]:
    if bus_target.kind == "memory":
        memory = MemoryBus(clock)
        install(monkeypatch, memory)
        yield memory
        return
    kafka = KafkaBus(bus_target.bootstrap, bus_target.namespace)
    await kafka.start()
    try:
        yield kafka
    finally:
        await kafka.close()


@pytest.fixture
def world(bus: Bus, clock: Clock, tmp_path: Path) -> Iterator[World]:
    bootstrap = bus.bootstrap if isinstance(bus, KafkaBus) else "memory.invalid:9092"
    built = World(tmp_path, clock, bus.namespace, bootstrap)
    yield built
    built.close()
