"""End-to-end throughput and latency: the ATB skeleton vs a bare aiokafka pipeline.

    .venv/bin/python bench/e2e.py --requests 2000

Both run in the same process run on the same broker, each in a fresh topic
namespace:

- ATB: N low-risk IssuanceRequested, each signed with the agent's SVID →
  approvals (proof check, OPA, transaction) → issuer (re-checks the proof,
  Ed25519 PoA, transaction) → PoaIssued, read back with `read_committed`; and
  the audit sink storing every event in SQLite.
- bare: the same number of hops (requests → stage 1 → stage 2 → reader) with
  plain aiokafka: non-blocking sends, no transactions, no parsing, no policy, no
  crypto. It is the ceiling the skeleton is measured against.

Prints throughput, p50/p99 latency of both and their ratio (goal: ATB ≥ 50% of
bare). Speed is measured here, never asserted in a unit test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from atb.dev.launcher import ensure_infra
from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Publisher, outgoing_envelope
from audit_sink.adapters.db import AuditStore, make_engine
from contracts import (
    AccountableParty,
    EventDecodeError,
    IssuanceRequested,
    LegitimateInterest,
    PoaIssued,
    Topic,
    decode_envelope,
    make_envelope,
    payload_of,
    topic_name,
)

AGENT = "spiffe://atb.local/agent/bench"
LEG = LegitimateInterest(ref="LI-BENCH", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="bench"))


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    seconds: float
    throughput: float
    p50_ms: float
    p99_ms: float


def _result(name: str, sent: dict[str, float], arrived: dict[str, float]) -> Result:
    latencies = sorted(1000 * (arrived[key] - sent[key]) for key in arrived)
    seconds = max(arrived.values()) - min(sent.values())
    return Result(
        name=name,
        requests=len(arrived),
        seconds=round(seconds, 3),
        throughput=round(len(arrived) / seconds, 1),
        p50_ms=round(statistics.median(latencies), 1),
        p99_ms=round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
    )


def _progress(label: str, done: int, total: int) -> None:
    sys.stderr.write(f"\r  {label}: {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")


def _say(message: str) -> None:
    sys.stderr.write(f"  {message}\n")


async def _collect(
    bootstrap: str,
    topic: str,
    total: int,
    key_of: Callable[[ConsumerRecord[bytes, bytes]], str | None],
    timeout: float,
) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    await consumer.start()
    arrived: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(arrived) < total and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            now = time.perf_counter()
            for messages in batches.values():
                for msg in messages:
                    key = key_of(msg)
                    if key is not None:
                        arrived.setdefault(key, now)
            _progress(topic, len(arrived), total)
    finally:
        await consumer.stop()
    if len(arrived) < total:
        raise SystemExit(f"only {len(arrived)} of {total} arrived on {topic} within {timeout:.0f}s")
    return arrived


def _poa_key(msg: ConsumerRecord[bytes, bytes]) -> str | None:
    try:
        payload = payload_of(decode_envelope(msg.value))
    except EventDecodeError:
        return None
    return payload.request_id if isinstance(payload, PoaIssued) else None


async def bench_atb(bootstrap: str, opa_url: str, n: int, state: Path) -> tuple[Result, float]:
    ns = f"bench-{uuid.uuid4().hex[:6]}."
    await ensure_topics(bootstrap, ns)
    db_url = f"sqlite:///{state / 'audit.db'}"
    stack = ServiceStack(
        StackConfig(bootstrap, opa_url, state, namespace=ns, audit_db_url=db_url),
        services=("approvals", "issuer", "audit-sink"),
    )
    await stack.start(ready_timeout=90)
    try:
        collector = asyncio.create_task(_collect(bootstrap, topic_name(Topic.POA_ISSUED, ns), n, _poa_key, 300))
        sent: dict[str, float] = {}
        svid = ensure_svid(state, AGENT)
        async with Publisher(bootstrap, "bench-agent") as publisher:
            for i in range(n):
                request = IssuanceRequested(
                    request_id=f"bench-{i}",
                    agent_id=AGENT,
                    tenant="acme",
                    action="crm.contact.read",
                    resource=f"crm:contact/{i}",
                    leg=LEG,
                    requested_at=datetime.now(UTC),
                )
                sent[request.request_id] = time.perf_counter()
                envelope = sign_envelope(make_envelope(request, source=AGENT), svid)
                await publisher.publish([outgoing_envelope(envelope, topic_name(request.topic, ns))])
            await publisher.flush()
        arrived = await collector
        result = _result("atb", sent, arrived)
        # Audit: every event of every request (request, quorum, PoA, 2 audit events) stored.
        store = AuditStore(make_engine(db_url), "bench")
        while await asyncio.to_thread(store.count) < 5 * n:
            await asyncio.sleep(0.2)
        audit_seconds = time.perf_counter() - min(sent.values())
        return result, audit_seconds
    finally:
        await stack.stop()
        await delete_topics(bootstrap, ns)


async def _stage(bootstrap: str, source: str, sink: str, group: str, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            futures = [
                await producer.send(sink, key=msg.key, value=msg.value) for msgs in batches.values() for msg in msgs
            ]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def _bare_key(msg: ConsumerRecord[bytes, bytes]) -> str | None:
    return msg.key.decode() if msg.key is not None else None


async def bench_bare(bootstrap: str, n: int) -> Result:
    ns = f"bare-{uuid.uuid4().hex[:6]}."
    await ensure_topics(bootstrap, ns)
    hops = [topic_name(t, ns) for t in (Topic.POA_REQUESTS, Topic.OUTCOMES, Topic.POA_ISSUED)]
    stop = asyncio.Event()
    stages = [
        asyncio.create_task(_stage(bootstrap, hops[0], hops[1], f"{ns}s1", stop)),
        asyncio.create_task(_stage(bootstrap, hops[1], hops[2], f"{ns}s2", stop)),
    ]
    try:
        collector = asyncio.create_task(_collect(bootstrap, hops[2], n, _bare_key, 300))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        sent: dict[str, float] = {}
        payload = b"x" * 900  # about the size of an IssuanceRequested envelope
        futures = []
        for i in range(n):
            key = f"bare-{i}"
            sent[key] = time.perf_counter()
            futures.append(await producer.send(hops[0], key=key.encode(), value=payload))
        await asyncio.gather(*futures)
        await producer.stop()
        return _result("bare", sent, await collector)
    finally:
        stop.set()
        await asyncio.gather(*stages, return_exceptions=True)
        await delete_topics(bootstrap, ns)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    infra = await ensure_infra(progress=_say)
    with tempfile.TemporaryDirectory(prefix="atb-bench-") as tmp:
        atb, audit_seconds = await bench_atb(infra.kafka_bootstrap, infra.opa_url, args.requests, Path(tmp))
    bare = await bench_bare(infra.kafka_bootstrap, args.requests)
    ratio = atb.throughput / bare.throughput
    report = {
        "atb": asdict(atb),
        "bare": asdict(bare),
        "throughput_ratio": round(ratio, 3),
        "goal_ratio": 0.5,
        "ratio_to_goal": round(ratio / 0.5, 3),
        "audit_complete_seconds": round(audit_seconds, 3),
    }
    if args.json:
        print(json.dumps(report))
        return
    for r in (atb, bare):
        print(
            f"{r.name:5} {r.requests} requests in {r.seconds:.2f}s: {r.throughput:.0f}/s, "
            f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms"
        )
    print(f"audit store complete after {audit_seconds:.2f}s")
    print(f"throughput ratio atb/bare = {ratio:.2f} (goal ≥ 0.50; {ratio / 0.5:.2f}× the goal)")


if __name__ == "__main__":
    asyncio.run(main())
