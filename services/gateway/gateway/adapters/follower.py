"""Follow the request, outcome and PoA topics into the gateway's request views.

No consumer group: every gateway replica reads everything from the beginning
(of retention), so any replica can answer `GET /requests/{id}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import CATALOGUE, EventDecodeError, Topic, decode_envelope, payload_of, topic_name
from gateway.domain import Views

__all__ = ["ViewFollower"]

log = logging.getLogger(__name__)

_FOLLOWED = (Topic.POA_REQUESTS, Topic.OUTCOMES, Topic.POA_ISSUED)


class ViewFollower:
    def __init__(self, bootstrap: str, namespace: str, views: Views) -> None:
        self._bootstrap = bootstrap
        self._namespace = namespace
        self._views = views
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, isolation_level="read_committed"
        )
        await self._consumer.start()
        partitions = [
            TopicPartition(topic_name(spec.topic, self._namespace), p)
            for spec in CATALOGUE
            if spec.topic in _FOLLOWED
            for p in range(spec.partitions)
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._follow(), name="gateway-views")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for messages in batches.values():
                for msg in messages:
                    try:
                        self._views.apply(payload_of(decode_envelope(msg.value)))
                    except EventDecodeError:
                        continue  # the consumers that own these topics dead-letter bad records
