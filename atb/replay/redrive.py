"""`atb replay redrive`: send dead-lettered records back, after the fault that killed them is fixed.

Dry run by default: it lists what would be sent. With `execute`, each selected
letter's original bytes go, with their original key, to the original topic (or
`--to`), in one Kafka transaction with the `dlq_redriven` audit event that
records it: there is never a re-drive without its audit event, nor the reverse.
A letter with an earlier `dlq_redriven` event (any run) or in this run's ledger
is not sent again unless `again`.

What it does not do: repair the record. A re-drive helps when the consumer or
the routing was wrong, not the record (a record that is still bad comes back to
the DLQ, audited again).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from atb.replay.errors import ReplayInfraError
from atb.replay.letters import LetterFilter, LetterRef, Redrive, plan_redrive
from atb.replay.runs import RunPlan, RunStore
from atb_runtime import Incoming, Outgoing, audit
from atb_runtime.readback import read_committed
from contracts import (
    CONTENT_TYPE,
    CONTENT_TYPE_HEADER,
    AuditEvent,
    DeadLetter,
    EventDecodeError,
    Topic,
    decode_envelope,
    payload_of,
    spec_for,
    topic_name,
)

__all__ = ["CLI_SOURCE", "REDRIVEN", "RedriveOptions", "Redriver", "redriven_refs"]

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
    events = await read_committed(bootstrap, topic, range(spec_for(Topic.AUDIT).partitions))
    return {
        str(e.details.get("dlq"))
        for e in events
        if isinstance(e, AuditEvent) and e.audit_type == REDRIVEN and e.details.get("dlq")
    }


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

    async def __aenter__(self) -> Redriver:
        if self.options.execute:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id="atb-replay-redrive",
                transactional_id=f"atb-replay-{self.plan.run_id}",
            )
            try:
                await self._producer.start()
            except (KafkaError, OSError) as exc:
                raise ReplayInfraError(f"cannot start a producer on {self.bootstrap}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()

    def _letters(self, batch: Sequence[Incoming]) -> list[tuple[LetterRef, DeadLetter]]:
        letters = []
        for record in batch:
            try:
                payload = payload_of(decode_envelope(record.value))
            except EventDecodeError:
                payload = None
            if not isinstance(payload, DeadLetter):
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
        self.seen.extend(planned)
        to_send = [r for r in planned if r.status == "send"]
        if opts.execute and to_send:
            await self._send(to_send)

    async def _send(self, redrives: list[Redrive]) -> None:
        assert self._producer is not None
        try:
            async with self._producer.transaction():
                for r in redrives:
                    headers = [(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode()), (REDRIVE_HEADER, str(r.ref).encode())]
                    await self._producer.send(r.target, value=r.value, key=r.key, headers=headers)
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
