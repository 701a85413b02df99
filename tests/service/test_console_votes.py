"""Approvals counts a console vote only with its approver's passkey assertion, verified on its own.

The console's passkeys reach approvals as they do in approvals/main.py: a follower of the keys
topic whose check admits only the console's own proof, and an enrollment only with an enrollment
officer's grant inside (`atb_runtime.passkeys.AnnouncementCheck`). Assertions are
made by the software authenticator of tests/unit/test_passkey.py, over the challenge the console
derives from the request digest, the decision and a nonce.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import jwt

from atb_identity import sign_envelope
from atb_identity.passkey import b64url
from atb_runtime import DeadLetters, Outgoing
from atb_runtime.passkeys import CONSOLE, AnnouncementCheck, PasskeyRegistry
from contracts import (
    ApprovalRequired,
    PoaClaims,
    QuorumReached,
    RequestDenied,
    Tier,
    Topic,
    VoteChoice,
    encode_envelope,
    make_envelope,
)
from contracts.approval_events import DelegationGranted, VoteOnBehalf, delegation_challenge
from contracts.console_events import PasskeyAssertion, PasskeyEnrolled, PasskeyRevoked, VoteCastV2, vote_challenge
from tests.passkey_support import OFFICER
from tests.passkey_support import grant as passkey_grant
from tests.service.bus import Bus, MemoryBus
from tests.service.look import audit_events, dead_letters, kinds, one, outcomes, poas, required
from tests.service.world import APPROVALS, CHAT, ISSUER, World, approver_id
from tests.unit.test_passkey import ORIGIN, RP_ID, SoftAuthenticator

HIGH = "iam.role.assign"
FOLLOWER = "atb-approvals-passkeys"
CHALLENGE = "challenge: clientDataJSON.challenge is not the expected challenge"
NO_ASSERTION = "a console vote on a request whose tier is high needs the approver's passkey assertion"


def _not_enrolled(device: SoftAuthenticator) -> str:
    return f"credential {device.credential_id} is not enrolled, or was revoked"


def _enrolled(
    world: World,
    device: SoftAuthenticator,
    principal: str,
    *,
    by: str = CONSOLE,
    grant: str | None = "",
    late_s: float = 0,
) -> Outgoing:
    """The console's announcement of `device` for `principal`, `late_s` after carol's grant (`grant` "": a
    fresh one)."""
    now = world.clock.now() + timedelta(seconds=late_s)
    event = PasskeyEnrolled(
        principal=principal,
        credential_id=device.credential_id,
        public_key=b64url(device.enrolled().public_key),
        sign_count=0,
        rp_id=RP_ID,
        origins=(ORIGIN,),
        user_verified=True,
        enrolled_at=now,
        grant=passkey_grant(world.svid(OFFICER), principal, world.clock.now()) if grant == "" else grant,
    )
    return world.signed(event, by)


def _assertion(device: SoftAuthenticator, digest: str, choice: VoteChoice = VoteChoice.APPROVE) -> PasskeyAssertion:
    nonce = b64url(secrets.token_bytes(16))
    return device.sign(vote_challenge(digest, choice, nonce), nonce=nonce)


def _vote(
    world: World, asked: ApprovalRequired, name: str, assertion: PasskeyAssertion | None, *, vote_id: str
) -> Outgoing:
    vote = VoteCastV2(
        request_id=asked.request_id,
        vote_id=vote_id,
        approver_id=approver_id(name),
        choice=VoteChoice.APPROVE,
        request_digest=asked.request_digest,
        channel="console",
        cast_at=world.clock.now(),
        assertion=assertion,
    )
    return world.signed(vote, CONSOLE)


def _followed(bus: Bus, world: World, name: str, source: str) -> PasskeyRegistry:
    """A passkey registry fed from the keys topic, as approvals/main.py and issuer/main.py wire it."""
    assert isinstance(bus, MemoryBus)
    registry = PasskeyRegistry()
    check = AnnouncementCheck(
        registry, world.bundle, world.directory, source=source, namespace=world.namespace, consumer=name
    )
    bus.follow(name, (Topic.KEYS,), registry.take, check=check, dead=DeadLetters(name, source, world.namespace))
    return registry


async def _approvals_with_passkeys(bus: Bus, world: World) -> None:
    _, sut = world.approvals(passkeys=_followed(bus, world, FOLLOWER, APPROVALS))
    await bus.attach(sut)


async def _refusals(bus: Bus, request_id: str) -> list[tuple[str, str, str]]:
    """(vote id, code, why) of every refused vote of the request, in order."""
    refused = []
    for event in await audit_events(bus, request_id):
        if event.audit_type == "approval_vote_refused":
            code, why = event.reason.split(": ", 1)
            refused.append((str(event.details.get("vote_id")), code, why))
    return refused


async def test_a_console_vote_counts_toward_a_high_quorum_only_with_its_approvers_valid_assertion(
    bus: Bus, world: World
) -> None:
    await _approvals_with_passkeys(bus, world)
    alice, bob, carol, mallory = (SoftAuthenticator() for _ in range(4))
    # The console enrols alice's, bob's and carol's passkeys; the chat service's announcement of a
    # passkey for bob is not the console's: refused and dead-lettered, never in force.
    await bus.publish(
        [
            _enrolled(world, alice, "alice"),
            _enrolled(world, bob, "bob"),
            _enrolled(world, carol, "carol"),
            _enrolled(world, mallory, "bob", by=CHAT),
        ]
    )
    _, other = world.request("req-other", HIGH, resource="crm:contact/7")
    _, record = world.request("req-console", HIGH)
    await bus.publish([other, record])
    await bus.settle()
    asked, asked_other = await required(bus, "req-console"), await required(bus, "req-other")
    assert asked.request_digest != asked_other.request_digest

    alice_approves = _assertion(alice, asked.request_digest)
    await bus.publish(
        [
            _vote(world, asked, "alice", alice_approves, vote_id="v-alice"),
            _vote(world, asked, "alice", alice_approves, vote_id="v-alice-replayed"),
            _vote(world, asked, "bob", None, vote_id="v-bob-no-assertion"),
            _vote(world, asked, "bob", _assertion(mallory, asked.request_digest), vote_id="v-bob-forged-enrolment"),
            _vote(world, asked, "bob", _assertion(alice, asked.request_digest), vote_id="v-bob-alices-key"),
            _vote(world, asked, "carol", _assertion(carol, asked_other.request_digest), vote_id="v-carol-other-req"),
            _vote(
                world,
                asked,
                "carol",
                _assertion(carol, asked.request_digest, VoteChoice.DENY),
                vote_id="v-carol-other-choice",
            ),
        ]
    )
    await bus.settle()
    bob_id = approver_id("bob")
    # Only alice's vote counted: the request is still open, one approval short.
    assert kinds(await outcomes(bus, "req-console")) == ["ApprovalRequired"]
    assert await _refusals(bus, "req-console") == [
        ("v-alice-replayed", "assertion_invalid", "counter: signature counter 1 is not above 1"),
        ("v-bob-no-assertion", "assertion_invalid", NO_ASSERTION),
        ("v-bob-forged-enrolment", "assertion_invalid", _not_enrolled(mallory)),
        ("v-bob-alices-key", "assertion_invalid", f"credential {alice.credential_id} is alice's, not {bob_id}'s"),
        ("v-carol-other-req", "assertion_invalid", CHALLENGE),
        ("v-carol-other-choice", "assertion_invalid", CHALLENGE),
    ]
    letters = await dead_letters(bus)
    assert [(consumer, topic, code) for consumer, topic, _, code in letters] == [
        (FOLLOWER, world.topic(Topic.KEYS), "claim_not_proven")
    ]

    # Bob's own passkey: the second distinct approver, and the quorum.
    await bus.publish([_vote(world, asked, "bob", _assertion(bob, asked.request_digest), vote_id="v-bob")])
    await bus.settle()
    events = await outcomes(bus, "req-console")
    assert kinds(events) == ["ApprovalRequired", "QuorumReached"]
    quorum = one(events, QuorumReached)
    assert sorted(v.approver_id for v in quorum.votes) == ["alice", "bob"]
    assert all("atb.approvals.vote_cast.v2" in v.vote_event for v in quorum.votes)


async def test_a_revoked_passkey_no_longer_makes_a_console_vote_count(bus: Bus, world: World) -> None:
    await _approvals_with_passkeys(bus, world)
    alice = SoftAuthenticator()
    revoked = PasskeyRevoked(
        principal="alice", credential_id=alice.credential_id, revoked_by="alice", revoked_at=world.clock.now()
    )
    _, record = world.request("req-revoked", HIGH)
    await bus.publish([_enrolled(world, alice, "alice"), world.signed(revoked, CONSOLE), record])
    await bus.settle()
    asked = await required(bus, "req-revoked")
    await bus.publish([_vote(world, asked, "alice", _assertion(alice, asked.request_digest), vote_id="v-alice")])
    await bus.settle()
    assert await _refusals(bus, "req-revoked") == [("v-alice", "assertion_invalid", _not_enrolled(alice))]


async def test_the_issuer_verifies_each_counted_console_vote_again_with_its_own_registry(
    bus: Bus, world: World
) -> None:
    await _approvals_with_passkeys(bus, world)
    _, issuer = world.issuer(passkeys=_followed(bus, world, "atb-issuer-passkeys", ISSUER))
    await bus.attach(issuer)
    alice, bob = SoftAuthenticator(), SoftAuthenticator()
    _, record = world.request("req-console-poa", HIGH)
    await bus.publish([_enrolled(world, alice, "alice"), _enrolled(world, bob, "bob"), record])
    await bus.settle()
    asked = await required(bus, "req-console-poa")
    await bus.publish(
        [
            _vote(world, asked, "alice", _assertion(alice, asked.request_digest), vote_id="v-alice"),
            _vote(world, asked, "bob", _assertion(bob, asked.request_digest), vote_id="v-bob"),
        ]
    )
    await bus.settle()
    assert kinds(await outcomes(bus, "req-console-poa")) == ["ApprovalRequired", "QuorumReached"]
    [poa] = await poas(bus, "req-console-poa")
    claims = PoaClaims.model_validate(jwt.decode(poa.token, options={"verify_signature": False}))
    assert claims.leg.dual_control is not None
    recorded = {(a.id, a.channel, a.device_bound) for a in claims.leg.dual_control.approvers}
    assert recorded == {("alice", "console", True), ("bob", "console", True)}


async def test_the_issuer_refuses_a_quorum_whose_console_vote_it_cannot_verify(bus: Bus, world: World) -> None:
    # Approvals counted alice's console vote; the issuer's registry never heard of her passkey
    # (as if approvals had been misled): the quorum is refused, no PoA.
    await _approvals_with_passkeys(bus, world)
    _, issuer = world.issuer(passkeys=PasskeyRegistry())
    await bus.attach(issuer)
    alice, bob = SoftAuthenticator(), SoftAuthenticator()
    _, record = world.request("req-console-deny", HIGH)
    await bus.publish([_enrolled(world, alice, "alice"), _enrolled(world, bob, "bob"), record])
    await bus.settle()
    asked = await required(bus, "req-console-deny")
    await bus.publish(
        [
            _vote(world, asked, "alice", _assertion(alice, asked.request_digest), vote_id="v-alice"),
            _vote(world, asked, "bob", _assertion(bob, asked.request_digest), vote_id="v-bob"),
        ]
    )
    await bus.settle()
    events = await outcomes(bus, "req-console-deny")
    assert kinds(events) == ["ApprovalRequired", "QuorumReached", "RequestDenied"]
    assert one(events, RequestDenied).code == "assertion_invalid"
    assert await poas(bus, "req-console-deny") == []


async def test_a_restarted_approvals_still_refuses_a_replayed_assertion(bus: Bus, world: World) -> None:
    # The counter floor comes from the console ballots on the changelog: a new instance, with a
    # registry that only knows the enrolled counter (0), restores it with the request's state.
    await _approvals_with_passkeys(bus, world)
    alice = SoftAuthenticator()
    _, record = world.request("req-console-restart", HIGH)
    await bus.publish([_enrolled(world, alice, "alice"), record])
    await bus.settle()
    asked = await required(bus, "req-console-restart")
    approved = _assertion(alice, asked.request_digest)
    await bus.publish([_vote(world, asked, "alice", approved, vote_id="v-alice")])
    await bus.settle()

    await bus.detach("approvals")
    _, again = world.approvals(passkeys=_followed(bus, world, "atb-approvals-passkeys-2", APPROVALS))
    await bus.attach(again)
    await bus.settle()  # the new registry has read the keys topic
    await bus.publish([_vote(world, asked, "alice", approved, vote_id="v-alice-replayed")])
    await bus.settle()
    assert await _refusals(bus, "req-console-restart") == [
        ("v-alice-replayed", "assertion_invalid", "counter: signature counter 1 is not above 1")
    ]
    assert kinds(await outcomes(bus, "req-console-restart")) == ["ApprovalRequired"]


async def test_a_console_cannot_enroll_a_passkey_without_an_enrollment_officers_grant(bus: Bus, world: World) -> None:
    """The console's own proof is not enough: each announcement below is the console's, and only the one with
    a valid grant of carol (an officer: the security group) puts a passkey in force."""
    await _approvals_with_passkeys(bus, world)
    now = world.clock.now()
    devices = {name: SoftAuthenticator() for name in ("none", "console", "alice", "other", "late", "long", "ok")}
    twice = passkey_grant(world.svid(OFFICER), "bob", now, grant_id="grant-twice")
    racer, honest = SoftAuthenticator(), SoftAuthenticator()
    await bus.publish(
        [
            _enrolled(world, devices["none"], "bob", grant=None),
            # signed by the console itself, naming carol: not carol's proof
            _enrolled(
                world,
                devices["console"],
                "bob",
                grant=passkey_grant(world.svid(CONSOLE), "bob", now, granted_by=OFFICER),
            ),
            # signed by alice: a manager, not an enrollment officer
            _enrolled(
                world, devices["alice"], "bob", grant=passkey_grant(world.svid(approver_id("alice")), "bob", now)
            ),
            # carol's grant for dave, used for bob
            _enrolled(world, devices["other"], "bob", grant=passkey_grant(world.svid(OFFICER), "dave", now)),
            # enrolled after the grant's window
            _enrolled(
                world,
                devices["late"],
                "bob",
                grant=passkey_grant(world.svid(OFFICER), "bob", now, seconds=60),
                late_s=120,
            ),
            # a window longer than an hour
            _enrolled(
                world, devices["long"], "bob", grant=passkey_grant(world.svid(OFFICER), "bob", now, seconds=7200)
            ),
            # one grant, two credentials: the console racing bob's own enrollment burns the grant for both
            _enrolled(world, honest, "bob", grant=twice),
            _enrolled(world, racer, "bob", grant=twice),
            _enrolled(world, devices["ok"], "bob"),
        ]
    )
    _, record = world.request("req-grants", HIGH)
    await bus.publish([record])
    await bus.settle()
    asked = await required(bus, "req-grants")
    tried = [*devices.items(), ("honest", honest), ("racer", racer)]
    await bus.publish(
        [
            _vote(world, asked, "bob", _assertion(device, asked.request_digest), vote_id=f"v-{name}")
            for name, device in tried
        ]
    )
    await bus.settle()
    refused = {vote_id: why for vote_id, _, why in await _refusals(bus, "req-grants")}
    assert sorted(refused) == sorted(f"v-{name}" for name, _ in tried if name != "ok")
    for name, device in tried:
        if name != "ok":
            assert refused[f"v-{name}"] == _not_enrolled(device), name
    letters = await dead_letters(bus)
    codes = [code for consumer, _, _, code in letters if consumer == FOLLOWER]  # the keys topic's partitions: any order
    assert sorted(codes) == sorted(
        [
            "passkey_grant_missing",
            "passkey_grant_invalid",
            "passkey_enroller_not_allowed",
            "passkey_grant_invalid",
            "passkey_grant_not_in_force",
            "passkey_grant_invalid",
            "passkey_grant_used",
        ]
    )
    audited = [e for e in await audit_events(bus, None) if e.audit_type == "passkey_announcement_refused"]
    assert sorted(str(e.details["rule"]) for e in audited) == sorted(codes)
    assert {e.details["principal"] for e in audited} == {"bob"}


# -- delegation granted in the console, with the delegator's passkey --------------------------------------------

PAYMENT = "sap.payment.execute"  # a manager and a compliance officer


def _console_grant(
    world: World,
    device: SoftAuthenticator | None,
    *,
    delegation_id: str,
    by: str = CONSOLE,
    tamper: bool = False,
) -> str:
    """A DelegationGranted alice -> dave (high) as the console makes it: the console's proof, alice's assertion
    by `device` over the grant (`tamper`: the until is moved after the assertion was made)."""
    now = world.clock.now()
    grant = DelegationGranted(
        delegation_id=delegation_id,
        delegator=approver_id("alice"),
        delegate=approver_id("dave"),
        tiers=(Tier.HIGH,),
        not_before=now,
        until=now + timedelta(hours=1),
        granted_at=now,
    )
    if device is not None:
        nonce = b64url(secrets.token_bytes(16))
        grant = grant.model_copy(update={"assertion": device.sign(delegation_challenge(grant, nonce), nonce=nonce)})
    if tamper:
        grant = grant.model_copy(update={"until": grant.until + timedelta(days=30)})
    envelope = sign_envelope(make_envelope(grant, source=by), world.svid(by))
    return encode_envelope(envelope).decode()


def _for_alice(world: World, asked: ApprovalRequired, grant: str, vote_id: str) -> Outgoing:
    vote = VoteOnBehalf(
        request_id=asked.request_id,
        vote_id=vote_id,
        approver_id=approver_id("dave"),
        on_behalf_of=approver_id("alice"),
        choice=VoteChoice.APPROVE,
        request_digest=asked.request_digest,
        channel="cli",
        cast_at=world.clock.now(),
        delegation_event=grant,
    )
    return world.signed(vote, approver_id("dave"))


async def test_a_delegation_granted_in_the_console_counts_only_with_the_delegators_passkey(
    bus: Bus, world: World
) -> None:
    await _approvals_with_passkeys(bus, world)
    _, issuer = world.issuer(passkeys=_followed(bus, world, "atb-issuer-passkeys", ISSUER))
    await bus.attach(issuer)
    alice, bob = SoftAuthenticator(), SoftAuthenticator()
    _, record = world.request("req-dlg-console", PAYMENT, resource="sap:invoice/4711")
    await bus.publish([_enrolled(world, alice, "alice"), _enrolled(world, bob, "bob"), record])
    await bus.settle()
    asked = await required(bus, "req-dlg-console")
    await bus.publish(
        [
            _for_alice(world, asked, _console_grant(world, None, delegation_id="dlg-bare"), "v-bare"),
            _for_alice(world, asked, _console_grant(world, bob, delegation_id="dlg-bobs-key"), "v-bobs-key"),
            _for_alice(world, asked, _console_grant(world, alice, delegation_id="dlg-tampered", tamper=True), "v-tamp"),
            _for_alice(world, asked, _console_grant(world, alice, delegation_id="dlg-chat", by=CHAT), "v-chat"),
        ]
    )
    await bus.settle()
    refused = {vote_id: (code, why) for vote_id, code, why in await _refusals(bus, "req-dlg-console")}
    assert {vote_id: code for vote_id, (code, _) in refused.items()} == {
        "v-bare": "delegation_invalid",
        "v-bobs-key": "delegation_invalid",
        "v-tamp": "delegation_invalid",
        "v-chat": "delegation_invalid",
    }
    assert "needs the delegator's passkey assertion" in refused["v-bare"][1]
    assert f"is bob's, not {approver_id('alice')}'s" in refused["v-bobs-key"][1]
    assert "challenge" in refused["v-tamp"][1]
    assert "not proven" in refused["v-chat"][1]
    assert kinds(await outcomes(bus, "req-dlg-console")) == ["ApprovalRequired"]

    # alice's own passkey over the grant: dave's vote counts as hers; bob's makes the quorum; the issuer
    # verifies the grant's assertion again with its own registry and records the delegate.
    valid = _console_grant(world, alice, delegation_id="dlg-alice-console")
    await bus.publish([_for_alice(world, asked, valid, "v-dave-for-alice")])
    await bus.publish([_vote(world, asked, "bob", _assertion(bob, asked.request_digest), vote_id="v-bob")])
    await bus.settle()
    assert kinds(await outcomes(bus, "req-dlg-console")) == ["ApprovalRequired", "QuorumReached"]
    [poa] = await poas(bus, "req-dlg-console")
    dual = jwt.decode(poa.token, options={"verify_signature": False})["leg"]["dual_control"]["approvers"]
    assert {(a["id"], a.get("delegate")) for a in dual} == {("alice", approver_id("dave")), ("bob", None)}


async def test_the_issuer_refuses_a_console_grant_its_own_registry_cannot_verify(bus: Bus, world: World) -> None:
    """Approvals counted dave's vote for alice under a console grant; the issuer's registry never heard of
    alice's passkey (as if approvals had been misled): the quorum is refused, no PoA."""
    await _approvals_with_passkeys(bus, world)
    _, issuer = world.issuer(passkeys=PasskeyRegistry())
    await bus.attach(issuer)
    alice = SoftAuthenticator()
    _, record = world.request("req-dlg-unknown", PAYMENT, resource="sap:invoice/4711")
    await bus.publish([_enrolled(world, alice, "alice"), record])
    await bus.settle()
    asked = await required(bus, "req-dlg-unknown")
    grant = _console_grant(world, alice, delegation_id="dlg-unknown")
    await bus.publish([_for_alice(world, asked, grant, "v-dave"), world.vote(asked, "bob")[1]])
    await bus.settle()
    denials = [e for e in await outcomes(bus, "req-dlg-unknown") if isinstance(e, RequestDenied)]
    assert [(d.code, d.denied_by) for d in denials] == [("delegation_invalid", ISSUER)]
    assert "is not enrolled, or was revoked" in denials[0].reason
    assert await poas(bus, "req-dlg-unknown") == []


def _dave_for_alice_in_console(
    world: World,
    asked: ApprovalRequired,
    grant: str,
    assertion: PasskeyAssertion | None,
    vote_id: str,
    *,
    by: str = CONSOLE,
) -> Outgoing:
    """dave's approval in alice's place as the console publishes it: its proof, dave's assertion over the vote."""
    vote = VoteOnBehalf(
        request_id=asked.request_id,
        vote_id=vote_id,
        approver_id="dave",
        on_behalf_of=approver_id("alice"),
        choice=VoteChoice.APPROVE,
        request_digest=asked.request_digest,
        channel="console",
        cast_at=world.clock.now(),
        delegation_event=grant,
        assertion=assertion,
    )
    return world.signed(vote, by)


async def test_a_delegate_approves_in_the_console_only_with_their_own_passkey(bus: Bus, world: World) -> None:
    await _approvals_with_passkeys(bus, world)
    _, issuer = world.issuer(passkeys=_followed(bus, world, "atb-issuer-passkeys", ISSUER))
    await bus.attach(issuer)
    alice, bob, dave = SoftAuthenticator(), SoftAuthenticator(), SoftAuthenticator()
    _, record = world.request("req-dlg-in-console", PAYMENT, resource="sap:invoice/4711")
    enrolled = [_enrolled(world, device, name) for device, name in ((alice, "alice"), (bob, "bob"), (dave, "dave"))]
    await bus.publish([*enrolled, record])
    await bus.settle()
    asked = await required(bus, "req-dlg-in-console")
    grant = _console_grant(world, alice, delegation_id="dlg-alice-for-console-votes")
    await bus.publish(
        [
            _dave_for_alice_in_console(world, asked, grant, None, "v-no-assertion"),
            _dave_for_alice_in_console(world, asked, grant, _assertion(alice, asked.request_digest), "v-alices-key"),
            _dave_for_alice_in_console(world, asked, grant, _assertion(dave, asked.request_digest), "v-chat", by=CHAT),
        ]
    )
    await bus.settle()
    refused = {vote_id: (code, why) for vote_id, code, why in await _refusals(bus, "req-dlg-in-console")}
    assert refused["v-no-assertion"] == ("assertion_invalid", NO_ASSERTION)
    assert refused["v-alices-key"] == ("assertion_invalid", f"credential {alice.credential_id} is alice's, not dave's")
    assert refused["v-chat"][0] == "delegation_invalid"
    assert "cast in the console with the delegate's passkey" in refused["v-chat"][1]
    assert kinds(await outcomes(bus, "req-dlg-in-console")) == ["ApprovalRequired"]

    await bus.publish(
        [
            _dave_for_alice_in_console(world, asked, grant, _assertion(dave, asked.request_digest), "v-dave"),
            _vote(world, asked, "bob", _assertion(bob, asked.request_digest), vote_id="v-bob"),
        ]
    )
    await bus.settle()
    assert kinds(await outcomes(bus, "req-dlg-in-console")) == ["ApprovalRequired", "QuorumReached"]
    [poa] = await poas(bus, "req-dlg-in-console")
    dual = jwt.decode(poa.token, options={"verify_signature": False})["leg"]["dual_control"]["approvers"]
    assert {(a["id"], a.get("delegate"), a.get("channel"), a.get("device_bound")) for a in dual} == {
        ("alice", "dave", "console", True),
        ("bob", None, "console", True),
    }
