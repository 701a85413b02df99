"""Consumer lag of every loop, as one metric (docs/observability.md).

`atb_consumer_lag_records{consumer,topic,partition}`: the records of an assigned partition
not yet consumed, the last stable offset (what a `read_committed` consumer can reach)
minus the consumer's position. Each loop (the transactional processor, the audit sink's
tracking loop, every follower) reports it at most once a second, after a poll; a
partition no longer assigned stops being reported. It counts offsets, so transaction
markers make an idle partition read 0 or 1, never more.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

__all__ = ["CONSUMER_LAG", "LagReporter"]

CONSUMER_LAG = Gauge(
    "atb_consumer_lag_records",
    "Records of an assigned partition not yet consumed (last stable offset minus position), by consumer",
    ["consumer", "topic", "partition"],
)


class LagReporter:
    def __init__(self, consumer: str, every_s: float = 1.0) -> None:
        self._consumer = consumer
        self._every = every_s
        self._next = 0.0
        self._reported: set[tuple[str, str]] = set()

    async def report(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._every
        seen: set[tuple[str, str]] = set()
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            if end is None:  # no fetch answered for it yet
                continue
            try:
                position = await consumer.position(tp)
            except (KafkaError, AssertionError):  # revoked meanwhile, or no position yet
                continue
            labels = (tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(self._consumer, *labels).set(max(0, end - position))
            seen.add(labels)
        for labels in self._reported - seen:
            CONSUMER_LAG.remove(self._consumer, *labels)
        self._reported = seen
