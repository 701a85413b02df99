"""The issuer's Prometheus metrics (`/metrics` on the ops port; docs/observability.md).

Counted when the service produces its outputs; a batch retried after an aborted
transaction is counted again (the audit store holds the exact history).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from prometheus_client import Counter, Histogram

from contracts import PoaIssued, QuorumReached, Tier

__all__ = ["ISSUED", "REFUSED", "REQUEST_TO_POA", "count_issued"]

ISSUED = Counter("atb_issuer_poas_issued_total", "PoAs issued, by tier", ["tier"])
REFUSED = Counter("atb_issuer_refusals_total", "Quorums refused by the issuer's re-check, by code", ["code"])
REQUEST_TO_POA = Histogram(
    "atb_issuer_request_to_poa_seconds",
    "From the request's time to the PoA's issue, by tier: the approvers' time included (low: the pipeline alone)",
    ["tier"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 900, 3600, 14400),
)


def count_issued(quorum: QuorumReached, issued: PoaIssued, at: datetime) -> None:
    """`at`: when it was issued, to the microsecond (the PoA's own `issued_at` is whole seconds)."""
    issued_count, request_to_poa = _by_tier(issued.tier)
    issued_count.inc()
    request_to_poa.observe(max(0.0, (at - quorum.request.requested_at).total_seconds()))


@cache
def _by_tier(tier: Tier) -> tuple[Counter, Histogram]:
    """The tier's series, looked up once per tier (`labels` validates and locks on every call)."""
    return ISSUED.labels(tier.value), REQUEST_TO_POA.labels(tier.value)
