"""Compacted topics are captured completely: the sink alerts long before compaction may drop a record."""

from __future__ import annotations

import re
from pathlib import Path

from audit_sink.lag import LAG_SECONDS, LagTracker
from contracts import CATALOGUE
from contracts.topics import AUDIT_SINK_LAG_ALERT_S, COMPACTION_LAG_MS

ROOT = Path(__file__).resolve().parents[2]


def _alert_threshold_s() -> float:
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    found = re.search(r"alert: ATBAuditSinkLagging\n(?:.*\n)*?\s+expr: (.*)\n", rules)
    assert found is not None, "deploy/prometheus/alerts.yml has no ATBAuditSinkLagging rule"
    threshold = re.fullmatch(r"max by \(topic\) \(atb_audit_sink_lag_seconds\) > (\d+)", found.group(1).strip())
    assert threshold is not None, found.group(1)
    return float(threshold.group(1))


def test_compacted_topics_keep_records_well_past_the_sinks_alerting_lag() -> None:
    compacted = [spec for spec in CATALOGUE if spec.compacted]
    assert compacted
    assert _alert_threshold_s() == AUDIT_SINK_LAG_ALERT_S
    for spec in compacted:
        configs = spec.configs()
        assert configs["cleanup.policy"] == "compact"
        assert "max.message.bytes" in configs  # kept
        lag_ms = int(configs["min.compaction.lag.ms"])
        assert lag_ms == COMPACTION_LAG_MS
        # The alert fires (after its 5 minutes `for`) with most of the compaction bound left to act.
        assert lag_ms / 1000 / 2 > AUDIT_SINK_LAG_ALERT_S + 300, spec.topic


def test_lag_is_zero_when_caught_up_and_the_age_of_the_last_stored_record_when_behind() -> None:
    tracker = LagTracker(started=1_000.0)
    tracker.stored("t.atb.keys", 0, 5_000_000)  # 5,000 s
    tracker.stored("t.atb.keys", 1, 5_500_000)
    behind = {("t.atb.keys", 0): True, ("t.atb.keys", 1): False, ("t.atb.approvals.state", 0): True}
    lags = tracker.publish(behind, now=9_000.0)
    assert lags == {"t.atb.keys": 4_000.0, "t.atb.approvals.state": 8_000.0}  # nothing stored yet: since start
    assert LAG_SECONDS.labels("t.atb.keys")._value.get() == 4_000.0
    # Caught up everywhere: zero, and a topic no longer assigned here is reset rather than left stale.
    assert tracker.publish({("t.atb.keys", 0): False}, now=9_500.0) == {"t.atb.keys": 0.0}
    assert LAG_SECONDS.labels("t.atb.approvals.state")._value.get() == 0.0
