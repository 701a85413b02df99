"""Exactly once under SIGKILL: the guarantees of docs/architecture.md §6.2 and §6.4, on the real broker.

N low-risk requests flow while approvals, issuer and the audit sink are killed
with SIGKILL at random moments and restarted. At the end:

- a `read_committed` reader sees exactly one PoaIssued per request (no duplicate,
  none missing), and exactly one QuorumReached;
- the audit store holds every committed record of every topic exactly once: the
  same (topic, partition, offset) set a `read_committed` scan of the topics sees.

`make test` runs it small (ATB_FAULT_REQUESTS=300, ATB_FAULT_KILLS=10); `make soak`
runs the soak variant with thousands (ATB_SOAK_REQUESTS, ATB_SOAK_KILLS).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import Engine, select

from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Outgoing, Publisher, outgoing_envelope
from atb_runtime.readback import iter_records
from audit_sink.adapters.db import audit_events, make_engine
from audit_sink.adapters.ledger import CHECKPOINT_AUDIT_TYPE
from contracts import (
    CATALOGUE,
    AccountableParty,
    ApprovalStateChanged,
    EventDecodeError,
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
from tests.e2e.audit_sync import caught_up
from tests.e2e.conftest import RunningStack
from tests.waits import events, until

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/fault-bot"
LEG = LegitimateInterest(ref="LI-F", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="f"))
VICTIMS = ("approvals", "issuer", "audit-sink")


async def _publish_requests(stack: RunningStack, n: int, kills: int) -> set[str]:
    """Publish n requests spread over the kill window, so kills land mid-stream."""
    ids: set[str] = set()
    chunk = max(1, n // (kills * 6))
    svid = ensure_svid(stack.state_dir, AGENT)
    async with Publisher(stack.kafka_bootstrap, "fault-agent") as publisher:
        for i in range(n):
            request = IssuanceRequested(
                request_id=f"fault-{i}",
                agent_id=AGENT,
                tenant="acme",
                action="crm.contact.read",
                resource=f"crm:contact/{i}",
                leg=LEG,
                requested_at=datetime.now(UTC),
            )
            ids.add(request.request_id)
            envelope = sign_envelope(make_envelope(request, source=AGENT), svid)
            await publisher.publish([outgoing_envelope(envelope, topic_name(request.topic, stack.namespace))])
            if i % chunk == chunk - 1:
                await publisher.flush()
                await asyncio.sleep(0.2)  # the pacing of the traffic itself: spread over the kills
    return ids


async def _kill_loop(stack: RunningStack, kills: int, rng: random.Random) -> list[str]:
    killed: list[str] = []
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.1, 0.6))  # fault schedule: a kill at a random moment
        victim = rng.choice(VICTIMS)
        if await stack.stack.kill(victim):
            killed.append(victim)
        await stack.stack.restart(victim, ready_timeout=90)
    return killed


async def _committed_records(bootstrap: str, namespace: str) -> dict[tuple[str, int, int], bytes]:
    """Every committed record of every topic of the namespace (read_committed, to the end)."""
    topics = [topic_name(spec.topic, namespace) for spec in CATALOGUE]
    return {(r.topic, r.partition, r.offset): r.value or b"" async for r in iter_records(bootstrap, topics)}


# What each transactional service consumes: its group and topics (atb_runtime/runner.py names the group).
CONSUMERS = {"atb-approvals": (Topic.POA_REQUESTS, Topic.VOTES), "atb-issuer": (Topic.OUTCOMES,)}


async def _settled(stack: RunningStack, timeout: float = 180) -> None:
    """Wait until approvals and the issuer have committed every record of their inputs.

    After that nothing more can come from them: outputs commit with the input offsets that
    caused them, and nothing is left to consume. Proven by reading from each group's committed
    offsets to the end offsets: no record is there. This replaces a fixed "a little longer".
    """
    ns = stack.namespace
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()

    async def left() -> int:
        unread = 0
        for group, topics in CONSUMERS.items():
            committed = await admin.list_consumer_group_offsets(f"{group}.{ns.rstrip('.')}")
            start = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
            names = [topic_name(t, ns) for t in topics]
            unread += len([r async for r in iter_records(stack.kafka_bootstrap, names, start=start)])
        return unread

    try:
        # The groups' committed offsets: Kafka notifies no one of a commit, so they are polled.
        await until(left, lambda n: n == 0, timeout=timeout, what="every record consumed", interval=0.5)
    finally:
        await admin.close()


async def _run_with_kills(stack: RunningStack, n: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    killer = asyncio.create_task(_kill_loop(stack, kills, rng))
    ids = await _publish_requests(stack, n, kills)
    killed = await killer
    assert len(killed) == kills, f"only {len(killed)} of {kills} kills hit a running process"

    # Wait until approvals and the issuer consumed everything: no PoA, and no duplicate, can follow.
    await _settled(stack)
    records = await _committed_records(stack.kafka_bootstrap, stack.namespace)
    payloads = [_payload(value) for value in records.values()]
    issued = Counter(p.request_id for p in payloads if isinstance(p, PoaIssued))
    quorums = Counter(p.request_id for p in payloads if isinstance(p, QuorumReached))
    assert set(issued) == ids, f"missing PoAs: {sorted(ids - set(issued))[:5]}"
    assert max(issued.values()) == 1, f"duplicate PoAs: {[k for k, v in issued.items() if v > 1][:5]}"
    assert set(quorums) == ids
    assert max(quorums.values()) == 1, "duplicate outcomes"

    # The audit store: exactly the committed records, each at its position (the store's key),
    # holding the event read there.
    # Every record scanned is committed: the sink's positions reaching the end offsets is the event.
    await caught_up(stack.kafka_bootstrap, stack.namespace, stack.db_url, timeout=120)
    engine = make_engine(stack.db_url)
    with engine.connect() as conn:
        query = select(audit_events.c.topic, audit_events.c.partition, audit_events.c.offset, audit_events.c.event_id)
        stored = {(row.topic, row.partition, row.offset): row.event_id for row in conn.execute(query)}
    # The sink's own signed-checkpoint announcements may land on atb.audit after `records` was read.
    extra = _checkpoint_announcements(engine, set(stored) - set(records))
    assert set(stored) - extra == set(records), (
        f"audit store differs: missing {len(set(records) - set(stored))}, extra {len(set(stored) - set(records))}"
    )
    ids_read = {pos: event_id for pos, value in records.items() if (event_id := _event_id(value)) is not None}
    assert {pos: stored[pos] for pos in ids_read} == ids_read, "a position holds another event than Kafka has there"


def _checkpoint_announcements(engine: Engine, positions: set[tuple[str, int, int]]) -> set[tuple[str, int, int]]:
    """Those of `positions` that hold the audit sink's `audit_checkpoint_signed` events."""
    found = set()
    with engine.connect() as conn:
        query = select(audit_events.c.topic, audit_events.c.partition, audit_events.c.offset, audit_events.c.raw)
        for topic, partition, offset, raw in conn.execute(query):
            if (topic, partition, offset) in positions and CHECKPOINT_AUDIT_TYPE.encode() in raw:
                found.add((topic, partition, offset))
    return found


def _event_id(value: bytes) -> str | None:
    try:
        return decode_envelope(value).id
    except EventDecodeError:
        return None


def _payload(value: bytes) -> object:
    try:
        return payload_of(decode_envelope(value))
    except EventDecodeError:
        return None


async def test_exactly_once_under_sigkill(running_stack: RunningStack) -> None:
    n = int(os.environ.get("ATB_FAULT_REQUESTS", "300"))
    kills = int(os.environ.get("ATB_FAULT_KILLS", "10"))
    await _run_with_kills(running_stack, n, kills, seed=20261125)


@pytest.mark.soak
async def test_exactly_once_under_sigkill_soak(running_stack: RunningStack) -> None:
    n = int(os.environ.get("ATB_SOAK_REQUESTS", "3000"))
    kills = int(os.environ.get("ATB_SOAK_KILLS", "40"))
    await _run_with_kills(running_stack, n, kills, seed=int(os.environ.get("ATB_SOAK_SEED", "7")))


# -- approvals: exactly one outcome per request under SIGKILL, and under redelivery ----------

MEDIUM = LegitimateInterest(
    ref="LI-V", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-300")
)
APPROVERS = {name: f"spiffe://atb.local/user/{name}" for name in ("alice", "bob", "carol")}


def _expected(i: int) -> str:
    return "denied" if i % 4 == 0 else "quorum_reached"


async def _votes_for(stack: RunningStack, i: int, request: IssuanceRequested) -> list[Outgoing]:
    """Deterministic votes: carol denies every 4th request; alice approves the rest, bob adds a late one."""
    digest = digest_of(request)
    plan = [("carol", VoteChoice.DENY)] if _expected(i) == "denied" else [("alice", VoteChoice.APPROVE)]
    if i % 3 == 0:
        plan.append(("bob", VoteChoice.APPROVE))
    out = []
    for n, (name, choice) in enumerate(plan):
        svid = ensure_svid(stack.state_dir, APPROVERS[name])
        vote = VoteCast(
            request_id=request.request_id,
            vote_id=f"{request.request_id}-v{n}",
            approver_id=APPROVERS[name],
            choice=choice,
            request_digest=digest,
            channel="cli",
            cast_at=datetime.now(UTC),
        )
        envelope = sign_envelope(make_envelope(vote, source=APPROVERS[name]), svid)
        out.append(outgoing_envelope(envelope, topic_name(vote.topic, stack.namespace)))
    return out


async def _outcomes(stack: RunningStack) -> tuple[Counter[str], dict[str, str], Counter[str]]:
    records = await _committed_records(stack.kafka_bootstrap, stack.namespace)
    outcomes: Counter[str] = Counter()
    kind: dict[str, str] = {}
    poas: Counter[str] = Counter()
    for value in records.values():
        payload = _payload(value)
        if isinstance(payload, QuorumReached | RequestDenied | RequestExpired):
            outcomes[payload.request_id] += 1
            kind[payload.request_id] = {
                QuorumReached: "quorum_reached",
                RequestDenied: "denied",
                RequestExpired: "expired",
            }[type(payload)]
        elif isinstance(payload, PoaIssued):
            poas[payload.request_id] += 1
    return outcomes, kind, poas


async def _run_votes_with_kills(stack: RunningStack, n: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    agent = ensure_svid(stack.state_dir, AGENT)
    all_votes: list[Outgoing] = []

    async def publish() -> set[str]:
        ids: set[str] = set()
        chunk = max(1, n // (kills * 6))
        async with Publisher(stack.kafka_bootstrap, "vote-fault") as publisher:
            for i in range(n):
                request = IssuanceRequested(
                    request_id=f"vote-{i}",
                    agent_id=AGENT,
                    tenant="acme",
                    action="crm.contact.update",
                    resource=f"crm:contact/{i}",
                    leg=MEDIUM,
                    requested_at=datetime.now(UTC),
                )
                ids.add(request.request_id)
                votes = await _votes_for(stack, i, request)
                all_votes.extend(votes)
                signed = sign_envelope(make_envelope(request, source=AGENT), agent)
                # Votes sometimes before their request: they must be held, not lost.
                first, second = ([outgoing_envelope(signed, topic_name(request.topic, stack.namespace))], votes)
                if i % 5 == 0:
                    first, second = second, first
                await publisher.publish(first)
                await publisher.publish(second)
                if i % chunk == chunk - 1:
                    await publisher.flush()
                    await asyncio.sleep(0.2)  # the pacing of the traffic itself: spread over the kills
        return ids

    async def kill_loop() -> int:
        hits = 0
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.1, 0.6))  # fault schedule: a kill at a random moment
            victim = rng.choice(("approvals", "approvals", "issuer"))
            hits += await stack.stack.kill(victim)
            await stack.stack.restart(victim, ready_timeout=90)
        return hits

    killer = asyncio.create_task(kill_loop())
    ids = await publish()
    assert await killer == kills

    expected = {f"vote-{i}": _expected(i) for i in range(n)}
    await _settled(stack)
    outcomes, kind, poas = await _outcomes(stack)
    assert set(outcomes) == ids, f"requests without an outcome: {sorted(ids - set(outcomes))[:5]}"
    assert max(outcomes.values()) == 1, f"two outcomes: {[k for k, v in outcomes.items() if v > 1][:5]}"
    assert kind == expected, {k: (kind.get(k), v) for k, v in expected.items() if kind.get(k) != v}
    approved = {k for k, v in expected.items() if v == "quorum_reached"}
    assert set(poas) == approved
    assert max(poas.values()) == 1

    # Redelivery: every vote again, byte for byte, and every signed quorum again
    # (a replayed genuine quorum). Nothing may be counted twice, no second PoA.
    records = await _committed_records(stack.kafka_bootstrap, stack.namespace)
    outcomes_topic = topic_name(QuorumReached.topic, stack.namespace)
    quorums = [
        Outgoing(topic=outcomes_topic, key=key.encode(), value=value)
        for value in records.values()
        if isinstance(p := _payload(value), QuorumReached) and (key := p.request_id)
    ]
    assert quorums
    async with Publisher(stack.kafka_bootstrap, "vote-replay") as publisher:
        await publisher.publish(all_votes)
        await publisher.publish(quorums)
    await _settled(stack)  # every replayed vote and quorum consumed: whatever they caused is on the topics
    again, kind_again, poas_again = await _outcomes(stack)
    assert again == outcomes + Counter(q.key.decode() for q in quorums)  # only our replayed copies
    assert kind_again == kind
    assert poas_again == poas


async def test_approvals_one_outcome_per_request_under_sigkill_and_redelivery(running_stack: RunningStack) -> None:
    n = int(os.environ.get("ATB_FAULT_VOTE_REQUESTS", "200"))
    kills = int(os.environ.get("ATB_FAULT_KILLS", "10"))
    await _run_votes_with_kills(running_stack, n, kills, seed=4242)


@pytest.mark.soak
async def test_approvals_one_outcome_per_request_soak(running_stack: RunningStack) -> None:
    n = int(os.environ.get("ATB_SOAK_REQUESTS", "3000"))
    kills = int(os.environ.get("ATB_SOAK_KILLS", "40"))
    await _run_votes_with_kills(running_stack, n, kills, seed=int(os.environ.get("ATB_SOAK_SEED", "7")))


async def test_held_votes_survive_a_restart(running_stack: RunningStack) -> None:
    """Votes that arrived before their request are in the changelog, not only in memory."""
    stack = running_stack
    request = IssuanceRequested(
        request_id="held-restart",
        agent_id=AGENT,
        tenant="acme",
        action="crm.contact.update",
        resource="crm:contact/1",
        leg=MEDIUM,
        requested_at=datetime.now(UTC),
    )
    votes = await _votes_for(stack, 1, request)
    async with Publisher(stack.kafka_bootstrap, "held") as publisher:
        await publisher.publish(votes)
    await events(
        stack.kafka_bootstrap,
        [topic_name(ApprovalStateChanged.topic, stack.namespace)],
        lambda e: (
            isinstance(e.payload, ApprovalStateChanged)
            and e.payload.request_id == request.request_id
            and e.payload.status == "held"
        ),
        what="the votes held",
    )
    assert await stack.stack.kill("approvals")
    await stack.stack.restart("approvals", ready_timeout=90)
    agent = ensure_svid(stack.state_dir, AGENT)
    signed = sign_envelope(make_envelope(request, source=AGENT), agent)
    async with Publisher(stack.kafka_bootstrap, "held-req") as publisher:
        await publisher.publish([outgoing_envelope(signed, topic_name(request.topic, stack.namespace))])
    await events(
        stack.kafka_bootstrap,
        [topic_name(QuorumReached.topic, stack.namespace)],
        lambda e: (
            isinstance(e.payload, QuorumReached | RequestDenied | RequestExpired)
            and e.payload.request_id == request.request_id
        ),
        what="the held request's outcome",
    )
    _, kind, _ = await _outcomes(stack)
    assert kind.get(request.request_id) == "quorum_reached"
