"""Exactly once under SIGKILL: guarantees 2 and 4 of DESIGN.md §6, on the real broker.

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
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select

from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Publisher, outgoing_envelope
from audit_sink.adapters.db import audit_events, make_engine
from contracts import (
    CATALOGUE,
    AccountableParty,
    EventDecodeError,
    IssuanceRequested,
    LegitimateInterest,
    PoaIssued,
    QuorumReached,
    decode_envelope,
    make_envelope,
    payload_of,
    topic_name,
)
from tests.e2e.conftest import RunningStack

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
                await asyncio.sleep(0.2)
    return ids


async def _kill_loop(stack: RunningStack, kills: int, rng: random.Random) -> list[str]:
    killed: list[str] = []
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.1, 0.6))
        victim = rng.choice(VICTIMS)
        if await stack.stack.kill(victim):
            killed.append(victim)
        await stack.stack.restart(victim, ready_timeout=90)
    return killed


async def _committed_records(bootstrap: str, namespace: str) -> dict[tuple[str, int, int], bytes]:
    """Every committed record of every topic of the namespace (read_committed, to the end)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic_name(spec.topic, namespace), p) for spec in CATALOGUE for p in range(spec.partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: dict[tuple[str, int, int], bytes] = {}
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for tp, messages in (await consumer.getmany(timeout_ms=500, max_records=2000)).items():
                for msg in messages:
                    records[(tp.topic, tp.partition, msg.offset)] = msg.value or b""
        return records
    finally:
        await consumer.stop()


async def _run_with_kills(stack: RunningStack, n: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    killer = asyncio.create_task(_kill_loop(stack, kills, rng))
    ids = await _publish_requests(stack, n, kills)
    killed = await killer
    assert len(killed) == kills, f"only {len(killed)} of {kills} kills hit a running process"

    # Wait until every request has its PoA, then a little longer for any duplicate.
    deadline = time.monotonic() + 180
    while True:
        records = await _committed_records(stack.kafka_bootstrap, stack.namespace)
        payloads = [_payload(value) for value in records.values()]
        issued = Counter(p.request_id for p in payloads if isinstance(p, PoaIssued))
        if set(issued) >= ids or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    await asyncio.sleep(3.0)
    records = await _committed_records(stack.kafka_bootstrap, stack.namespace)
    payloads = [_payload(value) for value in records.values()]
    issued = Counter(p.request_id for p in payloads if isinstance(p, PoaIssued))
    quorums = Counter(p.request_id for p in payloads if isinstance(p, QuorumReached))
    assert set(issued) == ids, f"missing PoAs: {sorted(ids - set(issued))[:5]}"
    assert max(issued.values()) == 1, f"duplicate PoAs: {[k for k, v in issued.items() if v > 1][:5]}"
    assert set(quorums) == ids
    assert max(quorums.values()) == 1, "duplicate outcomes"

    # The audit store: exactly the committed records, each once.
    engine = make_engine(stack.db_url)
    deadline = time.monotonic() + 120
    while True:
        with engine.connect() as conn:
            stored = Counter(
                (row.topic, row.partition, row.offset)
                for row in conn.execute(select(audit_events.c.topic, audit_events.c.partition, audit_events.c.offset))
            )
        if set(stored) >= set(records) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    assert set(stored) == set(records), (
        f"audit store differs: missing {len(set(records) - set(stored))}, extra {len(set(stored) - set(records))}"
    )
    assert max(stored.values()) == 1


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
