"""What the audit sink's services depend on: the store, as `Protocol`s.

`adapters.db.AuditStore` implements both on SQLite and PostgreSQL; a test may
hand the services an in-memory store instead. Publishing goes through
`atb_runtime.publisher.RecordPublisher`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from audit_sink.adapters.db import AppendResult, Seal, StoredCosignature
from audit_sink.domain import AuditRow

__all__ = ["AuditStorage", "CosignatureStore", "LogStore"]


class LogStore(Protocol):
    """The append-only log: rows with their positions, leaves and checkpoints."""

    def offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to read, per (topic, partition), as last stored with the rows."""
        ...

    def append(
        self, rows: Sequence[AuditRow], next_offsets: dict[tuple[str, int], int], seal: Seal | None = None
    ) -> AppendResult:
        """The new rows, their leaves and the positions in one transaction (rows stored already are skipped)."""
        ...

    def leaf_hashes(self, start: int = 0, stop: int | None = None) -> list[bytes]: ...

    def checkpoint_notes(self) -> list[str]: ...

    def latest_checkpoint_at(self) -> datetime | None: ...

    def add_checkpoint(self, size: int, root: bytes, note: str, created_at: datetime) -> None: ...


class CosignatureStore(Protocol):
    """What witnessing reads and writes: the leaves (for consistency proofs) and cosignatures."""

    def leaf_hashes(self, start: int = 0, stop: int | None = None) -> list[bytes]: ...

    def cosigned_sizes(self) -> dict[str, int]: ...

    def add_cosignature(self, cosigned: StoredCosignature) -> None: ...


class AuditStorage(LogStore, CosignatureStore, Protocol):
    """The store the ingest takes: the log and, for witnessing, the cosignatures."""
