"""Restore cost vs history: approvals and issuer restores after 10k, 100k and 1M closed requests.

    .venv/bin/python bench/restore.py --sizes 10000,100000,1000000

For each history size, a fresh topic namespace gets a realistic history written
straight to its topics, with record timestamps in the past:

- `atb.approvals.state`: one closed state per request (the bytes the approvals
  service writes for a low-risk request, made by its own handler once and
  re-keyed), spread over `--days` days before the restore window; the newest
  `--tombstoned` fraction also gets its tombstone `closed_retention_seconds`
  after it closed, as the service writes it (the older part stands for history
  written before tombstones existed);
- `atb.poa.issued`: the PoA the issuer issued for each of those requests (the
  issuer's own bytes, re-keyed), at the same times;
- then, the same at every size, `--open` open requests spread over the restore
  window and as many PoAs issued in the last minutes (inside the issuer's memory).

Each restore runs in a fresh subprocess through the services' own code path —
`ApprovalsService.on_assigned` (→ `StateStore.load(partitions, since=...)`) and
`IssuerService.on_assigned` — over every partition, so its peak RSS
(`getrusage(RUSAGE_SELF).ru_maxrss` of the child) is that restore's alone; the
median of `--runs` runs is printed. The reference, measured in the same run on
the same topics, is a full read from the beginning (what a restore cost before
restores read a window). Goal: the 1M restore takes at most twice as long as
the 10k restore and its peak RSS stays flat (at most 1.2 times).

The re-keyed records keep the template's signatures and digests, which no
longer match their new request ids: a restore neither checks nor needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from approvals.adapters.policy import PolicyRequirements
from approvals.adapters.state import StateStore
from approvals.domain.directory import Directory
from approvals.service import ApprovalsService
from approvals.settings import ApprovalsSettings
from atb.dev.launcher import ensure_infra
from atb.dev.topics import delete_topics, ensure_topics
from atb_identity import ensure_svid, init_ca, sign_envelope
from atb_runtime import Incoming, OpaClient, outgoing_envelope
from atb_runtime.agents import load_agent_registry
from atb_runtime.identity import load_bundle, service_svid
from atb_runtime.policy import RequirementsClient
from atb_runtime.readback import read_records
from contracts import (
    CATALOGUE,
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
from contracts.directory import Directory as ApproverDirectory
from contracts.limits import TOPIC_MAX_MESSAGE_BYTES
from issuer.adapters.evidence import EvidenceVerifier
from issuer.adapters.keyring import SigningKeyRing
from issuer.service import ISSUED_MEMORY, IssuerService
from issuer.settings import IssuerSettings

AGENT = "spiffe://atb.local/agent/bench"
LEG = LegitimateInterest(ref="LI-BENCH", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="bench"))
PLACEHOLDER = "tmpl-request-000000"
GOAL_TIME = 2.0
GOAL_RSS = 1.2
PARTITIONS = {spec.topic: spec.partitions for spec in CATALOGUE}
MODES = ("approvals", "approvals-full", "issuer", "issuer-full")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The full reads start here (every record is newer), not with `since=None`: read_records' seek to the
beginning races the consumer's own reset to the end and now and then reads nothing."""


def _say(message: str) -> None:
    sys.stderr.write(f"  {message}\n")


# -- the services, wired as their main.build() wires them --------------------------------


def _approvals(settings: ApprovalsSettings) -> tuple[ApprovalsService, OpaClient]:
    opa = OpaClient(settings.opa_url)
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    agents = load_agent_registry(settings.agent_registry_path)
    store = StateStore(settings.kafka_bootstrap_servers, settings.topic_namespace, settings.service_id)
    policy = PolicyRequirements(opa, settings.policy_cache_seconds, agents=agents)
    svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
    return ApprovalsService(settings, policy, bundle, directory, store, svid, agents), opa


def _issuer(settings: IssuerSettings) -> tuple[IssuerService, OpaClient]:
    ring = SigningKeyRing.ensure(settings.keyring_dir())
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    opa = OpaClient(settings.opa_url)
    agents = load_agent_registry(settings.agent_registry_path)
    evidence = EvidenceVerifier(
        bundle=bundle,
        directory=ApproverDirectory.from_mapping(
            json.loads(settings.approver_directory_path.read_text(encoding="utf-8"))
        ),
        policy=RequirementsClient(opa, agents=agents),
        agents=agents,
        request_attesters=settings.request_attesters,
        vote_attesters=settings.vote_attesters,
        vote_attester_tiers=settings.vote_attester_tiers,
    )
    return IssuerService(settings, ring.current, evidence, bundle), opa


@dataclass(frozen=True)
class Site:
    bootstrap: str
    opa_url: str
    namespace: str
    state: Path

    def approvals(self) -> ApprovalsSettings:
        return ApprovalsSettings(
            kafka_bootstrap_servers=self.bootstrap,
            opa_url=self.opa_url,
            topic_namespace=self.namespace,
            state_dir=self.state,
        )

    def issuer(self) -> IssuerSettings:
        return IssuerSettings(
            kafka_bootstrap_servers=self.bootstrap,
            opa_url=self.opa_url,
            topic_namespace=self.namespace,
            state_dir=self.state,
        )


# -- templates: the services' own output for one request -----------------------------------


@dataclass(frozen=True)
class Templates:
    closed: bytes
    """ApprovalStateChanged, closed (quorum reached), of a low-risk request."""
    open: bytes
    """ApprovalStateChanged, open (waiting for a vote), of a medium-risk request."""
    issued: bytes
    """PoaIssued for the low-risk request."""

    def make(self, template: bytes, request_id: str) -> bytes:
        return template.replace(PLACEHOLDER.encode(), request_id.encode())


async def _templates(site: Site) -> Templates:
    """Run the approvals handler on a low- and a medium-risk request, and the issuer on the quorum."""
    svid = ensure_svid(site.state, AGENT)
    approvals, opa = _approvals(site.approvals())
    issuer, issuer_opa = _issuer(site.issuer())
    requests_topic = topic_name(Topic.POA_REQUESTS, site.namespace)
    state_topic = topic_name(Topic.APPROVALS_STATE, site.namespace)
    outcomes_topic = topic_name(Topic.OUTCOMES, site.namespace)
    issued_topic = topic_name(Topic.POA_ISSUED, site.namespace)
    found: dict[str, bytes] = {}
    try:
        for label, action in (("closed", "crm.contact.read"), ("open", "crm.contact.update")):
            request = IssuanceRequested(
                request_id=PLACEHOLDER,
                agent_id=AGENT,
                tenant="acme",
                action=action,
                resource="crm:contact/4711",
                leg=LEG,
                requested_at=datetime.now(UTC),
            )
            signed = outgoing_envelope(sign_envelope(make_envelope(request, source=AGENT), svid), requests_topic)
            await approvals.on_assigned(set())
            out = await approvals.handle([Incoming(requests_topic, 0, 0, signed.key, signed.value)])
            states = [o.value for o in out if o.topic == state_topic and o.value is not None]
            if len(states) != 1:
                raise SystemExit(f"approvals wrote {len(states)} states for a {action} request (OPA up?)")
            found[label] = states[0]
            if label == "closed":
                quorums = [o for o in out if o.topic == outcomes_topic]
                await issuer.on_assigned(set())
                issued = [
                    o.value
                    for o in await issuer.handle([Incoming(outcomes_topic, 0, 0, quorums[0].key, quorums[0].value)])
                    if o.topic == issued_topic and o.value is not None
                ]
                if len(issued) != 1:
                    raise SystemExit("the issuer issued no PoA for the template quorum")
                found["issued"] = issued[0]
    finally:
        await opa.close()
        await issuer_opa.close()
    return Templates(closed=found["closed"], open=found["open"], issued=found["issued"])


# -- writing the history -------------------------------------------------------------------

Record = tuple[str, bytes, bytes | None, int]
"""(topic, key, value or None for a tombstone, timestamp in ms)"""


async def _produce(bootstrap: str, records: Iterable[Record], total: int, label: str) -> float:
    """Write records as fast as the broker takes them (big batches, no compression); returns seconds."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=50,
        max_batch_size=TOPIC_MAX_MESSAGE_BYTES // 2,
        max_request_size=4 * TOPIC_MAX_MESSAGE_BYTES,
        compression_type=None,
    )
    await producer.start()
    start = time.perf_counter()
    pending: list[asyncio.Future[object]] = []
    done = 0
    try:
        for topic, key, value, ts in records:
            pending.append(await producer.send(topic, key=key, value=value, timestamp_ms=ts))
            if len(pending) >= 50_000:
                await asyncio.gather(*pending)
                done += len(pending)
                pending.clear()
                sys.stderr.write(f"\r  {label}: {done:,}/{total:,}")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    sys.stderr.write(f"\r  {label}: {total:,}/{total:,}\n")
    return time.perf_counter() - start


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _history(site: Site, t: Templates, n: int, days: float, tombstoned: float) -> tuple[Iterator[Record], int]:
    """Closed states, their tombstones and their PoAs, ascending in time, all before the restore window."""
    settings = site.approvals()
    now = datetime.now(UTC)
    window_start = now - timedelta(seconds=settings.restore_window_seconds())
    retention_ms = settings.closed_retention_seconds * 1000
    first = _ms(window_start - timedelta(days=days))
    last = _ms(window_start) - retention_ms - 60_000
    step = (last - first) / max(n, 1)
    state_topic = topic_name(Topic.APPROVALS_STATE, site.namespace)
    issued_topic = topic_name(Topic.POA_ISSUED, site.namespace)
    first_tombstoned = int(n * (1 - tombstoned))

    def closed() -> Iterator[Record]:
        for i in range(n):
            rid = f"hist-{i:08d}"
            ts = int(first + i * step)
            yield state_topic, rid.encode(), t.make(t.closed, rid), ts
            yield issued_topic, rid.encode(), t.make(t.issued, rid), ts + 50

    def tombstones() -> Iterator[Record]:
        for i in range(first_tombstoned, n):
            yield state_topic, f"hist-{i:08d}".encode(), None, int(first + i * step) + retention_ms

    return heapq.merge(closed(), tombstones(), key=lambda r: r[3]), 2 * n + (n - first_tombstoned)


def _recent(site: Site, t: Templates, n: int) -> Iterator[Record]:
    """Open requests spread over the restore window; PoAs issued in the last minutes (inside ISSUED_MEMORY)."""
    now = datetime.now(UTC)
    window = site.approvals().restore_window_seconds()
    state_topic = topic_name(Topic.APPROVALS_STATE, site.namespace)
    issued_topic = topic_name(Topic.POA_ISSUED, site.namespace)
    # Inside the window with a margin: the restores run minutes after this is written.
    open_first, open_span = _ms(now) - 0.9 * window * 1000, 0.9 * window * 1000
    poa_first, poa_span = (
        _ms(now) - 0.3 * ISSUED_MEMORY.total_seconds() * 1000,
        0.3 * ISSUED_MEMORY.total_seconds() * 1000,
    )
    for i in range(n):
        rid = f"open-{i:06d}"
        yield state_topic, rid.encode(), t.make(t.open, rid), int(open_first + open_span * i / n)
    for i in range(n):
        rid = f"recent-{i:06d}"
        yield issued_topic, rid.encode(), t.make(t.issued, rid), int(poa_first + poa_span * i / n)


async def _counts(site: Site) -> dict[str, tuple[int, int]]:
    """Per topic: (records in the topic, records a restore reads from its window) as offsets say."""
    approvals = site.approvals()
    since = {
        Topic.APPROVALS_STATE: datetime.now(UTC) - timedelta(seconds=approvals.restore_window_seconds()),
        Topic.POA_ISSUED: datetime.now(UTC) - ISSUED_MEMORY,
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=site.bootstrap, enable_auto_commit=False)
    await consumer.start()
    counts: dict[str, tuple[int, int]] = {}
    try:
        for topic, moment in since.items():
            name = topic_name(topic, site.namespace)
            tps = [TopicPartition(name, p) for p in range(PARTITIONS[topic])]
            begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
            found = await consumer.offsets_for_times({tp: _ms(moment) for tp in tps})
            window = sum(end[tp] - (found[tp].offset if found[tp] else end[tp]) for tp in tps)
            counts[topic.value] = (sum(end[tp] - begin[tp] for tp in tps), window)
    finally:
        await consumer.stop()
    return counts


# -- one restore, in its own process -------------------------------------------------------


def _rss_mb() -> float:
    """This process's resident set now (the peak so far is ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _restore(site: Site, mode: str) -> dict[str, float]:
    """Run one restore the way the service does it (or the full read of old); time, peak RSS, states held."""
    service, topic = mode.removesuffix("-full"), mode.endswith("-full")
    partitions = set(range(PARTITIONS[Topic.APPROVALS_STATE if service == "approvals" else Topic.POA_ISSUED]))
    held = 0
    if service == "approvals":
        approvals, opa = _approvals(site.approvals())
        base_mb = _rss_mb()
        start = time.perf_counter()
        if topic:
            store = StateStore(site.bootstrap, site.namespace, approvals.CONSUMER)
            held = sum(len(states) for states in (await store.load(partitions, since=EPOCH)).values())
        else:
            await approvals.on_assigned(partitions)
            held = approvals.open_requests
        seconds = time.perf_counter() - start
        await opa.close()
    else:
        issuer, opa = _issuer(site.issuer())
        base_mb = _rss_mb()
        start = time.perf_counter()
        if topic:
            # What the issuer did before ISSUED_MEMORY: every PoA it ever issued.
            name = topic_name(Topic.POA_ISSUED, site.namespace)
            remembered: dict[str, tuple[int, datetime]] = {}
            for record in await read_records(site.bootstrap, name, partitions, since=EPOCH):
                try:
                    payload = payload_of(decode_envelope(record.value))
                except EventDecodeError:
                    continue
                if isinstance(payload, PoaIssued):
                    remembered[payload.request_id] = (record.partition, payload.issued_at)
            held = len(remembered)
        else:
            await issuer.on_assigned(partitions)
            held = issuer.remembered
        seconds = time.perf_counter() - start
        await opa.close()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mb": peak_kb / 1024, "base_mb": base_mb, "held": held}


@dataclass(frozen=True)
class Measured:
    mode: str
    runs: int
    seconds: float
    peak_mb: float
    base_mb: float
    held: int
    all_seconds: tuple[float, ...]


async def _measure(site: Site, mode: str, runs: int) -> Measured:
    results = []
    for _ in range(runs):
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            mode,
            "--child-site",
            json.dumps({**asdict(site), "state": str(site.state)}),
            stdout=subprocess.PIPE,
        )
        out, _ = await child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"restore child {mode} exited {child.returncode}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return Measured(
        mode=mode,
        runs=runs,
        seconds=statistics.median(r["seconds"] for r in results),
        peak_mb=statistics.median(r["peak_mb"] for r in results),
        base_mb=statistics.median(r["base_mb"] for r in results),
        held=int(statistics.median(r["held"] for r in results)),
        all_seconds=tuple(round(r["seconds"], 3) for r in results),
    )


# -- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeResult:
    history: int
    produce_seconds: float
    records: dict[str, tuple[int, int]]
    measured: dict[str, Measured]


async def bench_size(
    bootstrap: str, opa_url: str, state: Path, n: int, args: argparse.Namespace, templates: Templates | None
) -> tuple[SizeResult, Templates]:
    site = Site(bootstrap, opa_url, f"brst-{uuid.uuid4().hex[:6]}.", state)
    _say(f"history {n:,}: namespace {site.namespace}")
    await ensure_topics(bootstrap, site.namespace)
    try:
        templates = templates or await _templates(site)
        history, total = _history(site, templates, n, args.days, args.tombstoned)
        produce_seconds = await _produce(bootstrap, history, total, "history")
        await _produce(bootstrap, _recent(site, templates, args.open), 2 * args.open, "recent")
        records = await _counts(site)
        measured = {}
        for mode in MODES:  # windowed restores first: the recent PoAs are minutes old, not more
            runs = args.reference_runs if mode.endswith("-full") else args.runs
            measured[mode] = await _measure(site, mode, runs)
            m = measured[mode]
            _say(f"{mode}: {m.seconds:.3f}s {m.all_seconds}, peak RSS {m.peak_mb:.0f} MB, {m.held:,} held")
        return SizeResult(n, produce_seconds, records, measured), templates
    finally:
        await delete_topics(bootstrap, site.namespace)


LABELS = {
    "approvals": "approvals restore (window)",
    "approvals-full": "approvals full read (old)",
    "issuer": "issuer restore (window)",
    "issuer-full": "issuer full read (old)",
}


def _print(results: list[SizeResult], args: argparse.Namespace) -> None:
    window_h = ApprovalsSettings().restore_window_seconds() / 3600
    memory_min = ISSUED_MEMORY.total_seconds() / 60
    print(
        f"restore after N closed requests of history (+{args.open:,} open requests in the window, "
        f"{args.tombstoned:.0%} of history tombstoned); windows: approvals {window_h:.1f} h, "
        f"issuer {memory_min:.0f} min; median of {args.runs} runs (full reads: {args.reference_runs})"
    )
    for r in results:
        state, issued = r.records[Topic.APPROVALS_STATE.value], r.records[Topic.POA_ISSUED.value]
        print(
            f"\nhistory {r.history:>9,}  (written in {r.produce_seconds:.0f}s; records in topic / in window: "
            f"state {state[0]:,} / {state[1]:,}, issued {issued[0]:,} / {issued[1]:,})"
        )
        for mode in MODES:
            m = r.measured[mode]
            print(
                f"  {LABELS[mode]:27} {m.seconds:8.3f} s   peak RSS {m.peak_mb:7.0f} MB "
                f"(+{m.peak_mb - m.base_mb:6.0f} over its start)   {m.held:>9,} held"
            )
    waits = [
        m
        for r in results
        for mode in ("approvals", "issuer")
        if (m := r.measured[mode]).seconds - min(m.all_seconds) >= 0.3
    ]
    if waits:
        print(
            f"\nnote: {len(waits)} windowed medians are ≥ 0.3 s above their fastest run. read_records' consumer "
            "starts a fetch (a long poll, fetch_max_wait_ms 500) before its seek to the window and waits it out "
            "now and then; that wait is most of a small restore and makes the time ratios below noisy."
        )
    if len(results) < 2:
        return
    small, large = results[0], results[-1]
    label = f"{large.history // 1000:,}k/{small.history // 1000:,}k"
    print(f"\nratio {label} (goal: time ≤ {GOAL_TIME:.0f}×, peak RSS ≤ {GOAL_RSS}×):")
    for mode in MODES:
        a, b = small.measured[mode], large.measured[mode]
        t, rss = b.seconds / a.seconds, b.peak_mb / a.peak_mb
        verdict = "" if mode.endswith("-full") else ("  met" if t <= GOAL_TIME and rss <= GOAL_RSS else "  NOT met")
        print(f"  {LABELS[mode]:27} time {t:7.2f}×   peak RSS {rss:6.2f}×{verdict}")
    for service in ("approvals", "issuer"):
        w, f = large.measured[service], large.measured[f"{service}-full"]
        print(
            f"  at {large.history:,}: the window makes the {service} restore {f.seconds / w.seconds:,.0f}× faster "
            f"and {f.peak_mb / w.peak_mb:.1f}× smaller than a full read"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="history sizes (closed requests)")
    parser.add_argument("--open", type=int, default=2000, help="open requests in the window, at every size")
    parser.add_argument("--days", type=float, default=7.0, help="history spread over this many days before it")
    parser.add_argument("--tombstoned", type=float, default=0.5, help="fraction of history with its tombstone")
    parser.add_argument("--runs", type=int, default=5, help="restores per measurement (median)")
    parser.add_argument("--reference-runs", type=int, default=1, help="full reads per measurement (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--child-site", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        raw = json.loads(args.child_site)
        site = Site(raw["bootstrap"], raw["opa_url"], raw["namespace"], Path(raw["state"]))
        print(json.dumps(asyncio.run(_restore(site, args.child))))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = asyncio.run(_run(sizes, args))
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
        return
    _print(results, args)


async def _run(sizes: list[int], args: argparse.Namespace) -> list[SizeResult]:
    infra = await ensure_infra(progress=_say)
    results: list[SizeResult] = []
    templates: Templates | None = None
    with tempfile.TemporaryDirectory(prefix="atb-bench-restore-") as tmp:
        state = Path(tmp)
        init_ca(state, "atb.local")
        for n in sizes:
            result, templates = await bench_size(infra.kafka_bootstrap, infra.opa_url, state, n, args, templates)
            results.append(result)
    return results


if __name__ == "__main__":
    main()
