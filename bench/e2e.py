"""End-to-end throughput and latency: ATB vs two bare aiokafka pipelines with the same hops.

    .venv/bin/python bench/e2e.py --requests 2000          # closed loop: throughput
    .venv/bin/python bench/e2e.py --rate 200 --seconds 20  # open loop: latency at a fixed rate

All three run in one process run on the same broker, each in a fresh topic namespace:

- atb: low-risk IssuanceRequested, each signed with the agent's SVID → approvals
  (proof check, OPA, transaction) → issuer (re-checks the proof and the quorum's
  proof, Ed25519 PoA, transaction) → PoaIssued, read back with `read_committed`;
  and the audit sink storing every event in SQLite.
- crypto-bare: the same hops doing the same signature operations per request and
  nothing else: the agent signs; stage 1 verifies the agent's signature and signs
  its outcome; stage 2 verifies both and makes two signatures (the PoA and its
  event's proof). No parsing, no policy, no transactions. The floor that the
  cryptography sets on this machine.
- bare: the same hops with plain aiokafka: non-blocking sends, no transactions, no
  parsing, no policy, no crypto. The ceiling of the transport.

Closed loop prints throughput and the ratios (goals: atb ≥ 0.50 of crypto-bare and
≥ 0.35 of bare). Both modes print each ATB process's CPU time per request (utime +
stime from /proc, from the first request until the audit store holds every event):
where the time goes across the services. Open loop sends at `--rate` per second for `--seconds` and prints
p50, p99 and max of each (goals: atb p50 at most 2 times and p99 at most 3 times bare), and the p50 of
the last hop alone: from the answer record's create time to its read (for ATB, the issuer's commit and
the reader's fetch). Speed is measured here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
GOAL_VS_CRYPTO = 0.50
GOAL_VS_BARE = 0.35
GOAL_P50 = 2.0
GOAL_P99 = 3.0

Send = Callable[[int], Awaitable[str]]
KeyOf = Callable[[ConsumerRecord[bytes, bytes]], str | None]


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    seconds: float
    throughput: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    last_hop_p50_ms: float
    """From the answer record's create time (its producer's clock) to its read: the last hop alone."""


@dataclass(frozen=True)
class Pipeline:
    """What a run needs of a pipeline: send request `i` (returns its key), and where its answers arrive."""

    name: str
    send: Send
    answers: str
    key_of: KeyOf
    flush: Callable[[], Awaitable[None]]
    processes: dict[str, int] = field(default_factory=dict)
    """The pid of each service process of the pipeline (ATB's), for their CPU time."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (/proc/<pid>/stat, fields 14 and 15)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")


def _result(name: str, sent: dict[str, float], arrived: dict[str, float], last_hops: list[float]) -> Result:
    latencies = sorted(1000 * (arrived[key] - sent[key]) for key in arrived)
    seconds = max(arrived.values()) - min(sent.values())
    return Result(
        name=name,
        requests=len(arrived),
        seconds=round(seconds, 3),
        throughput=round(len(arrived) / seconds, 1),
        p50_ms=round(statistics.median(latencies), 1),
        p99_ms=round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
        max_ms=round(latencies[-1], 1),
        last_hop_p50_ms=round(statistics.median(last_hops), 1),
    )


def _progress(label: str, done: int, total: int) -> None:
    sys.stderr.write(f"\r  {label}: {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")


def _say(message: str) -> None:
    sys.stderr.write(f"  {message}\n")


async def _collect(
    bootstrap: str, topic: str, total: int, key_of: KeyOf, timeout: float
) -> tuple[dict[str, float], list[float]]:
    """When each answer was read (perf_counter), and each one's last hop in ms (read minus the record's create time)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_wait_ms=20,  # as the services' consumers, the same for all three pipelines
    )
    await consumer.start()
    arrived: dict[str, float] = {}
    last_hops: list[float] = []
    deadline = time.monotonic() + timeout
    try:
        while len(arrived) < total and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            now, wall_ms = time.perf_counter(), time.time() * 1000
            for messages in batches.values():
                for msg in messages:
                    key = key_of(msg)
                    if key is not None and key not in arrived:
                        arrived[key] = now
                        last_hops.append(wall_ms - msg.timestamp)
            _progress(topic, len(arrived), total)
    finally:
        await consumer.stop()
    if len(arrived) < total:
        raise SystemExit(f"only {len(arrived)} of {total} arrived on {topic} within {timeout:.0f}s")
    return arrived, last_hops


async def run(bootstrap: str, pipeline: Pipeline, n: int, rate: float | None) -> Result:
    """Send `n` requests (as fast as possible, or open loop at `rate` per second) and time their answers."""
    collector = asyncio.create_task(_collect(bootstrap, pipeline.answers, n, pipeline.key_of, 300))
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(n):
        if rate is not None:
            # Open loop: request i leaves at its scheduled time whatever the answers do.
            ahead = start + i / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
        sent_at = time.perf_counter()
        sent[await pipeline.send(i)] = sent_at
    await pipeline.flush()
    arrived, last_hops = await collector
    return _result(pipeline.name, sent, arrived, last_hops)


def _poa_key(msg: ConsumerRecord[bytes, bytes]) -> str | None:
    try:
        payload = payload_of(decode_envelope(msg.value))
    except EventDecodeError:
        return None
    return payload.request_id if isinstance(payload, PoaIssued) else None


@asynccontextmanager
async def atb_pipeline(bootstrap: str, opa_url: str, state: Path) -> AsyncIterator[Pipeline]:
    ns = f"bench-{uuid.uuid4().hex[:6]}."
    await ensure_topics(bootstrap, ns)
    stack = ServiceStack(
        StackConfig(bootstrap, opa_url, state, namespace=ns, audit_db_url=f"sqlite:///{state / 'audit.db'}"),
        services=("approvals", "issuer", "audit-sink"),
    )
    await stack.start(ready_timeout=90)
    svid = ensure_svid(state, AGENT)
    try:
        async with Publisher(bootstrap, "bench-agent") as publisher:

            async def send(i: int) -> str:
                request = IssuanceRequested(
                    request_id=f"bench-{i}",
                    agent_id=AGENT,
                    tenant="acme",
                    action="crm.contact.read",
                    resource=f"crm:contact/{i}",
                    leg=LEG,
                    requested_at=datetime.now(UTC),
                )
                envelope = sign_envelope(make_envelope(request, source=AGENT), svid)
                await publisher.publish([outgoing_envelope(envelope, topic_name(request.topic, ns))])
                return request.request_id

            pids = {name: pid for name, proc in stack.processes.items() if (pid := proc.pid) is not None}
            yield Pipeline("atb", send, topic_name(Topic.POA_ISSUED, ns), _poa_key, publisher.flush, pids)
    finally:
        await stack.stop()
        await delete_topics(bootstrap, ns)


async def audit_complete(db_url: str, events: int, since: float) -> float:
    """Seconds from `since` until the audit store holds `events` rows."""
    store = AuditStore(make_engine(db_url), "bench")
    while await asyncio.to_thread(store.count) < events:
        await asyncio.sleep(0.2)  # polls the store until it holds every event
    return time.perf_counter() - since


Transform = Callable[[bytes], bytes]


async def _stage(bootstrap: str, source: str, sink: str, group: str, transform: Transform, stop: asyncio.Event) -> None:
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
                await producer.send(sink, key=msg.key, value=transform(msg.value))
                for msgs in batches.values()
                for msg in msgs
                if msg.value is not None
            ]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def _bare_key(msg: ConsumerRecord[bytes, bytes]) -> str | None:
    return msg.key.decode() if msg.key is not None else None


def _same(value: bytes) -> bytes:
    return value


class _Signatures:
    """The signature operations of one request in ATB, on raw Ed25519 keys and fixed-size fields.

    agent: sign(body) · approvals: verify(agent), sign(outcome) · issuer: verify(agent),
    verify(outcome), sign(PoA), sign(PoA event). A value is `body ‖ signatures...`.
    """

    SIG = 64

    def __init__(self) -> None:
        self.agent, self.approvals, self.issuer = (Ed25519PrivateKey.generate() for _ in range(3))
        self.agent_pub, self.approvals_pub = self.agent.public_key(), self.approvals.public_key()

    def request(self, body: bytes) -> bytes:
        return body + self.agent.sign(body)

    def approve(self, value: bytes) -> bytes:
        body, agent_sig = value[: -self.SIG], value[-self.SIG :]
        self.agent_pub.verify(agent_sig, body)
        return value + self.approvals.sign(value)

    def issue(self, value: bytes) -> bytes:
        request, outcome_sig = value[: -self.SIG], value[-self.SIG :]
        body, agent_sig = request[: -self.SIG], request[-self.SIG :]
        self.agent_pub.verify(agent_sig, body)
        self.approvals_pub.verify(outcome_sig, request)
        poa = self.issuer.sign(body[:256])
        return poa + self.issuer.sign(body + poa)


@asynccontextmanager
async def bare_pipeline(bootstrap: str, *, crypto: bool) -> AsyncIterator[Pipeline]:
    name = "crypto-bare" if crypto else "bare"
    ns = f"{name}-{uuid.uuid4().hex[:6]}."
    await ensure_topics(bootstrap, ns)
    hops = [topic_name(t, ns) for t in (Topic.POA_REQUESTS, Topic.OUTCOMES, Topic.POA_ISSUED)]
    signatures = _Signatures()
    first, second = (signatures.approve, signatures.issue) if crypto else (_same, _same)
    stop = asyncio.Event()
    stages = [
        asyncio.create_task(_stage(bootstrap, hops[0], hops[1], f"{ns}s1", first, stop)),
        asyncio.create_task(_stage(bootstrap, hops[1], hops[2], f"{ns}s2", second, stop)),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    pending: list[asyncio.Future[object]] = []
    body = b"x" * 900  # about the size of an IssuanceRequested envelope

    async def send(i: int) -> str:
        key = f"{name}-{i}"
        value = signatures.request(body) if crypto else body
        pending.append(await producer.send(hops[0], key=key.encode(), value=value))
        return key

    async def flush() -> None:
        await asyncio.gather(*pending)

    try:
        yield Pipeline(name, send, hops[2], _bare_key, flush)
    finally:
        await producer.stop()
        stop.set()
        await asyncio.gather(*stages, return_exceptions=True)
        await delete_topics(bootstrap, ns)


def _line(r: Result) -> str:
    return (
        f"{r.name:11} {r.requests} requests in {r.seconds:.2f}s: {r.throughput:.0f}/s, "
        f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, max {r.max_ms:.1f} ms (last hop p50 {r.last_hop_p50_ms:.1f} ms)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="closed loop: how many requests")
    parser.add_argument("--rate", type=float, help="open loop: requests per second (with --seconds)")
    parser.add_argument("--seconds", type=float, default=20, help="open loop: how long to send")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args()
    n = int(args.rate * args.seconds) if args.rate else args.requests
    infra = await ensure_infra(progress=_say)
    bootstrap = infra.kafka_bootstrap
    with tempfile.TemporaryDirectory(prefix="atb-bench-") as tmp:
        async with atb_pipeline(bootstrap, infra.opa_url, Path(tmp)) as pipeline:
            began = time.perf_counter()
            cpu_before = {name: cpu_seconds(pid) for name, pid in pipeline.processes.items()}
            atb = await run(bootstrap, pipeline, n, args.rate)
            # Every event of every request (request, quorum, state, PoA, audit events) stored.
            audit_seconds = await audit_complete(f"sqlite:///{Path(tmp) / 'audit.db'}", 5 * n, began)
            # Each service's CPU time per request, from the first request until the audit store is complete.
            cpu_ms = {
                name: round(1000 * (cpu_seconds(pid) - cpu_before[name]) / n, 2)
                for name, pid in pipeline.processes.items()
            }
    async with bare_pipeline(bootstrap, crypto=True) as pipeline:
        crypto = await run(bootstrap, pipeline, n, args.rate)
    async with bare_pipeline(bootstrap, crypto=False) as pipeline:
        bare = await run(bootstrap, pipeline, n, args.rate)
    report: dict[str, object] = {
        "mode": "open loop" if args.rate else "closed loop",
        "rate": args.rate,
        "atb": asdict(atb),
        "crypto_bare": asdict(crypto),
        "bare": asdict(bare),
        "audit_complete_seconds": round(audit_seconds, 3),
        "cpu_ms_per_request": cpu_ms,
    }
    lines = [_line(atb), _line(crypto), _line(bare), f"audit store complete after {audit_seconds:.2f}s"]
    lines += ["CPU per request (ms), each ATB process: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu_ms.items())]
    if args.rate:
        p50, p99 = atb.p50_ms / bare.p50_ms, atb.p99_ms / bare.p99_ms
        report |= {"p50_ratio": round(p50, 2), "p99_ratio": round(p99, 2), "goal_p50": GOAL_P50, "goal_p99": GOAL_P99}
        lines += [
            f"latency atb/bare at {args.rate:.0f}/s: p50 {p50:.1f}× (goal ≤ {GOAL_P50:.0f}×), "
            f"p99 {p99:.1f}× (goal ≤ {GOAL_P99:.0f}×)"
        ]
    else:
        vs_crypto, vs_bare = atb.throughput / crypto.throughput, atb.throughput / bare.throughput
        report |= {
            "ratio_vs_crypto_bare": round(vs_crypto, 3),
            "ratio_vs_bare": round(vs_bare, 3),
            "goal_vs_crypto_bare": GOAL_VS_CRYPTO,
            "goal_vs_bare": GOAL_VS_BARE,
        }
        lines += [
            f"throughput atb/crypto-bare = {vs_crypto:.2f} (goal ≥ {GOAL_VS_CRYPTO:.2f})",
            f"throughput atb/bare        = {vs_bare:.2f} (goal ≥ {GOAL_VS_BARE:.2f})",
        ]
    print(json.dumps(report) if args.json else "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
