"""contracts.envelope + contracts.events: every event type round-trips; bad records are refused with a code."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel, ValidationError

from contracts.approval_events import (
    ApprovalEscalated,
    DelegationGranted,
    DelegationRevoked,
    ReminderDue,
    VoteOnBehalf,
)
from contracts.canonical import canonical_json, sha256_digest
from contracts.console_events import (
    PasskeyAssertion,
    PasskeyEnrolled,
    PasskeyEnrollmentGranted,
    PasskeyRevoked,
    VoteCastV2,
)
from contracts.envelope import (
    MAX_EVENT_BYTES,
    Envelope,
    EventDecodeError,
    Proof,
    decode_envelope,
    encode_envelope,
    make_envelope,
    payload_of,
    signing_bytes,
)
from contracts.events import (
    EVENT_TYPES,
    ActionRequested,
    ApprovalRequired,
    ApprovalStateChanged,
    AuditEvent,
    BallotRecord,
    BrokerDecision,
    BrokerDecisionV1,
    CountedVote,
    DeadLetter,
    DeadLetterV1,
    Decision,
    EventPayload,
    IssuanceRequested,
    JsonObject,
    PoaIssued,
    PoaRevoked,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    SigningKeyPublished,
    Tier,
    VoteCast,
    VoteChoice,
)
from contracts.leg import LegitimateInterest
from contracts.reasons import Reason, ReasonCode
from contracts.topics import Topic

NOW = datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
AGENT = "spiffe://atb.example/agent/crm-bot"
SOURCE = "spiffe://atb.example/service/test"
REQ = "req-0001"
KID = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
DIGEST = sha256_digest({"x": 1})
LEG: JsonObject = {
    "basis": "LI",
    "ref": "LI-2024-001",
    "description": "Routine system maintenance",
    "jurisdiction": "US",
    "accountable_party": {"type": "employee", "id": "emp-100"},
}


def _issuance() -> IssuanceRequested:
    return IssuanceRequested(
        request_id=REQ,
        agent_id=AGENT,
        tenant="acme",
        target_tenant="acme-eu",
        action="crm.contact.update",
        resource="crm:contact/42",
        params={"email": "new@example.com", "n": 3, "tags": ["a", "b"], "nested": {"ok": True, "none": None}},
        leg=LegitimateInterest.model_validate(LEG),
        requested_at=NOW,
        agent_cert_thumbprint="A" * 43,
    )


def _approval_required() -> ApprovalRequired:
    return ApprovalRequired(
        request_id=REQ,
        tier=Tier.HIGH,
        required_approvals=2,
        eligible_groups=("manager", "compliance"),
        ticket_required=False,
        deadline=NOW + timedelta(hours=1),
        request_digest=DIGEST,
        agent_id=AGENT,
        action="sap.payment.execute",
        resource="sap:payment/9",
        accountable_party_id="emp-100",
    )


def _vote() -> VoteCast:
    return VoteCast(
        request_id=REQ,
        vote_id="vote-1",
        approver_id="manager-001",
        choice=VoteChoice.APPROVE,
        request_digest=DIGEST,
        channel="slack",
        cast_at=NOW,
        reason="looks fine — ü",
    )


def _quorum() -> QuorumReached:
    vote = CountedVote(
        approver_id="manager-001", approver_type="manager", vote_digest=DIGEST, cast_at=NOW, vote_event="{}"
    )
    return QuorumReached(
        request_id=REQ,
        tier=Tier.MEDIUM,
        required_approvals=1,
        request_digest=DIGEST,
        poa_ttl_seconds=300,
        request=_issuance(),
        request_event='{"id":"e"}',
        votes=(vote,),
        decided_at=NOW,
    )


def _denied() -> RequestDenied:
    return RequestDenied(request_id=REQ, code="ticket_required", reason="no ticket", denied_by=SOURCE, decided_at=NOW)


def _expired() -> RequestExpired:
    return RequestExpired(request_id=REQ, deadline=NOW, approvals_counted=1, required_approvals=2)


def _issued() -> PoaIssued:
    return PoaIssued(
        request_id=REQ,
        jti="0123456789abcdef",
        kid=KID,
        agent_id=AGENT,
        action="crm.contact.update",
        tier=Tier.MEDIUM,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
        token="a.b.c",
        token_sha256=DIGEST,
    )


def _revoked() -> PoaRevoked:
    return PoaRevoked(request_id=REQ, jti="0123456789abcdef", reason="incident", revoked_by="sec-1", revoked_at=NOW)


def _action() -> ActionRequested:
    return ActionRequested(
        request_id=REQ,
        action_id="act-1",
        agent_id=AGENT,
        tenant="acme",
        action="crm.contact.update",
        resource="crm:contact/42",
        params={"email": "new@example.com"},
        poa="a.b.c",
        requested_at=NOW,
    )


def _decision() -> BrokerDecision:
    return BrokerDecision(
        request_id=REQ,
        action_id="act-1",
        agent_id=AGENT,
        action="crm.contact.update",
        decision=Decision.DENY,
        reasons=(Reason(ReasonCode.TIER_TOO_LOW, "PoA was issued for low, the action is medium"),),
        action_tier=Tier.MEDIUM,
        policy_version="v1",
        jti="0123456789abcdef",
        decided_at=NOW,
    )


def _decision_v1() -> BrokerDecisionV1:
    return BrokerDecisionV1(
        request_id=REQ,
        action_id="act-1",
        agent_id=AGENT,
        action="crm.contact.update",
        decision=Decision.ALLOW,
        reasons=("poa_valid",),
        policy_version="v1",
        jti="0123456789abcdef",
        decided_at=NOW,
    )


def _audit() -> AuditEvent:
    return AuditEvent(
        audit_type="poa_issued",
        request_id=REQ,
        actor=SOURCE,
        outcome="success",
        details={"tier": "medium", "approver_ids": ["manager-001"]},
        occurred_at=NOW,
    )


def _key() -> SigningKeyPublished:
    return SigningKeyPublished(
        kid=KID,
        alg="EdDSA",
        jwk={"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        issuer=SOURCE,
        not_before=NOW,
        retire_after=NOW + timedelta(days=1),
    )


def _dead() -> DeadLetter:
    return DeadLetter(
        original_topic="atb.poa.requests",
        original_partition=2,
        original_offset=17,
        original_key=REQ,
        original_size=7,
        original_sha256="sha256:" + hashlib.sha256(b"garbage").hexdigest(),
        original_prefix_b64="Z2FyYmFnZQ==",
        consumer="approvals",
        error_code="invalid_envelope",
        reason="bad json",
        request_id=REQ,
    )


def _dead_v1() -> DeadLetterV1:
    return DeadLetterV1(
        original_topic="atb.poa.requests",
        original_partition=2,
        original_offset=17,
        original_key=REQ,
        original_value_b64="Z2FyYmFnZQ==",
        consumer="approvals",
        error_code="invalid_envelope",
        reason="bad json",
        request_id=REQ,
    )


def _state() -> ApprovalStateChanged:
    return ApprovalStateChanged(
        request_id=REQ,
        status="held",
        held_until=NOW + timedelta(minutes=5),
        ballots=(
            BallotRecord(
                vote_id="vote-1",
                identity="spiffe://atb.local/user/alice",
                choice=VoteChoice.APPROVE,
                digest="sha256:" + "a" * 64,
                received_at=NOW,
                channel="cli",
                vote_event="{}",
            ),
        ),
        updated_at=NOW,
    )


def _granted() -> DelegationGranted:
    return DelegationGranted(
        delegation_id="dlg-1",
        delegator="spiffe://atb.example/user/alice",
        delegate="spiffe://atb.example/user/dave",
        tiers=(Tier.HIGH,),
        not_before=NOW,
        until=NOW + timedelta(days=7),
        granted_at=NOW,
    )


def _delegation_revoked() -> DelegationRevoked:
    alice = "spiffe://atb.example/user/alice"
    return DelegationRevoked(delegation_id="dlg-1", delegator=alice, revoked_by=alice, revoked_at=NOW)


def _on_behalf() -> VoteOnBehalf:
    return VoteOnBehalf(
        request_id=REQ,
        vote_id="vote-2",
        approver_id="spiffe://atb.example/user/dave",
        on_behalf_of="spiffe://atb.example/user/alice",
        choice=VoteChoice.APPROVE,
        request_digest=DIGEST,
        channel="cli",
        cast_at=NOW,
        delegation_event=encode_envelope(make_envelope(_granted(), source=SOURCE)).decode(),
    )


def _reminder() -> ReminderDue:
    return ReminderDue(
        request_id=REQ,
        tier=Tier.HIGH,
        reminder=1,
        of=2,
        missing=1,
        eligible_groups=("manager", "security"),
        request_digest=DIGEST,
        deadline=NOW + timedelta(hours=1),
        sent_at=NOW,
    )


def _escalated() -> ApprovalEscalated:
    return ApprovalEscalated(
        request_id=REQ,
        tier=Tier.HIGH,
        escalate_to=("security",),
        missing=1,
        request_digest=DIGEST,
        deadline=NOW + timedelta(hours=1),
        escalated_at=NOW,
    )


def _vote_v2() -> VoteCastV2:
    return VoteCastV2(
        request_id=REQ,
        vote_id="vote-3",
        approver_id="spiffe://atb.example/user/alice",
        choice=VoteChoice.APPROVE,
        request_digest=DIGEST,
        channel="console",
        cast_at=NOW,
        assertion=PasskeyAssertion(
            credential_id="Y3JlZC0x",
            authenticator_data="YXV0aGRhdGE",
            client_data_json="eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0",
            signature="c2ln",
            nonce="bm9uY2Utb2YtYXQtbGVhc3QtMTYtYnl0ZXM",
        ),
    )


def _passkey_enrolled() -> PasskeyEnrolled:
    return PasskeyEnrolled(
        principal="spiffe://atb.example/user/alice",
        credential_id="Y3JlZC0x",
        public_key="cHVibGljLWtleQ",
        sign_count=0,
        rp_id="console.atb.example",
        origins=("https://console.atb.example",),
        user_verified=True,
        enrolled_at=NOW,
    )


def _passkey_enrollment_granted() -> PasskeyEnrollmentGranted:
    return PasskeyEnrollmentGranted(
        grant_id="grant-1",
        principal="alice",
        granted_by="spiffe://atb.example/user/carol",
        granted_at=NOW,
        expires_at=NOW + timedelta(minutes=15),
    )


def _passkey_revoked() -> PasskeyRevoked:
    alice = "spiffe://atb.example/user/alice"
    return PasskeyRevoked(principal=alice, credential_id="Y3JlZC0x", revoked_by=alice, revoked_at=NOW)


FACTORIES: dict[type[EventPayload], Callable[[], EventPayload]] = {
    IssuanceRequested: _issuance,
    ApprovalRequired: _approval_required,
    VoteCast: _vote,
    QuorumReached: _quorum,
    RequestDenied: _denied,
    RequestExpired: _expired,
    PoaIssued: _issued,
    PoaRevoked: _revoked,
    ActionRequested: _action,
    BrokerDecision: _decision,
    BrokerDecisionV1: _decision_v1,
    AuditEvent: _audit,
    SigningKeyPublished: _key,
    DeadLetter: _dead,
    DeadLetterV1: _dead_v1,
    ApprovalStateChanged: _state,
    DelegationGranted: _granted,
    DelegationRevoked: _delegation_revoked,
    VoteOnBehalf: _on_behalf,
    ReminderDue: _reminder,
    ApprovalEscalated: _escalated,
    VoteCastV2: _vote_v2,
    PasskeyEnrolled: _passkey_enrolled,
    PasskeyEnrollmentGranted: _passkey_enrollment_granted,
    PasskeyRevoked: _passkey_revoked,
}
ALL_TYPES = sorted(EVENT_TYPES.items())


def _envelope(payload: EventPayload | None = None) -> Envelope:
    return make_envelope(payload or _issuance(), source=SOURCE, event_id="evt-1", time=NOW)


def _raw(**overrides: object) -> bytes:
    body = json.loads(encode_envelope(_envelope()))
    body.update(overrides)
    return json.dumps(body).encode()


def _with_data(envelope: Envelope, **changes: object) -> Envelope:
    data = {**envelope.data, **changes}
    return envelope.model_copy(update={"data": data})


def test_every_event_type_has_a_factory() -> None:
    assert set(FACTORIES) == set(EVENT_TYPES.values())


@pytest.mark.parametrize(("event_type", "model"), ALL_TYPES, ids=[t for t, _ in ALL_TYPES])
def test_event_type_name_and_topic(event_type: str, model: type[EventPayload]) -> None:
    assert model.event_type == event_type
    assert isinstance(model.topic, Topic)
    assert FACTORIES[model]().event_type == event_type


@pytest.mark.parametrize(("event_type", "model"), ALL_TYPES, ids=[t for t, _ in ALL_TYPES])
def test_round_trip_every_event_type(event_type: str, model: type[EventPayload]) -> None:
    payload = FACTORIES[model]()
    envelope = _envelope(payload)
    raw = encode_envelope(envelope)
    decoded = decode_envelope(raw)
    assert decoded == envelope
    assert decoded.type == event_type
    back = payload_of(decoded)
    assert type(back) is model
    assert back == payload
    assert encode_envelope(decoded) == raw


@pytest.mark.parametrize(("event_type", "model"), ALL_TYPES, ids=[t for t, _ in ALL_TYPES])
def test_partition_key_and_subject(event_type: str, model: type[EventPayload]) -> None:
    payload = FACTORIES[model]()
    keyed_otherwise = {
        SigningKeyPublished: KID,
        DelegationGranted: "delegation:dlg-1",
        DelegationRevoked: "delegation-revoked:dlg-1",
        PasskeyEnrolled: "passkey:Y3JlZC0x",
        PasskeyEnrollmentGranted: "passkey-grant:grant-1",
        PasskeyRevoked: "passkey-revoked:Y3JlZC0x",
    }
    expected = keyed_otherwise.get(model, REQ)
    assert payload.partition_key() == expected
    envelope = _envelope(payload)
    assert envelope.partitionkey == expected
    assert envelope.subject == (None if model in keyed_otherwise else REQ)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(_audit().model_copy(update={"request_id": None}), "poa_issued", id="audit without request"),
        pytest.param(
            _dead().model_copy(update={"request_id": None}), "atb.poa.requests:2", id="dead letter without request"
        ),
    ],
)
def test_partition_key_fallbacks(payload: EventPayload, expected: str) -> None:
    assert payload.partition_key() == expected


def test_encode_envelope_is_canonical_and_stable() -> None:
    envelope = _envelope()
    raw = encode_envelope(envelope)
    assert raw == canonical_json(json.loads(raw))
    assert raw == encode_envelope(_envelope())
    assert list(json.loads(raw)) == sorted(json.loads(raw))
    assert b": " not in raw
    assert b", " not in raw
    assert b'"proof"' not in raw  # absent, not null
    assert json.loads(raw)["specversion"] == "1.0"
    assert json.loads(raw)["time"] == "2024-01-15T10:00:00Z"


def test_make_envelope_defaults_are_fresh() -> None:
    first = make_envelope(_issuance(), source=SOURCE)
    second = make_envelope(_issuance(), source=SOURCE)
    assert first.id != second.id
    assert first.time.tzinfo is not None


@pytest.mark.parametrize(
    ("raw", "code", "mentions"),
    [
        pytest.param(None, "empty_record", "", id="None"),
        pytest.param(b"{" + b" " * MAX_EVENT_BYTES + b"}", "oversize", "", id="oversize"),
        pytest.param(b"", "invalid_envelope", "", id="empty bytes"),
        pytest.param(b"{not json", "invalid_envelope", "", id="invalid JSON"),
        pytest.param(b"\xff\xfe\x00", "invalid_envelope", "", id="not UTF-8"),
        pytest.param(b"[]", "invalid_envelope", "", id="JSON array"),
        pytest.param(_raw(extra="x"), "invalid_envelope", "extra", id="unknown envelope field"),
        pytest.param(_raw(specversion="0.3"), "invalid_envelope", "specversion", id="specversion 0.3"),
        pytest.param(_raw(specversion=1.0), "invalid_envelope", "specversion", id="specversion number"),
        pytest.param(_raw(type="atb.Poa.issued.v1"), "invalid_envelope", "type", id="type upper case"),
        pytest.param(_raw(type="poa.issued.v1"), "invalid_envelope", "type", id="type without atb"),
        pytest.param(_raw(type="atb.poa.issued"), "invalid_envelope", "type", id="type without version"),
        pytest.param(_raw(type="atb.poa.issued.vx"), "invalid_envelope", "type", id="type bad version"),
        pytest.param(_raw(type="atb.poa.issued.v1\n"), "invalid_envelope", "type", id="type trailing newline"),
        pytest.param(_raw(type="atb.poa.x.issued.v1"), "invalid_envelope", "type", id="type too many parts"),
        pytest.param(_raw(id=""), "invalid_envelope", "id", id="empty id"),
        pytest.param(_raw(partitionkey=""), "invalid_envelope", "partitionkey", id="empty partition key"),
        pytest.param(_raw(time="yesterday"), "invalid_envelope", "time", id="bad time"),
        pytest.param(_raw(data=[1]), "invalid_envelope", "data", id="data not an object"),
        pytest.param(_raw(datacontenttype="text/plain"), "invalid_envelope", "datacontenttype", id="content type"),
        pytest.param(_raw(proof={"sig": "x"}), "invalid_envelope", "proof", id="proof without chain"),
    ],
)
def test_decode_envelope_rejects(raw: bytes | None, code: str, mentions: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_envelope(raw)
    assert info.value.code == code
    assert mentions in info.value.reason
    assert str(info.value).startswith(f"{code}: ")


def test_decode_envelope_accepts_exactly_max_size() -> None:
    raw = encode_envelope(_envelope())
    padded = raw + b" " * (MAX_EVENT_BYTES - len(raw))
    assert len(padded) == MAX_EVENT_BYTES
    assert decode_envelope(padded) == _envelope()


def test_payload_of_rejects_unknown_type() -> None:
    envelope = _envelope().model_copy(update={"type": "atb.poa.unknown.v1"})
    with pytest.raises(EventDecodeError) as info:
        payload_of(envelope)
    assert info.value.code == "unknown_type"


def test_payload_of_rejects_future_version_of_known_type() -> None:
    envelope = _envelope().model_copy(update={"type": "atb.poa.issuance_requested.v2"})
    with pytest.raises(EventDecodeError) as info:
        payload_of(envelope)
    assert info.value.code == "unknown_type"


ISSUANCE_BAD_DATA: list[tuple[str, object]] = [
    ("unknown_field", "x"),  # extra="forbid"
    ("request_id", ""),
    ("request_id", "req 1"),
    ("request_id", 42),
    ("agent_id", "https://example.com/agent"),
    ("tenant", ""),
    ("params", [1, 2]),
    ("requested_at", "not a time"),
    ("action", "CRM.contact.update"),
    ("action", "crm"),
    ("action", "crm..update"),
    ("action", "crm.contact.update;rm"),
    ("action", ".crm.contact"),
    ("action", "crm.contact."),
    ("action", ""),
    ("action", 7),
    ("agent_cert_thumbprint", "short"),
    ("leg", {"basis": "LI"}),
]
QUORUM_BAD_DATA: list[tuple[str, object]] = [
    ("request_digest", "sha256:" + "A" * 64),
    ("request_digest", "sha256:" + "a" * 63),
    ("request_digest", "sha256:" + "a" * 65),
    ("request_digest", "sha1:" + "a" * 64),
    ("request_digest", "a" * 64),
    ("request_digest", "sha256:" + "g" * 64),
    ("required_approvals", "two"),
    ("required_approvals", -1),
    ("required_approvals", 11),
    ("poa_ttl_seconds", 0),
    ("tier", "extreme"),
    ("votes", "not a list"),
    ("request", {"request_id": REQ}),
]


@pytest.mark.parametrize(
    ("factory", "field", "value"),
    [pytest.param(_issuance, f, v, id=f"issuance-{f}={v!r}") for f, v in ISSUANCE_BAD_DATA]
    + [pytest.param(_quorum, f, v, id=f"quorum-{f}={v!r}") for f, v in QUORUM_BAD_DATA]
    + [
        pytest.param(_vote, "choice", "maybe", id="vote-choice"),
        pytest.param(_vote, "channel", "email", id="vote-channel"),
        pytest.param(_vote, "request_digest", "sha256:short", id="vote-digest"),
        pytest.param(_issued, "token_sha256", "sha256:" + "0" * 10, id="issued-token digest"),
        pytest.param(_issued, "action", "Sap.Payment", id="issued-action"),
        pytest.param(_action, "action", "crm contact update", id="action-action"),
        pytest.param(_denied, "code", "Ticket Required", id="denied-code"),
        pytest.param(_key, "alg", "RS256", id="key-alg"),
        pytest.param(_dead, "original_offset", -1, id="dead-offset"),
        pytest.param(_audit, "outcome", "maybe", id="audit-outcome"),
    ],
)
def test_payload_of_rejects_bad_data(factory: Callable[[], EventPayload], field: str, value: object) -> None:
    envelope = _with_data(_envelope(factory()), **{field: value})
    with pytest.raises(EventDecodeError) as info:
        payload_of(envelope)
    assert info.value.code == "invalid_payload"
    assert field in info.value.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("required_approvals", 2**70),
        ("tier", None),
        ("deadline", None),
        ("eligible_groups", "manager"),
    ],
)
def test_payload_of_rejects_wrong_types_approval_required(field: str, value: object) -> None:
    with pytest.raises(EventDecodeError) as info:
        payload_of(_with_data(_envelope(_approval_required()), **{field: value}))
    assert info.value.code == "invalid_payload"


@pytest.mark.parametrize("field", ["request_id", "agent_id", "action", "leg", "requested_at", "resource", "tenant"])
def test_payload_of_rejects_missing_required_field(field: str) -> None:
    envelope = _envelope()
    data = {k: v for k, v in envelope.data.items() if k != field}
    with pytest.raises(EventDecodeError) as info:
        payload_of(envelope.model_copy(update={"data": data}))
    assert info.value.code == "invalid_payload"
    assert field in info.value.reason


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"params": {"amount": 1.5}}, id="float in params"),
        pytest.param({"params": {"deep": [{"x": 0.25}]}}, id="nested float in params"),
        pytest.param({"params": {"n": 2**64}}, id="int beyond 64 bits in params"),
    ],
)
def test_decode_rejects_values_that_cannot_be_canonicalised(data: JsonObject) -> None:
    body = json.loads(encode_envelope(_envelope()))
    body["data"].update(data)
    raw = json.dumps(body).encode()
    with pytest.raises(EventDecodeError):
        payload_of(decode_envelope(raw))


def test_payload_of_error_names_the_field() -> None:
    with pytest.raises(EventDecodeError, match=r"invalid_payload: unknown_field: Extra inputs are not permitted"):
        payload_of(_with_data(_envelope(), unknown_field=1))


def _proof() -> Proof:
    return Proof(sig="c2lnbmF0dXJl", x5c=("MIIB...",))


def test_signing_bytes_exclude_proof() -> None:
    bare = _envelope()
    proved = bare.model_copy(update={"proof": _proof()})
    assert signing_bytes(proved) == signing_bytes(bare) == encode_envelope(bare)
    assert b'"proof"' not in signing_bytes(proved)
    assert b'"proof"' in encode_envelope(proved)
    assert decode_envelope(encode_envelope(proved)) == proved
    assert decode_envelope(encode_envelope(proved)).proof == _proof()


def test_signing_bytes_differ_for_another_proof_only_in_envelope() -> None:
    one = _envelope().model_copy(update={"proof": _proof()})
    two = _envelope().model_copy(update={"proof": Proof(sig="b3RoZXI", x5c=("MIIC...",))})
    assert signing_bytes(one) == signing_bytes(two)
    assert encode_envelope(one) != encode_envelope(two)


DATA_CHANGES: list[tuple[str, object]] = [
    ("request_id", "req-0002"),
    ("agent_id", AGENT + "x"),
    ("tenant", "acmf"),
    ("target_tenant", None),
    ("action", "crm.contact.updatf"),
    ("resource", "crm:contact/43"),
    ("params", {"email": "new@example.com"}),
    ("params", {"email": "new@example.con", "n": 3, "tags": ["a", "b"], "nested": {"ok": True, "none": None}}),
    ("params", {"email": "new@example.com", "n": 4, "tags": ["a", "b"], "nested": {"ok": True, "none": None}}),
    ("params", {"email": "new@example.com", "n": 3, "tags": ["b", "a"], "nested": {"ok": True, "none": None}}),
    ("params", {"email": "new@example.com", "n": 3, "tags": ["a", "b"], "nested": {"ok": False, "none": None}}),
    ("requested_at", "2024-01-15T10:00:01Z"),
    ("agent_cert_thumbprint", "B" * 43),
    ("leg", {**LEG, "ref": "LI-2024-002"}),
    ("leg", {**LEG, "jurisdiction": "DE"}),
    ("leg", {**LEG, "accountable_party": {"type": "employee", "id": "emp-101"}}),
]


@pytest.mark.parametrize(("field", "value"), DATA_CHANGES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(DATA_CHANGES)])
def test_signing_bytes_change_with_any_data_change(field: str, value: object) -> None:
    envelope = _envelope()
    changed = _with_data(envelope, **{field: value})
    assert changed.data != envelope.data
    assert signing_bytes(changed) != signing_bytes(envelope)


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("id", "evt-2"),
        ("source", SOURCE + "x"),
        ("type", "atb.poa.issuance_requested.v2"),
        ("time", NOW + timedelta(microseconds=1)),
        ("subject", "req-x"),
        ("partitionkey", "other"),
    ],
)
def test_signing_bytes_change_with_any_envelope_attribute(attr: str, value: object) -> None:
    envelope = _envelope()
    assert signing_bytes(envelope.model_copy(update={attr: value})) != signing_bytes(envelope)


def test_signing_bytes_change_with_every_single_byte_of_data() -> None:
    envelope = _envelope()
    original = signing_bytes(envelope)
    text = json.dumps(envelope.data["resource"])
    for index in range(1, len(text) - 1):  # every character inside the quotes
        mutated = text[:index] + chr(ord(text[index]) ^ 1) + text[index + 1 :]
        changed = _with_data(envelope, resource=json.loads(mutated))
        assert signing_bytes(changed) != original, index


@pytest.mark.parametrize("model", list(FACTORIES), ids=lambda m: m.__name__)
def test_payload_models_are_frozen(model: type[EventPayload]) -> None:
    payload = FACTORIES[model]()
    field = next(iter(type(payload).model_fields))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(payload, field, None)


@pytest.mark.parametrize(
    "instance",
    [
        pytest.param(_envelope(), id="Envelope"),
        pytest.param(_proof(), id="Proof"),
        pytest.param(_quorum().votes[0], id="CountedVote"),
        pytest.param(_issuance().leg, id="Leg"),
    ],
)
def test_other_models_are_frozen(instance: BaseModel) -> None:
    field = next(iter(type(instance).model_fields))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(instance, field, None)


def test_nested_params_are_not_shared_with_the_caller() -> None:
    params: JsonObject = {"a": {"b": 1}}
    payload = _action().model_copy(update={"params": params})
    envelope = _envelope(payload)
    params["a"] = "changed"
    assert envelope.data["params"] == {"a": {"b": 1}}


# -- BrokerDecision: v2 carries reasons as data, v1 records still decode ----------------


def test_a_v1_decision_on_the_topic_decodes_and_upcasts_to_reasons_as_data() -> None:
    v1 = _decision_v1().model_copy(
        update={
            "decision": Decision.DENY,
            "reasons": ("tier_too_low: PoA was issued for low, the action is medium", "ticket_missing"),
        }
    )
    raw = encode_envelope(make_envelope(v1, source=SOURCE, event_id="evt-1", time=NOW))
    read = payload_of(decode_envelope(raw))
    assert isinstance(read, BrokerDecisionV1)
    up = read.upcast()
    assert isinstance(up, BrokerDecision)
    assert up.reasons == (
        Reason(ReasonCode.TIER_TOO_LOW, "PoA was issued for low, the action is medium"),
        Reason(ReasonCode.TICKET_MISSING),
    )
    assert up.codes == (ReasonCode.TIER_TOO_LOW, ReasonCode.TICKET_MISSING)
    assert up.action_tier is None  # v1 did not record it
    assert (up.request_id, up.action_id, up.jti, up.decided_at) == (v1.request_id, v1.action_id, v1.jti, NOW)


def test_a_v2_decision_carries_code_and_detail_as_fields() -> None:
    data = json.loads(encode_envelope(make_envelope(_decision(), source=SOURCE, event_id="e", time=NOW)))["data"]
    assert data["reasons"] == [{"code": "tier_too_low", "detail": "PoA was issued for low, the action is medium"}]
    assert data["action_tier"] == "medium"


@pytest.mark.parametrize(
    "reasons",
    [
        pytest.param(["tier_too_low: x"], id="text, as v1 wrote it"),
        pytest.param([{"code": "no_such_code", "detail": "x"}], id="a code outside the enum"),
        pytest.param([{"code": "tier_too_low", "detail": "x", "extra": 1}], id="an unknown field"),
        pytest.param([{"detail": "x"}], id="no code"),
    ],
)
def test_a_v2_decision_with_reasons_not_as_data_is_refused(reasons: list[object]) -> None:
    envelope = make_envelope(_decision(), source=SOURCE, event_id="e", time=NOW)
    body = json.loads(encode_envelope(envelope))
    body["data"]["reasons"] = reasons
    with pytest.raises(EventDecodeError):
        payload_of(decode_envelope(json.dumps(body).encode()))
