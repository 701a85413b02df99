"""The audit sink's Prometheus metrics besides its lag (lag.py); docs/observability.md.

The age of the newest signed checkpoint is `time() - atb_audit_sink_last_checkpoint_timestamp_seconds`
(a timestamp, not an age, so a sink that stopped signing shows it growing in Prometheus itself).
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Gauge

__all__ = ["LAST_CHECKPOINT", "ROWS_STORED", "checkpoint_signed"]

ROWS_STORED = Counter("atb_audit_sink_rows_stored_total", "Rows stored in the audit store by this sink")
LAST_CHECKPOINT = Gauge(
    "atb_audit_sink_last_checkpoint_timestamp_seconds", "When the newest signed checkpoint of the audit log was made"
)


def checkpoint_signed(created_at: datetime) -> None:
    LAST_CHECKPOINT.set(created_at.timestamp())
