"""Hostile traffic for the soak (tests/e2e/test_hostile_soak.py): garbage records, who must letter them, scans.

`GarbageMaker` builds one garbage record ("shot") of a given kind for a catalogue
topic, and says which consumers of that topic may legitimately use it (every
other consumer must dead-letter it). `GarbageSender` sends shots and records
where each one landed; it also tries records above the topic limit, which Kafka
(or the producer itself) must refuse. `scan` reads every committed record of a
namespace to the end offsets it found first.

Who consumes what (docs/hostile-input.md, "Who consumes each topic"): the group
consumers `approvals`, `issuer`, `broker` (transactional: one letter per record,
whatever restarts), and the followers named `<service>-<role>@<instance>`, which
letter only records at or after the end offsets they found when they started.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError

from atb_identity import IdentityError, Svid, ensure_svid, sign_envelope
from atb_runtime import Incoming
from atb_runtime.partitioning import partition_for
from atb_runtime.records import letter_for
from contracts import (
    CATALOGUE,
    AccountableParty,
    ActionRequested,
    ApprovalRequired,
    ApprovalStateChanged,
    AuditEvent,
    BrokerDecision,
    Decision,
    Envelope,
    EventPayload,
    IssuanceRequested,
    LegitimateInterest,
    PoaIssued,
    PoaRevoked,
    QuorumReached,
    RequestDenied,
    SigningKeyPublished,
    Tier,
    Topic,
    VoteCast,
    VoteChoice,
    canonical_json,
    digest_of,
    encode_envelope,
    make_envelope,
    spec_for,
    topic_name,
)
from contracts.limits import PRODUCER_MAX_REQUEST_SIZE, TOPIC_MAX_MESSAGE_BYTES
from contracts.reasons import Reason, ReasonCode

__all__ = [
    "AGENT",
    "APPROVALS",
    "BROKER",
    "CONSUMERS",
    "GATEWAY",
    "GROUP_CONSUMERS",
    "IDENTITY_CODES",
    "ISSUER",
    "Garbage",
    "GarbageMaker",
    "GarbageSender",
    "Scanned",
    "Shot",
    "all_partitions",
    "follower_service",
    "kinds_for",
    "scan",
]

AGENT = "spiffe://atb.local/agent/fault-bot"
"""Registered for tenant acme (config/agents.json)."""
OTHER_AGENT = "spiffe://atb.local/agent/crm-bot"
APPROVALS_SVC = "spiffe://atb.local/svc/approvals"
ALICE = "spiffe://atb.local/user/alice"
BOB = "spiffe://atb.local/user/bob"
JUNK_LEG = LegitimateInterest(
    ref="LI-JUNK", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="junk")
)
ZERO_DIGEST = "sha256:" + "0" * 64

APPROVALS, ISSUER, BROKER = "approvals", "issuer", "broker"
GATEWAY, CHAT = "gateway-views@0", "chat-cards@0"
KEYRING, REVOCATIONS = "broker-keys@0", "broker-revocations@0"
APPROVALS_PASSKEYS, ISSUER_PASSKEYS = "approvals-passkeys@0", "issuer-passkeys@0"
GROUP_CONSUMERS = frozenset({APPROVALS, ISSUER, BROKER})
CONSUMERS: dict[str, tuple[Topic, ...]] = {
    APPROVALS: (Topic.POA_REQUESTS, Topic.VOTES),
    ISSUER: (Topic.OUTCOMES,),
    BROKER: (Topic.BROKER_ACTIONS,),
    GATEWAY: (Topic.POA_REQUESTS, Topic.OUTCOMES, Topic.POA_ISSUED),
    CHAT: (Topic.OUTCOMES, Topic.APPROVALS_STATE, Topic.POA_ISSUED),
    KEYRING: (Topic.KEYS,),
    APPROVALS_PASSKEYS: (Topic.KEYS,),
    ISSUER_PASSKEYS: (Topic.KEYS,),
    REVOCATIONS: (Topic.POA_REVOKED,),
}
"""Every consumer that dead-letters, and the topics it reads (the audit sink stores everything instead)."""


def follower_service(consumer: str) -> str | None:
    """The service process a follower runs in (None for a group consumer)."""
    if consumer in GROUP_CONSUMERS:
        return None
    return consumer.split("-", 1)[0]


def consumers_of(topic: Topic) -> frozenset[str]:
    return frozenset(c for c, topics in CONSUMERS.items() if topic in topics)


# -- shots ----------------------------------------------------------------------------------

COMMON_KINDS = ("random_bytes", "truncated_json", "wrong_type", "unknown_field", "tombstone")
EXTRA_KINDS: dict[Topic, tuple[str, ...]] = {
    # Forged proofs and misplaced records where a consumer checks proofs and partitions.
    Topic.POA_REQUESTS: ("keyless", "forged_request", "misplaced"),
    Topic.VOTES: ("keyless", "forged_vote", "misplaced"),
    Topic.OUTCOMES: ("keyless", "forged_quorum", "forged_required", "misplaced"),
    Topic.BROKER_ACTIONS: ("keyless", "tampered_action", "misplaced"),
    # A well-formed key event nobody proved (here: not even Ed25519): the key ring refuses it.
    Topic.KEYS: ("ignored_key",),
}
"""Per topic, the kinds besides COMMON_KINDS. Compacted topics refuse keyless records, so none go there."""

PASSES: dict[tuple[Topic, str], frozenset[str]] = {
    # The issuer lets an outcome it does not handle pass by, whoever announced it.
    (Topic.OUTCOMES, "forged_required"): frozenset({ISSUER}),
    # Followers have no partitions to check: a well-formed, well-proven record on the wrong one is used.
    (Topic.POA_REQUESTS, "misplaced"): frozenset({GATEWAY}),
    (Topic.OUTCOMES, "misplaced"): frozenset({GATEWAY, CHAT}),
    # An unproven signing-key event is the key ring's to refuse; the passkey registries read only
    # passkey events and let every other well-formed event of the topic pass by.
    (Topic.KEYS, "ignored_key"): frozenset({APPROVALS_PASSKEYS, ISSUER_PASSKEYS}),
}
"""Consumers that legitimately use (or ignore) a garbage record: no letter from them."""

MAY_REFUSE_ON_PROOF: dict[tuple[Topic, str], frozenset[str]] = {
    (Topic.POA_REQUESTS, "forged_request"): frozenset({GATEWAY}),
    (Topic.OUTCOMES, "forged_quorum"): frozenset({GATEWAY, CHAT}),
    (Topic.OUTCOMES, "forged_required"): frozenset({GATEWAY}),
}
"""Views that may check who proved an event: each either uses a forged one (no letter) or refuses it
with one letter whose code is an identity rule (`IDENTITY_CODES`). chat always checks ApprovalRequired."""


def _identity_codes() -> frozenset[str]:
    codes, todo = set(), [IdentityError]
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo.extend(cls.__subclasses__())
    return frozenset(codes)


IDENTITY_CODES = _identity_codes()
"""The error codes of the identity rules (`atb_identity`): what a refusal on proof is lettered as."""


def kinds_for(topic: Topic) -> tuple[str, ...]:
    return COMMON_KINDS + EXTRA_KINDS.get(topic, ())


@dataclass(frozen=True)
class Shot:
    """One garbage record to send."""

    topic: Topic
    kind: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    """An explicit partition (a misplaced record); None lets Kafka's default partitioner choose."""
    action_id: str | None = None
    """For a tampered ActionRequested: the broker must still decide it (a deny)."""

    @property
    def letters_from(self) -> frozenset[str]:
        """The consumers that must dead-letter this record, once each."""
        return consumers_of(self.topic) - PASSES.get((self.topic, self.kind), frozenset()) - self.may_refuse

    @property
    def may_refuse(self) -> frozenset[str]:
        """The consumers that may refuse it on its proof (one letter with an identity code), or use it."""
        return MAY_REFUSE_ON_PROOF.get((self.topic, self.kind), frozenset())


@dataclass(frozen=True)
class Garbage:
    """A shot as it landed."""

    shot: Shot
    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    @property
    def coords(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


@dataclass
class GarbageMaker:
    state_dir: Path
    namespace: str
    rng: random.Random
    _count: int = 0
    _svids: dict[str, Svid] = field(default_factory=dict)

    def svid(self, spiffe: str) -> Svid:
        if spiffe not in self._svids:
            self._svids[spiffe] = ensure_svid(self.state_dir, spiffe)
        return self._svids[spiffe]

    def junk_id(self) -> str:
        self._count += 1
        return f"junk-{self._count}-{self.rng.getrandbits(32):08x}"

    def sample(self, topic: Topic, rid: str, by: str = AGENT) -> EventPayload:
        """A well-formed event of the type that belongs on `topic`, about the junk request `rid`."""
        now = datetime.now(UTC)
        if topic is Topic.POA_REQUESTS:
            return IssuanceRequested(
                request_id=rid,
                agent_id=AGENT,
                tenant="acme",
                action="crm.contact.read",
                resource=f"junk/{rid}",
                leg=JUNK_LEG,
                requested_at=now,
                agent_cert_thumbprint=self.svid(AGENT).thumbprint(),
            )
        if topic is Topic.VOTES:
            return VoteCast(
                request_id=rid,
                vote_id=f"{rid}-v",
                approver_id=ALICE,
                choice=VoteChoice.APPROVE,
                request_digest=ZERO_DIGEST,
                channel="cli",
                cast_at=now,
            )
        if topic is Topic.OUTCOMES:
            return RequestDenied(request_id=rid, code="junk", reason="junk", denied_by=by, decided_at=now)
        if topic is Topic.POA_ISSUED:
            return PoaIssued(
                request_id=rid,
                jti=rid,
                kid="junk",
                agent_id=AGENT,
                action="crm.contact.read",
                tier=Tier.LOW,
                issued_at=now,
                expires_at=now + timedelta(minutes=1),
                token="junk",
                token_sha256=ZERO_DIGEST,
            )
        if topic is Topic.POA_REVOKED:
            return PoaRevoked(request_id=rid, jti=rid, reason="junk", revoked_by=AGENT, revoked_at=now)
        if topic is Topic.BROKER_ACTIONS:
            return ActionRequested(
                request_id=rid,
                action_id=f"{rid}-a",
                agent_id=AGENT,
                tenant="acme",
                action="crm.contact.read",
                resource=f"junk/{rid}",
                requested_at=now,
            )
        if topic is Topic.BROKER_DECISIONS:
            return BrokerDecision(
                request_id=rid,
                action_id=f"{rid}-a",
                agent_id=AGENT,
                action="crm.contact.read",
                decision=Decision.DENY,
                reasons=(Reason(ReasonCode.MALFORMED, "junk"),),
                policy_version="junk",
                decided_at=now,
            )
        if topic is Topic.AUDIT:
            return AuditEvent(audit_type="junk", request_id=rid, actor=AGENT, outcome="info", occurred_at=now)
        if topic is Topic.KEYS:
            # Not Ed25519: well-formed, and ignored by the broker's key ring (never trusted).
            return SigningKeyPublished(
                kid=rid, alg="EdDSA", jwk={"kty": "RSA", "n": "junk", "e": "AQAB"}, issuer=AGENT, not_before=now
            )
        if topic is Topic.DLQ:
            junk = Incoming(topic="junk", partition=0, offset=0, key=None, value=b"junk")
            return letter_for(junk, consumer="junk", error_code="junk", reason="junk", request_id=rid)
        if topic is Topic.APPROVALS_STATE:
            return ApprovalStateChanged(request_id=rid, status="held", updated_at=now)
        raise ValueError(f"no sample for {topic}")

    def _envelope(self, payload: EventPayload, signer: str | None = None) -> Envelope:
        envelope = make_envelope(payload, source=signer or AGENT)
        return sign_envelope(envelope, self.svid(signer)) if signer else envelope

    def _record(
        self, topic: Topic, kind: str, envelope: Envelope, partition: int | None = None, action_id: str | None = None
    ) -> Shot:
        key = envelope.partitionkey.encode()
        return Shot(topic, kind, key, encode_envelope(envelope), partition=partition, action_id=action_id)

    def make(self, topic: Topic, kind: str) -> Shot:
        rid = self.junk_id()
        rng = self.rng
        if kind in ("random_bytes", "keyless"):
            value = os.urandom(rng.randint(1, 4096))
            return Shot(topic, kind, None if kind == "keyless" else rid.encode(), value)
        if kind == "tombstone":
            return Shot(topic, kind, rid.encode(), None)
        if kind == "truncated_json":
            whole = encode_envelope(self._envelope(self.sample(topic, rid)))
            return Shot(topic, kind, rid.encode(), whole[: rng.randint(1, len(whole) - 1)])
        if kind == "wrong_type":
            other = rng.choice([t for t in Topic if t is not topic])
            return self._record(topic, kind, self._envelope(self.sample(other, rid)))
        if kind == "unknown_field":
            body = json.loads(encode_envelope(self._envelope(self.sample(topic, rid))))
            if rng.random() < 0.5:
                body["data"]["x_unexpected"] = "hostile"
            else:
                body["x_unexpected"] = "hostile"
            key = str(body["partitionkey"]).encode()
            return Shot(topic, kind, key, canonical_json(body))
        if kind == "forged_request":
            # Claims to be AGENT's request, proven by another agent's key.
            request = self.sample(Topic.POA_REQUESTS, rid)
            return self._record(topic, kind, self._envelope(request, OTHER_AGENT))
        if kind == "forged_vote":
            # Alice's vote, proven by Bob: the proof names someone else.
            return self._record(topic, kind, self._envelope(self.sample(Topic.VOTES, rid), BOB))
        if kind == "forged_quorum":
            request = self.sample(Topic.POA_REQUESTS, rid)
            assert isinstance(request, IssuanceRequested)
            quorum = QuorumReached(
                request_id=rid,
                tier=Tier.LOW,
                required_approvals=0,
                request_digest=digest_of(request),
                poa_ttl_seconds=60,
                request=request,
                request_event=encode_envelope(self._envelope(request, AGENT)).decode(),
                decided_at=datetime.now(UTC),
            )
            return self._record(topic, kind, self._envelope(quorum, AGENT))
        if kind == "forged_required":
            required = ApprovalRequired(
                request_id=rid,
                tier=Tier.MEDIUM,
                required_approvals=1,
                eligible_groups=("junk",),
                ticket_required=False,
                deadline=datetime.now(UTC) + timedelta(minutes=5),
                request_digest=ZERO_DIGEST,
                agent_id=AGENT,
                action="crm.contact.update",
                resource=f"junk/{rid}",
                accountable_party_id="junk",
            )
            return self._record(topic, kind, self._envelope(required, AGENT))
        if kind == "tampered_action":
            action = self.sample(Topic.BROKER_ACTIONS, rid)
            assert isinstance(action, ActionRequested)
            signed = self._envelope(action, AGENT)
            tampered = signed.model_copy(update={"data": {**signed.data, "resource": "junk/elsewhere"}})
            return self._record(topic, kind, tampered, action_id=action.action_id)
        if kind == "misplaced":
            # Well-formed and proven by whoever may publish it, on another partition than its key's.
            signer = {
                Topic.POA_REQUESTS: AGENT,
                Topic.VOTES: ALICE,
                Topic.OUTCOMES: APPROVALS_SVC,
                Topic.BROKER_ACTIONS: AGENT,
            }[topic]
            envelope = self._envelope(self.sample(topic, rid, by=signer), signer)
            count = spec_for(topic).partitions
            wrong = (partition_for(envelope.partitionkey.encode(), count) + 1) % count
            return self._record(topic, kind, envelope, partition=wrong)
        if kind == "ignored_key":
            return self._record(topic, kind, self._envelope(self.sample(Topic.KEYS, rid)))
        raise ValueError(f"unknown garbage kind {kind!r}")

    def big(self, topic: Topic, size: int) -> Shot:
        """A record of `size` bytes that is no event (random bytes, or JSON that is no envelope)."""
        rid = self.junk_id()
        if self.rng.random() < 0.5:
            return Shot(topic, "big", rid.encode(), os.urandom(size))
        return Shot(topic, "big", rid.encode(), b'{"pad":"' + b"x" * (size - 10) + b'"}')


class GarbageSender:
    """Sends shots (idempotent producer, so no retry makes a second copy) and remembers where each landed."""

    def __init__(self, bootstrap: str, namespace: str) -> None:
        self._bootstrap = bootstrap
        self._namespace = namespace
        self._producer = self._idempotent("hostile-soak-garbage")
        # Large records go one at a time through a producer of their own: in a batch with
        # others they could make a batch the topic refuses as a whole.
        self._large = self._idempotent("hostile-soak-large")
        self.landed: list[Garbage] = []
        self.refused: list[tuple[Topic, int, str, str]] = []
        """Over-limit attempts: (topic, size, key, error)."""

    def _idempotent(self, client_id: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_request_size=PRODUCER_MAX_REQUEST_SIZE,
        )

    async def start(self) -> None:
        await self._producer.start()
        await self._large.start()

    async def stop(self) -> None:
        await self._producer.stop()
        await self._large.stop()

    async def send(self, shots: Sequence[Shot]) -> None:
        futures = []
        for shot in shots:
            name = topic_name(shot.topic, self._namespace)
            futures.append(await self._producer.send(name, value=shot.value, key=shot.key, partition=shot.partition))
        for shot, future in zip(shots, futures, strict=True):
            meta = await future
            self.landed.append(Garbage(shot, meta.topic, meta.partition, meta.offset, meta.timestamp))

    async def send_large(self, shot: Shot) -> None:
        name = topic_name(shot.topic, self._namespace)
        meta = await self._large.send_and_wait(name, value=shot.value, key=shot.key, partition=shot.partition)
        self.landed.append(Garbage(shot, meta.topic, meta.partition, meta.offset, meta.timestamp))

    async def over_limit(self, topic: Topic, size: int, key: str) -> str:
        """Try a record of `size` bytes; it must be refused (by Kafka, or by the producer before sending)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id="hostile-soak-over-limit",
            acks="all",
            max_request_size=PRODUCER_MAX_REQUEST_SIZE,
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic_name(topic, self._namespace), value=os.urandom(size), key=key.encode())
        except MessageSizeTooLargeError as exc:
            self.refused.append((topic, size, key, type(exc).__name__))
            return f"{exc}"
        finally:
            await producer.stop()
        raise AssertionError(f"a {size}-byte record was accepted on {topic} (limit {TOPIC_MAX_MESSAGE_BYTES})")


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scanned:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @property
    def coords(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


def all_partitions(namespace: str) -> list[TopicPartition]:
    return [TopicPartition(topic_name(spec.topic, namespace), p) for spec in CATALOGUE for p in range(spec.partitions)]


async def scan(bootstrap: str, namespace: str) -> list[Scanned]:
    """Every committed record of every catalogue topic of the namespace, up to the end offsets found first."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=2 * PRODUCER_MAX_REQUEST_SIZE,
    )
    await consumer.start()
    out: list[Scanned] = []
    try:
        tps = all_partitions(namespace)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = [tp for tp in tps if end[tp] > 0]
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for tp, messages in batches.items():
                out.extend(
                    Scanned(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                    for m in messages
                    if m.offset < end[tp]
                )
            remaining = [tp for tp in remaining if await consumer.position(tp) < end[tp]]
    finally:
        await consumer.stop()
    return out
