"""Audit ingest: store every record of every `atb.*` topic exactly once.

The ingest is the tracker of `atb_runtime.tracking.TrackingConsumer`, which
owns the consumer, its rebalances and the loop: each batch arrives here with
the positions that follow it, and the rows and those positions are written in
one database transaction (docs/architecture.md §6.4). On (re)assignment the
loop seeks to the positions stored here, so Kafka's own committed offsets are
never used, and a SIGKILL at any point loses or duplicates nothing.

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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import cast

from atb_runtime import Incoming
from atb_runtime.publisher import RecordPublisher
from atb_runtime.records import audit
from audit_sink.adapters.db import SealedCheckpoint
from audit_sink.adapters.ledger import CHECKPOINT_AUDIT_TYPE
from audit_sink.adapters.metrics import ROWS_STORED, checkpoint_signed
from audit_sink.adapters.signing import NoteSigner
from audit_sink.domain import AuditRow, RecordMeta, RetentionPolicy, row_for
from audit_sink.head import LogHead
from audit_sink.lag import LagTracker
from audit_sink.ports import AuditStorage
from audit_sink.settings import AuditSinkSettings
from audit_sink.witnessing import Witnessing
from contracts import AuditEvent, JsonObject

__all__ = ["AuditIngest"]

log = logging.getLogger(__name__)


class AuditIngest:
    def __init__(
        self, settings: AuditSinkSettings, store: AuditStorage, signer: NoteSigner, publisher: RecordPublisher
    ) -> None:
        self._settings = settings
        self._store = store
        self._head = LogHead(
            signer,
            every=settings.checkpoint_every,
            interval_s=settings.checkpoint_interval_s,
            counts=lambda row: not self._own_announcement(row),
        )
        self._publisher = publisher
        self._retention = RetentionPolicy(settings.retention_years, settings.retention_days_by_event_type)
        self.witnessing = Witnessing(
            settings.audit_witnesses,
            store,
            self._announce_witnessing,
            timeout_s=settings.witness_timeout_s,
            max_backoff_s=settings.witness_max_backoff_s,
        )
        self.stored = 0
        self._lag = LagTracker()

    # -- lifecycle (a component of the runner, beside the tracking loop) ---------------

    async def start(self) -> None:
        """Load the tree the store holds; start witnessing."""
        await asyncio.to_thread(self._load_tree)
        await self.witnessing.start()

    async def stop(self) -> None:
        """After the loop stopped: sign what is not signed yet; stop witnessing."""
        await self._maybe_checkpoint(force=True)
        await self.witnessing.stop()

    # -- the tracker (atb_runtime.tracking.Tracker) -------------------------------------

    async def positions(self) -> Mapping[tuple[str, int], int]:
        return await asyncio.to_thread(self._store.offsets)

    async def record(self, records: Sequence[Incoming], positions: Mapping[tuple[str, int], int]) -> None:
        """Store the rows of `records` and `positions` in one transaction, then grow the tree."""
        now = datetime.now(UTC)
        rows = []
        for record in records:
            meta = RecordMeta(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=record.value,
                timestamp_ms=record.timestamp_ms,
            )
            rows.append(row_for(meta, recorded_at=now, retention=self._retention))
        last: dict[tuple[str, int], int] = {}
        for record in records:
            last[(record.topic, record.partition)] = record.timestamp_ms
        result = await asyncio.to_thread(self._store.append, rows, dict(positions), self._head.seal)
        for (topic, partition), timestamp_ms in last.items():
            self._lag.stored(topic, partition, timestamp_ms)
        missed: list[bytes] = []
        if result.first_index != self._head.frontier.size:
            # Another writer appended in between (several sink instances on one PostgreSQL store).
            missed = await asyncio.to_thread(self._store.leaf_hashes, self._head.frontier.size, result.first_index)
            log.warning("audit sink: %d leaves appended by another writer", len(missed))
        self._head.grow(result, missed)
        self.stored += len(result.rows)
        ROWS_STORED.inc(len(result.rows))
        if result.checkpoint is not None:
            await self._announce(result.checkpoint)

    async def tick(self) -> None:
        """After every poll: sign a checkpoint when one is due."""
        await self._maybe_checkpoint()

    def progress(self, behind: Mapping[tuple[str, int], bool]) -> None:
        """`atb_audit_sink_lag_seconds{topic}`, from which partitions still have records to store (lag.py)."""
        self._lag.publish(behind)

    # -- checkpoints ---------------------------------------------------------------------

    @property
    def checkpoints(self) -> int:
        """Checkpoints signed and stored since start."""
        return self._head.checkpoints

    def _load_tree(self) -> None:
        self._head.load(self._store.leaf_hashes(), self._store.checkpoint_notes())
        if (latest := self._store.latest_checkpoint_at()) is not None:
            checkpoint_signed(latest)

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
        checkpoint_signed(cp.created_at)
        self.witnessing.submit(cp)
        details: dict[str, object] = {"checkpoint": cp.note, "tree_size": cp.size}
        await self._announce_witnessing(CHECKPOINT_AUDIT_TYPE, "info", details)

    async def _announce_witnessing(self, audit_type: str, outcome: str, details: dict[str, object]) -> None:
        record = audit(
            audit_type,
            source=self._settings.service_id,
            namespace=self._settings.topic_namespace,
            outcome=outcome,
            # Every value witnessing announces is a JSON value (notes, sizes, names, times).
            details=cast("JsonObject", {**details, "origin": self._head.origin}),
        )
        try:
            await self._publisher.publish([record])
            await self._publisher.flush()
        except Exception as exc:  # the checkpoint is stored; the next one is announced again
            log.warning("audit sink: could not announce %s of checkpoint %s: %s", audit_type, details["tree_size"], exc)
