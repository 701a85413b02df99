"""The broker's Prometheus metrics (scraped from `/metrics` on the ops port).

Alert rules in `deploy/prometheus/alerts.yml` are written against these names.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "DECISIONS",
    "DECISION_SECONDS",
    "POLICY_ERRORS",
    "POLICY_SECONDS",
    "REPLAYS_BLOCKED",
    "REVOCATIONS_APPLIED",
    "VERIFY_SECONDS",
]

_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

DECISIONS = Counter(
    "atb_broker_decisions_total", "Broker decisions by result and first reason code", ["result", "reason", "channel"]
)
REPLAYS_BLOCKED = Counter(
    "atb_broker_replay_blocked_total",
    "Presentations refused by single use, by reason: the PoA was spent (poa_single_use_replay_blocked), "
    "or another PoA of its request was (poa_request_already_spent)",
    ["reason"],
)
REVOCATIONS_APPLIED = Counter(
    "atb_broker_revocations_applied_total", "Revocations this broker took into its list (an expired PoA's are not)"
)
POLICY_ERRORS = Counter("atb_broker_policy_unavailable_total", "Batches denied because OPA gave no decision")
VERIFY_SECONDS = Histogram("atb_broker_verify_seconds", "PoA signature and claim verification", buckets=_FAST)
POLICY_SECONDS = Histogram("atb_broker_policy_seconds", "One OPA round trip for a batch", buckets=_FAST)
DECISION_SECONDS = Histogram("atb_broker_decision_seconds", "A batch from verification to spent store", buckets=_FAST)
