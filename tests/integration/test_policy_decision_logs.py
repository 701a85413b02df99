"""OPA's decision logs into atb.audit: the pinned OPA, in bundle mode, uploads to the ATB receiver
(atb/policy/decision_logs.py), which publishes to a real Kafka (docs/policy.md, "Decision logs").

- Every decision OPA answers reaches `atb.audit` as a signed AuditEvent `policy_decision_logged`
  with the bundle revision that made it and the input's digest, never the input itself.
- With the receiver down, OPA still answers every decision; it keeps the uploads in its
  buffer and delivers them when the receiver is back.
- With the receiver up but Kafka behind it failing (503), OPA's bounded buffer drops its
  OLDEST chunks once full, counts it in `decision_logs_dropped_buffer_size_limit_bytes_exceeded_total`,
  and delivers the newest ones on recovery.
- The audit sink (a real process) stores each decision, with its revision, in the audit store.

Every wait is on a report: OPA's /v1/status and /metrics, the receiver's own requests, or
`atb.audit` read to its end offsets (which proves an absence).
"""

from __future__ import annotations

import functools
import io
import json
import operator
import secrets
import socket
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import JsonValue
from sqlalchemy import select

from atb.dev.config import HOST, DevConfig
from atb.dev.opa import opa_process
from atb.dev.procs import ManagedProcess
from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.toolchain import build_opa
from atb.policy.bundle import build_bundle
from atb.policy.decision_logs import DECISION_AUDIT_TYPE, RECEIVER_ID, decode_upload, receiver_app
from atb.policy.keys import ensure_dev_key, load_signing_key
from atb.policy.opa_config import BUNDLE_NAME, DecisionLogUpload, opa_config
from atb.policy.publish import publish_to_dir
from atb.policy.server import bundle_server_app
from atb.policy.status import wait_for_revision
from atb_identity import TrustBundle, bundle_path, ensure_svid, verify_origin
from atb_runtime.publisher import Publisher
from atb_runtime.readback import StoredEvent, topic_partitions
from atb_runtime.records import Outgoing
from audit_sink.adapters.db import audit_events, make_engine
from contracts import AuditEvent, Topic, decode_envelope, sha256_digest, topic_name
from tests.e2e.audit_sync import caught_up
from tests.waits import events, until

REPO = DevConfig.from_env().repo
WAIT_S = 60.0
REVISION = "dl-test-1"
SECRET = "sk_live_" + secrets.token_hex(12)
"""Put in every input's parameters: it must never reach atb.audit."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _committed_policy(target: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", "HEAD", "opa/policy"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("opa/policy/"):
                extracted = tar.extractfile(member)
                assert extracted is not None
                path = target / member.name.removeprefix("opa/policy/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(extracted.read())


def _input(extra: str = "") -> dict[str, JsonValue]:
    return {
        "action": "crm.contact.read",
        "tenant": "acme",
        "target_tenant": None,
        "agent_tenants": ["acme"],
        "params": {"api_key": SECRET, "note": extra},
    }


class FlakyPublisher:
    """The receiver's publisher: the real one, or, while `down`, a Kafka that refuses everything."""

    def __init__(self, real: Publisher) -> None:
        self.real = real
        self.down = False

    async def publish(self, records: Sequence[Outgoing]) -> None:
        await self.send_and_wait(records)

    async def flush(self) -> None:
        await self.real.flush()

    async def send_and_wait(self, records: Sequence[Outgoing]) -> None:
        if self.down:
            raise ConnectionError("Kafka is down (test)")
        await self.real.send_and_wait(records)


@dataclass
class Receiver:
    """The receiver app on a fixed port; stop() closes the port (OPA then gets connection refused)."""

    publisher: FlakyPublisher
    app_factory: Callable[[], web.Application]
    port: int
    uploads: list[list[str]] = field(default_factory=list)
    """The decision ids of every upload it was sent, accepted or not."""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = self.app_factory()

        @web.middleware
        async def record(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):  # type: ignore[no-untyped-def]
            if request.method == "POST":
                body = await request.read()
                ids = [str(e["decision_id"]) for e in decode_upload(body)]
                self.uploads.append(ids)
            return await handler(request)

        app.middlewares.append(record)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass
class Opa:
    url: str
    proc: ManagedProcess

    async def decide(self, policy_input: dict[str, JsonValue]) -> tuple[str, dict[str, JsonValue]]:
        """POST /v1/data/atb/poa/requirements: (decision id, result)."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/v1/data/atb/poa/requirements", json={"input": policy_input}) as response,
        ):
            assert response.status == 200
            body = await response.json()
        assert isinstance(body.get("decision_id"), str), body
        assert isinstance(body.get("result"), dict), body
        return body["decision_id"], body["result"]

    async def metric(self, name: str) -> float:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith((name + " ", name + "{")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def until_metric(self, name: str, at_least: float) -> float:
        """OPA's own report on /metrics, polled: OPA notifies no one of its counters."""
        return await until(
            functools.partial(self.metric, name),
            functools.partial(operator.le, at_least),
            timeout=WAIT_S,
            what=f"OPA's {name} reaching {at_least}",
            interval=0.2,
        )


async def _audit_decisions(bootstrap: str, namespace: str) -> dict[str, tuple[AuditEvent, bytes]]:
    """Every policy_decision_logged on atb.audit up to its end offsets now: decision id → (event, raw bytes)."""
    topic = topic_name(Topic.AUDIT, namespace)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    found: dict[str, tuple[AuditEvent, bytes]] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in (await topic_partitions(consumer, [topic]))[topic]]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    envelope = decode_envelope(record.value)
                    if envelope.type != AuditEvent.event_type:
                        continue
                    event = AuditEvent.model_validate(envelope.data)
                    if event.audit_type == DECISION_AUDIT_TYPE:
                        found[str(event.details["decision_id"])] = (event, record.value or b"")
    finally:
        await consumer.stop()
    return found


def _count_of(items: Sequence[object]) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return len(items)

    return count


async def _until_on_audit(bootstrap: str, namespace: str, ids: Sequence[str]) -> dict[str, tuple[AuditEvent, bytes]]:
    """Every decision on atb.audit, read to the end offsets once each of `ids` is committed (a consumer wait)."""
    pending = set(ids)

    def logged(e: StoredEvent) -> bool:
        payload = e.payload
        if isinstance(payload, AuditEvent) and payload.audit_type == DECISION_AUDIT_TYPE:
            pending.discard(str(payload.details["decision_id"]))
        return not pending

    await events(
        bootstrap, [topic_name(Topic.AUDIT, namespace)], logged, timeout=WAIT_S, what=f"{sorted(ids)} on atb.audit"
    )
    return await _audit_decisions(bootstrap, namespace)


@pytest.fixture(scope="module")
async def opa_bin() -> Path:
    return await build_opa(DevConfig.from_env())


@asynccontextmanager
async def _stack(
    tmp_path: Path,
    opa_bin: Path,
    kafka_bootstrap: str,
    namespace: str,
    *,
    buffer_bytes: int,
    token: str | None = None,
) -> AsyncIterator[tuple[Opa, Receiver, TrustBundle]]:
    """A signed bundle (REVISION) on a bundle server, the receiver (started), and OPA uploading to it
    (with the bearer token from a file, when one is given)."""
    policy = tmp_path / "policy"
    _committed_policy(policy)
    key = load_signing_key(ensure_dev_key(tmp_path / "keys" / "signing.pem"))
    built = build_bundle(opa_bin, policy, tmp_path / "built.tar.gz", key, revision=REVISION, run_tests=False)
    store = tmp_path / "store"
    publish_to_dir(built.path, store)
    bundles = web.AppRunner(bundle_server_app(store))
    await bundles.setup()
    bundle_port = _free_port()
    await web.TCPSite(bundles, HOST, bundle_port).start()

    state = tmp_path / "pki"
    svid = ensure_svid(state, RECEIVER_ID)
    trust = TrustBundle.load(bundle_path(state), "atb.local")
    real = Publisher(kafka_bootstrap, "test-decision-logs", linger_ms=0)
    await real.start()
    publisher = FlakyPublisher(real)
    receiver = Receiver(
        publisher, lambda: receiver_app(publisher, svid, namespace=namespace, token=token), _free_port()
    )
    token_path = None
    if token is not None:
        token_file = tmp_path / "decision-log-token"
        token_file.write_text(token + "\n")
        token_path = str(token_file)
    await receiver.start()

    config_file = tmp_path / "opa.json"
    document = opa_config(
        service_url=f"http://{HOST}:{bundle_port}",
        public_pem=key.public_pem,
        algorithm=key.algorithm,
        min_delay_s=1,
        max_delay_s=1,
        persistence_dir=str(tmp_path / "persist"),
        decision_logs=DecisionLogUpload(
            url=receiver.url, buffer_bytes=buffer_bytes, min_delay_s=1, max_delay_s=1, token_path=token_path
        ),
    )
    config_file.write_text(json.dumps(document))
    dev = DevConfig.from_env()
    config = DevConfig(
        repo=dev.repo,
        state_dir=tmp_path / "state",
        cache_dir=dev.cache_dir,
        kafka_port=dev.kafka_port,
        controller_port=dev.controller_port,
        opa_port=_free_port(),
    )
    proc = opa_process(config, opa_bin, config_file=config_file)
    await proc.start(ready_timeout=60.0)
    try:
        await wait_for_revision(config.opa_url, BUNDLE_NAME, lambda r: r.revision == REVISION, timeout_s=WAIT_S)
        yield Opa(config.opa_url, proc), receiver, trust
    finally:
        await proc.stop()
        await receiver.stop()
        await real.stop()
        await bundles.cleanup()


async def test_decisions_reach_atb_audit_with_their_revision_and_outlive_a_receiver_outage(
    tmp_path: Path, opa_bin: Path, kafka_bootstrap: str, namespace: str
) -> None:
    # OPA authenticates its uploads with the bearer token from its token file: the receiver takes no other.
    async with _stack(tmp_path, opa_bin, kafka_bootstrap, namespace, buffer_bytes=1024 * 1024, token="dl-t0ken") as (
        opa,
        receiver,
        trust,
    ):
        first_input = _input("first")
        first, result = await opa.decide(first_input)
        assert result["policy_version"] == REVISION
        seen = await _until_on_audit(kafka_bootstrap, namespace, [first])
        event, raw = seen[first]
        assert event.outcome == "info"
        assert event.details["revision"] == REVISION
        assert event.details["path"] == "atb/poa/requirements"
        assert event.details["input_sha256"] == sha256_digest(first_input)
        assert event.details["actions"] == ["crm.contact.read"]
        summary = event.details["result"]
        assert isinstance(summary, dict)
        assert summary["tier"] == result["tier"]
        assert summary["policy_version"] == REVISION
        assert SECRET.encode() not in raw  # the input's parameters never reach atb.audit
        assert b"first" not in raw
        envelope = decode_envelope(raw)
        assert envelope.source == RECEIVER_ID
        verify_origin(envelope, RECEIVER_ID, trust, attesters=(), at=datetime.now(UTC))  # signed by its SVID

        # The receiver goes away: OPA answers every decision all the same, and fails its uploads.
        await receiver.stop()
        failed_before = await opa.metric("decision_logs_chunks_upload_failed_total")
        outage = [await opa.decide(_input(f"outage-{n}")) for n in range(3)]
        assert all(r["policy_version"] == REVISION for _, r in outage)
        await opa.until_metric("decision_logs_chunks_upload_failed_total", failed_before + 1)
        during = await _audit_decisions(kafka_bootstrap, namespace)  # read to the end offsets: proves absence
        assert not any(i in during for i, _ in outage)

        # Back: OPA delivers what it kept.
        await receiver.start()
        seen = await _until_on_audit(kafka_bootstrap, namespace, [i for i, _ in outage])
        assert all(seen[i][0].details["revision"] == REVISION for i, _ in outage)
        assert await opa.metric("decision_logs_dropped_buffer_size_limit_bytes_exceeded_total") == 0


async def test_a_full_buffer_drops_the_oldest_decisions_and_counts_it(
    tmp_path: Path, opa_bin: Path, kafka_bootstrap: str, namespace: str
) -> None:
    # The smallest buffer the configuration allows (one 32 KiB chunk); each decision's
    # parameters carry 8,000 random hex digits (~4 KiB once gzipped), so about seven fit.
    async with _stack(tmp_path, opa_bin, kafka_bootstrap, namespace, buffer_bytes=32 * 1024) as (opa, receiver, _):
        receiver.publisher.down = True  # the receiver answers 503: OPA keeps every chunk
        ids: list[str] = []
        for n in range(16):
            decision_id, result = await opa.decide(_input(f"{n}-" + secrets.token_hex(4000)))
            assert result["policy_version"] == REVISION  # decided at once, whatever the buffer
            ids.append(decision_id)
            # Wait for two more upload attempts: the second one has flushed this decision into the buffer.
            # OPA retries on its own schedule; the receiver's record of its requests is polled.
            mark = len(receiver.uploads)
            await until(
                _count_of(receiver.uploads),
                functools.partial(operator.le, mark + 2),
                timeout=WAIT_S,
                what="OPA retrying its uploads twice",
            )
        receiver.publisher.down = False
        seen = await _until_on_audit(kafka_bootstrap, namespace, [ids[-1]])
        await opa.until_metric("decision_logs_dropped_buffer_size_limit_bytes_exceeded_total", 1)
        # Everything OPA still held is delivered: wait until an upload attempt finds the buffer empty.
        await opa.until_metric("decision_logs_chunks_uploaded_total", 1)
        await until(
            functools.partial(opa.metric, "decision_logs_buffer_size_bytes"),
            lambda size: size <= 0,
            timeout=WAIT_S,
            what="OPA's decision log buffer emptying",
            interval=0.2,
        )
        seen = await _audit_decisions(kafka_bootstrap, namespace)
        delivered = [i for i in ids if i in seen]
        lost = [i for i in ids if i not in seen]
        assert ids[0] in lost, "the oldest decisions are the ones dropped"
        assert ids[-1] in delivered
        assert delivered == ids[len(lost) :], "what is lost is a prefix: the oldest, never a newer one"
        assert 0 < len(delivered) < len(ids)


async def test_the_audit_store_keeps_each_decision_with_its_revision(
    tmp_path: Path, opa_bin: Path, kafka_bootstrap: str, namespace: str
) -> None:
    """The audit sink (a real process of the namespace) stores policy_decision_logged like any audit event."""
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    sink = ServiceStack(
        StackConfig(kafka_bootstrap, "http://127.0.0.1:9", tmp_path / "sink", namespace=namespace, audit_db_url=db_url),
        services=("audit-sink",),
    )
    await sink.start(ready_timeout=90)
    try:
        async with _stack(tmp_path, opa_bin, kafka_bootstrap, namespace, buffer_bytes=1024 * 1024) as (opa, _, _):
            decisions = [await opa.decide(_input(f"stored-{n}")) for n in range(2)]
            await _until_on_audit(kafka_bootstrap, namespace, [i for i, _ in decisions])
            await caught_up(kafka_bootstrap, namespace, db_url)
        engine = make_engine(db_url)
        query = select(audit_events.c.event_id, audit_events.c.audit_type, audit_events.c.producer, audit_events.c.raw)
        with engine.connect() as conn:
            rows = [r for r in conn.execute(query) if r.audit_type == DECISION_AUDIT_TYPE]
        by_id = {r.event_id: r for r in rows}
        for decision_id, _ in decisions:
            row = by_id[str(uuid.uuid5(uuid.NAMESPACE_URL, f"opa-decision:{decision_id}"))]
            data = orjson.loads(row.raw)["data"]
            assert data["details"]["decision_id"] == decision_id
            assert data["details"]["revision"] == REVISION
            assert SECRET.encode() not in row.raw
        assert len(rows) == len(decisions)
    finally:
        await sink.stop()
