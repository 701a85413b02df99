"""atb.trace.timeline: the timeline is built from events alone (pure), in time order, each event once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from atb.trace.timeline import TraceRecord, build_timeline, partition_for
from contracts import AuditEvent, BrokerDecisionV1, Decision, VoteCast, VoteChoice, make_envelope

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(
    payload: object, source: str, at: datetime, offset: int, origin: str = "kafka", checkpoint: str | None = None
) -> TraceRecord:
    envelope = make_envelope(payload, source=source)  # type: ignore[arg-type]
    envelope = envelope.model_copy(update={"time": at})
    return TraceRecord("t", 0, offset, envelope, payload, origin, checkpoint)  # type: ignore[arg-type]


def _vote(vote_id: str, approver: str, channel: str = "cli") -> VoteCast:
    return VoteCast(
        request_id="req-1",
        vote_id=vote_id,
        approver_id=approver,
        choice=VoteChoice.APPROVE,
        request_digest="sha256:" + "0" * 64,
        channel=channel,  # type: ignore[arg-type]
        cast_at=T0,
    )


def _audit(kind: str, vote_id: str, reason: str = "") -> AuditEvent:
    return AuditEvent(
        audit_type=kind,
        actor="spiffe://atb.local/svc/approvals",
        outcome="success",
        request_id="req-1",
        reason=reason,
        details={"vote_id": vote_id},
        occurred_at=T0,
    )


def test_votes_say_how_they_came_and_what_became_of_them() -> None:
    records = [
        _record(_vote("v1", "slack:U1", "slack"), "spiffe://atb.local/svc/chat", T0, 1),
        _record(
            _vote("v2", "spiffe://atb.local/user/dave"), "spiffe://atb.local/user/dave", T0 + timedelta(seconds=1), 2
        ),
        _record(
            _audit("approval_vote_counted", "v1"), "spiffe://atb.local/svc/approvals", T0 + timedelta(seconds=2), 3
        ),
        _record(
            _audit("approval_self_vote_refused", "v2", "self_approval"),
            "spiffe://atb.local/svc/approvals",
            T0 + timedelta(seconds=3),
            4,
        ),
    ]
    steps = build_timeline(records)
    votes = [s.summary for s in steps if s.kind == "vote"]
    assert votes[0] == "slack:U1 votes approve via slack (attested by svc/chat): counted"
    assert votes[1] == "spiffe://atb.local/user/dave votes approve via cli: refused: self_approval"
    assert [s.since_previous_ms for s in steps] == [0.0, 1000.0, 1000.0, 1000.0]


def test_an_event_found_on_kafka_and_in_the_store_appears_once_with_its_checkpoint() -> None:
    kafka = _record(_vote("v1", "u"), "spiffe://atb.local/user/u", T0, 1)
    stored = TraceRecord(kafka.topic, 0, 1, kafka.envelope, kafka.payload, "audit store", "leaf 4, checkpoint #1")
    steps = build_timeline([stored, kafka])
    assert len(steps) == 1
    assert steps[0].origin == "kafka"
    assert steps[0].details["checkpoint"] == "leaf 4, checkpoint #1"


def test_partition_matches_the_java_default_partitioner() -> None:
    # Test vectors of Kafka's own murmur2 (Java's Utils.murmur2, as signed 32-bit values).
    java = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536}
    for key, hashed in java.items():
        for partitions in (3, 6, 7):
            assert partition_for(key, partitions) == (hashed & 0x7FFFFFFF) % partitions, (key, partitions)


def _v1_decision(reasons: tuple[str, ...]) -> BrokerDecisionV1:
    return BrokerDecisionV1(
        request_id="req-1",
        action_id="a-1",
        agent_id="spiffe://atb.local/agent/a",
        action="crm.contact.read",
        decision=Decision.DENY,
        reasons=reasons,
        policy_version="p1",
        jti="j-1",
        decided_at=T0,
    )


def test_a_v1_broker_decision_is_shown_with_its_reasons_as_data() -> None:
    steps = build_timeline(
        [
            _record(_v1_decision(("poa_revoked: agent compromised",)), "spiffe://atb.local/svc/broker", T0, 1),
            _record(_v1_decision(("no_such_code: from the future",)), "spiffe://atb.local/svc/broker", T0, 2),
        ]
    )
    assert [s.kind for s in steps] == ["broker decision", "broker decision"]
    assert steps[0].summary == "deny: poa_revoked: agent compromised (jti j-1, policy p1)"
    assert steps[0].details["reasons"] == [{"code": "poa_revoked", "detail": "agent compromised"}]
    assert steps[1].summary == "deny: no_such_code: from the future (v1)"
