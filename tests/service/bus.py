"""A record bus for the service tier: in memory by default, the real Kafka broker when asked.

A test talks to a `Bus` only: it attaches services (`ServiceUnderTest`: the
application service's `handle` and hooks, as `main.py` hands them to the
runtime), publishes records, waits until every attached service has handled
everything on its inputs (`settle`), and reads topics back. The same test body
runs on either implementation, as faststream's `TestKafkaBroker` lets one test
run in memory or against the real broker:

- `MemoryBus`: topics with the catalogue's partition counts, a record's
  partition from its key (`atb_runtime.partitioning`, murmur2 as Kafka's
  default partitioner), offsets, headers, timestamps from the injected clock.
  Each attached service consumes as one instance owning every partition index:
  per index, the records of its co-partitioned input topics in the order they
  were appended, handed to `handle` in one batch whose outputs are appended
  together with the new offsets (the transaction of `atb_runtime.eos`). A record
  on another partition than its key's is set aside with the service's `poison`
  hook before `handle` sees it, as the processor does; a batch whose handler
  raises is retried record by record and a record that fails alone is set aside
  at once (the processor first retries it `max_record_attempts` times); a
  `TransientError` (a dependency down) commits nothing, and the batch is handled
  again by a later `settle`. `tick`
  runs the services' time-driven step; time moves only with the test's clock. State read-back
  (`atb_runtime.readback.read_records`, used by the approvals changelog and the
  issuer's memory) reads this bus (`install`).
- `KafkaBus`: the same calls on the real broker, in a test namespace. Each
  attached service runs in this process on `atb_runtime.eos.TransactionalProcessor`
  (Kafka transactions, fencing, read-back from Kafka); `settle` waits until
  every attached group has committed past the last committed record of each of
  its input partitions, so "nothing else was produced" is proven by reading to
  the end offsets, never by sleeping. The processor ticks by itself, so
  deadline scenarios (clock moves and `tick`) run in memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from atb_runtime import (
    DeadLetters,
    Incoming,
    Outgoing,
    ProcessorConfig,
    Publisher,
    TransactionalProcessor,
    TransientError,
)
from atb_runtime.eos import AssignHook, PoisonHook, RewindHook, TickHook
from atb_runtime.follow import Check, Refused, Sink
from atb_runtime.partitioning import partition_for
from atb_runtime.readback import StoredRecord, iter_records, read_records
from atb_runtime.records import run_after_commit
from atb_runtime.tracking import Tracker
from contracts import (
    CONTENT_TYPE,
    CONTENT_TYPE_HEADER,
    EventDecodeError,
    EventPayload,
    Topic,
    decode_envelope,
    payload_of,
    spec_for,
    topic_name,
)
from tests.service.clock import Clock
from tests.waits import until

__all__ = ["Bus", "BusPublisher", "KafkaBus", "MemoryBus", "ServiceUnderTest", "events_of", "install"]

READBACK_USERS = ("approvals.adapters.state", "issuer.service")
"""Modules that read committed records back from Kafka (`read_records`) to restore their state."""

Headers = tuple[tuple[str, bytes], ...]
Handle = Callable[[Sequence[Incoming]], Awaitable[Sequence[Outgoing]]]


@dataclass(frozen=True)
class ServiceUnderTest:
    """What the runtime drives: a service's handler and hooks, and the topics it consumes."""

    name: str
    inputs: tuple[Topic, ...]
    handle: Handle
    poison: PoisonHook
    on_assigned: AssignHook | None = None
    on_rewind: RewindHook | None = None
    tick: TickHook | None = None


class Bus(Protocol):
    namespace: str

    async def attach(self, service: ServiceUnderTest) -> None:
        """Start consuming the service's inputs from its group's committed offsets (the beginning at first)."""
        ...

    async def detach(self, name: str) -> None:
        """Stop the service; its offsets stay (a later `attach` under the name resumes, as a restart)."""
        ...

    async def publish(self, records: Sequence[Outgoing]) -> None: ...

    async def publish_raw(self, topic: Topic, key: bytes | None, value: bytes | None, partition: int) -> None:
        """A record as a hostile or buggy producer writes it: any bytes, any partition."""
        ...

    async def settle(self) -> None:
        """Return once every attached service has handled every record on its inputs, transitively.

        The services are checked in the order they were attached: attach upstream services first.
        """
        ...

    async def tick(self) -> None:
        """Run every attached service's time-driven step, then settle (in memory only)."""
        ...

    async def records(self, topic: Topic) -> list[StoredRecord]:
        """The committed records of a topic, by partition and offset."""
        ...


def events_of(records: Iterable[StoredRecord]) -> list[EventPayload]:
    """The payloads of the records that decode (tombstones and garbage are skipped)."""
    out: list[EventPayload] = []
    for record in records:
        if record.value is None:
            continue
        try:
            out.append(payload_of(decode_envelope(record.value)))
        except EventDecodeError:
            continue
    return out


# -- in memory ---------------------------------------------------------------------------


@dataclass
class _Member:
    service: ServiceUnderTest
    group: dict[tuple[str, int], int]
    """The group's committed offsets: (topic, partition) → next offset to read."""
    transient: int = 0
    """Batches given back because the handler raised a TransientError (retried on a later settle)."""


@dataclass
class _Follower:
    """A group-less follower (`atb_runtime.follow.TopicFollower`): decoded, checked events into a sink."""

    topics: tuple[Topic, ...]
    sink: Sink
    check: Check | None
    dead: DeadLetters | None
    position: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass
class _Tracked:
    """A tracking loop (`atb_runtime.tracking.TrackingConsumer`): positions kept by the tracker, not the bus."""

    tracker: Tracker
    topics: tuple[Topic, ...]
    already: tuple[type[BaseException], ...]
    already_recorded: int = 0


@dataclass
class _Log:
    partitions: list[list[tuple[int, StoredRecord]]]
    """Per partition, (append sequence, record); the sequence orders records across topics."""


@dataclass
class MemoryBus:
    clock: Clock
    namespace: str = "mem."
    max_batch: int = 500
    max_rounds: int = 1000
    """`settle` gives up (and fails the test) after this many rounds: services feeding each other forever."""
    _logs: dict[str, _Log] = field(default_factory=dict)
    _topics: dict[str, Topic] = field(default_factory=dict)
    _groups: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)
    _members: dict[str, _Member] = field(default_factory=dict)
    _followers: dict[str, _Follower] = field(default_factory=dict)
    _tracked: dict[str, _Tracked] = field(default_factory=dict)
    _headers: dict[tuple[str, int, int], Headers] = field(default_factory=dict)
    _seq: int = 0

    def __post_init__(self) -> None:
        for topic in Topic:
            name = topic_name(topic, self.namespace)
            self._topics[name] = topic
            self._logs[name] = _Log([[] for _ in range(spec_for(topic).partitions)])

    # -- producing -------------------------------------------------------------------------

    def _append(self, name: str, partition: int, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        log = self._logs.get(name)
        if log is None:
            raise KeyError(f"{name} is not a catalogue topic of namespace {self.namespace!r}")
        if not 0 <= partition < len(log.partitions):
            raise ValueError(f"{name} has no partition {partition}")
        records = log.partitions[partition]
        self._seq += 1
        stored = StoredRecord(
            partition=partition,
            offset=len(records),
            key=key,
            value=value,
            timestamp_ms=int(self.clock.time() * 1000),
            topic=name,
        )
        records.append((self._seq, stored))
        self._headers[(name, partition, stored.offset)] = headers

    def _partition_of(self, name: str, key: bytes) -> int:
        return partition_for(key, len(self._logs[name].partitions))

    async def publish(self, records: Sequence[Outgoing]) -> None:
        for out in records:
            self._append(out.topic, self._partition_of(out.topic, out.key), out.key, out.value, out.headers)
        await run_after_commit(records)  # appended here is committed

    async def publish_raw(self, topic: Topic, key: bytes | None, value: bytes | None, partition: int) -> None:
        headers = ((CONTENT_TYPE_HEADER, CONTENT_TYPE.encode()),)
        self._append(topic_name(topic, self.namespace), partition, key, value, headers)

    def headers_of(self, record: StoredRecord) -> Headers:
        return self._headers[(record.topic, record.partition, record.offset)]

    # -- consuming -------------------------------------------------------------------------

    async def attach(self, service: ServiceUnderTest) -> None:
        if service.name in self._members:
            raise ValueError(f"{service.name} is attached already")
        group = self._groups.setdefault(service.name, {})
        member = _Member(service, group)
        self._members[service.name] = member
        if service.on_assigned is not None:
            await service.on_assigned(set(range(self._width(service))))

    async def detach(self, name: str) -> None:
        del self._members[name]

    def _width(self, service: ServiceUnderTest) -> int:
        counts = {spec_for(topic).partitions for topic in service.inputs}
        if len(counts) != 1:
            raise ValueError(f"{service.name}'s inputs are not co-partitioned: {counts}")
        return counts.pop()

    def _pending(self, member: _Member, partition: int) -> list[tuple[int, StoredRecord]]:
        waiting: list[tuple[int, StoredRecord]] = []
        for topic in member.service.inputs:
            name = topic_name(topic, self.namespace)
            records = self._logs[name].partitions[partition]
            waiting.extend(records[member.group.get((name, partition), 0) :])
        waiting.sort(key=lambda entry: entry[0])
        return waiting[: self.max_batch]

    def incoming(self, record: StoredRecord) -> Incoming:
        """A stored record as a consumer receives it (`Incoming`, headers included)."""
        return Incoming(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=self.headers_of(record),
            timestamp_ms=record.timestamp_ms,
        )

    async def _step(self, member: _Member) -> bool:
        """One batch per partition index with input waiting; False when there was none."""
        worked = False
        for partition in range(self._width(member.service)):
            batch = [self.incoming(record) for _, record in self._pending(member, partition)]
            if not batch:
                continue
            try:
                outputs = await self._handled(member.service, batch)
            except TransientError:
                # A dependency is down: nothing commits, the batch is read again on a later settle.
                member.transient += 1
                continue
            worked = True
            # The transaction: outputs and the new offsets together (then what waits for the commit).
            await self.publish(outputs)
            for record in batch:
                member.group[(record.topic, record.partition)] = record.offset + 1
        return worked

    async def _handled(self, service: ServiceUnderTest, batch: list[Incoming]) -> list[Outgoing]:
        letters: list[Outgoing] = []
        usable: list[Incoming] = []
        for record in batch:
            expected = self._partition_of(record.topic, record.key) if record.key else record.partition
            if expected == record.partition:
                usable.append(record)
                continue
            count = len(self._logs[record.topic].partitions)
            reason = f"key belongs on partition {expected} of {count}, the record is on {record.partition}"
            letters.extend(service.poison(record, "wrong_partition", reason))
        try:
            return [*letters, *(await service.handle(usable) if usable else [])]
        except TransientError:
            raise
        except Exception:  # as the processor: one record at a time, and the one that fails alone is set aside
            outputs = letters
            for record in usable:
                try:
                    outputs.extend(await service.handle([record]))
                except TransientError:
                    raise
                except Exception as exc:
                    reason = f"failed alone: {type(exc).__name__}: {exc}"
                    outputs.extend(service.poison(record, "poison_record", reason))
        return outputs

    def follow(
        self,
        name: str,
        topics: tuple[Topic, ...],
        sink: Sink,
        *,
        check: Check | None = None,
        dead: DeadLetters | None = None,
    ) -> None:
        """Follow topics from their beginning, as a view does; `settle` feeds the sink too."""
        self._followers[name] = _Follower(topics, sink, check, dead)

    async def _feed(self, follower: _Follower) -> bool:
        """What `TopicFollower` does with one fetch: decode, refuse (and letter) what it cannot use, sink the rest."""
        fresh: list[tuple[int, StoredRecord, Topic]] = []
        for topic in follower.topics:
            name = topic_name(topic, self.namespace)
            for partition, records in enumerate(self._logs[name].partitions):
                start = follower.position.get((name, partition), 0)
                fresh.extend((seq, record, topic) for seq, record in records[start:])
                follower.position[(name, partition)] = len(records)
        if not fresh:
            return False
        events: list[EventPayload] = []
        letters: list[Outgoing] = []
        for _, record, topic in sorted(fresh, key=lambda entry: entry[0]):
            refused: Refused
            try:
                envelope = decode_envelope(record.value)
                payload = payload_of(envelope)
            except EventDecodeError as exc:
                refused = Refused(exc.code, exc.reason)
            else:
                if payload.topic is not topic:
                    refused = Refused("unexpected_type", f"{envelope.type} does not belong on {record.topic}")
                elif (verdict := follower.check(envelope, payload) if follower.check else None) is None:
                    events.append(payload)
                    continue
                else:
                    refused = verdict
            if follower.dead is not None:
                letters.extend(follower.dead(self.incoming(record), refused.code, refused.reason))
                letters.extend(refused.extra)
        await self.publish(letters)
        if events:
            await follower.sink(events)
        return True

    def track(
        self,
        name: str,
        tracker: Tracker,
        *,
        topics: tuple[Topic, ...] = tuple(Topic),
        already_recorded: tuple[type[BaseException], ...] = (),
    ) -> None:
        """Feed `tracker` as `TrackingConsumer` does: from the positions it stores, the rows and the next positions
        in one call; a batch it says it recorded already makes the loop re-read the positions."""
        self._tracked[name] = _Tracked(tracker, topics, already_recorded)

    def given_back(self, name: str) -> int:
        """How many batches the service gave back with a TransientError."""
        return self._members[name].transient

    def untrack(self, name: str) -> None:
        del self._tracked[name]

    async def _track(self, tracked: _Tracked) -> bool:
        stored = await tracked.tracker.positions()
        batch: list[tuple[int, StoredRecord]] = []
        for topic in tracked.topics:
            name = topic_name(topic, self.namespace)
            for partition, records in enumerate(self._logs[name].partitions):
                batch.extend(records[stored.get((name, partition), 0) :])
        batch = sorted(batch, key=lambda entry: entry[0])[: self.max_batch]
        if not batch:
            await tracked.tracker.tick()
            return False
        positions: dict[tuple[str, int], int] = {}
        for _, record in batch:
            positions[(record.topic, record.partition)] = record.offset + 1
        try:
            await tracked.tracker.record([self.incoming(r) for _, r in batch], positions)
        except tracked.already:
            tracked.already_recorded += 1  # the next round starts from the stored positions
        await tracked.tracker.tick()
        return True

    async def settle(self) -> None:
        for _ in range(self.max_rounds):
            worked = [await self._step(member) for member in list(self._members.values())]
            worked += [await self._feed(follower) for follower in list(self._followers.values())]
            worked += [await self._track(tracked) for tracked in list(self._tracked.values())]
            if not any(worked):
                return
        raise AssertionError(f"the services did not settle within {self.max_rounds} rounds")

    async def tick(self) -> None:
        for member in list(self._members.values()):
            if member.service.tick is not None:
                await self.publish(await member.service.tick())
        await self.settle()

    # -- reading back ----------------------------------------------------------------------

    async def records(self, topic: Topic) -> list[StoredRecord]:
        log = self._logs[topic_name(topic, self.namespace)]
        return [record for records in log.partitions for _, record in records]

    async def read_records(
        self,
        bootstrap: str,
        topic: str,
        partitions: Iterable[int] | None,
        *,
        since: datetime | None = None,
        start: Mapping[TopicPartition, int] | None = None,
    ) -> list[StoredRecord]:
        """`atb_runtime.readback.read_records` over this bus (the services' state restore)."""
        del bootstrap
        log = self._logs[topic]
        wanted = range(len(log.partitions)) if partitions is None else partitions
        since_ms = int(since.timestamp() * 1000) if since is not None else None
        out: list[StoredRecord] = []
        for partition in wanted:
            first = (start or {}).get(TopicPartition(topic, partition), 0)
            for _, record in log.partitions[partition][first:]:
                if since_ms is None or record.timestamp_ms >= since_ms:
                    out.append(record)
        return out


@dataclass
class BusPublisher:
    """`atb_runtime.publisher.RecordPublisher` onto a bus: what a service publishes outside a transaction."""

    bus: Bus

    async def publish(self, records: Sequence[Outgoing]) -> None:
        await self.bus.publish(records)

    async def flush(self) -> None:
        return None

    async def send_and_wait(self, records: Sequence[Outgoing]) -> None:
        await self.bus.publish(records)


def install(monkeypatch: pytest.MonkeyPatch, bus: MemoryBus) -> None:
    """Point every state read-back (`read_records` in `READBACK_USERS`) at the in-memory bus."""
    import importlib

    for name in READBACK_USERS:
        module = importlib.import_module(name)
        if getattr(module, "read_records", None) is not read_records:
            raise AssertionError(f"{name} no longer reads back with read_records: update tests/service/bus.py")
        monkeypatch.setattr(module, "read_records", bus.read_records)


# -- on the real broker --------------------------------------------------------------------


@dataclass
class _Running:
    service: ServiceUnderTest
    processor: TransactionalProcessor
    task: asyncio.Task[None]
    group_id: str


@dataclass
class KafkaBus:
    """The same calls on the real Kafka broker, in a test namespace whose topics exist already."""

    bootstrap: str
    namespace: str
    settle_timeout_s: float = 60.0
    _publisher: Publisher | None = None
    _running: dict[str, _Running] = field(default_factory=dict)

    async def start(self) -> None:
        self._publisher = Publisher(self.bootstrap, f"svc-tier-{self.namespace}", linger_ms=0)
        await self._publisher.start()

    async def close(self) -> None:
        for name in list(self._running):
            await self.detach(name)
        if self._publisher is not None:
            await self._publisher.stop()

    async def attach(self, service: ServiceUnderTest) -> None:
        ns = self.namespace.rstrip(".")
        config = ProcessorConfig(
            bootstrap=self.bootstrap,
            topics=tuple(topic_name(t, self.namespace) for t in service.inputs),
            group_id=f"atb-{service.name}.{ns}",
            transactional_prefix=f"atb-{service.name}-{ns}",
            member_id=f"atb-{service.name}-{ns}-0",
            client_id=f"atb-{service.name}-0",
            service=service.name,
            poll_timeout_ms=50,
        )
        processor = TransactionalProcessor(
            config,
            service.handle,
            service.on_rewind,
            on_assigned=service.on_assigned,
            tick=service.tick,
            poison=service.poison,
        )
        await processor.start()
        task = asyncio.create_task(processor.run(), name=f"svc-{service.name}")
        self._running[service.name] = _Running(service, processor, task, config.group_id)

    async def detach(self, name: str) -> None:
        running = self._running.pop(name)
        await running.processor.stop()
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.task

    async def publish(self, records: Sequence[Outgoing]) -> None:
        assert self._publisher is not None, "start() first"
        await self._publisher.send_and_wait(records)

    async def publish_raw(self, topic: Topic, key: bytes | None, value: bytes | None, partition: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            headers = [(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode())]
            await producer.send_and_wait(
                topic_name(topic, self.namespace), value=value, key=key, partition=partition, headers=headers
            )
        finally:
            await producer.stop()

    async def _behind(self, admin: AIOKafkaAdminClient, running: _Running) -> bool:
        """Whether a committed record exists at or after the group's committed offset on any input partition."""
        if running.task.done():
            running.task.result()  # the processor died: fail with its error
        committed = await admin.list_consumer_group_offsets(running.group_id)
        start: dict[TopicPartition, int] = {}
        for topic in running.service.inputs:
            name = topic_name(topic, self.namespace)
            for partition in range(spec_for(topic).partitions):
                tp = TopicPartition(name, partition)
                meta = committed.get(tp)
                start[tp] = meta.offset if meta is not None and meta.offset >= 0 else 0
        topics = {topic_name(t, self.namespace): None for t in running.service.inputs}
        async for _record in iter_records(self.bootstrap, topics, start=start):
            return True  # read to the end offsets taken at start: anything found is unhandled
        return False

    async def settle(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()

        async def behind() -> list[str]:
            return [name for name, r in self._running.items() if await self._behind(admin, r)]

        try:
            # Committed group offsets against the end offsets: Kafka notifies no one of a commit. Two clean
            # checks in a row: right after a namespace's topics are made, one answer can come from metadata
            # the broker has not caught up on yet (a stale end offset reads as "nothing left").
            for _ in range(2):
                await until(
                    behind, lambda late: not late, timeout=self.settle_timeout_s, what="every consumer catching up"
                )
        finally:
            await admin.close()

    async def tick(self) -> None:
        # The processor ticks by itself, inside its own loop and transactions; a tick from
        # outside would race it. Deadlines on the real broker stay with tests/e2e.
        raise NotImplementedError("on the real broker the processor runs the services' ticks itself")

    async def records(self, topic: Topic) -> list[StoredRecord]:
        name = topic_name(topic, self.namespace)
        return sorted(await read_records(self.bootstrap, name, None), key=lambda r: (r.partition, r.offset))
