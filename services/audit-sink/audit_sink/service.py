"""Audit ingest: consume every `atb.*` topic, store each record exactly once.

Offsets live in the audit database, in the same transaction as the rows
(docs/architecture.md §6.4). On (re)assignment the consumer seeks to the offsets stored
there, so Kafka's own committed offsets are never used, and a SIGKILL at any
point loses or duplicates nothing.

Every append also extends the Merkle tree (RFC 6962) the sink keeps in memory
as its right edge (`LogHead`); at least every `checkpoint_interval_s` while
events arrive, and after every `checkpoint_every` events (in the same
transaction as the rows that reach the count), the sink signs a C2SP
checkpoint of it, stores it and announces it on `atb.audit`, so that parties
outside the database hold the roots. With witnesses configured
(`ATB_AUDIT_WITNESSES`), each checkpoint is also submitted to them in the
background (`audit_sink/witnessing.py`); their cosignatures are stored and
announced too. The sink signs only a tree that extends
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
from audit_sink.adapters.db import AuditStore, SealedCheckpoint
from audit_sink.adapters.ledger import CHECKPOINT_AUDIT_TYPE
from audit_sink.adapters.signing import NoteSigner
from audit_sink.domain import AuditRow, RecordMeta, RetentionPolicy, row_for
from audit_sink.head import LogHead
from audit_sink.lag import LagTracker
from audit_sink.settings import AuditSinkSettings
from audit_sink.witnessing import Witnessing
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
        self._head = LogHead(
            signer,
            every=settings.checkpoint_every,
            interval_s=settings.checkpoint_interval_s,
            counts=lambda row: not self._own_announcement(row),
        )
        self._publisher: Publisher | None = None
        self._retention = RetentionPolicy(settings.retention_years, settings.retention_days_by_event_type)
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._running = False
        self._ops = OpsServer(
            settings.ops_port,
            lambda: self._running,
            settings.ops_host,
            service="audit-sink",
            instance=settings.instance,
        )
        self.witnessing = Witnessing(
            settings.audit_witnesses,
            store,
            self._announce_witnessing,
            timeout_s=settings.witness_timeout_s,
            max_backoff_s=settings.witness_max_backoff_s,
        )
        self.stored = 0
        self._lag = LagTracker()
        self._lag_published = 0.0

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
        await self.witnessing.start()
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
                await self._publish_lag()
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
                self._lag.stored(tp.topic, tp.partition, getattr(messages[-1], "timestamp", 0) or 0)
        result = await asyncio.to_thread(self._store.append, rows, next_offsets, self._head.seal)
        missed: list[bytes] = []
        if result.first_index != self._head.frontier.size:
            # Another writer appended in between (several sink instances on one PostgreSQL store).
            missed = await asyncio.to_thread(self._store.leaf_hashes, self._head.frontier.size, result.first_index)
            log.warning("audit sink: %d leaves appended by another writer", len(missed))
        self._head.grow(result, missed)
        self.stored += len(result.rows)
        if result.checkpoint is not None:
            await self._announce(result.checkpoint)

    async def _publish_lag(self) -> None:
        """`atb_audit_sink_lag_seconds{topic}`, once a second (audit_sink/lag.py)."""
        consumer = self._consumer
        now = time.time()
        if consumer is None or now - self._lag_published < 1.0:
            return
        self._lag_published = now
        behind: dict[tuple[str, int], bool] = {}
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)  # read_committed: what the sink can read
            if end is None:
                continue
            behind[(tp.topic, tp.partition)] = await consumer.position(tp) < end
        self._lag.publish(behind, now)

    @property
    def checkpoints(self) -> int:
        """Checkpoints signed and stored since start."""
        return self._head.checkpoints

    def _load_tree(self) -> None:
        self._head.load(self._store.leaf_hashes(), self._store.checkpoint_notes())

    def _own_announcement(self, row: AuditRow) -> bool:
        """Our own checkpoint events (signed, cosigned, refused by a witness) do not by themselves call for
        another checkpoint (else one a minute, forever)."""
        return (
            row.event_type == AuditEvent.event_type
            and row.producer == self._settings.service_id
            and b'"audit_type":"audit_checkpoint_' in row.raw
        )

    async def _maybe_checkpoint(self, *, force: bool = False) -> None:
        """Sign when due; `force` (a graceful stop) signs whatever is not signed yet, announcements included."""
        if self._head.due(force=force):
            await self.checkpoint()

    async def checkpoint(self) -> SealedCheckpoint:
        """Sign, store and announce a checkpoint of the current tree."""
        cp = self._head.sign()
        await asyncio.to_thread(self._store.add_checkpoint, cp.size, cp.root, cp.note, cp.created_at)
        self._head.signed(cp)
        await self._announce(cp)
        return cp

    async def _announce(self, cp: SealedCheckpoint) -> None:
        self.witnessing.submit(cp)
        details: dict[str, object] = {"checkpoint": cp.note, "tree_size": cp.size}
        await self._announce_witnessing(CHECKPOINT_AUDIT_TYPE, "info", details)

    async def _announce_witnessing(self, audit_type: str, outcome: str, details: dict[str, object]) -> None:
        if self._publisher is None:
            return
        record = audit(
            audit_type,
            source=self._settings.service_id,
            namespace=self._settings.topic_namespace,
            outcome=outcome,
            details={**details, "origin": self._head.origin},  # type: ignore[dict-item]
        )
        try:
            await self._publisher.publish([record])
            await self._publisher.flush()
        except Exception as exc:  # the checkpoint is stored; the next one is announced again
            log.warning("audit sink: could not announce %s of checkpoint %s: %s", audit_type, details["tree_size"], exc)

    async def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer.stop()
        await self._maybe_checkpoint(force=True)
        await self.witnessing.stop()
        if self._publisher is not None:
            await self._publisher.stop()
        await self._ops.stop()
