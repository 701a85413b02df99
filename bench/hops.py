"""Where a low-risk request's time goes, hop by hop, at a fixed rate (open loop).

    .venv/bin/python bench/hops.py --rate 50 --requests 200

Starts approvals and the issuer on the local stack in a fresh namespace, sends
signed low-risk requests at `--rate`, then reads the three topics back and, per
request, takes the record timestamps (the producer's create time): the request
as the agent sent it, the QuorumReached as approvals made it, the PoaIssued as
the issuer made it. "request → quorum" is approvals' fetch and work; "quorum →
PoA" also holds approvals' commit (the issuer reads only committed records) and
the issuer's fetch and work. The issuer's own commit comes after the PoA's
timestamp and is not in either. Prints p50, p99 and max of each hop; the
reference is bench/e2e.py's bare pipeline, whose whole path is one number.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from atb.dev.launcher import ensure_infra
from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Publisher, outgoing_envelope
from atb_runtime.readback import read_records
from contracts import (
    AccountableParty,
    EventDecodeError,
    IssuanceRequested,
    LegitimateInterest,
    Topic,
    decode_envelope,
    make_envelope,
    payload_of,
    topic_name,
)

AGENT = "spiffe://atb.local/agent/bench"
LEG = LegitimateInterest(ref="LI-BENCH", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="bench"))
KINDS = ("IssuanceRequested", "QuorumReached", "PoaIssued")


def _say(message: str) -> None:
    sys.stderr.write(f"  {message}\n")


async def _times(bootstrap: str, ns: str) -> dict[str, dict[str, int]]:
    times: dict[str, dict[str, int]] = {}
    for topic in (Topic.POA_REQUESTS, Topic.OUTCOMES, Topic.POA_ISSUED):
        for record in await read_records(bootstrap, topic_name(topic, ns)):
            try:
                payload = payload_of(decode_envelope(record.value))
            except EventDecodeError:
                continue
            kind = type(payload).__name__
            request_id = getattr(payload, "request_id", None)
            if kind in KINDS and isinstance(request_id, str):
                times.setdefault(request_id, {})[kind] = record.timestamp_ms
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--audit-sink", action="store_true", help="run the audit sink beside them (SQLite), as bench/e2e.py does"
    )
    args = parser.parse_args()
    infra = await ensure_infra(progress=_say)
    bootstrap = infra.kafka_bootstrap
    ns = f"hops-{uuid.uuid4().hex[:6]}."
    await ensure_topics(bootstrap, ns)
    with tempfile.TemporaryDirectory(prefix="atb-bench-hops-") as tmp:
        state = Path(tmp)
        audit = f"sqlite:///{state / 'audit.db'}" if args.audit_sink else ""
        stack = ServiceStack(
            StackConfig(bootstrap, infra.opa_url, state, namespace=ns, audit_db_url=audit),
            services=("approvals", "issuer", "audit-sink") if args.audit_sink else ("approvals", "issuer"),
        )
        await stack.start(ready_timeout=90)
        svid = ensure_svid(state, AGENT)
        try:
            async with Publisher(bootstrap, "bench-hops") as publisher:
                start = time.perf_counter()
                for i in range(args.requests):
                    ahead = start + i / args.rate - time.perf_counter()
                    if ahead > 0:
                        await asyncio.sleep(ahead)  # the open loop's schedule
                    request = IssuanceRequested(
                        request_id=f"hop-{i}",
                        agent_id=AGENT,
                        tenant="acme",
                        action="crm.contact.read",
                        resource=f"crm:contact/{i}",
                        leg=LEG,
                        requested_at=datetime.now(UTC),
                    )
                    envelope = sign_envelope(make_envelope(request, source=AGENT), svid)
                    await publisher.publish([outgoing_envelope(envelope, topic_name(request.topic, ns))])
            deadline = time.monotonic() + 60
            while True:
                times = await _times(bootstrap, ns)
                done = [t for t in times.values() if len(t) == len(KINDS)]
                if len(done) >= args.requests or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1.0)  # polls the topics until every request has its PoA
            commits = {name: await _commit_times(stack.ops_ports[name]) for name in ("approvals", "issuer")}
        finally:
            await stack.stop()
            await delete_topics(bootstrap, ns)
    print(f"{len(done)} of {args.requests} requests at {args.rate:.0f}/s")
    for name, first, second in (
        ("request → quorum (approvals)", "IssuanceRequested", "QuorumReached"),
        ("quorum → PoA (approvals' commit, issuer)", "QuorumReached", "PoaIssued"),
    ):
        hop = sorted(t[second] - t[first] for t in done)
        p99 = hop[min(len(hop) - 1, int(0.99 * len(hop)))]
        print(f"{name:42} p50 {statistics.median(hop):6.1f} ms  p99 {p99:6.1f} ms  max {hop[-1]:6.1f} ms")
    for name, (count, mean, p50) in commits.items():
        print(
            f"{name} transactions: {count}, mean {1000 * mean:.1f} ms, p50 at most {1000 * p50:.0f} ms (bucket bound)"
        )


async def _commit_times(port: int) -> tuple[int, float, float]:
    """(transactions, mean seconds, the p50's bucket bound) from atb_processor_commit_seconds on /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "atb_processor_commit_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    p50 = next((bound for bound, seen in sorted(buckets) if count and seen >= count / 2), float("nan"))
    return int(count), total / count if count else float("nan"), p50


if __name__ == "__main__":
    asyncio.run(main())
