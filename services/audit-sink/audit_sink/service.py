"""Audit ingest: consume every `atb.*` topic, store each record exactly once.

Offsets live in the audit database, in the same transaction as the rows
(DESIGN.md §6.4). On (re)assignment the consumer seeks to the offsets stored
there, so Kafka's own committed offsets are never used, and a SIGKILL at any
point loses or duplicates nothing.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from atb_runtime.ops import OpsServer
from audit_sink.adapters.db import AuditStore
from audit_sink.domain import RecordMeta, RetentionPolicy, row_for
from audit_sink.settings import AuditSinkSettings
from contracts import all_topics_pattern

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
    def __init__(self, settings: AuditSinkSettings, store: AuditStore) -> None:
        self._settings = settings
        self._store = store
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
        await asyncio.to_thread(self._store.append, rows, next_offsets)
        self.stored += len(rows)

    async def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer.stop()
        await self._ops.stop()
