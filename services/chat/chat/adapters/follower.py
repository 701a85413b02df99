"""Follow the outcomes, the approvals changelog and the PoAs into the chat service.

No consumer group: the one chat process reads these topics from the beginning of
their retention on every start (the changelog is compacted), rebuilding its
views; its store remembers which cards exist, so nothing is posted twice.
Records it cannot decode are skipped: their owners (approvals, issuer)
dead-letter them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import CATALOGUE, EventDecodeError, EventPayload, Topic, decode_envelope, payload_of, topic_name

__all__ = ["FOLLOWED", "EventFollower"]

log = logging.getLogger(__name__)

FOLLOWED = (Topic.OUTCOMES, Topic.APPROVALS_STATE, Topic.POA_ISSUED)

Sink = Callable[[Sequence[EventPayload]], Awaitable[None]]


class EventFollower:
    def __init__(self, bootstrap: str, namespace: str, sink: Sink) -> None:
        self._bootstrap = bootstrap
        self._namespace = namespace
        self._sink = sink
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            client_id="atb-chat",
        )
        await self._consumer.start()
        partitions = [
            TopicPartition(topic_name(spec.topic, self._namespace), p)
            for spec in CATALOGUE
            if spec.topic in FOLLOWED
            for p in range(spec.partitions)
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            events: list[EventPayload] = []
            for messages in batches.values():
                for message in messages:
                    try:
                        events.append(payload_of(decode_envelope(message.value)))
                    except EventDecodeError as exc:
                        log.debug("skipping undecodable record %s@%s: %s", message.topic, message.offset, exc)
            if events:
                await self._sink(events)
