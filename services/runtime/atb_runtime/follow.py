"""Follow topics from the beginning, without a consumer group: every replica sees every record.

For the views a service rebuilds on each start and keeps current (the gateway's
request views, the chat service's cards, the broker's keys and revocations).
Records are read `read_committed` and handed to the sink in decoded batches; a
sink that refuses one batch does not stop the following.

What the follower cannot use never reaches the sink: a record that does not
decode, an event whose type does not belong on the topic it was read from, and
an event the optional `check` refuses (e.g. an outcome whose proof is not the
approvals service's). With a `FollowerDeadLetters`, each of them is also
dead-lettered and audited under the follower's own consumer name (which names
its instance: followers have no consumer group, every replica reads every
record). A follower re-reads its topics from the beginning on every start, so
only records at or after the end offsets it found on start are dead-lettered:
earlier ones were lettered by an earlier run of it (or before it existed, by the
topic's other consumers), and a restart must not letter them again. Events of a
type that belongs on the topic but that the sink does not use pass by, as
before. See docs/hostile-input.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from atb_runtime.lag import LagReporter
from atb_runtime.records import DeadLetters, Incoming, Outgoing
from atb_runtime.tracing import consuming
from contracts import (
    Envelope,
    EventDecodeError,
    EventPayload,
    Topic,
    decode_envelope,
    payload_of,
    spec_for,
    topic_name,
)
from contracts.limits import PRODUCER_MAX_REQUEST_SIZE

__all__ = [
    "Check",
    "FollowerDeadLetters",
    "Refused",
    "Sink",
    "TopicFollower",
    "follower_consumer",
    "follower_dead_letters",
]

log = logging.getLogger(__name__)

Sink = Callable[[Sequence[EventPayload]], Awaitable[None]]


class Refused(NamedTuple):
    """Why a decoded event must not be used, and what to publish besides its dead letter."""

    code: str
    reason: str
    extra: tuple[Outgoing, ...] = ()


Check = Callable[[Envelope, EventPayload], Refused | None]
"""Decides, per decoded event of the right topic, whether the sink may use it (None: yes)."""


@dataclass(frozen=True)
class FollowerDeadLetters:
    """Where a follower's dead letters go: the helper that builds them and a way to publish them."""

    dead: DeadLetters
    publish: Callable[[Sequence[Outgoing]], Awaitable[None]]


def follower_consumer(service: str, role: str, instance: str) -> str:
    """A follower's consumer name in its dead letters: `<service>-<role>@<instance>`."""
    return f"{service}-{role}@{instance}"


def follower_dead_letters(
    service: str,
    role: str,
    instance: str,
    *,
    source: str,
    namespace: str,
    publish: Callable[[Sequence[Outgoing]], Awaitable[None]],
) -> FollowerDeadLetters:
    """Dead letters of the follower `role` of `service`, under its consumer name (`follower_consumer`)."""
    return FollowerDeadLetters(DeadLetters(follower_consumer(service, role, instance), source, namespace), publish)


CATCH_UP_S = 30.0
"""How long `start(catch_up=True)` reads before it lets the process go on regardless."""


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
        dead_letters: FollowerDeadLetters | None = None,
        check: Check | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._partitions = [
            TopicPartition(topic_name(topic, namespace), partition)
            for topic in topics
            for partition in range(spec_for(topic).partitions)
        ]
        self._topics = {topic_name(topic, namespace): topic for topic in topics}
        self._sink = sink
        self._name = name
        self._lag = LagReporter(name)
        self._wait = fetch_max_wait_ms
        self._max_records = max_records
        self._dead_letters = dead_letters
        self._check = check
        self._letter_from: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, background: bool = True, catch_up: bool = False) -> None:
        """Assign every partition from its beginning; with `background`, follow in a task of our own.

        With `catch_up`, return only once everything on the topics when it started was taken in
        (read to the end offsets of that moment): what the sink builds is complete as of then.
        """
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=self._wait,
            client_id=self._name,
            # A record may be as large as its topic accepts (contracts/limits.py).
            max_partition_fetch_bytes=PRODUCER_MAX_REQUEST_SIZE,
        )
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        if self._dead_letters is not None:
            self._letter_from = dict(await self._consumer.end_offsets(self._partitions))
        if catch_up:
            await self._catch_up(self._consumer)
        if background:
            self._task = asyncio.create_task(self.run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _catch_up(self, consumer: AIOKafkaConsumer) -> None:
        """Take in everything up to the end offsets of now; after CATCH_UP_S, go on in the background."""
        ends = await consumer.end_offsets(self._partitions)
        try:
            async with asyncio.timeout(CATCH_UP_S):
                while True:
                    behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
                    if not behind:
                        return
                    await self._step(consumer)
        except TimeoutError:
            log.warning("%s: not caught up after %.0fs; following on in the background", self._name, CATCH_UP_S)

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        while True:
            await self._step(consumer)

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        """One fetch: decode, refuse (and letter) what cannot be used, sink the rest."""
        batches = await consumer.getmany(timeout_ms=self._wait, max_records=self._max_records)
        await self._lag.report(consumer)
        events: list[EventPayload] = []
        used: list[ConsumerRecord[bytes, bytes]] = []
        letters: list[Outgoing] = []
        for messages in batches.values():
            for message in messages:
                event = self._usable(message, letters)
                if event is not None:
                    events.append(event)
                    used.append(message)
        if letters:
            await self._publish(letters)
        if events:
            try:
                with consuming(self._name, used):  # a span per traced record the view takes in
                    await self._sink(events)
            except (ValueError, KeyError) as exc:
                log.warning("%s: a batch of %d events was refused: %s", self._name, len(events), exc)

    def _usable(self, message: ConsumerRecord[bytes, bytes], letters: list[Outgoing]) -> EventPayload | None:
        """The event, or None (and its dead letter appended to `letters`, if it is new)."""
        refused: Refused
        envelope: Envelope | None = None
        try:
            envelope = decode_envelope(message.value)
            payload = payload_of(envelope)
        except EventDecodeError as exc:
            refused = Refused(exc.code, exc.reason)
        else:
            expected = self._topics.get(message.topic)
            if expected is not None and payload.topic is not expected:
                refused = Refused("unexpected_type", f"{envelope.type} does not belong on {message.topic}")
            else:
                verdict = self._check(envelope, payload) if self._check is not None else None
                if verdict is None:
                    return payload
                refused = verdict
        log.debug("%s: not using %s@%s: %s", self._name, message.topic, message.offset, refused.reason)
        self._letter(message, refused, letters)
        return None

    def _letter(self, message: ConsumerRecord[bytes, bytes], refused: Refused, letters: list[Outgoing]) -> None:
        if self._dead_letters is None:
            return
        tp = TopicPartition(message.topic, message.partition)
        if message.offset < self._letter_from.get(tp, 0):
            return  # read again after a restart: lettered by the run that first read it
        record = Incoming(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            timestamp_ms=message.timestamp,
        )
        letters.extend(self._dead_letters.dead(record, refused.code, refused.reason))
        letters.extend(refused.extra)

    async def _publish(self, letters: list[Outgoing]) -> None:
        assert self._dead_letters is not None
        try:
            await self._dead_letters.publish(letters)
        except (KafkaError, OSError) as exc:
            # A view must not stop because the DLQ is unreachable; the record is still not used.
            log.error("%s: could not publish %d dead-letter records: %s", self._name, len(letters), exc)
