"""Hostile-traffic soak (issue 14, point 5): valid requests of every tier among garbage on every topic.

Six services run as real processes (gateway, approvals, issuer, broker, audit sink,
and chat with a Slack stand-in), on the real Kafka and OPA. For a bounded time:

- valid requests at a steady rate, the three tiers in turn (low `crm.contact.read`;
  medium `crm.contact.update` with one approver vote; high `sap.vendor.change`
  with two), signed by `fault-bot` (registered for `acme`); every PoA issued is
  presented to the broker on `atb.broker.actions` as soon as it is committed;
- garbage on **every** catalogue topic, kept at ≥ 15% of what the topic holds
  (measured while it runs): random bytes, truncated JSON, a valid event of another
  topic, unknown fields, tombstones, keyless records, and where a consumer checks
  proofs or partitions a request proven by another agent's key, Alice's vote proven
  by Bob, a quorum and an ApprovalRequired announced by an agent, an action whose
  signed body was changed, and well-formed records on another partition than their
  key's (`tests/e2e/hostile_traffic.py`);
- large records, up to just below the topic limit, and records over it, which Kafka
  (or the producer, above `PRODUCER_MAX_REQUEST_SIZE`) must refuse: aiokafka raises
  `MessageSizeTooLargeError` and the record is nowhere on the topic;
- every service is stopped and restarted once, one after the other, mid-run.

Then, from a `read_committed` scan of every topic (read to its end offsets):

- every valid request has exactly one outcome (QuorumReached), one PoA, one
  decision for its presented action, and that decision is its one allow; no
  garbage got a quorum or a PoA;
- records in = processed + dead-lettered, per consumer. A consumer's records in are
  the distinct records on the topics it reads (`hostile_traffic.CONSUMERS`); its
  dead-lettered ones are the letters on `atb.dlq` naming it; the rest it processed.
  Precisely: every garbage record has exactly one letter, with its coordinates,
  size and digest, from every consumer of its topic except those that legitimately
  use it (`hostile_traffic.PASSES`: an outcome the issuer lets pass by, a
  well-proven record on the wrong partition for the followers, a non-Ed25519 key
  the key ring ignores) and views that may take or refuse a forged event on its
  proof (`hostile_traffic.MAY_REFUSE_ON_PROOF`: at most one letter, with an
  identity rule's code); no other record has a letter from anyone. Followers
  letter only what arrives while they run: a record published while its
  follower's process was down (from 2 s before its stop to its restart being
  ready) may have no letter from that follower, never two. Every
  letter decodes and has its `event_dead_lettered` audit event; an action with a
  bad signature also gets its deny;
- the audit store holds every committed record;
- no consumer stalls: the lag from a record's publish to its consumer's output
  (outcome, PoA, decision, letter, audit row), from record timestamps, and the
  longest gap between consecutive outputs of approvals, issuer and broker, less
  the time the consumer's own process was stopped or starting for its restart
  (that is a restart, not a stall; joining the group and restoring state after
  it count), stay under ATB_HOSTILE_MAX_STALL_S (15 s). The lag distributions
  (as measured) and the restart durations are printed.

`make test` runs 60 s at 3 requests/s; `make soak` (`-m soak`) 300 s at 8/s
(ATB_SOAK_HOSTILE_SECONDS, ATB_SOAK_HOSTILE_RATE, ATB_SOAK_HOSTILE_RESTARTS).
docs/hostile-input.md, "The hostile soak".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import math
import os
import random
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

from atb.dev.slack_standin import SlackStandIn
from atb.dev.stack import DEFAULT_SERVICES, ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb_identity import Svid, ensure_svid, sign_envelope
from atb_runtime import Outgoing, Publisher, outgoing_envelope
from audit_sink.adapters.db import audit_events, make_engine
from contracts import (
    AccountableParty,
    ActionRequested,
    AuditEvent,
    BrokerDecision,
    DeadLetter,
    Decision,
    EventDecodeError,
    EventPayload,
    IssuanceRequested,
    LegitimateInterest,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    Topic,
    VoteCast,
    VoteChoice,
    decode_envelope,
    digest_of,
    make_envelope,
    payload_of,
    topic_name,
)
from contracts.limits import PRODUCER_MAX_REQUEST_SIZE, TOPIC_MAX_MESSAGE_BYTES
from tests.e2e.audit_sync import caught_up
from tests.e2e.hostile_traffic import (
    AGENT,
    CONSUMERS,
    GROUP_CONSUMERS,
    IDENTITY_CODES,
    Garbage,
    GarbageMaker,
    GarbageSender,
    Scanned,
    all_partitions,
    follower_service,
    kinds_for,
    scan,
)

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

SERVICES = (*DEFAULT_SERVICES, "chat")
APPROVERS = {name: f"spiffe://atb.local/user/{name}" for name in ("alice", "bob")}
TIERS = (
    # (action, accountable party, approvers who approve)
    ("crm.contact.read", "svc-1", ()),
    ("crm.contact.update", "emp-300", ("alice",)),
    ("sap.vendor.change", "emp-301", ("alice", "bob")),  # high; a payment would need its amount
)
FINALS = (QuorumReached, RequestDenied, RequestExpired)
LARGE_SIZES = (70 * 1024, 300 * 1024, 600 * 1024, TOPIC_MAX_MESSAGE_BYTES - 1024)
"""Accepted sizes: above approvals' own limit, above MAX_EVENT_BYTES, just below the topic limit."""
OVER_LIMIT = (TOPIC_MAX_MESSAGE_BYTES + 1, PRODUCER_MAX_REQUEST_SIZE + 1)
"""Refused by Kafka (the topic's max.message.bytes), and by the producer before sending."""
FOLLOWER_MARGIN_MS = 2000
"""How long before a follower's stop a record may still be unread (and so never lettered by it)."""


@dataclass(frozen=True)
class Params:
    seconds: float
    rate: float
    garbage_fraction: float
    max_stall_s: float
    restarts: int
    seed: int
    large_every_s: float = 6.0
    over_limit_every_s: float = 10.0
    min_garbage_every_s: float = 2.0


@dataclass
class SoakEnv:
    stack: ServiceStack
    namespace: str
    state_dir: Path
    db_url: str
    bootstrap: str


@pytest.fixture
async def soak_env(kafka_bootstrap: str, opa_url: str, tmp_path: Path) -> AsyncIterator[SoakEnv]:
    ns = f"h{uuid.uuid4().hex[:8]}."
    await ensure_topics(kafka_bootstrap, ns)
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    standin = SlackStandIn()
    await standin.start()
    config = StackConfig(
        kafka_bootstrap, opa_url, tmp_path, namespace=ns, audit_db_url=db_url, slack_api_url=standin.api_url
    )
    stack = ServiceStack(config, services=SERVICES)
    try:
        await stack.start(ready_timeout=120)
        yield SoakEnv(stack, ns, tmp_path, db_url, kafka_bootstrap)
    finally:
        await stack.stop()
        await standin.stop()
        await delete_topics(kafka_bootstrap, ns)


# -- what a scan holds --------------------------------------------------------------------


def _payload(value: bytes | None) -> EventPayload | None:
    try:
        return payload_of(decode_envelope(value))
    except EventDecodeError:
        return None


@dataclass
class Index:
    """Committed records of a namespace, classified; `skip` names coordinates that are garbage (counted only)."""

    namespace: str
    skip: Callable[[tuple[str, int, int]], bool] = lambda _coords: False
    records: dict[tuple[str, int, int], Scanned] = field(default_factory=dict)
    counts: Counter[Topic] = field(default_factory=Counter)
    requests: dict[str, list[Scanned]] = field(default_factory=lambda: defaultdict(list))
    finals: dict[str, list[tuple[str, Scanned]]] = field(default_factory=lambda: defaultdict(list))
    quorums: dict[str, list[Scanned]] = field(default_factory=lambda: defaultdict(list))
    poas: dict[str, list[tuple[PoaIssued, Scanned]]] = field(default_factory=lambda: defaultdict(list))
    actions: dict[str, list[Scanned]] = field(default_factory=lambda: defaultdict(list))
    decisions: dict[str, list[tuple[BrokerDecision, Scanned]]] = field(default_factory=lambda: defaultdict(list))
    letters: list[tuple[DeadLetter, Scanned]] = field(default_factory=list)
    lettered: Counter[tuple[str, tuple[str, int, int]]] = field(default_factory=Counter)
    not_letters: list[Scanned] = field(default_factory=list)
    letter_audits: Counter[tuple[str, tuple[str, int, int]]] = field(default_factory=Counter)

    def topic(self, name: str) -> Topic:
        return Topic(name[len(self.namespace) :])

    def ingest(self, record: Scanned) -> EventPayload | None:
        self.records[record.coords] = record
        topic = self.topic(record.topic)
        self.counts[topic] += 1
        if self.skip(record.coords):
            return None
        payload = _payload(record.value)
        if topic is Topic.POA_REQUESTS and isinstance(payload, IssuanceRequested):
            self.requests[payload.request_id].append(record)
        elif topic is Topic.OUTCOMES and isinstance(payload, FINALS):
            self.finals[payload.request_id].append((type(payload).__name__, record))
            if isinstance(payload, QuorumReached):
                self.quorums[payload.request_id].append(record)
        elif topic is Topic.POA_ISSUED and isinstance(payload, PoaIssued):
            self.poas[payload.request_id].append((payload, record))
        elif topic is Topic.BROKER_ACTIONS and isinstance(payload, ActionRequested):
            self.actions[payload.action_id].append(record)
        elif topic is Topic.BROKER_DECISIONS and isinstance(payload, BrokerDecision):
            self.decisions[payload.action_id].append((payload, record))
        elif topic is Topic.DLQ:
            if isinstance(payload, DeadLetter):
                self.letters.append((payload, record))
                coords = (payload.original_topic, payload.original_partition, payload.original_offset)
                self.lettered[(payload.consumer, coords)] += 1
            else:
                self.not_letters.append(record)
        elif topic is Topic.AUDIT and isinstance(payload, AuditEvent) and payload.audit_type == "event_dead_lettered":
            d = payload.details
            coords = (str(d.get("topic")), int(str(d.get("partition"))), int(str(d.get("offset"))))
            self.letter_audits[(str(d.get("consumer")), coords)] += 1
        return payload


# -- the run ------------------------------------------------------------------------------


class Soak:
    def __init__(self, env: SoakEnv, params: Params) -> None:
        self.env = env
        self.params = params
        self.rng = random.Random(params.seed)
        self.maker = GarbageMaker(env.state_dir, env.namespace, self.rng)
        self.sender = GarbageSender(env.bootstrap, env.namespace)
        self.agent = ensure_svid(env.state_dir, AGENT)
        self.approvers = {name: ensure_svid(env.state_dir, spiffe) for name, spiffe in APPROVERS.items()}
        self.run_id = uuid.uuid4().hex[:6]
        self.valid: dict[str, int] = {}
        """Request id → its index (tier, resource)."""
        self.presented: dict[str, str] = {}
        """Action id → request id."""
        self._presented_requests: set[str] = set()
        self.live = Index(env.namespace)
        self.ingested = asyncio.Condition()
        """Notified whenever the tail has ingested records into `live`."""
        self.windows: dict[str, list[tuple[int, int]]] = defaultdict(list)
        """Service → (stop, ready again) in epoch ms."""
        self.started = 0.0
        self.traffic_ms = (0, 0)

    # -- valid traffic --------------------------------------------------------------------

    def _request(self, i: int) -> IssuanceRequested:
        action, party, _ = TIERS[i % len(TIERS)]
        return IssuanceRequested(
            request_id=f"soak-{self.run_id}-{i}",
            agent_id=AGENT,
            tenant="acme",
            action=action,
            resource=f"res/{i}",
            leg=LegitimateInterest(
                ref=f"LI-H{i}", jurisdiction="US", accountable_party=AccountableParty(type="employee", id=party)
            ),
            requested_at=datetime.now(UTC),
            agent_cert_thumbprint=self.agent.thumbprint(),
        )

    def _signed(self, payload: EventPayload, source: str, svid: Svid) -> Outgoing:
        envelope = sign_envelope(make_envelope(payload, source=source), svid)
        return outgoing_envelope(envelope, topic_name(payload.topic, self.env.namespace))

    def _votes(self, i: int, request: IssuanceRequested) -> list[Outgoing]:
        return [
            self._signed(
                VoteCast(
                    request_id=request.request_id,
                    vote_id=f"{request.request_id}-{name}",
                    approver_id=APPROVERS[name],
                    choice=VoteChoice.APPROVE,
                    request_digest=digest_of(request),
                    channel="cli",
                    cast_at=datetime.now(UTC),
                ),
                APPROVERS[name],
                self.approvers[name],
            )
            for name in TIERS[i % len(TIERS)][2]
        ]

    async def _valid_traffic(self, until: Callable[[], bool]) -> None:
        async with Publisher(self.env.bootstrap, "hostile-soak-agent") as publisher:
            for i in itertools.count():
                if until():
                    return
                request = self._request(i)
                self.valid[request.request_id] = i
                await publisher.publish([self._signed(request, AGENT, self.agent), *self._votes(i, request)])
                await publisher.flush()
                ahead = self.started + (i + 1) / self.params.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)  # the pacing of the traffic itself

    def _action(self, issued: PoaIssued) -> ActionRequested:
        i = self.valid[issued.request_id]
        return ActionRequested(
            request_id=issued.request_id,
            action_id=f"act-{issued.request_id}-{issued.jti[:8]}",
            agent_id=AGENT,
            tenant="acme",
            action=issued.action,
            resource=f"res/{i}",
            params={},
            poa=issued.token,
            requested_at=datetime.now(UTC),
        )

    async def _tail(self, stop: asyncio.Event) -> None:
        """Follow every topic (read_committed) into `live`; present each valid PoA as soon as it is committed."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.env.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=2 * PRODUCER_MAX_REQUEST_SIZE,
        )
        await consumer.start()
        try:
            tps = all_partitions(self.env.namespace)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            async with Publisher(self.env.bootstrap, "hostile-soak-presenter") as publisher:
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                    actions = []
                    for messages in batches.values():
                        for m in messages:
                            record = Scanned(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                            payload = self.live.ingest(record)
                            if (
                                isinstance(payload, PoaIssued)
                                and self.live.topic(record.topic) is Topic.POA_ISSUED
                                and payload.request_id in self.valid
                                and payload.request_id not in self._presented_requests
                            ):
                                action = self._action(payload)
                                self.presented[action.action_id] = payload.request_id
                                self._presented_requests.add(payload.request_id)
                                actions.append(self._signed(action, AGENT, self.agent))
                    if actions:
                        await publisher.publish(actions)
                        await publisher.flush()
                    if batches:
                        async with self.ingested:
                            self.ingested.notify_all()
        finally:
            await consumer.stop()

    # -- garbage --------------------------------------------------------------------------

    async def _garbage(self, until: Callable[[], bool]) -> None:
        """Keep garbage at `garbage_fraction` of every topic, at least one per topic every few seconds."""
        p = self.params
        ratio = p.garbage_fraction / (1 - p.garbage_fraction)
        kinds = {topic: itertools.cycle(kinds_for(topic)) for topic in Topic}
        sent: Counter[Topic] = Counter()
        last = dict.fromkeys(Topic, 0.0)
        large_topics = itertools.cycle(list(Topic))
        large_sizes = itertools.cycle(LARGE_SIZES)
        over_topics = itertools.cycle(list(Topic))
        over_sizes = itertools.cycle(OVER_LIMIT)
        next_large = self.started + 2.0
        next_over = self.started + 3.0
        while not until():
            now = time.monotonic()
            shots = []
            for topic in Topic:
                others = max(0, self.live.counts[topic] - sent[topic])
                want = min(25, math.ceil(ratio * others) - sent[topic])
                if want <= 0 and now - last[topic] >= p.min_garbage_every_s:
                    want = 1
                for _ in range(max(0, want)):
                    shots.append(self.maker.make(topic, next(kinds[topic])))
                if want > 0:
                    sent[topic] += want
                    last[topic] = now
            await self.sender.send(shots)
            if now >= next_large:
                next_large = now + p.large_every_s
                topic = next(large_topics)
                await self.sender.send_large(self.maker.big(topic, next(large_sizes)))
                sent[topic] += 1
            if now >= next_over:
                next_over = now + p.over_limit_every_s
                await self.sender.over_limit(next(over_topics), next(over_sizes), self.maker.junk_id())
            await asyncio.sleep(0.25)  # the pacing of the traffic itself

    # -- restarts -------------------------------------------------------------------------

    async def _restarts(self) -> None:
        """Stop and restart every service, one after the other, spread over the middle of the run."""
        order = [name for _ in range(self.params.restarts) for name in SERVICES]
        for k, name in enumerate(order):
            at = self.started + self.params.seconds * (0.15 + 0.6 * k / len(order))
            if (ahead := at - time.monotonic()) > 0:
                await asyncio.sleep(ahead)  # fault schedule: spread over the run
            stopped = _now_ms()
            await self.env.stack.processes[name].stop()
            await self.env.stack.restart(name, ready_timeout=120)
            self.windows[name].append((stopped, _now_ms()))

    # -- waiting --------------------------------------------------------------------------

    def _in_window(self, consumer: str, g: Garbage) -> bool:
        service = follower_service(consumer)
        return service is not None and any(
            start - FOLLOWER_MARGIN_MS <= g.timestamp_ms <= end for start, end in self.windows.get(service, [])
        )

    def _missing(self, index: Index) -> list[str]:
        """What is still to come: outcomes, PoAs, decisions and expected letters."""
        missing = []
        if no_outcome := [r for r in self.valid if r not in index.finals]:
            missing.append(f"{len(no_outcome)} outcomes")
        if no_poa := [r for r in self.valid if r not in index.poas]:
            missing.append(f"{len(no_poa)} PoAs")
        tampered = {g.shot.action_id for g in self.sender.landed if g.shot.action_id}
        if undecided := [a for a in (set(self.presented) | tampered) if a not in index.decisions]:
            missing.append(f"{len(undecided)} decisions")
        letters = [
            (c, g.coords)
            for g in self.sender.landed
            for c in g.shot.letters_from
            if not self._in_window(c, g) and (c, g.coords) not in index.lettered
        ]
        if letters:
            missing.append(f"{len(letters)} letters, e.g. {letters[:2]}")
        return missing

    async def _settled(self, timeout: float, stuck_after: float = 45.0) -> list[str]:
        """Wait until nothing is missing; give up at `timeout`, or when nothing came for `stuck_after` seconds."""
        deadline = time.monotonic() + timeout
        before, since = self._missing(self.live), time.monotonic()
        while before and (left := min(deadline, since + stuck_after) - time.monotonic()) > 0:
            async with self.ingested:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ingested.wait(), left)  # the tail ingested more records
            missing = self._missing(self.live)
            if missing != before:
                before, since = missing, time.monotonic()
        return before

    # -- the whole run --------------------------------------------------------------------

    async def run(self) -> Index:
        await self.sender.start()
        stop_tail = asyncio.Event()
        tail = asyncio.create_task(self._tail(stop_tail))
        self.started = time.monotonic()
        t0 = _now_ms()
        restarts = asyncio.create_task(self._restarts())

        def over() -> bool:
            return time.monotonic() - self.started >= self.params.seconds and restarts.done()

        try:
            await asyncio.gather(self._valid_traffic(over), self._garbage(over), restarts)
            self.traffic_ms = (t0, _now_ms())
            missing = await self._settled(timeout=180)
            assert not missing, f"never came: {missing}"
        finally:
            stop_tail.set()
            await tail
            await self.sender.stop()
        garbage = {g.coords for g in self.sender.landed}
        final = Index(self.env.namespace, skip=garbage.__contains__)
        for record in await scan(self.env.bootstrap, self.env.namespace):
            final.ingest(record)
        return final


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- checks -------------------------------------------------------------------------------


def _check_valid(soak: Soak, index: Index) -> None:
    ids = set(soak.valid)
    assert set(index.finals) >= ids, f"requests without an outcome: {sorted(ids - set(index.finals))[:5]}"
    kinds = Counter(kind for rid in ids for kind, _ in index.finals[rid])
    assert kinds == Counter({"QuorumReached": len(ids)}), f"outcomes of valid requests: {kinds}"
    assert not set(index.quorums) - ids, f"garbage got a quorum: {sorted(set(index.quorums) - ids)[:5]}"
    assert set(index.poas) == ids, (
        f"PoAs: missing {sorted(ids - set(index.poas))[:5]}, garbage got {sorted(set(index.poas) - ids)[:5]}"
    )
    assert max(len(v) for v in index.poas.values()) == 1, "a request got two PoAs"
    assert set(soak.presented.values()) == ids, "a PoA was not presented"
    allows: Counter[str] = Counter()
    for action_id, request_id in soak.presented.items():
        decided = index.decisions.get(action_id, [])
        assert len(decided) == 1, f"action {action_id} has {len(decided)} decisions"
        decision = decided[0][0]
        assert decision.decision is Decision.ALLOW, f"{action_id} denied: {decision.reasons}"
        allows[request_id] += 1
    every_allow = Counter(
        d.request_id for ds in index.decisions.values() for d, _ in ds if d.decision is Decision.ALLOW
    )
    assert every_allow == allows, "an allow for something not presented, or two for one request"


def _check_refused_at_produce(soak: Soak, index: Index) -> None:
    refused = soak.sender.refused
    assert {size for _, size, _, _ in refused} == set(OVER_LIMIT), f"over-limit attempts: {refused}"
    keys = {key.encode() for _, _, key, _ in refused}
    landed = [r.coords for r in index.records.values() if r.key in keys]
    assert not landed, f"records over the limit landed: {landed}"


@dataclass
class Accounting:
    records_in: int = 0
    lettered: int = 0
    expected: int = 0
    on_proof: int = 0
    """Letters of forged events that the consumer may use or refuse on their proof (and refused)."""
    unlettered_while_down: int = 0

    @property
    def processed(self) -> int:
        return self.records_in - self.lettered


def _check_letters(soak: Soak, index: Index) -> dict[str, Accounting]:
    """records in = processed + dead-lettered, per consumer, as the module docstring defines it."""
    garbage = {g.coords: g for g in soak.sender.landed}
    assert not index.not_letters, (
        f"records on the DLQ that are no dead letter: {[r.coords for r in index.not_letters][:5]}"
    )
    twice = {k: n for k, n in index.lettered.items() if n > 1}
    assert not twice, f"lettered more than once: {list(twice.items())[:5]}"
    assert index.letter_audits == index.lettered, "letters and their event_dead_lettered audit events differ"
    accounts: dict[str, Accounting] = {}
    for consumer, topics in CONSUMERS.items():
        names = {topic_name(t, soak.env.namespace) for t in topics}
        account = accounts[consumer] = Accounting()
        account.records_in = sum(1 for c in index.records if c[0] in names)
    for letter, _ in index.letters:
        coords = (letter.original_topic, letter.original_partition, letter.original_offset)
        assert letter.consumer in CONSUMERS, f"a letter from an unknown consumer {letter.consumer!r}"
        original = index.records.get(coords)
        assert original is not None, f"{letter.consumer} lettered {coords}, which is no committed record"
        g = garbage.get(coords)
        assert g is not None, (
            f"{letter.consumer} lettered a valid record {coords} ({letter.error_code}: {letter.reason}); "
            f"it was {_payload(original.value)!r:.300}"
        )
        on_proof = letter.consumer in g.shot.may_refuse and letter.error_code in IDENTITY_CODES
        assert letter.consumer in g.shot.letters_from or on_proof, (
            f"{letter.consumer} lettered a {g.shot.kind} record on {g.shot.topic} that it may use ({letter.error_code})"
        )
        accounts[letter.consumer].on_proof += on_proof
        value = original.value or b""
        assert (letter.original_size, letter.original_sha256) == (
            len(value),
            "sha256:" + hashlib.sha256(value).hexdigest(),
        ), f"the letter of {coords} does not describe it"
        accounts[letter.consumer].lettered += 1
    missing = []
    for g in soak.sender.landed:
        for consumer in g.shot.letters_from:
            accounts[consumer].expected += 1
            if (consumer, g.coords) in index.lettered:
                continue
            if consumer not in GROUP_CONSUMERS and soak._in_window(consumer, g):
                accounts[consumer].unlettered_while_down += 1
                continue
            missing.append((consumer, g.shot.topic.value, g.shot.kind, g.coords))
    assert not missing, f"{len(missing)} garbage records without their letter: {missing[:5]}"
    tampered = [g for g in soak.sender.landed if g.shot.action_id]
    for g in tampered:
        assert g.shot.action_id is not None
        decided = [d for d, _ in index.decisions.get(g.shot.action_id, [])]
        assert [d.decision for d in decided] == [Decision.DENY], f"tampered action {g.shot.action_id}: {decided}"
    return accounts


def _check_fractions(soak: Soak, index: Index) -> dict[Topic, tuple[int, int]]:
    landed = Counter(soak.live.topic(g.topic) for g in soak.sender.landed)
    fractions = {topic: (landed[topic], index.counts[topic]) for topic in Topic}
    thin = {t.value: f"{g}/{n}" for t, (g, n) in fractions.items() if n == 0 or g / n < 0.10}
    assert not thin, f"garbage below 10% of a topic: {thin}"
    kinds = {(soak.live.topic(g.topic), g.shot.kind) for g in soak.sender.landed}
    unsent = [(t.value, k) for t in Topic for k in kinds_for(t) if (t, k) not in kinds]
    assert not unsent, f"garbage kinds never sent: {unsent}"
    assert any(g.shot.kind == "big" and len(g.shot.value or b"") >= LARGE_SIZES[-1] for g in soak.sender.landed)
    return fractions


async def _audit_rows(soak: Soak, index: Index, timeout: float = 120) -> dict[tuple[str, int, int], datetime]:
    """Once the sink's positions reach the end offsets (every scanned record is committed): stored rows' recorded_at."""
    await caught_up(soak.env.bootstrap, soak.env.namespace, soak.env.db_url, timeout=timeout)
    engine = make_engine(soak.env.db_url)
    query = select(audit_events.c.topic, audit_events.c.partition, audit_events.c.offset, audit_events.c.recorded_at)
    with engine.connect() as conn:
        stored = {(r.topic, r.partition, r.offset): r.recorded_at for r in conn.execute(query)}
    engine.dispose()
    missing = set(index.records) - set(stored)
    assert not missing, f"{len(missing)} committed records are not in the audit store: {sorted(missing)[:3]}"
    return stored


Waits = dict[str, list[tuple[int, int]]]
"""Per consumer, (publish, output) epoch ms of each record it answered."""


def _waits(soak: Soak, index: Index, stored: dict[tuple[str, int, int], datetime]) -> Waits:
    """From a record's publish to its consumer's output (outcome, PoA, decision, letter, audit row)."""
    waits: Waits = defaultdict(list)
    for rid in soak.valid:
        request = index.requests[rid][0]
        waits["approvals"].append((request.timestamp_ms, index.finals[rid][0][1].timestamp_ms))
        quorum = index.quorums[rid][0]
        waits["issuer"].append((quorum.timestamp_ms, index.poas[rid][0][1].timestamp_ms))
    for action_id, rid in soak.presented.items():
        action, decided = index.actions[action_id][0], index.decisions[action_id][0][1]
        waits["broker"].append((action.timestamp_ms, decided.timestamp_ms))
        waits["end-to-end"].append((index.requests[rid][0].timestamp_ms, decided.timestamp_ms))
    garbage = {g.coords: g for g in soak.sender.landed}
    for letter, record in index.letters:
        g = garbage[(letter.original_topic, letter.original_partition, letter.original_offset)]
        waits[letter.consumer].append((g.timestamp_ms, record.timestamp_ms))
    for coords, recorded_at in stored.items():
        if (original := index.records.get(coords)) is not None:
            at = recorded_at if recorded_at.tzinfo else recorded_at.replace(tzinfo=UTC)
            waits["audit-sink"].append((original.timestamp_ms, int(at.timestamp() * 1000)))
    return waits


def _down_ms(soak: Soak, consumer: str, start: int, end: int) -> int:
    """How much of [start, end] the consumer's own process was stopped or starting (a restart, not a stall)."""
    service = follower_service(consumer) or consumer
    return sum(max(0, min(end, b) - max(start, a)) for a, b in soak.windows.get(service, []))


def _stalls(soak: Soak, waits: Waits) -> dict[str, list[float]]:
    """Each wait in seconds, less the time its consumer was down for its restart."""
    return {
        consumer: [(out - in_ - _down_ms(soak, consumer, in_, out)) / 1000 for in_, out in pairs]
        for consumer, pairs in waits.items()
        if consumer != "end-to-end"
    }


def _gaps(soak: Soak, waits: Waits) -> dict[str, tuple[float, float]]:
    """The longest time approvals, issuer and broker had work pending and produced nothing: as measured,
    and less the stage's own restart. Work is pending from the publish of a record it has not answered yet;
    an upstream stage's restart leaves a stage without work, not stalled."""
    gaps = {}
    for stage in ("approvals", "issuer", "broker"):
        pairs = sorted(waits[stage], key=lambda p: p[1])
        outputs = [out for _, out in pairs]
        # Pending just before the k-th output: every input answered at it or later; the earliest arrived first.
        earliest = list(itertools.accumulate(reversed([in_ for in_, _ in pairs]), min))[::-1]
        worst = (0, 0)
        for k in range(1, len(pairs)):
            idle_from = max(outputs[k - 1], earliest[k])
            if idle_from < outputs[k]:
                raw = outputs[k] - idle_from
                worst = max(worst[0], raw), max(worst[1], raw - _down_ms(soak, stage, idle_from, outputs[k]))
        gaps[stage] = (worst[0] / 1000, worst[1] / 1000)
    return gaps


def _distribution(values: list[float]) -> str:
    if not values:
        return "-"
    q = statistics.quantiles(values, n=100) if len(values) > 1 else [values[0]] * 99
    return f"n={len(values):5d} p50={q[49]:6.2f} p90={q[89]:6.2f} p99={q[98]:6.2f} max={max(values):6.2f}"


def _report(
    soak: Soak,
    index: Index,
    accounts: dict[str, Accounting],
    fractions: dict[Topic, tuple[int, int]],
    waits: Waits,
    stalls: dict[str, list[float]],
    gaps: dict[str, tuple[float, float]],
) -> str:
    p = soak.params
    kinds = Counter(g.shot.kind for g in soak.sender.landed)
    lines = [
        f"\nhostile soak: {p.seconds:.0f} s at {p.rate}/s: {len(soak.valid)} valid requests "
        f"(one outcome, one PoA, one allow each), {len(soak.presented)} actions, "
        f"{len(soak.sender.landed)} garbage records, {len(soak.sender.refused)} refused at produce, "
        f"restarts {dict(Counter(s for s in soak.windows for _ in soak.windows[s]))}",
        "garbage kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
        "garbage share per topic: "
        + ", ".join(f"{t.value.removeprefix('atb.')} {g}/{n} ({g / n:.0%})" for t, (g, n) in fractions.items()),
        f"{'consumer':22} {'in':>7} {'processed':>9} {'lettered':>8} {'expected':>8} {'on proof':>8} "
        f"{'missed while down':>17}",
    ]
    for consumer, a in accounts.items():
        lines.append(
            f"{consumer:22} {a.records_in:7d} {a.processed:9d} {a.lettered:8d} {a.expected:8d} {a.on_proof:8d} "
            f"{a.unlettered_while_down:17d}"
        )
    restarts = ", ".join(f"{s} {(b - a) / 1000:.1f} s" for s, ws in soak.windows.items() for a, b in ws)
    lines.append(f"restarts (stop until ready again): {restarts}")
    lines.append("lag, seconds from publish to output (record timestamps); max less the consumer's own restart:")
    for name, pairs in sorted(waits.items()):
        lags = [(out - in_) / 1000 for in_, out in pairs]
        up = f"{max(stalls[name]):6.2f}" if stalls.get(name) else "     -"
        lines.append(f"  {name:22} {_distribution(lags)}  up {up}")
    lines.append(
        "longest time with work pending and no output (less own restart): "
        + ", ".join(f"{k} {raw:.2f} s ({up:.2f} s)" for k, (raw, up) in gaps.items())
    )
    return "\n".join(lines)


async def _run(env: SoakEnv, params: Params) -> None:
    soak = Soak(env, params)
    index = await soak.run()
    _check_valid(soak, index)
    _check_refused_at_produce(soak, index)
    accounts = _check_letters(soak, index)
    fractions = _check_fractions(soak, index)
    stored = await _audit_rows(soak, index)
    waits = _waits(soak, index, stored)
    stalls = _stalls(soak, waits)
    gaps = _gaps(soak, waits)
    print(_report(soak, index, accounts, fractions, waits, stalls, gaps))
    worst = {name: max(values) for name, values in stalls.items() if values}
    worst.update({f"{stage} gap": up for stage, (_raw, up) in gaps.items()})
    slow = {k: f"{v:.1f} s" for k, v in worst.items() if v > params.max_stall_s}
    assert not slow, f"stalled longer than {params.max_stall_s} s (not counting its own restart): {slow}"


def _params(prefix: str, seconds: float, rate: float, restarts: int, seed: int) -> Params:
    env = os.environ
    return Params(
        seconds=float(env.get(f"{prefix}SECONDS", seconds)),
        rate=float(env.get(f"{prefix}RATE", rate)),
        garbage_fraction=float(env.get("ATB_HOSTILE_GARBAGE_FRACTION", "0.15")),
        max_stall_s=float(env.get("ATB_HOSTILE_MAX_STALL_S", "15")),
        restarts=int(env.get(f"{prefix}RESTARTS", restarts)),
        seed=int(env.get(f"{prefix}SEED", seed)),
    )


async def test_hostile_traffic_costs_letters_never_the_pipeline(soak_env: SoakEnv) -> None:
    await _run(soak_env, _params("ATB_HOSTILE_", seconds=60, rate=3, restarts=1, seed=20261214))


@pytest.mark.soak
@pytest.mark.timeout(int(float(os.environ.get("ATB_SOAK_HOSTILE_SECONDS", "300"))) + 900)
async def test_hostile_traffic_soak(soak_env: SoakEnv) -> None:
    await _run(soak_env, _params("ATB_SOAK_HOSTILE_", seconds=300, rate=8, restarts=1, seed=7))
