"""Hostile input on the real broker costs dead letters, never the pipeline (issue 14, findings 1, 2 and 4).

One stack for the module (its tests use distinct request ids and keys):

- a ~1 MB record on the requests topic is dead-lettered by approvals with a small
  letter that decodes; valid requests keep getting their PoAs;
- a 700 KB record's letter decodes, and `atb replay redrive` re-drives the exact
  original from its coordinates, refusing letters whose original is gone or changed;
- a VoteCast published on the outcomes topic is dead-lettered by the issuer;
- garbage on the topics that only followers read (revocations, keys) is dead-lettered
  by the broker's followers, named by instance.

Everything waits for the records it expects; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select

from atb.sdk import AgentClient
from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Incoming, Outgoing, Publisher, outgoing_envelope
from atb_runtime.records import dead_letter
from audit_sink.adapters.db import audit_events, make_engine
from contracts import (
    AccountableParty,
    AuditEvent,
    DeadLetter,
    EventDecodeError,
    LegitimateInterest,
    Topic,
    VoteCast,
    VoteChoice,
    decode_envelope,
    encode_envelope,
    make_envelope,
    payload_of,
    spec_for,
    topic_name,
)
from contracts.limits import DEAD_LETTER_PREFIX_BYTES, MAX_EVENT_BYTES
from tests.e2e.audit_sync import caught_up
from tests.e2e.conftest import RunningStack
from tests.e2e.hostile_traffic import consumers_of
from tests.e2e.replay_cli import atb_replay
from tests.waits import events

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/test-bot"
ALICE = "spiffe://atb.local/user/alice"
LEG = LegitimateInterest(
    ref="LI-2024-001", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-100")
)


async def _records(stack: RunningStack, topic: Topic) -> list[Incoming]:
    """Every committed record of a topic, as received."""
    name = topic_name(topic, stack.namespace)
    tps = [TopicPartition(name, p) for p in range(spec_for(topic).partitions)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=2 * 1024 * 1024,
    )
    await consumer.start()
    out: list[Incoming] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = [tp for tp in tps if end[tp] > 0]
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for messages in batches.values():
                out.extend(Incoming(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers)) for m in messages)
            remaining = [tp for tp in remaining if await consumer.position(tp) < end[tp]]
    finally:
        await consumer.stop()
    return out


def _payload(record: Incoming) -> object:
    try:
        return payload_of(decode_envelope(record.value))
    except EventDecodeError:
        return None


async def _letters(
    stack: RunningStack, match: Callable[[DeadLetter], bool], want: int = 1, timeout: float = 60
) -> list[tuple[Incoming, DeadLetter]]:
    """Every dead letter matching `match` (with its record), read to the end offsets once `want` are committed."""
    await events(
        stack.kafka_bootstrap,
        [topic_name(Topic.DLQ, stack.namespace)],
        lambda e: isinstance(e.payload, DeadLetter) and match(e.payload),
        count=want,
        timeout=timeout,
        what=f"{want} matching dead letter(s)",
    )
    found = []
    for record in await _records(stack, Topic.DLQ):
        letter = _payload(record)
        if isinstance(letter, DeadLetter) and match(letter):
            found.append((record, letter))
    return found


async def _audited(
    stack: RunningStack, match: Callable[[AuditEvent], bool], timeout: float = 60, want: int = 1
) -> list[AuditEvent]:
    """Every audit event matching `match`, read to the end offsets once `want` are committed."""
    await events(
        stack.kafka_bootstrap,
        [topic_name(Topic.AUDIT, stack.namespace)],
        lambda e: isinstance(e.payload, AuditEvent) and match(e.payload),
        count=want,
        timeout=timeout,
        what=f"{want} matching audit event(s)",
    )
    return [p for r in await _records(stack, Topic.AUDIT) if isinstance(p := _payload(r), AuditEvent) and match(p)]


async def _publish(stack: RunningStack, *records: Outgoing) -> None:
    async with Publisher(stack.kafka_bootstrap, "hostile-test") as publisher:
        await publisher.send_and_wait(records)


def _raw(stack: RunningStack, topic: Topic, key: str, value: bytes) -> Outgoing:
    return Outgoing(topic=topic_name(topic, stack.namespace), key=key.encode(), value=value, headers=())


def _agent(stack: RunningStack) -> AgentClient:
    svid = ensure_svid(stack.state_dir, AGENT)
    return AgentClient(svid=svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace)


async def test_a_one_megabyte_record_costs_one_small_letter_and_requests_still_get_poas(
    module_stack: RunningStack,
) -> None:
    stack = module_stack
    key = f"poison-{secrets.token_hex(4)}"
    poison = secrets.token_bytes(1_040_000)
    await _publish(stack, _raw(stack, Topic.POA_REQUESTS, key, poison))

    found = await _letters(stack, lambda lt: lt.consumer == "approvals" and lt.original_key == key)
    assert len(found) == 1
    record, letter = found[0]
    assert record.value is not None
    assert len(record.value) < 16 * 1024
    assert letter.error_code == "oversize"
    assert letter.original_size == len(poison)
    assert letter.original_sha256 == "sha256:" + hashlib.sha256(poison).hexdigest()
    assert base64.b64decode(letter.original_prefix_b64) == poison[:DEAD_LETTER_PREFIX_BYTES]

    async with _agent(stack) as agent:
        request_ids = [await agent.request_poa("crm.contact.read", f"crm:contact/{i}", leg=LEG) for i in range(3)]
        issued = [await agent.await_poa(request_id, timeout=60) for request_id in request_ids]
    assert [p.request_id for p in issued] == request_ids


async def test_a_700_kb_request_is_dead_lettered_readably_and_redriven_from_its_coordinates(
    module_stack: RunningStack,
) -> None:
    stack = module_stack
    key = f"big-{secrets.token_hex(4)}"
    original = b'{"pad":"' + b"x" * 700_000 + b'"}'
    assert len(original) > MAX_EVENT_BYTES
    await _publish(stack, _raw(stack, Topic.POA_REQUESTS, key, original))
    found = await _letters(stack, lambda lt: lt.consumer == "approvals" and lt.original_key == key)
    assert [lt.error_code for _, lt in found] == ["oversize"]
    letter = found[0][1]
    assert letter.original_size == len(original)

    replay = partial(atb_replay, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace, state_dir=stack.state_dir)
    args = ("redrive", "--filter", "consumer=approvals", "--filter", f"request_id={key}", "--json")
    dry = await replay(*args)
    assert dry.code == 0, dry.stderr
    assert [r["status"] for r in dry.json()["redrives"]] == ["send"]
    assert dry.json()["sent"] == 0

    done = await replay(*args, "--execute")
    assert done.code == 0, done.stderr
    assert done.json()["sent"] == 1
    # The exact original went back to its topic (at a new offset), and is dead-lettered there again.
    again = await _letters(stack, lambda lt: lt.consumer == "approvals" and lt.original_key == key, want=2)
    assert len(again) == 2
    redriven = next(lt for _, lt in again if lt.original_offset != letter.original_offset)
    assert (redriven.original_sha256, redriven.original_size) == (letter.original_sha256, letter.original_size)
    copies = [
        r
        for r in await _records(stack, Topic.POA_REQUESTS)
        if r.partition == redriven.original_partition and r.offset == redriven.original_offset
    ]
    assert [(c.key, c.value) for c in copies] == [(key.encode(), original)]
    audits = await _audited(stack, lambda e: e.audit_type == "dlq_redriven" and e.request_id == key)
    assert len(audits) == 1


async def test_redrive_refuses_a_letter_whose_original_is_gone_or_changed(module_stack: RunningStack) -> None:
    stack = module_stack
    key = f"forged-{secrets.token_hex(4)}"
    await _publish(stack, _raw(stack, Topic.POA_REQUESTS, key, b"what the letter says"))
    requests = topic_name(Topic.POA_REQUESTS, stack.namespace)
    real = next(r for r in await _records(stack, Topic.POA_REQUESTS) if r.key == key.encode())
    source = "spiffe://atb.local/ops/test"
    changed = Incoming(requests, real.partition, real.offset, real.key, b"not what is on the topic")
    gone = Incoming(requests, real.partition, 10**9, real.key, b"beyond the end of the partition")
    letters = [
        *dead_letter(changed, consumer="forger", error_code="test", reason="x", source=source,
                     namespace=stack.namespace, request_id=key)[:1],
        *dead_letter(gone, consumer="forger", error_code="test", reason="x", source=source,
                     namespace=stack.namespace, request_id=key)[:1],
    ]  # fmt: skip
    await _publish(stack, *letters)
    await _letters(stack, lambda lt: lt.request_id == key and lt.consumer == "forger", want=2)

    run = await atb_replay(
        "redrive", "--filter", "consumer=forger", "--filter", f"request_id={key}", "--execute", "--json",
        bootstrap=stack.kafka_bootstrap, namespace=stack.namespace, state_dir=stack.state_dir,
    )  # fmt: skip
    assert run.code == 3, run.stderr
    report = run.json()
    assert report["sent"] == 0
    assert report["refused"] == 2
    assert sorted(r["status"] for r in report["redrives"]) == ["digest_mismatch", "original_gone"]
    assert all(r["why"] for r in report["redrives"])


async def test_a_vote_on_the_outcomes_topic_is_dead_lettered_by_the_issuer(module_stack: RunningStack) -> None:
    stack = module_stack
    request_id = f"wrong-{secrets.token_hex(4)}"
    vote = VoteCast(
        request_id=request_id,
        vote_id=f"vote-{uuid.uuid4().hex}",
        approver_id=ALICE,
        choice=VoteChoice.APPROVE,
        request_digest="sha256:" + "0" * 64,
        channel="cli",
        cast_at=datetime.now(UTC),
    )
    envelope = sign_envelope(make_envelope(vote, source=ALICE), ensure_svid(stack.state_dir, ALICE))
    await _publish(stack, outgoing_envelope(envelope, topic_name(Topic.OUTCOMES, stack.namespace)))

    found = await _letters(stack, lambda lt: lt.request_id == request_id and lt.consumer == "issuer")
    assert [lt.error_code for _, lt in found] == ["unexpected_type"]
    # The gateway's view follower reads the outcomes too, and says so under its instance's name.
    views = await _letters(stack, lambda lt: lt.request_id == request_id and lt.consumer.startswith("gateway-views@"))
    assert [lt.error_code for _, lt in views] == ["unexpected_type"]
    audits = await _audited(
        stack,
        lambda e: e.audit_type == "event_dead_lettered" and e.request_id == request_id and e.actor.endswith("/issuer"),
    )
    assert audits


@pytest.mark.parametrize(("topic", "role"), [(Topic.POA_REVOKED, "revocations"), (Topic.KEYS, "keys")])
async def test_garbage_on_a_followed_topic_is_dead_lettered_by_each_follower(
    module_stack: RunningStack, topic: Topic, role: str
) -> None:
    stack = module_stack
    key = f"garbage-{secrets.token_hex(4)}"
    await _publish(stack, _raw(stack, topic, key, b'{"truncated json'))
    # Every follower of the topic letters it once: the broker's, and on atb.keys also approvals' and the
    # issuer's passkey registries (tests/e2e/hostile_traffic.py CONSUMERS).
    followers = sorted(consumers_of(topic))
    assert f"broker-{role}@0" in followers
    found = await _letters(stack, lambda lt: lt.original_key == key, want=len(followers))
    assert sorted((lt.consumer, lt.error_code) for _, lt in found) == [(f, "invalid_envelope") for f in followers]
    audits = await _audited(
        stack, lambda e: e.audit_type == "event_dead_lettered" and e.request_id == key, want=len(followers)
    )
    assert sorted(str(e.details["consumer"]) for e in audits) == followers


async def test_a_deeply_nested_record_is_dead_lettered_and_stored_as_undecodable_without_stopping_the_sink(
    module_stack: RunningStack,
) -> None:
    """A valid-looking envelope whose data nests 20,000 arrays deep (40 KB): approvals letters it, and
    the audit sink keeps its bytes as `undecodable`. Its header decoder used to raise RecursionError
    on it, which ended the sink: nothing after it was stored."""
    stack = module_stack
    key = f"deep-{secrets.token_hex(4)}"
    body = make_envelope(
        AuditEvent(audit_type="x", request_id=key, actor=AGENT, outcome="info", occurred_at=datetime.now(UTC)),
        source=AGENT,
    )
    marker = b'"__deep__"'
    template = encode_envelope(body.model_copy(update={"data": {"deep": "__deep__"}}))
    deep = template.replace(marker, b"[" * 20_000 + b"]" * 20_000)
    await _publish(stack, _raw(stack, Topic.POA_REQUESTS, key, deep))

    found = await _letters(stack, lambda lt: lt.consumer == "approvals" and lt.original_key == key)
    assert [lt.error_code for _, lt in found] == ["invalid_envelope"]
    async with _agent(stack) as agent:  # the pipeline goes on, and so does the sink (below)
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/deep", leg=LEG)
        await agent.await_poa(request_id, timeout=60)
    await caught_up(stack.kafka_bootstrap, stack.namespace, stack.db_url)
    engine = make_engine(stack.db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(audit_events.c.event_type, audit_events.c.decode_error, audit_events.c.raw).where(
                audit_events.c.record_key == key.encode(),
                audit_events.c.topic == topic_name(Topic.POA_REQUESTS, stack.namespace),
            )
        ).all()
        issued = conn.execute(
            select(func.count()).where(
                audit_events.c.request_id == request_id, audit_events.c.event_type.like("%poa.issued%")
            )
        ).scalar_one()
    engine.dispose()
    assert [(r.event_type, r.raw) for r in rows] == [("undecodable", deep)]
    assert str(rows[0].decode_error).startswith("invalid_envelope: ")
    assert issued == 1
