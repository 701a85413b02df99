"""Follow topics from the beginning, without a consumer group: every replica sees every record.

For the views a service rebuilds on each start and keeps current (the gateway's
request views, the chat service's cards, the broker's keys and revocations).
Records are read `read_committed` and handed to the sink in decoded batches;
records that do not decode are skipped (the topic's own consumer dead-letters
them), and a sink that refuses one batch does not stop the following.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import EventDecodeError, EventPayload, Topic, decode_envelope, payload_of, spec_for, topic_name

__all__ = ["Sink", "TopicFollower"]

log = logging.getLogger(__name__)

Sink = Callable[[Sequence[EventPayload]], Awaitable[None]]


class TopicFollower:
    def __init__(
        self,
        bootstrap: str,
        namespace: str,
        topics: Sequence[Topic],
        sink: Sink,
        *,
        name: str,
        fetch_max_wait_ms: int = 200,
        max_records: int = 1000,
    ) -> None:
        self._bootstrap = bootstrap
        self._partitions = [
            TopicPartition(topic_name(topic, namespace), partition)
            for topic in topics
            for partition in range(spec_for(topic).partitions)
        ]
        self._sink = sink
        self._name = name
        self._wait = fetch_max_wait_ms
        self._max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, background: bool = True) -> None:
        """Assign every partition from its beginning; with `background`, follow in a task of our own."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=self._wait,
            client_id=self._name,
        )
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        if background:
            self._task = asyncio.create_task(self.run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        while True:
            batches = await consumer.getmany(timeout_ms=self._wait, max_records=self._max_records)
            events: list[EventPayload] = []
            for messages in batches.values():
                for message in messages:
                    try:
                        events.append(payload_of(decode_envelope(message.value)))
                    except EventDecodeError as exc:
                        log.debug("%s: skipping undecodable %s@%s: %s", self._name, message.topic, message.offset, exc)
            if events:
                try:
                    await self._sink(events)
                except (ValueError, KeyError) as exc:
                    log.warning("%s: a batch of %d events was refused: %s", self._name, len(events), exc)
