"""Outcome callbacks over the in-memory bus: each committed outcome of a request with a callback is told.

The real approvals and issuer services, and the issuer's callback teller as
issuer/main.py wires it (`World.callbacks`); the notifier is a recording one
(`issuer.ports.OutcomeNotifier`): signing, the allowlist, retries and their
audits are the webhook notifier's own (tests/integration/test_webhook.py), and
delivery at least once across a SIGKILL is shown on the real stack
(tests/e2e/test_notices.py). Here: which outcomes are told, with which body and
delivery id; that a forged outcome, an old one and an uncommitted one are told
to nobody.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from atb_identity import sign_envelope
from atb_runtime import Incoming
from contracts import (
    PoaIssued,
    RequestDenied,
    Topic,
    VoteChoice,
    decode_envelope,
    digest_of,
    encode_envelope,
    make_envelope,
    payload_of,
    topic_name,
)
from tests.service.bus import Bus
from tests.service.clock import Clock
from tests.service.look import kinds, outcomes, poas, quorum, required
from tests.service.world import AGENT, ISSUER, World

LOW, HIGH = "crm.contact.read", "iam.role.assign"
HOOK = "https://hooks.example.com/atb"


@dataclass
class RecordingNotifier:
    told: list[tuple[str, str, dict[str, object], str | None]] = field(default_factory=list)
    """(request id, url, body, delivery id) of each notification, in order."""

    async def deliver(self, request_id: str, url: str, body: bytes, delivery_id: str | None = None) -> str:
        self.told.append((request_id, url, json.loads(body), delivery_id))
        return "delivered"


async def _start(bus: Bus, world: World) -> RecordingNotifier:
    notifier = RecordingNotifier()
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer()[1])
    await bus.attach(world.callbacks(notifier))
    return notifier


async def test_an_issued_poa_is_told_to_the_callback_once_and_no_callback_no_notification(
    bus: Bus, world: World
) -> None:
    notifier = await _start(bus, world)
    request, record = world.request("req-cb-low", LOW, callback_url=HOOK)
    await bus.publish([record])
    await bus.publish([world.request("req-cb-none", LOW)[1]])
    await bus.settle()
    [poa] = await poas(bus, "req-cb-low")
    assert await poas(bus, "req-cb-none")
    [(request_id, url, body, delivery)] = notifier.told
    assert (request_id, url, delivery) == ("req-cb-low", HOOK, "dlv-req-cb-low-issued")
    assert body == {
        "type": "atb.outcome.v1",
        "request_id": "req-cb-low",
        "outcome": "issued",
        "decided_at": poa.issued_at.isoformat(),
        "jti": poa.jti,
        "kid": poa.kid,
        "expires_at": poa.expires_at.isoformat(),
    }
    assert "token" not in body  # the agent fetches its PoA from the gateway
    # The callback is not covered by the request digest: the same request without it has the same digest.
    assert digest_of(request) == digest_of(request.model_copy(update={"callback_url": None}))


async def test_a_denial_and_an_expiry_by_approvals_are_told(bus: Bus, world: World, clock: Clock) -> None:
    notifier = await _start(bus, world)
    _, denied_record = world.request("req-cb-deny", HIGH, callback_url=HOOK)
    _, expiring_record = world.request("req-cb-exp", HIGH, callback_url=HOOK)
    await bus.publish([denied_record, expiring_record])
    await bus.settle()
    await bus.publish([world.vote(await required(bus, "req-cb-deny"), "bob", VoteChoice.DENY)[1]])
    await bus.settle()
    assert [(t[0], t[2]["outcome"], t[2]["code"], t[3]) for t in notifier.told] == [
        ("req-cb-deny", "denied", "denied_by_approver", "dlv-req-cb-deny-denied")
    ]

    clock.advance(3601)
    await bus.tick()
    await bus.settle()
    assert kinds(await outcomes(bus, "req-cb-exp"))[-1] == "RequestExpired"
    expired = notifier.told[-1]
    assert (expired[0], expired[2]["outcome"], expired[2]["approvals_counted"], expired[3]) == (
        "req-cb-exp",
        "expired",
        0,
        "dlv-req-cb-exp-expired",
    )
    assert len(notifier.told) == 2


async def test_a_forged_denial_is_told_to_nobody(bus: Bus, world: World, clock: Clock) -> None:
    notifier = await _start(bus, world)
    forged = RequestDenied(
        request_id="req-cb-forged",
        code="denied_by_approver",
        reason="not really",
        denied_by="alice",
        decided_at=clock.now(),
        callback_url=HOOK,
    )
    await bus.publish([world.signed(forged, AGENT)])  # signed, but by the agent, not an approvals service
    await bus.settle()
    assert notifier.told == []


async def test_an_outcome_is_told_only_once_its_record_is_committed(bus: Bus, world: World) -> None:
    """What the issuer handled but did not commit (aborted, or a thawed zombie's batch, fenced) tells nobody:
    the teller reads only what is on the topics."""
    notifier = RecordingNotifier()
    await bus.attach(world.approvals()[1])
    await bus.attach(world.callbacks(notifier))
    await bus.publish([world.request("req-cb-commit", LOW, callback_url=HOOK)[1]])
    await bus.settle()
    await quorum(bus, "req-cb-commit")
    issuer = world.issuer()[1]
    outcomes_topic = topic_name(Topic.OUTCOMES, world.namespace)
    records = [
        Incoming(topic=outcomes_topic, partition=r.partition, offset=r.offset, key=r.key, value=r.value)
        for r in await bus.records(Topic.OUTCOMES)
    ]
    outputs = await issuer.handle(records)  # handled, not committed
    [poa] = [p for o in outputs if o.value and isinstance(p := payload_of(decode_envelope(o.value)), PoaIssued)]
    assert poa.callback_url == HOOK
    await bus.settle()
    assert notifier.told == [], "told before its record was committed"

    await bus.publish(list(outputs))  # the transaction commits
    await bus.settle()
    assert [(t[0], t[2]["jti"]) for t in notifier.told] == [("req-cb-commit", poa.jti)]


async def test_a_poa_whose_callback_was_changed_or_whose_proof_is_not_the_issuers_is_told_to_nobody(
    bus: Bus, world: World
) -> None:
    """The teller signs what it POSTs with the issuer's key: it must never be made to tell a URL, or an
    outcome, that the issuer did not state (a copy of a real PoaIssued with another callback, or one
    naming the issuer as source under someone else's proof)."""
    notifier = RecordingNotifier()
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer()[1])
    await bus.publish([world.request("req-cb-real", LOW, callback_url=HOOK)[1]])
    await bus.settle()
    [poa] = await poas(bus, "req-cb-real")
    [record] = [r for r in await bus.records(Topic.POA_ISSUED) if r.value and b"req-cb-real" in r.value]
    assert record.value is not None
    changed = record.value.replace(HOOK.encode(), b"https://attacker.example/steal")
    await bus.publish_raw(Topic.POA_ISSUED, record.key, changed, record.partition)  # the issuer's proof, broken
    by_agent = make_envelope(poa.model_copy(update={"request_id": "req-cb-claimed"}), source=AGENT)
    claimed = sign_envelope(by_agent, world.svid(AGENT)).model_copy(update={"source": ISSUER})
    await bus.publish_raw(Topic.POA_ISSUED, b"req-cb-claimed", encode_envelope(claimed), record.partition)
    await bus.settle()

    await bus.attach(world.callbacks(notifier))
    await bus.settle()
    assert [(t[0], t[1]) for t in notifier.told] == [("req-cb-real", HOOK)]  # the real one only


async def test_an_outcome_older_than_the_window_and_an_expired_poa_are_told_to_nobody(
    bus: Bus, world: World, clock: Clock
) -> None:
    """A new consumer group reads the topics from their beginning: what is older than the window is no news."""
    notifier = RecordingNotifier()
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer()[1])
    await bus.publish([world.request("req-cb-old", HIGH, callback_url=HOOK)[1]])
    await bus.settle()
    await bus.publish([world.vote(await required(bus, "req-cb-old"), "bob", VoteChoice.DENY)[1]])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-cb-old"))[-1] == "RequestDenied"
    clock.advance(16 * 60)  # past the window (900 s)
    await bus.attach(world.callbacks(notifier))
    await bus.settle()
    assert notifier.told == []  # the denial, proven by approvals, but too old

    await bus.publish([world.request("req-cb-expired", LOW, callback_url=HOOK)[1]])
    await bus.settle()
    assert [t[0] for t in notifier.told] == ["req-cb-expired"]  # fresh: told
    [poa] = await poas(bus, "req-cb-expired")
    clock.advance(int((poa.expires_at - poa.issued_at).total_seconds()) + 1)
    expired = poa.model_copy(update={"request_id": "req-cb-expired-2"})
    await bus.publish([world.signed(expired, ISSUER)])  # fresh record, proven by the issuer, of an expired PoA
    await bus.settle()
    assert [t[0] for t in notifier.told] == ["req-cb-expired"]
