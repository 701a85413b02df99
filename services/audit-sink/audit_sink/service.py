"""Audit ingest: consume every `atb.*` topic, store each record exactly once.

Offsets live in the audit database, in the same transaction as the rows
(DESIGN.md §6.4). On (re)assignment the consumer seeks to the offsets stored
there, so Kafka's own committed offsets are never used, and a SIGKILL at any
point loses or duplicates nothing.

Every append also extends the Merkle tree (RFC 6962) the sink keeps in memory
as its right edge (`Frontier`); at least every `checkpoint_interval_s` while
events arrive, and after every `checkpoint_every` events, the sink signs a C2SP
checkpoint of it, stores it and announces it on `atb.audit`, so that parties
outside the database hold the roots. The sink signs only a tree that extends
its own last checkpoint: if the stored leaves disagree with it, it stops
signing (a log must never sign two checkpoints that disagree).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from atb_runtime import Publisher
from atb_runtime.ops import OpsServer
from atb_runtime.records import audit
from audit_sink.adapters.db import AppendResult, AuditStore
from audit_sink.adapters.ledger import CHECKPOINT_AUDIT_TYPE
from audit_sink.adapters.signing import NoteSigner, verify_note
from audit_sink.domain import AuditRow, RecordMeta, RetentionPolicy, row_for
from audit_sink.domain.checkpoint import Checkpoint, NoteError
from audit_sink.domain.merkle import Frontier
from audit_sink.settings import AuditSinkSettings
from contracts import AuditEvent, all_topics_pattern

__all__ = ["AuditIngest"]

log = logging.getLogger(__name__)


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, ingest: AuditIngest) -> None:
        self._ingest = ingest

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._ingest.seek_to_stored(assigned)


class AuditIngest:
    def __init__(self, settings: AuditSinkSettings, store: AuditStore, signer: NoteSigner) -> None:
        self._settings = settings
        self._store = store
        self._signer = signer
        self._frontier = Frontier()
        self._signed_size = 0
        self._pending = 0
        self._last_checkpoint = time.monotonic()
        self._can_sign = True
        self._publisher: Publisher | None = None
        self.checkpoints = 0
        self._retention = RetentionPolicy(settings.retention_years, settings.retention_days_by_event_type)
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._running = False
        self._ops = OpsServer(settings.ops_port, lambda: self._running, settings.ops_host)
        self.stored = 0

    async def start(self) -> None:
        ns = self._settings.topic_namespace
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            client_id=f"atb-audit-sink-{self._settings.instance}",
            group_id=f"{self._settings.group_id}.{ns.rstrip('.') or 'default'}",
            group_instance_id=f"atb-audit-sink-{ns.rstrip('.') or 'default'}-{self._settings.instance}",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            metadata_max_age_ms=self._settings.metadata_max_age_ms,
        )
        await asyncio.to_thread(self._load_tree)
        self._publisher = Publisher(self._settings.kafka_bootstrap_servers, f"atb-audit-sink-{self._settings.instance}")
        await self._publisher.start()
        self._consumer.subscribe(pattern=all_topics_pattern(ns), listener=_SeekToStored(self))
        await self._consumer.start()
        await self._ops.start()

    async def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        stored = await asyncio.to_thread(self._store.offsets)
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        self._running = True
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self._settings.max_batch)
                if batches:
                    await self._store_batch(batches)
                await self._maybe_checkpoint()
        finally:
            self._running = False

    async def _store_batch(self, batches: dict[TopicPartition, list[object]]) -> None:
        now = datetime.now(UTC)
        rows = []
        next_offsets: dict[tuple[str, int], int] = {}
        for tp, messages in batches.items():
            for msg in messages:
                meta = RecordMeta(
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=getattr(msg, "offset"),  # noqa: B009 - aiokafka records are untyped
                    key=getattr(msg, "key"),  # noqa: B009
                    value=getattr(msg, "value"),  # noqa: B009
                    timestamp_ms=getattr(msg, "timestamp", 0) or 0,
                )
                rows.append(row_for(meta, recorded_at=now, retention=self._retention))
            if messages:
                next_offsets[(tp.topic, tp.partition)] = getattr(messages[-1], "offset") + 1  # noqa: B009
        result = await asyncio.to_thread(self._store.append, rows, next_offsets)
        self._grow(result)
        self.stored += len(result.rows)

    def _load_tree(self) -> None:
        """Rebuild the tree's right edge from the stored leaves; check it against our last checkpoint."""
        hashes = self._store.leaf_hashes()
        notes = self._store.checkpoint_notes()
        self._frontier = Frontier.of(hashes)
        self._pending = len(hashes)
        if not notes:
            return
        try:
            last = Checkpoint.parse(verify_note(notes[-1], self._signer.verifier).text)
        except NoteError as exc:
            log.error("audit sink: the last stored checkpoint does not verify (%s): not signing", exc)
            self._can_sign = False
            return
        if last.size > len(hashes) or Frontier.of(hashes[: last.size]).root() != last.root:
            log.error("audit sink: stored leaves disagree with checkpoint %d: not signing any more", last.size)
            self._can_sign = False
            return
        self._signed_size = last.size
        self._pending = len(hashes) - last.size

    def _grow(self, result: AppendResult) -> None:
        if result.first_index != self._frontier.size:
            # Another writer appended in between (several sink instances on one PostgreSQL store).
            missed = self._store.leaf_hashes(self._frontier.size, result.first_index)
            log.warning("audit sink: %d leaves appended by another writer", len(missed))
            self._frontier = self._frontier.extend(missed)
            self._pending += len(missed)
        self._frontier = self._frontier.extend(result.hashes)
        self._pending += sum(1 for row in result.rows if not self._own_announcement(row))

    def _own_announcement(self, row: AuditRow) -> bool:
        """Our own checkpoint events do not by themselves call for another checkpoint (else one a minute, forever)."""
        return (
            row.event_type == AuditEvent.event_type
            and row.producer == self._settings.service_id
            and CHECKPOINT_AUDIT_TYPE.encode() in row.raw
        )

    async def _maybe_checkpoint(self, *, force: bool = False) -> None:
        """Sign when due; `force` (a graceful stop) signs whatever is not signed yet, announcements included."""
        if not self._can_sign or self._frontier.size == self._signed_size:
            return
        elapsed = time.monotonic() - self._last_checkpoint
        due = self._pending >= self._settings.checkpoint_every or elapsed >= self._settings.checkpoint_interval_s
        if force or (self._pending > 0 and due):
            await self.checkpoint()

    async def checkpoint(self) -> Checkpoint:
        """Sign, store and announce a checkpoint of the current tree."""
        cp = Checkpoint(self._signer.name, self._frontier.size, self._frontier.root())
        note = self._signer.sign(cp.body()).render()
        await asyncio.to_thread(self._store.add_checkpoint, cp.size, cp.root, note, datetime.now(UTC))
        self._signed_size, self._pending, self._last_checkpoint = cp.size, 0, time.monotonic()
        self.checkpoints += 1
        await self._announce(cp, note)
        return cp

    async def _announce(self, cp: Checkpoint, note: str) -> None:
        if self._publisher is None:
            return
        record = audit(
            CHECKPOINT_AUDIT_TYPE,
            source=self._settings.service_id,
            namespace=self._settings.topic_namespace,
            outcome="info",
            details={"checkpoint": note, "tree_size": cp.size, "origin": cp.origin},
        )
        try:
            await self._publisher.publish([record])
            await self._publisher.flush()
        except Exception as exc:  # the checkpoint is stored; the next one is announced again
            log.warning("audit sink: could not announce checkpoint %d: %s", cp.size, exc)

    async def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer.stop()
        await self._maybe_checkpoint(force=True)
        if self._publisher is not None:
            await self._publisher.stop()
        await self._ops.stop()
