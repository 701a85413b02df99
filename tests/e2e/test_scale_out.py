"""Scale-out: two instances of every consuming service, frozen, killed and restarted under load.

Two instances each of approvals, issuer, broker (Kafka actions) and the audit sink
share one namespace (the sink on a real PostgreSQL). Requests of every tier flow,
with their votes, and every PoA is presented to the broker on `atb.broker.actions`
as soon as it appears. Meanwhile:

- one instance of each service is frozen with SIGSTOP for longer than its session
  timeout (its partitions move to another instance), then thawed with SIGCONT:
  it wakes up mid-batch believing it still owns them (a zombie);
- at the same time another instance of each service is killed with SIGKILL and
  restarted;
- every instance is restarted, one at a time (a rolling restart).

A `read_committed` reader must then see exactly one outcome per request, exactly
one PoA per approved request, exactly one decision per presented action and at
most one allow per request; the audit store must hold exactly the committed
records. `make test` runs one round over two instances per service; `make soak`
5,000 requests and five rounds (20 freezes, 20 kills) over three instances per
service (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb_identity import Svid, ensure_svid, sign_envelope
from atb_runtime import Outgoing, Publisher, outgoing_envelope
from atb_runtime.readback import StoredRecord, iter_records
from audit_sink.adapters.db import audit_events, make_engine
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
from contracts.reasons import ReasonCode
from tests import waits
from tests.audit_db import new_database
from tests.e2e.audit_sync import caught_up

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/fault-bot"
SCALED = ("approvals", "issuer", "broker", "audit-sink")
APPROVERS = {name: f"spiffe://atb.local/user/{name}" for name in ("alice", "bob")}
TIERS = (
    # (action, accountable party, approvers who approve)
    ("crm.contact.read", "svc-1", ()),
    ("crm.contact.update", "emp-300", ("alice",)),
    ("sap.vendor.change", "emp-301", ("alice", "bob")),  # high; a payment would need its amount
)
SESSION_TIMEOUT_S = 10.0


@dataclass
class ScaleEnv:
    stack: ServiceStack
    namespace: str
    state_dir: Path
    db_url: str
    bootstrap: str
    instances: dict[str, list[str]] = field(default_factory=dict)


@pytest.fixture
async def scale_env(
    kafka_bootstrap: str, opa_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ScaleEnv]:
    soak = request.node.get_closest_marker("soak") is not None
    replicas = int(os.environ.get("ATB_SOAK_SCALE_INSTANCES", "3")) if soak else 2
    ns = f"s{uuid.uuid4().hex[:8]}."
    await ensure_topics(kafka_bootstrap, ns)
    db = new_database("postgresql", request, tmp_path)
    stack = ServiceStack(
        StackConfig(kafka_bootstrap, opa_url, tmp_path, namespace=ns, audit_db_url=db.writer),
        services=("gateway", *SCALED),
        instances=replicas,
    )
    instances = {name: stack.instances[name] for name in SCALED}
    await stack.start(ready_timeout=120)
    try:
        yield ScaleEnv(stack, ns, tmp_path, db.writer, kafka_bootstrap, instances)
    finally:
        for proc in stack.processes.values():
            proc.kill(signal.SIGCONT)  # a frozen process cannot stop
        await stack.stop()
        await delete_topics(kafka_bootstrap, ns)
        if db.server is not None:
            db.server.drop_database(db.name)


# -- load -----------------------------------------------------------------------------


def _request(i: int, agent: Svid) -> IssuanceRequested:
    action, party, _ = TIERS[i % len(TIERS)]
    return IssuanceRequested(
        request_id=f"scale-{i}",
        agent_id=AGENT,
        tenant="acme",
        action=action,
        resource=f"res/{i}",
        leg=LegitimateInterest(
            ref=f"LI-S{i}", jurisdiction="US", accountable_party=AccountableParty(type="employee", id=party)
        ),
        requested_at=datetime.now(UTC),
        agent_cert_thumbprint=agent.thumbprint(),
    )


def _signed(payload: EventPayload, source: str, svid: Svid, namespace: str) -> Outgoing:
    return outgoing_envelope(
        sign_envelope(make_envelope(payload, source=source), svid), topic_name(payload.topic, namespace)
    )


def _votes(i: int, request: IssuanceRequested, svids: dict[str, Svid], namespace: str) -> list[Outgoing]:
    return [
        _signed(
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
            svids[name],
            namespace,
        )
        for name in TIERS[i % len(TIERS)][2]
    ]


async def _publish(env: ScaleEnv, n: int, rate: float) -> set[str]:
    agent = ensure_svid(env.state_dir, AGENT)
    svids = {name: ensure_svid(env.state_dir, spiffe) for name, spiffe in APPROVERS.items()}
    ids: set[str] = set()
    started = time.monotonic()
    async with Publisher(env.bootstrap, "scale-agent") as publisher:
        for i in range(n):
            request = _request(i, agent)
            ids.add(request.request_id)
            await publisher.publish(
                [_signed(request, AGENT, agent, env.namespace), *_votes(i, request, svids, env.namespace)]
            )
            if i % 20 == 19:
                await publisher.flush()
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)  # the pacing of the open-loop traffic itself
    return ids


async def _present(env: ScaleEnv, done: asyncio.Event) -> dict[str, str]:
    """Present every PoA to the broker on Kafka as soon as it is committed: action id → request id."""
    agent = ensure_svid(env.state_dir, AGENT)
    topic = topic_name(Topic.POA_ISSUED, env.namespace)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=env.bootstrap, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    presented: dict[str, str] = {}
    await consumer.start()
    try:
        async with Publisher(env.bootstrap, "scale-presenter") as publisher:
            while not done.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                actions = []
                for messages in batches.values():
                    for msg in messages:
                        issued = _payload(msg.value)
                        if isinstance(issued, PoaIssued):
                            action = _action(issued)
                            presented[action.action_id] = issued.request_id
                            actions.append(_signed(action, AGENT, agent, env.namespace))
                if actions:
                    await publisher.publish(actions)
                    await publisher.flush()
    finally:
        await consumer.stop()
    return presented


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


# -- faults ---------------------------------------------------------------------------


async def _freeze(env: ScaleEnv, names: list[str], seconds: float) -> None:
    procs = [env.stack.processes[name] for name in names]
    for name, proc in zip(names, procs, strict=True):
        assert proc.kill(signal.SIGSTOP), f"{name} is not running"
    try:
        await asyncio.sleep(seconds)  # the fault itself: frozen past the session timeout
    finally:
        for proc in procs:
            proc.kill(signal.SIGCONT)


async def _kill(env: ScaleEnv, names: list[str]) -> None:
    for name in names:
        assert await env.stack.kill(name), f"{name} was not running"
    await asyncio.gather(*(env.stack.restart(name, ready_timeout=120) for name in names))


async def _faults(env: ScaleEnv, rng: random.Random, rounds: int) -> Counter[str]:
    """Each round freezes one instance of every service and kills another; then a rolling restart."""
    done: Counter[str] = Counter()
    for _ in range(rounds):
        frozen, killed = [], []
        for service in SCALED:
            first, second = rng.sample(env.instances[service], 2)
            frozen.append(first)
            killed.append(second)
        await asyncio.gather(_freeze(env, frozen, SESSION_TIMEOUT_S * 1.5), _kill(env, killed))
        done["freeze"] += len(frozen)
        done["kill"] += len(killed)
    for service in SCALED:
        for name in env.instances[service]:
            await env.stack.processes[name].stop()
            await env.stack.restart(name, ready_timeout=120)
            done["restart"] += 1
    return done


# -- checks ---------------------------------------------------------------------------


def _payload(value: bytes | None) -> EventPayload | None:
    try:
        return payload_of(decode_envelope(value))
    except EventDecodeError:
        return None


async def _committed(bootstrap: str, namespace: str) -> dict[tuple[str, int, int], bytes]:
    topics = [topic_name(spec.topic, namespace) for spec in CATALOGUE]
    return {(r.topic, r.partition, r.offset): r.value or b"" async for r in iter_records(bootstrap, topics)}


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    kinds: dict[str, str] = field(default_factory=dict)
    poas: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    allows: Counter[str] = field(default_factory=Counter)
    denials: Counter[ReasonCode] = field(default_factory=Counter)


def _tally(records: dict[tuple[str, int, int], bytes]) -> Tally:
    tally = Tally()
    for value in records.values():
        payload = _payload(value)
        if isinstance(payload, QuorumReached | RequestDenied | RequestExpired):
            tally.outcomes[payload.request_id] += 1
            tally.kinds[payload.request_id] = type(payload).__name__
        elif isinstance(payload, PoaIssued):
            tally.poas[payload.request_id] += 1
        elif isinstance(payload, BrokerDecision):
            tally.decisions[payload.action_id] += 1
            if payload.decision is Decision.ALLOW:
                tally.allows[payload.request_id] += 1
            else:
                tally.denials.update(payload.codes)
    return tally


async def _settled(env: ScaleEnv, ids: set[str], presented: dict[str, str], timeout: float) -> Tally:
    """Wait until every request has its outcome and PoA and every presented action its decision.

    A consumer wait over the catalogue's topics; then the tally of everything committed, read
    to the end offsets. If the wait runs out, the tally goes back anyway: the caller's
    assertions name what is missing.
    """
    topics = [topic_name(spec.topic, env.namespace) for spec in CATALOGUE]
    outcomes, poas, decided = set(ids), set(ids), set(presented)  # what is still missing

    def settles(record: StoredRecord) -> bool:
        payload = _payload(record.value or b"")
        if isinstance(payload, QuorumReached | RequestDenied | RequestExpired):
            outcomes.discard(payload.request_id)
        elif isinstance(payload, PoaIssued):
            poas.discard(payload.request_id)
        elif isinstance(payload, BrokerDecision):
            decided.discard(payload.action_id)
        return not (outcomes or poas or decided)

    with suppress(AssertionError):
        await waits.records(env.bootstrap, topics, settles, timeout=timeout, what="every outcome, PoA and decision")
    return _tally(await _committed(env.bootstrap, env.namespace))


async def _run(env: ScaleEnv, n: int, rate: float, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    presenting = asyncio.Event()
    presenter = asyncio.create_task(_present(env, presenting))
    faults = asyncio.create_task(_faults(env, rng, rounds))
    ids = await _publish(env, n, rate)
    done = await faults
    assert done["freeze"] == done["kill"] == rounds * len(SCALED)

    # Every request gets its PoA; the presenter presents each one as it appears.
    await _settled(env, ids, {}, timeout=300)
    presenting.set()
    presented = await presenter
    tally = await _settled(env, ids, presented, timeout=180)

    assert set(tally.outcomes) == ids, f"requests without an outcome: {sorted(ids - set(tally.outcomes))[:5]}"
    assert max(tally.outcomes.values()) == 1, f"two outcomes: {[k for k, v in tally.outcomes.items() if v > 1][:5]}"
    assert set(tally.kinds.values()) == {"QuorumReached"}, Counter(tally.kinds.values())
    assert set(tally.poas) == ids, f"requests without a PoA: {sorted(ids - set(tally.poas))[:5]}"
    assert max(tally.poas.values()) == 1, f"two PoAs: {[k for k, v in tally.poas.items() if v > 1][:5]}"
    assert set(presented) == set(tally.decisions), "presented actions without a decision"
    assert max(tally.decisions.values()) == 1, "an action decided twice"
    assert set(tally.allows) == ids, f"never allowed: {sorted(ids - set(tally.allows))[:5]}; denied for {tally.denials}"
    assert max(tally.allows.values()) == 1, f"allowed twice: {[k for k, v in tally.allows.items() if v > 1][:5]}"
    await _audit_is_exact(env)
    print(
        f"\nscale-out: {n} requests, {len(presented)} actions, instances "
        f"{ {k: len(v) for k, v in env.instances.items()} }, faults {dict(done)}: "
        "one outcome, one PoA and one allow each"
    )


async def _audit_is_exact(env: ScaleEnv) -> None:
    """The audit store holds exactly the committed records, each once (positions compared as sets)."""
    records = await _committed(env.bootstrap, env.namespace)
    # Every record scanned is committed: the sink's positions reaching the end offsets is the event.
    await caught_up(env.bootstrap, env.namespace, env.db_url, timeout=120)
    engine = make_engine(env.db_url)
    with engine.connect() as conn:
        stored = {
            (row.topic, row.partition, row.offset)
            for row in conn.execute(select(audit_events.c.topic, audit_events.c.partition, audit_events.c.offset))
        }
    missing = set(records) - stored
    assert not missing, f"{len(missing)} committed records are not in the audit store: {sorted(missing)[:3]}"
    # Anything stored beyond that scan must be committed too: records that landed after it.
    later = stored - set(records)
    if later:
        again = await _committed(env.bootstrap, env.namespace)
        assert later <= set(again), f"the audit store holds uncommitted records: {sorted(later - set(again))[:3]}"


async def test_scale_out_survives_freezes_kills_and_rolling_restarts(scale_env: ScaleEnv) -> None:
    await _run(
        scale_env,
        n=int(os.environ.get("ATB_SCALE_REQUESTS", "240")),
        rate=float(os.environ.get("ATB_SCALE_RATE", "15")),
        rounds=int(os.environ.get("ATB_SCALE_ROUNDS", "1")),
        seed=int(os.environ.get("ATB_SCALE_SEED", "20261204")),
    )


@pytest.mark.soak
async def test_scale_out_soak(scale_env: ScaleEnv) -> None:
    await _run(
        scale_env,
        n=int(os.environ.get("ATB_SOAK_SCALE_REQUESTS", "5000")),
        rate=float(os.environ.get("ATB_SOAK_SCALE_RATE", "40")),
        rounds=int(os.environ.get("ATB_SOAK_SCALE_ROUNDS", "5")),  # 5 x 4 services: 20 freezes, 20 kills
        seed=int(os.environ.get("ATB_SOAK_SEED", "7")),
    )
