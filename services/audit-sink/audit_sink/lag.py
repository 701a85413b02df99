"""How far behind the audit sink is, per topic: `atb_audit_sink_lag_seconds{topic}`.

A compacted topic (`atb.keys`, `atb.approvals.state`) keeps a superseded record
only `min.compaction.lag.ms` (contracts.COMPACTION_LAG_MS, a day) after it was
written; the sink must store it before then. The gauge is, per topic, the
largest over its partitions of: 0 when the sink has stored everything committed
on the partition, else the age of the last record it stored there (an upper
bound on how long the oldest unstored record has waited; since the sink started
when it has stored none yet). `ATBAuditSinkLagging` fires at
contracts.AUDIT_SINK_LAG_ALERT_S (an hour), far below the compaction bound.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import Gauge

__all__ = ["LAG_SECONDS", "LagTracker"]

LAG_SECONDS = Gauge(
    "atb_audit_sink_lag_seconds",
    "How long the oldest record the audit sink has not stored yet may have waited, per topic (0: caught up)",
    ["topic"],
)


class LagTracker:
    """Per-partition state for the lag gauge; pure apart from the gauge it sets."""

    def __init__(self, started: float | None = None) -> None:
        self._started = time.time() if started is None else started
        self._last_stored: dict[tuple[str, int], float] = {}
        self._topics: set[str] = set()

    def stored(self, topic: str, partition: int, timestamp_ms: int) -> None:
        """The sink stored a record of this partition written at `timestamp_ms`."""
        if timestamp_ms > 0:
            self._last_stored[(topic, partition)] = timestamp_ms / 1000

    def lags(self, behind: Mapping[tuple[str, int], bool], now: float) -> dict[str, float]:
        """Seconds behind per topic, given which assigned partitions still have committed records to store."""
        per_topic: dict[str, float] = {}
        for (topic, partition), is_behind in behind.items():
            lag = 0.0
            if is_behind:
                lag = max(0.0, now - self._last_stored.get((topic, partition), self._started))
            per_topic[topic] = max(per_topic.get(topic, 0.0), lag)
        return per_topic

    def publish(self, behind: Mapping[tuple[str, int], bool], now: float | None = None) -> dict[str, float]:
        lags = self.lags(behind, time.time() if now is None else now)
        for topic in self._topics - set(lags):
            LAG_SECONDS.labels(topic).set(0)  # no longer assigned here: another instance reports it
        for topic, lag in lags.items():
            LAG_SECONDS.labels(topic).set(lag)
        self._topics |= set(lags)
        return lags
