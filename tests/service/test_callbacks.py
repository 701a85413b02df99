"""Outcome callbacks over the in-memory bus: the issuer hands each outcome of a request with a callback to its notifier.

The real approvals and issuer services; the notifier is a recording one
(`issuer.ports.OutcomeNotifier`): signing, the allowlist, retries and their
audits are the webhook notifier's own (tests/integration/test_webhook.py, and
tests/e2e/test_callbacks.py on the real stack). Here: which outcomes are
told, with which body and delivery id, and that a forged outcome is told to nobody.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from atb_runtime import Incoming
from atb_runtime.records import run_after_commit
from contracts import PoaIssued, RequestDenied, Topic, VoteChoice, decode_envelope, digest_of, payload_of, topic_name
from tests.service.bus import Bus
from tests.service.clock import Clock
from tests.service.look import kinds, outcomes, poas, quorum, required
from tests.service.world import AGENT, World

LOW, HIGH = "crm.contact.read", "iam.role.assign"
HOOK = "https://hooks.example.com/atb"


@dataclass
class RecordingNotifier:
    told: list[tuple[str, str, dict[str, object], str | None]] = field(default_factory=list)
    """(request id, url, body, delivery id) of each notification, in order."""

    async def notify(self, request_id: str, url: str, body: bytes, delivery_id: str | None = None) -> str | None:
        self.told.append((request_id, url, json.loads(body), delivery_id))
        return None


async def _start(bus: Bus, world: World) -> RecordingNotifier:
    notifier = RecordingNotifier()
    await bus.attach(world.approvals()[1])
    await bus.attach(world.issuer(notifier=notifier)[1])
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


async def test_an_outcome_is_told_only_once_its_transaction_committed(bus: Bus, world: World) -> None:
    """A batch handled but not committed (aborted, or a thawed zombie's, fenced) tells nobody.

    tests/e2e/test_fencing.py freezes a real worker with SIGSTOP and shows that the
    processor runs these effects only after its transaction committed.
    """
    notifier = RecordingNotifier()
    await bus.attach(world.approvals()[1])
    await bus.publish([world.request("req-cb-commit", LOW, callback_url=HOOK)[1]])
    await bus.settle()
    await quorum(bus, "req-cb-commit")
    outcomes_topic = topic_name(Topic.OUTCOMES, world.namespace)
    records = [
        Incoming(topic=outcomes_topic, partition=r.partition, offset=r.offset, key=r.key, value=r.value)
        for r in await bus.records(Topic.OUTCOMES)
    ]
    issuer = world.issuer(notifier=notifier)[1]

    outputs = await issuer.handle(records)
    [poa] = [p for o in outputs if o.value and isinstance(p := payload_of(decode_envelope(o.value)), PoaIssued)]
    assert notifier.told == [], "told before its transaction committed"

    await run_after_commit(outputs)  # the processor, once the commit succeeded
    assert [(t[0], t[2]["jti"]) for t in notifier.told] == [("req-cb-commit", poa.jti)]
