"""The audit sink over the in-memory bus: every record of every topic stored once, in a tree that verifies.

The sink runs as its tracker (`AuditIngest`) on the real audit store (SQLite,
alembic), fed by the bus as `atb_runtime.tracking.TrackingConsumer` feeds it;
the records are what the real approvals, issuer and broker produce for a
request from start to action. The store is checked the way `atb audit verify`
checks it (`audit_sink.evidence.verify_store`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from audit_sink.adapters.db import AuditStore, audit_events
from audit_sink.adapters.signing import NoteSigner
from audit_sink.evidence import verify_store
from audit_sink.service import AuditIngest
from contracts import Topic
from tests.service.bus import Bus, MemoryBus
from tests.service.look import poas, required
from tests.service.world import World

HIGH = "sap.payment.execute"


async def _everything(bus: MemoryBus) -> set[tuple[str, int, int]]:
    return {(r.topic, r.partition, r.offset) for topic in Topic for r in await bus.records(topic)}


def _stored(store: AuditStore) -> list[tuple[str, int, int]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(audit_events.c.topic, audit_events.c.partition, audit_events.c.offset).order_by(audit_events.c.seq)
        )
        return [(t, p, o) for t, p, o in rows]


async def _chain(bus: MemoryBus, world: World, request_id: str) -> None:
    """A high-risk request from start to one allowed action and one replay, plus garbage on the requests topic."""
    for sut in (world.approvals()[1], world.issuer()[1], world.broker()[1]):
        await bus.attach(sut)
    request, record = world.request(request_id, HIGH, resource="sap:invoice/1")
    await bus.publish([record])
    await bus.publish_raw(Topic.POA_REQUESTS, b"req-garbage", b"\xff\xfe not json", 0)
    await bus.settle()
    asked = await required(bus, request_id)
    await bus.publish([world.vote(asked, "alice")[1], world.vote(asked, "bob")[1]])
    await bus.settle()
    [poa] = await poas(bus, request_id)
    await bus.publish([world.action(poa, request)[1], world.action(poa, request)[1]])
    await bus.settle()


async def _sink(bus: Bus, world: World, **overrides: object) -> tuple[MemoryBus, AuditIngest, AuditStore, NoteSigner]:
    assert isinstance(bus, MemoryBus), "the audit sink's tracking loop runs on the in-memory bus"
    ingest, store, signer = world.audit_sink(bus, **overrides)
    await ingest.start()
    bus.track("audit-sink", ingest, already_recorded=(IntegrityError,))
    return bus, ingest, store, signer


async def test_every_record_of_every_topic_is_stored_exactly_once_and_the_tree_verifies(bus: Bus, world: World) -> None:
    bus, ingest, store, signer = await _sink(bus, world, checkpoint_every=10)
    await _chain(bus, world, "req-audit-1")
    await ingest.stop()  # a graceful stop signs what is not signed yet
    await bus.settle()  # its announcement is stored too
    await ingest.stop()  # and signed: the announcement of that last checkpoint is the one record not stored

    stored = _stored(store)
    assert set(stored) <= await _everything(bus)
    unstored = (await _everything(bus)) - set(stored)
    [(topic, partition, offset)] = unstored
    [last] = [r for r in await bus.records(Topic.AUDIT) if (r.partition, r.offset) == (partition, offset)]
    assert last.value is not None
    assert topic == world.topic(Topic.AUDIT)
    assert b'"audit_type":"audit_checkpoint_signed"' in last.value
    report = verify_store(store.engine, signer.verifier, strict=True)
    assert report.problems == ()
    assert (report.rows, report.leaves, report.uncovered) == (len(stored), len(stored), 0)
    assert report.checkpoints >= 2  # every 10 events, and at the stop


async def test_the_garbage_and_the_poa_are_kept_as_received_without_the_bearer_token(bus: Bus, world: World) -> None:
    bus, ingest, store, _ = await _sink(bus, world)
    await _chain(bus, world, "req-audit-2")
    [poa] = await poas(bus, "req-audit-2")
    with store.engine.connect() as conn:
        garbage = conn.execute(
            select(audit_events.c.decode_error, audit_events.c.raw).where(
                audit_events.c.record_key == b"req-garbage", audit_events.c.topic == world.topic(Topic.POA_REQUESTS)
            )
        ).one()
        issued = conn.execute(
            select(audit_events.c.raw, audit_events.c.redacted).where(
                audit_events.c.topic == world.topic(Topic.POA_ISSUED)
            )
        ).one()
    assert garbage.raw == b"\xff\xfe not json"
    assert garbage.decode_error
    assert issued.redacted
    assert poa.token.encode() not in issued.raw
    await ingest.stop()


async def test_a_restarted_sink_stores_nothing_twice_and_a_replayed_batch_is_refused(bus: Bus, world: World) -> None:
    bus, ingest, store, signer = await _sink(bus, world)
    await _chain(bus, world, "req-audit-3")
    before = _stored(store)
    await ingest.stop()
    bus.untrack("audit-sink")

    again, same_store, _ = world.audit_sink(bus)
    await again.start()
    bus.track("audit-sink", again, already_recorded=(IntegrityError,))
    await bus.settle()
    await again.stop()
    await bus.settle()
    after = _stored(same_store)
    assert after[: len(before)] == before
    assert set(after) == await _everything(bus)

    # A batch delivered again from old positions (another writer, a consumer behind the store): nothing twice,
    # and the stored positions do not move back.
    positions = dict(await again.positions())
    first = (await bus.records(Topic.POA_REQUESTS))[:1]
    replay = [bus.incoming(r) for r in first]
    await again.record(replay, {(first[0].topic, first[0].partition): first[0].offset + 1})
    assert _stored(same_store) == after
    assert dict(await again.positions()) == positions
    report = verify_store(same_store.engine, signer.verifier)
    # Only the stored announcement of the last checkpoint is not under a signature yet.
    assert (report.problems, report.uncovered) == ((), 1)
