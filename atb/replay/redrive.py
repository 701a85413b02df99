"""`atb replay redrive`: send dead-lettered records back, after the fault that killed them is fixed.

Dry run by default: it lists what would be sent. A letter carries no more than
a prefix of its original (contracts/limits.py): the original is read back from
the letter's coordinates on its original topic, exact bytes, key and headers,
and re-driven only if its SHA-256 is the letter's. An original that is gone
(retention) or different is refused, and listed with the reason. With
`execute`, each selected original goes to its original topic (or `--to`), in
one Kafka transaction with the `dlq_redriven` audit event that records it:
there is never a re-drive without its audit event, nor the reverse. A letter
with an earlier `dlq_redriven` event (any run) or in this run's ledger is not
sent again unless `again`.

What it does not do: repair the record. A re-drive helps when the consumer or
the routing was wrong, not the record (a record that is still bad comes back to
the DLQ, audited again).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from atb.replay.errors import ReplayInfraError
from atb.replay.letters import AnyLetter, LetterFilter, LetterRef, Original, Redrive, check_original, plan_redrive
from atb.replay.runs import RunPlan, RunStore
from atb_runtime import Incoming, Outgoing, audit
from atb_runtime.readback import read_committed
from contracts import (
    CONTENT_TYPE,
    CONTENT_TYPE_HEADER,
    AuditEvent,
    DeadLetter,
    DeadLetterV1,
    EventDecodeError,
    Topic,
    decode_envelope,
    payload_of,
    topic_name,
)
from contracts.limits import PRODUCER_MAX_REQUEST_SIZE

__all__ = ["CLI_SOURCE", "REDRIVEN", "OriginalReader", "RedriveOptions", "Redriver", "redriven_refs"]

REDRIVEN = "dlq_redriven"
CLI_SOURCE = "spiffe://atb.local/ops/cli"
REDRIVE_HEADER = "atb-redriven-from"


@dataclass(frozen=True)
class RedriveOptions:
    namespace: str
    letter_filter: LetterFilter
    target: str | None
    execute: bool
    again: bool
    who: str


async def redriven_refs(bootstrap: str, namespace: str) -> set[str]:
    """Refs of every dead letter with a `dlq_redriven` audit event on `atb.audit`."""
    topic = topic_name(Topic.AUDIT, namespace)
    events = await read_committed(bootstrap, topic)
    return {
        str(e.details.get("dlq"))
        for e in events
        if isinstance(e, AuditEvent) and e.audit_type == REDRIVEN and e.details.get("dlq")
    }


class OriginalReader:
    """Reads single records back by their coordinates (`read_committed`, no consumer group)."""

    def __init__(self, bootstrap: str, *, timeout_s: float = 10.0) -> None:
        self._timeout_ms = int(timeout_s * 1000)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            client_id="atb-replay-redrive-originals",
            # An original may be as large as a topic accepts.
            max_partition_fetch_bytes=PRODUCER_MAX_REQUEST_SIZE,
            fetch_max_bytes=2 * PRODUCER_MAX_REQUEST_SIZE,
        )

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except (KafkaError, OSError) as exc:
            raise ReplayInfraError(f"cannot start a consumer to read originals: {exc}") from exc

    async def stop(self) -> None:
        await self._consumer.stop()

    async def read(self, topic: str, partition: int, offset: int) -> Original | None:
        """The record at exactly that offset, or None: topic or partition gone, offset out of retention or aborted."""
        consumer = self._consumer
        # The consumer's own metadata call: `topics()` returns names only, and leaves the
        # client's cached cluster (what `partitions_for_topic` reads) as it was.
        cluster = await consumer._client.fetch_all_metadata()
        if partition not in (cluster.partitions_for_topic(topic) or set()):
            return None
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not first <= offset < end:
            return None
        consumer.seek(tp, offset)
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=self._timeout_ms, max_records=1)
            messages = batches.get(tp, [])
            if not messages:
                continue
            message = messages[0]
            if message.offset != offset:
                return None  # that offset holds no committed record (aborted, or a transaction marker)
            headers = tuple((name, bytes(value)) for name, value in message.headers)
            return Original(key=message.key, value=message.value, headers=headers)
        return None


@dataclass
class Redriver:
    """The scan handler of a re-drive run; keeps what it saw for the report."""

    bootstrap: str
    options: RedriveOptions
    store: RunStore
    plan: RunPlan
    done: set[str]
    seen: list[Redrive] = field(default_factory=list)
    sent: list[Redrive] = field(default_factory=list)
    undecodable: int = 0
    _producer: AIOKafkaProducer | None = None
    _reader: OriginalReader | None = None

    async def __aenter__(self) -> Redriver:
        self._reader = OriginalReader(self.bootstrap)
        await self._reader.start()
        if self.options.execute:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id="atb-replay-redrive",
                transactional_id=f"atb-replay-{self.plan.run_id}",
                max_request_size=PRODUCER_MAX_REQUEST_SIZE,
            )
            try:
                await self._producer.start()
            except (KafkaError, OSError) as exc:
                await self._reader.stop()
                raise ReplayInfraError(f"cannot start a producer on {self.bootstrap}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._reader is not None:
            await self._reader.stop()

    @property
    def refused(self) -> list[Redrive]:
        return [r for r in self.seen if r.refused]

    def _letters(self, batch: Sequence[Incoming]) -> list[tuple[LetterRef, AnyLetter]]:
        letters: list[tuple[LetterRef, AnyLetter]] = []
        for record in batch:
            try:
                payload = payload_of(decode_envelope(record.value))
            except EventDecodeError:
                payload = None
            if not isinstance(payload, DeadLetter | DeadLetterV1):
                self.undecodable += 1
                continue
            letters.append((LetterRef(record.topic, record.partition, record.offset), payload))
        return letters

    async def handle(self, batch: Sequence[Incoming]) -> None:
        opts = self.options
        planned = plan_redrive(
            self._letters(batch),
            opts.letter_filter,
            namespace=opts.namespace,
            target=opts.target,
            done=self.done | set(self.plan.ledger),
            again=opts.again,
        )
        planned = [await self._with_original(r) for r in planned]
        self.seen.extend(planned)
        to_send = [r for r in planned if r.status == "send"]
        if opts.execute and to_send:
            await self._send(to_send)

    async def _with_original(self, redrive: Redrive) -> Redrive:
        """Read the original back from the letter's coordinates (dry runs too: they say what would be refused)."""
        if redrive.status != "send":
            return redrive
        assert self._reader is not None
        letter = redrive.letter
        try:
            found = await self._reader.read(letter.original_topic, letter.original_partition, letter.original_offset)
        except KafkaError as exc:
            raise ReplayInfraError(f"cannot read the original of dead letter {redrive.ref}: {exc}") from exc
        return check_original(redrive, found)

    async def _send(self, redrives: list[Redrive]) -> None:
        assert self._producer is not None
        try:
            async with self._producer.transaction():
                for r in redrives:
                    assert r.original is not None  # check_original gave every `send` its original
                    kept = [(n, v) for n, v in r.original.headers if n != REDRIVE_HEADER] or [
                        (CONTENT_TYPE_HEADER, CONTENT_TYPE.encode())
                    ]
                    headers = [*kept, (REDRIVE_HEADER, str(r.ref).encode())]
                    await self._producer.send(r.target, value=r.original.value, key=r.original.key, headers=headers)
                    event = self._audit(r)
                    await self._producer.send(
                        event.topic, value=event.value, key=event.key, headers=list(event.headers)
                    )
        except KafkaError as exc:
            raise ReplayInfraError(f"re-drive transaction failed (nothing of it was sent): {exc}") from exc
        self.sent.extend(redrives)
        refs = [str(r.ref) for r in redrives]
        self.store.update(self.plan.run_id, lambda plan: plan.with_ledger(*refs))

    def _audit(self, r: Redrive) -> Outgoing:
        letter = r.letter
        return audit(
            REDRIVEN,
            source=CLI_SOURCE,
            namespace=self.options.namespace,
            outcome="success",
            request_id=letter.request_id,
            reason=f"re-driven {letter.error_code} letter of {letter.consumer} to {r.target}",
            details={
                "dlq": str(r.ref),
                "dlq_topic": r.ref.topic,
                "dlq_partition": r.ref.partition,
                "dlq_offset": r.ref.offset,
                "original_topic": letter.original_topic,
                "original_partition": letter.original_partition,
                "original_offset": letter.original_offset,
                "target_topic": r.target,
                "consumer": letter.consumer,
                "error_code": letter.error_code,
                "run_id": self.plan.run_id,
                "who": self.options.who,
                "redrive_id": str(uuid.uuid4()),
                "at": datetime.now(UTC).isoformat(),
            },
        )
