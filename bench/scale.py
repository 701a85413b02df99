"""Scale-out throughput: 1 vs 2 instances per service, on the same broker, in the same run.

    .venv/bin/python bench/scale.py --requests 2000

Each round starts approvals, issuer, broker and audit sink (`ServiceStack(...,
instances=k)`, k = 1 then 2) in a fresh topic namespace, warms them up, then
publishes N low-risk requests (signed beforehand, so the driver's signing is not
in the measurement) as fast as Kafka takes them. A presenter hands every PoA to
the broker on `atb.broker.actions` as soon as it is committed, as
tests/e2e/test_scale_out.py does; a request is done when its BrokerDecision is
committed. Throughput is requests/s from the first request sent to the last
decision.

CPU per process is read from `/proc/<pid>/stat` (utime + stime, the process and
its descendants) before and after: per service, Kafka, OPA and the driver (this
process). From it: CPU per request per service, total utilisation against the
cores this machine has, and a projection — each instance is one Python process,
so one service's instances give at most k / (its CPU per request) requests/s, and
the whole pipeline at most cores / (total CPU per request). Goal: 2 instances give
at least 1.6 times the throughput of 1, where the cores allow it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from atb.dev.launcher import ensure_infra, infra_status
from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb_identity import Svid, ensure_svid, sign_envelope
from atb_runtime import Outgoing, Publisher, outgoing_envelope
from audit_sink.adapters.db import AuditStore, make_engine, migrate
from contracts import (
    CATALOGUE,
    AccountableParty,
    ActionRequested,
    BrokerDecision,
    Decision,
    EventDecodeError,
    EventPayload,
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
SCALED = ("approvals", "issuer", "broker", "audit-sink")
GOAL = 1.6
TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
MAX_INSTANCES = min(spec.partitions for spec in CATALOGUE if spec.topic is Topic.POA_REQUESTS)
"""More instances than partitions sit idle: the catalogue's partition count caps the projection."""


def _say(message: str) -> None:
    sys.stderr.write(f"  {message}\n")


# -- CPU accounting ------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process, from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def _cpu_tree(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and its descendants."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parents[int(entry.name)], cpu[int(entry.name)] = st
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)

    named = set(pids.values())

    def total(pid: int) -> float:
        # A named process's CPU is its own: the services are the driver's children too.
        return cpu.get(pid, 0.0) + sum(total(child) for child in children.get(pid, ()) if child not in named)

    return {name: total(pid) for name, pid in pids.items()}


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every process of every user (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


# -- load ----------------------------------------------------------------------------------


def _request(i: int, agent: Svid, tag: str) -> IssuanceRequested:
    return IssuanceRequested(
        request_id=f"{tag}-{i}",
        agent_id=AGENT,
        tenant="acme",
        action="crm.contact.read",
        resource=f"res/{i}",
        leg=LegitimateInterest(
            ref=f"LI-S{i}", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="bench")
        ),
        requested_at=datetime.now(UTC),
        agent_cert_thumbprint=agent.thumbprint(),
    )


def _signed(payload: EventPayload, svid: Svid, namespace: str) -> Outgoing:
    return outgoing_envelope(
        sign_envelope(make_envelope(payload, source=AGENT), svid), topic_name(payload.topic, namespace)
    )


def _payload(value: bytes | None) -> EventPayload | None:
    try:
        return payload_of(decode_envelope(value))
    except EventDecodeError:
        return None


def _action(issued: PoaIssued) -> ActionRequested:
    i = int(issued.request_id.rsplit("-", 1)[1])
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


async def _follow(
    bootstrap: str, topic: str, on_value: Callable[[bytes | None], None], stop: asyncio.Event, ready: asyncio.Event
) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    await consumer.start()
    ready.set()
    try:
        while not stop.is_set():
            for messages in (await consumer.getmany(timeout_ms=100, max_records=2000)).values():
                for msg in messages:
                    on_value(msg.value)
    finally:
        await consumer.stop()


class Driver:
    """Publishes requests, presents each PoA as it appears, and notes when each decision arrives."""

    def __init__(self, bootstrap: str, namespace: str, agent: Svid) -> None:
        self.bootstrap, self.ns, self.agent = bootstrap, namespace, agent
        self.decided: dict[str, float] = {}
        self.denied: dict[str, tuple[str, ...]] = {}
        self._to_present: asyncio.Queue[PoaIssued] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        ready = [asyncio.Event(), asyncio.Event()]
        self._tasks = [
            asyncio.create_task(
                _follow(self.bootstrap, topic_name(Topic.POA_ISSUED, self.ns), self._on_poa, self._stop, ready[0])
            ),
            asyncio.create_task(
                _follow(
                    self.bootstrap, topic_name(Topic.BROKER_DECISIONS, self.ns), self._on_decision, self._stop, ready[1]
                )
            ),
            asyncio.create_task(self._present()),
        ]
        await asyncio.gather(*(event.wait() for event in ready))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_poa(self, value: bytes | None) -> None:
        if isinstance(issued := _payload(value), PoaIssued):
            self._to_present.put_nowait(issued)

    def _on_decision(self, value: bytes | None) -> None:
        if isinstance(decision := _payload(value), BrokerDecision):
            self.decided.setdefault(decision.request_id, time.perf_counter())
            if decision.decision is not Decision.ALLOW:
                self.denied[decision.request_id] = tuple(r.code.value for r in decision.reasons)

    async def _present(self) -> None:
        async with Publisher(self.bootstrap, "bench-presenter") as publisher:
            while not self._stop.is_set():
                try:
                    first = await asyncio.wait_for(self._to_present.get(), 0.1)
                except TimeoutError:
                    continue
                batch = [first]
                while not self._to_present.empty():
                    batch.append(self._to_present.get_nowait())
                await publisher.publish([_signed(_action(issued), self.agent, self.ns) for issued in batch])
                await publisher.flush()

    async def run(self, requests: list[Outgoing], timeout: float) -> tuple[float, float]:
        """Publish the requests; wait for every decision. Returns (first sent, last decided) perf_counter times."""
        ids = {r.key.decode() for r in requests if r.key is not None}
        async with Publisher(self.bootstrap, "bench-agent") as publisher:
            started = time.perf_counter()
            for chunk in range(0, len(requests), 200):
                await publisher.publish(requests[chunk : chunk + 200])
            await publisher.flush()
        deadline = time.monotonic() + timeout
        while not ids <= self.decided.keys():
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(ids & self.decided.keys())} of {len(ids)} decided within {timeout:.0f}s")
            sys.stderr.write(f"\r  decided {len(ids & self.decided.keys())}/{len(ids)}")
            await asyncio.sleep(0.1)
        sys.stderr.write(f"\r  decided {len(ids)}/{len(ids)}\n")
        return started, max(self.decided[i] for i in ids)


# -- one round -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    instances: int
    requests: int
    seconds: float
    throughput: float
    audit_settled_seconds: float
    cpu: dict[str, float]
    """CPU seconds during the measured requests, per service (all its instances), kafka, opa, driver."""
    denied: int
    denial_reasons: tuple[str, ...]
    machine_busy: float
    """Share of all cores busy during the measured requests, whoever used them (other users too)."""


async def _audit_settled(store: AuditStore, quiet: float = 2.0, timeout: float = 120.0) -> float:
    """Wait until the audit store stops growing; returns when it last grew (perf_counter)."""
    last, changed = -1, time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = await asyncio.to_thread(store.count)
        if count != last:
            last, changed = count, time.perf_counter()
        elif time.perf_counter() - changed >= quiet:
            break
        await asyncio.sleep(0.2)
    return changed


async def bench_round(
    bootstrap: str, opa_url: str, infra_pids: dict[str, int], k: int, n: int, warmup: int, state: Path
) -> Round:
    ns = f"bscl-{uuid.uuid4().hex[:6]}."
    _say(f"{k} instance(s) per service: namespace {ns}")
    await ensure_topics(bootstrap, ns)
    db_url = f"sqlite:///{state / f'audit-{k}.db'}"
    migrate(db_url)  # once, before several sinks start on it
    stack = ServiceStack(
        StackConfig(bootstrap, opa_url, state, namespace=ns, audit_db_url=db_url), services=SCALED, instances=k
    )
    await stack.start(ready_timeout=120)
    driver = Driver(bootstrap, ns, ensure_svid(state, AGENT))
    try:
        await driver.start()
        agent = driver.agent
        await driver.run([_signed(_request(i, agent, "warm"), agent, ns) for i in range(warmup)], timeout=300)
        store = AuditStore(make_engine(db_url), "bench")
        await _audit_settled(store)
        requests = [_signed(_request(i, agent, "req"), agent, ns) for i in range(n)]
        pids = {name: proc.pid for name, proc in stack.processes.items() if proc.pid is not None}
        pids.update(infra_pids, driver=os.getpid())
        before, machine_before = _cpu_tree(pids), _machine_busy()
        started, finished = await driver.run(requests, timeout=600)
        at_finish, machine_after = _cpu_tree(pids), _machine_busy()
        settled = await _audit_settled(store)
        at_settle = _cpu_tree(pids)
    finally:
        await driver.stop()
        await stack.stop()
        await delete_topics(bootstrap, ns)
    cpu: dict[str, float] = {}
    for name in pids:
        service = next((s for s, names in stack.instances.items() if name in names), name)
        # The audit sink may trail the decisions: its CPU counts until the store stops growing.
        after = at_settle if service == "audit-sink" else at_finish
        cpu[service] = cpu.get(service, 0.0) + after[name] - before[name]
    seconds = finished - started
    return Round(
        instances=k,
        requests=n,
        seconds=round(seconds, 3),
        throughput=round(n / seconds, 1),
        audit_settled_seconds=round(max(settled, finished) - started, 3),
        cpu={name: round(value, 3) for name, value in cpu.items()},
        denied=sum(1 for r in driver.denied if r.startswith("req-")),
        denial_reasons=tuple(sorted({reason for reasons in driver.denied.values() for reason in reasons})),
        machine_busy=round((machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1]), 3),
    )


# -- report --------------------------------------------------------------------------------


def _projection(r: Round) -> list[tuple[int, int, float, str]]:
    """(cores, instances, requests/s, what binds) from one round's CPU per request."""
    per_request = {name: sec / r.requests for name, sec in r.cpu.items() if name != "driver"}
    total = sum(per_request.values())
    rows = []
    for cores in (2, 4, 8, 16):
        for k in range(1, MAX_INSTANCES + 1):
            limits = {f"{s} ({k} proc)": k / per_request[s] for s in SCALED if per_request.get(s)}
            limits[f"{cores} cores"] = cores / total
            binding = min(limits, key=lambda name: limits[name])
            rows.append((cores, k, limits[binding], binding))
    return rows


def _print(rounds: list[Round]) -> None:
    one, two = rounds
    for r in rounds:
        print(
            f"{r.instances} instance(s) per service: {r.requests} requests in {r.seconds:.2f}s = "
            f"{r.throughput:.0f} requests/s (audit store complete after {r.audit_settled_seconds:.2f}s)"
            + (f"; {r.denied} denied ({', '.join(r.denial_reasons)})" if r.denied else "")
        )
    ratio = two.throughput / one.throughput
    print(f"ratio 2/1 = {ratio:.2f}× (goal ≥ {GOAL}× where cores allow; {ratio / GOAL:.2f}× the goal)")
    print(f"\nCPU per request (ms), all instances of a service together; {CORES} cores here:")
    names = [*SCALED, "kafka", "opa", "driver"]
    print(f"  {'':16}" + "".join(f"{n:>11}" for n in names) + f"{'total':>11}{'busy':>8}")
    for r in rounds:
        per = [1000 * r.cpu.get(n, 0.0) / r.requests for n in names]
        busy = sum(r.cpu.values()) / (r.seconds * CORES)
        print(f"  {r.instances} instance(s)   " + "".join(f"{v:11.2f}" for v in per) + f"{sum(per):11.2f}{busy:8.0%}")
    for r in rounds:
        top = max(SCALED, key=lambda s: r.cpu.get(s, 0.0))
        each = r.cpu.get(top, 0.0) / r.seconds / r.instances
        print(
            f"  {r.instances} instance(s): ours kept {sum(r.cpu.values()) / r.seconds:.2f} of {CORES} cores busy; "
            f"busiest service {top}, {each:.0%} of a core per instance; all processes of all users: "
            f"{r.machine_busy:.0%} of the machine"
        )
    print("\nprojection from the 1-instance CPU per request (Kafka and OPA included, the driver not):")
    print(f"  {'cores':>5} {'instances':>9} {'requests/s':>11}  bound by")
    for cores, k, rate, binding in _projection(one):
        print(f"  {cores:>5} {k:>9} {rate:>11.0f}  {binding}")
    ours = sum(two.cpu.values()) / two.seconds
    if ratio < GOAL:
        print(
            f"\nwhat limits it here: the whole machine was {two.machine_busy:.0%} busy during the 2-instance round "
            f"(every process of every user); ours got {ours:.2f} of {CORES} cores for {len(SCALED) * 2} service "
            "processes + Kafka + OPA + the driver. CPU per request hardly changes with a second instance, so "
            "it can only add throughput where a core is free."
        )


async def _infra_pids() -> dict[str, int]:
    return {row.name: row.pid for row in await infra_status() if row.pid is not None}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    infra = await ensure_infra(progress=_say)
    infra_pids = await _infra_pids()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="atb-bench-scale-") as tmp:
        for k in (1, 2):
            # A state folder per round: the brokers' spent store must not know the other round's requests.
            state = Path(tmp) / f"round-{k}"
            state.mkdir()
            rounds.append(
                await bench_round(
                    infra.kafka_bootstrap, infra.opa_url, infra_pids, k, args.requests, args.warmup, state
                )
            )
    if args.json:
        ratio = rounds[1].throughput / rounds[0].throughput
        print(json.dumps({"rounds": [asdict(r) for r in rounds], "ratio": round(ratio, 3), "goal_ratio": GOAL}))
        return
    _print(rounds)


if __name__ == "__main__":
    asyncio.run(main())
