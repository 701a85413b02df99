"""The topic catalogue: every Kafka topic ATB uses, with its partitions and retention.

`atb dev up` creates these topics; services and tests take topic names only from
here (no topic string literals elsewhere: docs/architecture.md §4.1). A *namespace* prefixes every
name so that tests, benchmarks and parallel demos can run side by side on one
broker without reading each other's records.

This module does not talk to Kafka.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from contracts.limits import TOPIC_MAX_MESSAGE_BYTES

__all__ = [
    "ALL_TOPICS_PATTERN",
    "AUDIT_SINK_LAG_ALERT_S",
    "CATALOGUE",
    "COMPACTION_LAG_MS",
    "Topic",
    "TopicSpec",
    "all_topics_pattern",
    "spec_for",
    "topic_name",
]

_DAY_MS = 24 * 60 * 60 * 1000

AUDIT_SINK_LAG_ALERT_S = 60 * 60
"""The audit sink's alerting lag: `ATBAuditSinkLagging` (deploy/prometheus/alerts.yml) fires when the
sink is this far behind on any topic (`atb_audit_sink_lag_seconds`)."""

COMPACTION_LAG_MS = _DAY_MS
"""`min.compaction.lag.ms` of every compacted topic: a record stays uncompacted at least this long, so
the audit sink has a day to capture it, 23 hours more than its alert allows (docs/audit.md)."""


class Topic(StrEnum):
    """Base names of the topics (without a namespace)."""

    POA_REQUESTS = "atb.poa.requests"
    VOTES = "atb.approvals.votes"
    OUTCOMES = "atb.approvals.outcomes"
    POA_ISSUED = "atb.poa.issued"
    POA_REVOKED = "atb.poa.revoked"
    BROKER_ACTIONS = "atb.broker.actions"
    BROKER_DECISIONS = "atb.broker.decisions"
    AUDIT = "atb.audit"
    KEYS = "atb.keys"
    DLQ = "atb.dlq"
    APPROVALS_STATE = "atb.approvals.state"


@dataclass(frozen=True)
class TopicSpec:
    """How one topic is created. `retention_ms` of -1 keeps records forever.

    Every topic refuses record batches above `TOPIC_MAX_MESSAGE_BYTES` (contracts/limits.py).
    """

    topic: Topic
    partitions: int
    retention_ms: int
    compacted: bool = False
    description: str = ""

    def configs(self) -> dict[str, str]:
        """Topic-level configs as Kafka expects them."""
        size = {"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)}
        if self.compacted:
            # Never compact a record the audit sink may not have stored yet (docs/audit.md).
            return {"cleanup.policy": "compact", "min.compaction.lag.ms": str(COMPACTION_LAG_MS), **size}
        return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms), **size}


# Every record on a request's life is keyed by request_id (docs/architecture.md §4.4), so the
# request-carrying topics share one partition count: a request's history then
# lives on the same partition number everywhere.
_REQUEST_PARTITIONS = 3

CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec(Topic.POA_REQUESTS, _REQUEST_PARTITIONS, 30 * _DAY_MS, description="IssuanceRequested from agents"),
    TopicSpec(Topic.VOTES, _REQUEST_PARTITIONS, 30 * _DAY_MS, description="VoteCast from approvers (chat, CLI)"),
    TopicSpec(
        Topic.OUTCOMES,
        _REQUEST_PARTITIONS,
        30 * _DAY_MS,
        description="ApprovalRequired, QuorumReached, RequestDenied, RequestExpired",
    ),
    TopicSpec(Topic.POA_ISSUED, _REQUEST_PARTITIONS, 30 * _DAY_MS, description="PoaIssued"),
    TopicSpec(Topic.POA_REVOKED, _REQUEST_PARTITIONS, 30 * _DAY_MS, description="PoaRevoked"),
    TopicSpec(Topic.BROKER_ACTIONS, _REQUEST_PARTITIONS, 7 * _DAY_MS, description="ActionRequested"),
    TopicSpec(Topic.BROKER_DECISIONS, _REQUEST_PARTITIONS, 30 * _DAY_MS, description="BrokerDecision"),
    TopicSpec(Topic.AUDIT, _REQUEST_PARTITIONS, 90 * _DAY_MS, description="AuditEvent from every service"),
    TopicSpec(Topic.KEYS, 1, -1, compacted=True, description="SigningKeyPublished, keyed by kid"),
    TopicSpec(Topic.DLQ, _REQUEST_PARTITIONS, 90 * _DAY_MS, description="DeadLetter: what a consumer could not use"),
    # The approvals service's changelog: each request's tally, written in the same
    # transaction as the outcomes it causes, read back after a restart or rebalance.
    TopicSpec(
        Topic.APPROVALS_STATE,
        _REQUEST_PARTITIONS,
        -1,
        compacted=True,
        description="ApprovalStateChanged: the approvals service's per-request state (changelog)",
    ),
)

_NAMESPACE_RE = re.compile(r"^([a-z0-9][a-z0-9-]{0,40}\.)?$")


def _check_namespace(namespace: str) -> str:
    if not _NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(
            f"topic namespace {namespace!r} must be empty or lowercase letters, digits and '-' ending in '.'"
        )
    return namespace


def topic_name(topic: Topic, namespace: str = "") -> str:
    """The full topic name: `<namespace><base>`, e.g. `t1a2b.atb.poa.requests`."""
    return _check_namespace(namespace) + topic.value


def all_topics_pattern(namespace: str = "") -> str:
    """A regex matching exactly the catalogue's topics in one namespace (the audit sink subscribes to it).

    Anchored to the catalogue's names, so `atb.` as a namespace (`atb.atb.audit`)
    is not mistaken for the default namespace.
    """
    names = "|".join(re.escape(topic.value) for topic in Topic)
    return "^" + re.escape(_check_namespace(namespace)) + f"(?:{names})$"


ALL_TOPICS_PATTERN = all_topics_pattern()


def spec_for(topic: Topic) -> TopicSpec:
    """The catalogue entry of a topic."""
    for spec in CATALOGUE:
        if spec.topic is topic:
            return spec
    raise KeyError(topic)
