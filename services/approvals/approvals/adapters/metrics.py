"""The approvals service's Prometheus metrics (`/metrics` on the ops port; docs/observability.md).

Counted when the service produces its outputs. The processor commits outputs
exactly once, but a batch retried after an aborted transaction is counted again:
these are operational rates, the audit store holds the exact history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge, Histogram

from contracts import EventPayload, QuorumReached, RequestDenied, RequestExpired

__all__ = ["OUTCOMES", "PENDING", "TIME_TO_QUORUM", "VOTES_REFUSED", "count_outcomes", "set_pending"]

_HUMAN = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)

PENDING = Gauge("atb_approvals_pending_requests", "Open requests waiting for votes, by tier", ["tier"])
TIME_TO_QUORUM = Histogram(
    "atb_approvals_time_to_quorum_seconds",
    "From the request's time to the quorum, by tier (low: the policy's answer)",
    ["tier"],
    buckets=(0.01, 0.05, 0.1, 0.5, *_HUMAN),
)
OUTCOMES = Counter(
    "atb_approvals_outcomes_total",
    "Closed requests by outcome (quorum_reached, denied, expired) and code (the denial's)",
    ["outcome", "code"],
)
VOTES_REFUSED = Counter("atb_approvals_votes_refused_total", "Votes not counted, by reason code", ["code"])

_TIERS = ("low", "medium", "high", "critical")


def count_outcomes(events: Iterable[EventPayload]) -> None:
    for event in events:
        if isinstance(event, QuorumReached):
            OUTCOMES.labels("quorum_reached", "").inc()
            waited = (event.decided_at - event.request.requested_at).total_seconds()
            TIME_TO_QUORUM.labels(event.tier.value).observe(max(0.0, waited))
        elif isinstance(event, RequestDenied):
            OUTCOMES.labels("denied", event.code).inc()
        elif isinstance(event, RequestExpired):
            OUTCOMES.labels("expired", "").inc()


def set_pending(pending: Callable[[str], int]) -> None:
    """The gauge from the count of open requests per tier: every tier is set, so a tier that empties reads 0."""
    for tier in _TIERS:
        PENDING.labels(tier).set(pending(tier))
