"""The at-least-once loop (atb_runtime.acking) on the real broker.

A record's offset is committed only once the work it started is done, so:

- a loop stopped with work unfinished commits only up to the first unfinished
  record; the next reader of the partition does that work again, and the work
  after it, never the work finished before it;
- on a rebalance, the partitions leaving commit what is done of them, and their
  unfinished work is started again by the partition's next owner.

A SIGKILL in the middle of a delivery is shown with the issuer on the real stack
(tests/e2e/test_notices.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest
from aiokafka import AIOKafkaProducer

from atb_runtime import Incoming
from atb_runtime.acking import AckingConfig, AckingConsumer
from contracts import Topic, topic_name

pytestmark = pytest.mark.kafka


class Worker:
    """Starts work per record: finished at once, none for `skip`, held by the test for `hold`.

    Workers may share one `log` of what was started (a group's members), to wait on it as one."""

    def __init__(self, log: Log | None = None) -> None:
        self.log = log or Log()
        self.started: list[tuple[int, int]] = []
        """(partition, offset) of every record whose work this worker started, in order."""
        self.held: dict[tuple[int, int], asyncio.Future[str]] = {}

    async def start(self, record: Incoming) -> Awaitable[str] | None:
        where = (record.partition, record.offset)
        self.started.append(where)
        await self.log.add(where)
        if record.value == b"skip":
            return None
        work: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if record.value == b"hold":
            self.held[where] = work
        else:
            work.set_result("done")
        return work

    async def wait_for(self, *wanted: tuple[int, int], after: int = 0) -> None:
        await self.log.wait_for(*wanted, after=after)


class Log:
    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self._seen = asyncio.Condition()

    async def add(self, where: tuple[int, int]) -> None:
        async with self._seen:
            self.started.append(where)
            self._seen.notify_all()

    async def wait_for(self, *wanted: tuple[int, int], after: int = 0) -> None:
        """Until each of `wanted` was started (counting only the starts from index `after` on)."""
        async with asyncio.timeout(120), self._seen:  # a bound, not a pace
            await self._seen.wait_for(lambda: set(wanted) <= set(self.started[after:]))


async def _produce(bootstrap: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for partition, value in values:
            await producer.send(topic, value=value, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def _loop(bootstrap: str, topic: str, group: str, member: str, worker: Worker) -> AckingConsumer:
    config = AckingConfig(
        bootstrap=bootstrap, group_id=group, member_id=member, client_id=member, topics=(topic,), poll_timeout_ms=100
    )
    return AckingConsumer(config, worker.start)


async def test_a_stopped_loop_commits_up_to_the_first_unfinished_work_and_the_next_reader_redoes_from_there(
    kafka_bootstrap: str, namespace: str
) -> None:
    topic = topic_name(Topic.OUTCOMES, namespace)
    await _produce(kafka_bootstrap, topic, [(0, b"ok"), (0, b"skip"), (0, b"hold"), (0, b"ok"), (0, b"ok")])
    group = f"{namespace}acking"
    first = Worker()
    loop = _loop(kafka_bootstrap, topic, group, "member-0", first)
    await loop.start()
    await first.wait_for((0, 0), (0, 1), (0, 2), (0, 3), (0, 4))
    held = first.held[(0, 2)]
    await loop.stop()  # offset 2's work is not done: it is cancelled, and 2 is the offset committed
    assert held.cancelled()

    second = Worker()
    again = _loop(kafka_bootstrap, topic, group, "member-0", second)
    await again.start()
    try:
        await second.wait_for((0, 2), (0, 3), (0, 4))
        assert second.started == [(0, 2), (0, 3), (0, 4)]  # never 0 or 1: done and committed
        second.held[(0, 2)].set_result("done")
        await _produce(kafka_bootstrap, topic, [(0, b"ok")])
        await second.wait_for((0, 5))
    finally:
        await again.stop()

    third = Worker()
    last = _loop(kafka_bootstrap, topic, group, "member-0", third)
    await last.start()
    try:
        await _produce(kafka_bootstrap, topic, [(0, b"ok")])
        await third.wait_for((0, 6))
        assert third.started == [(0, 6)]  # everything before was done and committed
    finally:
        await last.stop()


async def test_on_a_rebalance_a_leaving_partitions_unfinished_work_is_started_again_by_its_next_owner(
    kafka_bootstrap: str, namespace: str
) -> None:
    topic = topic_name(Topic.OUTCOMES, namespace)
    await _produce(kafka_bootstrap, topic, [(0, b"hold"), (1, b"ok"), (1, b"hold"), (1, b"ok")])
    group = f"{namespace}acking-rebalance"
    log = Log()
    a_work, b_work = Worker(log), Worker(log)
    a = _loop(kafka_bootstrap, topic, group, "member-a", a_work)
    await a.start()
    b = _loop(kafka_bootstrap, topic, group, "member-b", b_work)
    try:
        await log.wait_for((0, 0), (1, 0), (1, 1), (1, 2))
        before, held = len(log.started), dict(a_work.held)
        await b.start()  # the group rebalances: every partition is revoked from a, then shared out
        await log.wait_for((0, 0), (1, 1), after=before)
        after = log.started[before:]
        # The unfinished work of both partitions is started again, by whoever owns each partition now;
        # what was done and committed before the first unfinished record of a partition is not.
        assert (1, 0) not in after
        assert b_work.started, "the new member got no partition"
        # The revoked work was cancelled, not left retrying beside its new start.
        assert all(work.cancelled() for work in held.values()), held
    finally:
        await b.stop()
        await a.stop()
