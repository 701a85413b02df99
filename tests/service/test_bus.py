"""The bus itself: it places records as Kafka does and sets poison aside as the processor does.

Both tests run in memory and on the real broker, so the in-memory bus is held to
the real one's behaviour where the scenarios depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from atb_runtime import DeadLetters, Incoming, Outgoing
from atb_runtime.partitioning import partition_for
from contracts import Topic
from tests.service.bus import Bus, ServiceUnderTest
from tests.service.conftest import ON_BOTH_BUSES
from tests.service.look import dead_letters
from tests.service.world import World


@ON_BOTH_BUSES
async def test_a_record_lands_on_its_key_partition_as_with_kafka_default_partitioner(bus: Bus, world: World) -> None:
    topic = world.topic(Topic.BROKER_ACTIONS)
    keys = [f"req-{i}".encode() for i in range(24)]
    await bus.publish([Outgoing(topic=topic, key=key, value=b"{}") for key in keys])
    placed = {r.key: r.partition for r in await bus.records(Topic.BROKER_ACTIONS)}
    assert placed == {key: partition_for(key, 3) for key in keys}
    assert len(set(placed.values())) == 3  # the keys spread: the check above compares something


@ON_BOTH_BUSES
async def test_a_record_the_handler_fails_on_is_set_aside_and_the_rest_is_handled(bus: Bus, world: World) -> None:
    handled: list[bytes] = []

    async def handle(records: Sequence[Incoming]) -> list[Outgoing]:
        if any(r.value == b"boom" for r in records):
            raise ValueError("cannot handle boom")
        handled.extend(r.value or b"" for r in records)
        return []

    letters = DeadLetters("fake", "spiffe://atb.local/svc/fake", world.namespace)
    await bus.attach(ServiceUnderTest("fake", (Topic.BROKER_ACTIONS,), handle, letters))
    topic = world.topic(Topic.BROKER_ACTIONS)
    await bus.publish([Outgoing(topic=topic, key=b"req-p", value=v) for v in (b"ok-1", b"boom", b"ok-2")])
    await bus.settle()
    assert sorted(set(handled)) == [b"ok-1", b"ok-2"]
    home = partition_for(b"req-p", 3)
    assert [(c, t, code) for c, t, _, code in await dead_letters(bus)] == [("fake", topic, "poison_record")]
    assert [(r.partition, r.offset) for r in await bus.records(Topic.BROKER_ACTIONS) if r.value == b"boom"] == [
        (home, 1)
    ]
