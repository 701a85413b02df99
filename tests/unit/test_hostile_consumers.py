"""Consumers dead-letter what they cannot decode, verify or use, and audit it (issue 14, finding 4).

Pure parts, without a broker: the issuer on the outcomes topic, the broker on
actions with a bad signature, the group-less topic follower (gateway, chat,
broker), and the chat service's check of an ApprovalRequired's proof. The same
paths run against the real Kafka in tests/e2e/test_hostile_input.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka.structs import ConsumerRecord

from atb_identity import TrustBundle, bundle_path, ensure_svid, sign_envelope
from atb_runtime import DeadLetters, Incoming, Outgoing
from atb_runtime.follow import FollowerDeadLetters, Refused, TopicFollower, follower_consumer
from broker.service import BrokerService
from chat.adapters.follower import OutcomeProofCheck
from contracts import (
    ActionRequested,
    ApprovalRequired,
    AuditEvent,
    DeadLetter,
    Envelope,
    EventPayload,
    PoaRevoked,
    RequestDenied,
    Tier,
    Topic,
    VoteCast,
    VoteChoice,
    decode_envelope,
    encode_envelope,
    make_envelope,
    payload_of,
    topic_name,
)
from issuer.service import IssuerService
from issuer.settings import IssuerSettings

NS = "hostile."
NOW = datetime.now(UTC)
APPROVALS = "spiffe://atb.local/svc/approvals"
CHAT = "spiffe://atb.local/svc/chat"
ALICE = "spiffe://atb.local/user/alice"
AGENT = "spiffe://atb.local/agent/crm-bot"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("state")
    for spiffe_id in (APPROVALS, CHAT, AGENT):
        ensure_svid(state, spiffe_id)
    return state


@pytest.fixture(scope="module")
def bundle(pki: Path) -> TrustBundle:
    return TrustBundle.load(bundle_path(pki), "atb.local")


def _record(topic: Topic, value: bytes | None, offset: int = 5, key: bytes = b"req-1") -> Incoming:
    return Incoming(topic=topic_name(topic, NS), partition=1, offset=offset, key=key, value=value)


def _raw(payload: EventPayload, source: str = APPROVALS) -> bytes:
    return encode_envelope(make_envelope(payload, source=source))


def _decoded(records: Sequence[Outgoing]) -> list[EventPayload]:
    return [payload_of(decode_envelope(r.value)) for r in records]


def _vote() -> VoteCast:
    return VoteCast(
        request_id="req-1",
        vote_id="vote-1",
        approver_id=ALICE,
        choice=VoteChoice.APPROVE,
        request_digest="sha256:" + "a" * 64,
        channel="cli",
        cast_at=NOW,
    )


def _required() -> ApprovalRequired:
    return ApprovalRequired(
        request_id="req-1",
        tier=Tier.MEDIUM,
        required_approvals=1,
        eligible_groups=("finance",),
        ticket_required=False,
        deadline=NOW + timedelta(minutes=5),
        request_digest="sha256:" + "b" * 64,
        agent_id=AGENT,
        action="crm.contact.update",
        resource="crm:contact/1",
        accountable_party_id="emp-1",
    )


def _denied() -> RequestDenied:
    return RequestDenied(request_id="req-1", code="deny_vote", reason="no", denied_by=APPROVALS, decided_at=NOW)


# -- the issuer on atb.approvals.outcomes -------------------------------------------------------


def _issuer(bundle: TrustBundle) -> IssuerService:
    settings = IssuerSettings(topic_namespace=NS)
    return IssuerService(settings, cast(Any, None), cast(Any, None), bundle)


async def test_the_issuer_dead_letters_an_event_that_is_no_outcome(bundle: TrustBundle) -> None:
    out = await _issuer(bundle)._handle_one(_record(Topic.OUTCOMES, _raw(_vote(), ALICE)))
    letter, audited = _decoded(out)
    assert isinstance(letter, DeadLetter)
    assert (letter.consumer, letter.error_code, letter.original_topic) == (
        "issuer",
        "unexpected_type",
        topic_name(Topic.OUTCOMES, NS),
    )
    assert isinstance(audited, AuditEvent)
    assert audited.audit_type == "event_dead_lettered"


async def test_the_issuer_lets_outcomes_it_does_not_handle_pass_by(bundle: TrustBundle) -> None:
    issuer = _issuer(bundle)
    assert await issuer._handle_one(_record(Topic.OUTCOMES, _raw(_denied()))) == []
    assert await issuer._handle_one(_record(Topic.OUTCOMES, _raw(_required()))) == []


# -- the broker on atb.broker.actions -----------------------------------------------------------


class _Authorizer:
    policy_version = "test"


def _action() -> ActionRequested:
    return ActionRequested(
        request_id="req-1",
        action_id="act-1",
        agent_id=AGENT,
        tenant="acme",
        action="crm.contact.update",
        resource="crm:contact/1",
        poa="x.y.z",
        requested_at=NOW,
    )


def test_a_badly_signed_action_is_denied_audited_and_dead_lettered(pki: Path, bundle: TrustBundle) -> None:
    signed = sign_envelope(make_envelope(_action(), source=AGENT), ensure_svid(pki, AGENT))
    tampered = signed.model_copy(update={"data": {**signed.data, "resource": "crm:contact/2"}})
    broker = BrokerService(cast(Any, _Authorizer()), bundle, source="spiffe://atb.local/svc/broker", namespace=NS)
    out = broker._parse(_record(Topic.BROKER_ACTIONS, encode_envelope(tampered)))
    assert isinstance(out, list)
    events = _decoded(out)
    letters = [e for e in events if isinstance(e, DeadLetter)]
    assert [(lt.consumer, lt.original_topic) for lt in letters] == [("broker", topic_name(Topic.BROKER_ACTIONS, NS))]
    assert {e.audit_type for e in events if isinstance(e, AuditEvent)} >= {
        "event_dead_lettered",
        "identity_proof_rejected",
    }
    assert any(getattr(e, "decision", None) == "deny" for e in events)


# -- the group-less follower --------------------------------------------------------------------


def _message(topic: Topic, value: bytes | None, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic_name(topic, NS), partition=0, offset=offset, timestamp=0, timestamp_type=0,
        key=b"req-1", value=value, checksum=None, serialized_key_size=5,
        serialized_value_size=len(value or b""), headers=[],
    )  # fmt: skip


async def _nothing(events: Sequence[EventPayload]) -> None:
    return None


def _follower(check: Any = None, *, letter_from: int = 0) -> TopicFollower:
    consumer = follower_consumer("gateway", "views", "2")
    dead = FollowerDeadLetters(DeadLetters(consumer, "spiffe://atb.local/svc/gateway", NS), cast(Any, None))
    follower = TopicFollower(
        "127.0.0.1:1", NS, (Topic.OUTCOMES, Topic.POA_REVOKED), _nothing, name="t", dead_letters=dead, check=check
    )
    follower._letter_from = dict.fromkeys(follower._partitions, letter_from)
    return follower


@pytest.mark.parametrize(
    ("topic", "value", "code"),
    [
        (Topic.OUTCOMES, b"\xff garbage", "invalid_envelope"),
        (Topic.OUTCOMES, None, "empty_record"),
        (Topic.OUTCOMES, b"{" + b" " * (600 * 1024) + b"}", "oversize"),
        (Topic.OUTCOMES, _raw(_vote(), ALICE), "unexpected_type"),
        (Topic.POA_REVOKED, _raw(_denied()), "unexpected_type"),
    ],
)
def test_the_follower_dead_letters_what_it_cannot_use(topic: Topic, value: bytes | None, code: str) -> None:
    letters: list[Outgoing] = []
    assert _follower()._usable(_message(topic, value, 7), letters) is None
    letter, audited = _decoded(letters)
    assert isinstance(letter, DeadLetter)
    assert (letter.consumer, letter.error_code, letter.original_offset) == ("gateway-views@2", code, 7)
    assert letter.original_size == len(value or b"")
    assert isinstance(audited, AuditEvent)
    assert audited.audit_type == "event_dead_lettered"


def test_the_follower_passes_legitimate_types_and_letters_only_new_records() -> None:
    letters: list[Outgoing] = []
    follower = _follower(letter_from=10)
    assert follower._usable(_message(Topic.OUTCOMES, _raw(_denied()), 11), letters) == _denied()
    revoked = PoaRevoked(request_id="req-1", jti="j", reason="r", revoked_by="ops", revoked_at=NOW)
    assert follower._usable(_message(Topic.POA_REVOKED, _raw(revoked), 12), letters) == revoked
    assert follower._usable(_message(Topic.OUTCOMES, b"garbage", 9), letters) is None  # read again after a restart
    assert letters == []
    assert follower._usable(_message(Topic.OUTCOMES, b"garbage", 10), letters) is None
    assert len(letters) == 2


def test_a_refusing_check_keeps_the_event_from_the_sink_and_adds_its_records() -> None:
    extra = Outgoing(topic="t", key=b"k", value=b"v")
    follower = _follower(lambda envelope, payload: Refused("proof_invalid", "forged", (extra,)))
    letters: list[Outgoing] = []
    assert follower._usable(_message(Topic.OUTCOMES, _raw(_denied()), 3), letters) is None
    assert letters[-1] == extra
    assert _decoded(letters[:1])[0].error_code == "proof_invalid"  # type: ignore[attr-defined]


# -- chat: an ApprovalRequired must carry the approvals service's proof ---------------------------


def _check(bundle: TrustBundle) -> OutcomeProofCheck:
    return OutcomeProofCheck(bundle, [APPROVALS], source=CHAT, namespace=NS, consumer="chat-cards@0")


def _signed(pki: Path, payload: EventPayload, signer: str) -> Envelope:
    return sign_envelope(make_envelope(payload, source=signer), ensure_svid(pki, signer))


def test_chat_uses_an_approval_required_proven_by_approvals(pki: Path, bundle: TrustBundle) -> None:
    assert _check(bundle)(_signed(pki, _required(), APPROVALS), _required()) is None


@pytest.mark.parametrize("case", ["unsigned", "other_service", "tampered"])
def test_chat_refuses_an_approval_required_not_proven_by_approvals(pki: Path, bundle: TrustBundle, case: str) -> None:
    if case == "unsigned":
        envelope = make_envelope(_required(), source=APPROVALS)
    elif case == "other_service":
        envelope = _signed(pki, _required(), CHAT)
    else:
        signed = _signed(pki, _required(), APPROVALS)
        envelope = signed.model_copy(update={"data": {**signed.data, "required_approvals": 0}})
    refused = _check(bundle)(envelope, payload_of(envelope))
    assert refused is not None
    (rejected,) = _decoded(refused.extra)
    assert isinstance(rejected, AuditEvent)
    assert rejected.audit_type == "identity_proof_rejected"
    assert rejected.request_id == "req-1"
    assert rejected.details["consumer"] == "chat-cards@0"


def test_chat_does_not_check_other_outcomes(bundle: TrustBundle) -> None:
    assert _check(bundle)(make_envelope(_denied(), source=APPROVALS), _denied()) is None
