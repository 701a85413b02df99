"""Every event payload ATB publishes, as frozen pydantic models.

Each payload class names its CloudEvents `type` (`atb.<area>.<name>.v<N>`) and the
topic it travels on. A published version is never edited: a change is a new class
with a new `.vN` type. `extra="forbid"` everywhere, so an unknown field is an error
and goes to the dead-letter topic rather than being silently ignored. One kind of
addition is made in place: an optional field written only when it is set
(`PoaIssued.callback_url`), so that every record without it is byte for byte the
published version; a consumer older than the field refuses only the records that
carry it.

Models only: no Kafka, no crypto, no policy.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from contracts.leg import Leg
from contracts.limits import DEAD_LETTER_KEY_CHARS, DEAD_LETTER_PREFIX_BYTES
from contracts.reasons import Reason, ReasonCode
from contracts.topics import Topic

__all__ = [
    "EVENT_TYPES",
    "ActionName",
    "ActionRequested",
    "ApprovalRequired",
    "ApprovalStateChanged",
    "AuditEvent",
    "BallotRecord",
    "BrokerDecision",
    "BrokerDecisionV1",
    "CompositionRecord",
    "CountedVote",
    "DeadLetter",
    "DeadLetterV1",
    "Decision",
    "EventPayload",
    "GroupCountRecord",
    "IssuanceRequested",
    "JsonObject",
    "PoaIssued",
    "PoaRevoked",
    "QuorumReached",
    "RemindersRecord",
    "RequestDenied",
    "RequestExpired",
    "RequestId",
    "RequirementsRecord",
    "SigningKeyPublished",
    "Tier",
    "VoteCast",
    "VoteChoice",
]

JsonObject = dict[str, JsonValue]
RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
SpiffeIdText = Annotated[str, Field(min_length=10, max_length=2048, pattern=r"^spiffe://")]
ActionName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")]
Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
RequestDigest = Annotated[str, Field(pattern=r"^sha256(v2)?:[0-9a-f]{64}$")]
"""A request digest names its version: `sha256v2:` (current) or `sha256:` (v1), see `contracts.poa`."""
ReasonText = Annotated[str, Field(max_length=1024)]
CallbackUrl = Annotated[str, Field(min_length=9, max_length=2048, pattern=r"^https://[^\s/?#@]+(/[^\s#]*)?$")]
"""An agent's outcome callback: an HTTPS URL without credentials or a fragment (the issuer's notifier
also checks its host against the operator's allowlist before any connection)."""
_PREFIX_B64_CHARS = 4 * -(-DEAD_LETTER_PREFIX_BYTES // 3)


class Tier(StrEnum):
    """Risk tiers (docs/architecture.md §2.5)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class VoteChoice(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class EventPayload(BaseModel):
    """Base of every payload: frozen, no unknown fields, a type name and a topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    topic: ClassVar[Topic]

    def partition_key(self) -> str:
        """The Kafka key: the request id where there is one (docs/architecture.md §4.4)."""
        request_id = getattr(self, "request_id", None)
        if isinstance(request_id, str) and request_id:
            return request_id
        raise NotImplementedError(f"{type(self).__name__} must define partition_key()")


class IssuanceRequested(EventPayload):
    """An agent asks for a PoA for one exact action (docs/architecture.md §2.2, §3.1)."""

    event_type: ClassVar[str] = "atb.poa.issuance_requested.v1"
    topic: ClassVar[Topic] = Topic.POA_REQUESTS

    request_id: RequestId
    agent_id: SpiffeIdText
    tenant: Annotated[str, Field(min_length=1, max_length=64)]
    target_tenant: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    action: ActionName
    resource: Annotated[str, Field(min_length=1, max_length=512)]
    params: JsonObject = Field(default_factory=dict)
    leg: Leg
    requested_at: AwareDatetime
    agent_cert_thumbprint: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{43}$")] | None = None
    """base64url SHA-256 of the agent certificate (DER): becomes `cnf.x5t#S256`."""
    callback_url: CallbackUrl | None = None
    """Where the issuer POSTs the request's outcome (a signed webhook); not covered by the request
    digest (`contracts.poa.DigestFields`): approvers are not shown it and the PoA token does not carry it."""


class GroupCountRecord(BaseModel):
    """``count`` distinct approvers of ``group`` (contracts/quorum.py `GroupCount`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: Annotated[str, Field(min_length=1, max_length=64)]
    count: Annotated[int, Field(ge=1, le=10)]


class CompositionRecord(BaseModel):
    """The groups a quorum must be made of (contracts/quorum.py `Composition`); empty: only the total counts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    all_of: tuple[GroupCountRecord, ...] = ()
    any_of: tuple[GroupCountRecord, ...] = ()


class ApprovalRequired(EventPayload):
    """The policy says humans must approve: who, how many, until when."""

    event_type: ClassVar[str] = "atb.approvals.approval_required.v1"
    topic: ClassVar[Topic] = Topic.OUTCOMES

    request_id: RequestId
    tier: Tier
    required_approvals: Annotated[int, Field(ge=0, le=10)]
    eligible_groups: tuple[str, ...]
    ticket_required: bool
    deadline: AwareDatetime
    request_digest: RequestDigest
    agent_id: SpiffeIdText
    action: ActionName
    resource: str
    accountable_party_id: str
    composition: CompositionRecord = CompositionRecord()
    """The groups the approvers must come from, besides the count (empty: any of `eligible_groups`)."""


class VoteCast(EventPayload):
    """One approver's vote, bound to the digest of the exact request."""

    event_type: ClassVar[str] = "atb.approvals.vote_cast.v1"
    topic: ClassVar[Topic] = Topic.VOTES

    request_id: RequestId
    vote_id: Annotated[str, Field(min_length=1, max_length=128)]
    approver_id: Annotated[str, Field(min_length=1, max_length=256)]
    choice: VoteChoice
    request_digest: RequestDigest
    channel: Literal["cli", "slack", "teams"]
    cast_at: AwareDatetime
    reason: ReasonText = ""


class CountedVote(BaseModel):
    """Evidence of one counted vote; `vote_event` is the exact signed envelope received."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approver_id: str
    approver_type: str
    """The group this approval fills in the policy's composition, else the approver's directory type."""
    vote_digest: Digest
    cast_at: AwareDatetime
    vote_event: str
    approver_groups: tuple[str, ...] = ()
    """The approver's groups as the approvals service resolved them in the directory, sorted."""


class QuorumReached(EventPayload):
    """Enough distinct eligible approvers said yes (zero for tier low)."""

    event_type: ClassVar[str] = "atb.approvals.quorum_reached.v1"
    topic: ClassVar[Topic] = Topic.OUTCOMES

    request_id: RequestId
    tier: Tier
    required_approvals: Annotated[int, Field(ge=0, le=10)]
    request_digest: RequestDigest
    poa_ttl_seconds: Annotated[int, Field(ge=1, le=3600)]
    request: IssuanceRequested
    request_event: str
    """The exact IssuanceRequested envelope received, so the issuer can re-verify it."""
    votes: tuple[CountedVote, ...] = ()
    decided_at: AwareDatetime


class RequestDenied(EventPayload):
    """The request will not get a PoA: a deny vote, a policy refusal, bad evidence."""

    event_type: ClassVar[str] = "atb.approvals.request_denied.v1"
    topic: ClassVar[Topic] = Topic.OUTCOMES

    request_id: RequestId
    code: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]
    reason: ReasonText
    denied_by: str
    decided_at: AwareDatetime
    callback_url: CallbackUrl | None = None
    """The request's outcome callback (`IssuanceRequested.callback_url`), for the issuer's notifier."""


class RequestExpired(EventPayload):
    """The deadline passed without a quorum."""

    event_type: ClassVar[str] = "atb.approvals.request_expired.v1"
    topic: ClassVar[Topic] = Topic.OUTCOMES

    request_id: RequestId
    deadline: AwareDatetime
    approvals_counted: Annotated[int, Field(ge=0)]
    required_approvals: Annotated[int, Field(ge=0)]
    callback_url: CallbackUrl | None = None
    """The request's outcome callback (`IssuanceRequested.callback_url`), for the issuer's notifier."""


class PoaIssued(EventPayload):
    """A signed PoA for one approved request. The audit store keeps only the token's hash."""

    event_type: ClassVar[str] = "atb.poa.issued.v1"
    topic: ClassVar[Topic] = Topic.POA_ISSUED

    request_id: RequestId
    jti: Annotated[str, Field(min_length=1, max_length=128)]
    kid: str
    agent_id: SpiffeIdText
    action: ActionName
    tier: Tier
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    token: str
    token_sha256: Digest
    callback_url: CallbackUrl | None = None
    """The request's outcome callback (`IssuanceRequested.callback_url`): the issuer tells it once this
    record is committed (issuer/callbacks.py). Added to v1 after it was published, so written only when
    set: a PoaIssued without a callback is byte for byte what it was (see the module doc)."""

    @model_serializer(mode="wrap")
    def _callback_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        if data.get("callback_url") is None:
            data.pop("callback_url", None)
        return data


class PoaRevoked(EventPayload):
    """A PoA that must no longer be honoured, whatever its expiry."""

    event_type: ClassVar[str] = "atb.poa.revoked.v1"
    topic: ClassVar[Topic] = Topic.POA_REVOKED

    request_id: RequestId
    jti: str
    reason: ReasonText
    revoked_by: str
    revoked_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    """When the revoked PoA expires (for a whole request, `jti` "*": the latest any PoA of it can). After
    that the PoA is refused as expired anyway, so a broker may forget the revocation. Absent in
    revocations published before the field existed: a broker then bounds it from `revoked_at`."""


class ActionRequested(EventPayload):
    """An agent asks the broker to run an action, presenting its PoA."""

    event_type: ClassVar[str] = "atb.broker.action_requested.v1"
    topic: ClassVar[Topic] = Topic.BROKER_ACTIONS

    request_id: RequestId
    action_id: Annotated[str, Field(min_length=1, max_length=128)]
    agent_id: SpiffeIdText
    tenant: Annotated[str, Field(min_length=1, max_length=64)]
    target_tenant: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    action: ActionName
    resource: str
    params: JsonObject = Field(default_factory=dict)
    poa: str | None = None
    requested_at: AwareDatetime


class BrokerDecision(EventPayload):
    """What the broker decided for one ActionRequested (v2: reasons as data).

    Each reason is a `contracts.reasons.Reason`: a code from `ReasonCode` and a
    detail for humans, as two fields; readers compare codes, never the wording.
    `action_tier` is the tier the policy gave the action when it answered for this
    presentation (None when the broker decided before asking it: a bad token, a
    mismatch, a revocation, a foreign tenant, the policy unreachable).
    """

    event_type: ClassVar[str] = "atb.broker.decision.v2"
    topic: ClassVar[Topic] = Topic.BROKER_DECISIONS

    request_id: RequestId
    action_id: str
    agent_id: str
    action: str
    decision: Decision
    reasons: tuple[Reason, ...]
    action_tier: Tier | None = None
    policy_version: str
    jti: str | None = None
    decided_at: AwareDatetime

    @property
    def codes(self) -> tuple[ReasonCode, ...]:
        return tuple(r.code for r in self.reasons)


# Superseded by `BrokerDecision` (v2): its reasons were `code: text` strings that readers
# had to split (reasons as data since v2). Kept, unchanged, so that decisions already on `atb.broker.decisions` and
# in the audit store still decode; nothing produces it any more. Read it through `upcast()`.
class BrokerDecisionV1(EventPayload):
    """What the broker decided for one ActionRequested."""

    event_type: ClassVar[str] = "atb.broker.decision.v1"
    topic: ClassVar[Topic] = Topic.BROKER_DECISIONS

    request_id: RequestId
    action_id: str
    agent_id: str
    action: str
    decision: Decision
    reasons: tuple[str, ...]
    policy_version: str
    jti: str | None = None
    decided_at: AwareDatetime

    def upcast(self) -> BrokerDecision:
        """The same decision as a v2 value: each `code: text` read once, here (`Reason.legacy`).

        v1 did not record the action's tier, so `action_tier` is None. A code outside
        `ReasonCode` raises ValueError (every code v1 producers wrote is in the enum).
        """
        return BrokerDecision(
            request_id=self.request_id,
            action_id=self.action_id,
            agent_id=self.agent_id,
            action=self.action,
            decision=self.decision,
            reasons=tuple(Reason.legacy(text) for text in self.reasons),
            policy_version=self.policy_version,
            jti=self.jti,
            decided_at=self.decided_at,
        )


class AuditEvent(EventPayload):
    """A security-relevant fact, named as in docs/architecture.md §2.9 (`poa_issued`, ...)."""

    event_type: ClassVar[str] = "atb.audit.event.v1"
    topic: ClassVar[Topic] = Topic.AUDIT

    audit_type: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]
    request_id: str | None = None
    actor: str
    outcome: Literal["success", "failure", "denied", "info"]
    reason: ReasonText = ""
    details: JsonObject = Field(default_factory=dict)
    occurred_at: AwareDatetime

    def partition_key(self) -> str:
        return self.request_id or self.audit_type


class SigningKeyPublished(EventPayload):
    """A PoA verification key (JWK), published before it signs anything."""

    event_type: ClassVar[str] = "atb.keys.signing_key_published.v1"
    topic: ClassVar[Topic] = Topic.KEYS

    kid: str
    alg: Literal["EdDSA"]
    jwk: dict[str, str]
    issuer: str
    not_before: AwareDatetime
    retire_after: AwareDatetime | None = None

    def partition_key(self) -> str:
        return self.kid


# Superseded by `DeadLetter` (v2): a large original made a v1 letter too large to
# produce or to decode (docs/hostile-input.md). Kept, unchanged, so that letters
# already on `atb.dlq` still decode and can be re-driven; nothing produces it any more.
class DeadLetterV1(EventPayload):
    """A record a consumer could not use; the original bytes are kept, base64-encoded."""

    event_type: ClassVar[str] = "atb.dlq.dead_letter.v1"
    topic: ClassVar[Topic] = Topic.DLQ

    original_topic: str
    original_partition: Annotated[int, Field(ge=0)]
    original_offset: Annotated[int, Field(ge=0)]
    original_key: str | None = None
    original_value_b64: str
    consumer: str
    error_code: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]
    reason: ReasonText
    request_id: str | None = None

    def partition_key(self) -> str:
        return self.request_id or f"{self.original_topic}:{self.original_partition}"


class DeadLetter(EventPayload):
    """A record a consumer could not use, by reference: bounded whatever the original's size.

    The original stays where it is (its topic, and the audit store); the letter says
    where (topic, partition, offset), what (size, SHA-256, the first
    `DEAD_LETTER_PREFIX_BYTES` base64-encoded, the key as text), who could not use it
    and why. `atb replay redrive` reads the original back from its coordinates and
    re-sends it only if its SHA-256 still matches. See docs/hostile-input.md.
    """

    event_type: ClassVar[str] = "atb.dlq.dead_letter.v2"
    topic: ClassVar[Topic] = Topic.DLQ

    original_topic: Annotated[str, Field(min_length=1, max_length=255)]
    original_partition: Annotated[int, Field(ge=0)]
    original_offset: Annotated[int, Field(ge=0)]
    original_key: Annotated[str, Field(max_length=DEAD_LETTER_KEY_CHARS)] | None = None
    """The key as text (invalid UTF-8 replaced), cut to `DEAD_LETTER_KEY_CHARS`: for reading, not for re-sending."""
    original_size: Annotated[int, Field(ge=0)]
    """Length of the original value in bytes (0 for a tombstone)."""
    original_sha256: Digest
    """SHA-256 of the exact original value."""
    original_prefix_b64: Annotated[str, Field(max_length=_PREFIX_B64_CHARS)]
    """The first `DEAD_LETTER_PREFIX_BYTES` (at most) of the original value, base64-encoded."""
    consumer: Annotated[str, Field(min_length=1, max_length=256)]
    error_code: Annotated[str, Field(pattern=r"^[a-z0-9_]+$", max_length=64)]
    reason: ReasonText
    request_id: Annotated[str, Field(max_length=128)] | None = None

    def partition_key(self) -> str:
        return self.request_id or f"{self.original_topic}:{self.original_partition}"


class BallotRecord(BaseModel):
    """One received vote as the approvals service keeps it (identity already proven)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vote_id: str
    identity: str
    choice: VoteChoice
    digest: RequestDigest
    received_at: AwareDatetime
    channel: str
    vote_event: str


class RemindersRecord(BaseModel):
    """The policy's reminders and escalation for a tier (contracts/reminders.py `ReminderPolicy`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    remind_at: tuple[Annotated[int, Field(ge=1, le=99)], ...] = ()
    """Percent of the pending window."""
    escalate_at: Annotated[int, Field(ge=1, le=99)] | None = None
    escalate_to: tuple[str, ...] = ()


class RequirementsRecord(BaseModel):
    """The policy's answer for a request, as it was when the request arrived."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: Tier
    approvals: Annotated[int, Field(ge=0, le=10)]
    ticket_required: bool
    eligible_groups: tuple[str, ...]
    pending_seconds: Annotated[int, Field(ge=0)]
    poa_ttl_seconds: Annotated[int, Field(ge=1, le=300)]
    policy_version: str
    composition: CompositionRecord = CompositionRecord()
    justification: Literal["none", "approve", "deny", "both"] = "none"
    """Which votes need a written reason (contracts.justification); absent in records written before it existed."""
    reminders: RemindersRecord = RemindersRecord()
    """When to remind and whom to escalate to (contracts.reminders); absent in records written before it existed."""


class ApprovalStateChanged(EventPayload):
    """The approvals service's changelog record for one request (compacted topic).

    `held`: votes arrived before their request; `open`: waiting for votes;
    `closed`: the one outcome was emitted (`outcome`), later votes are refused.
    """

    event_type: ClassVar[str] = "atb.approvals.request_state.v1"
    topic: ClassVar[Topic] = Topic.APPROVALS_STATE

    request_id: RequestId
    status: Literal["held", "open", "closed"]
    outcome: Literal["quorum_reached", "denied", "expired"] | None = None
    request: IssuanceRequested | None = None
    request_event: str | None = None
    requirements: RequirementsRecord | None = None
    digest: RequestDigest | None = None
    deadline: AwareDatetime | None = None
    held_until: AwareDatetime | None = None
    ballots: tuple[BallotRecord, ...] = ()
    updated_at: AwareDatetime
    reminders_sent: Annotated[int, Field(ge=0, le=5)] = 0
    """Reminder points of the policy already passed (sent): the timer never sends one twice."""
    escalated: bool = False
    """The escalation was sent."""


EVENT_TYPES: dict[str, type[EventPayload]] = {
    cls.event_type: cls
    for cls in (
        IssuanceRequested,
        ApprovalRequired,
        VoteCast,
        QuorumReached,
        RequestDenied,
        RequestExpired,
        PoaIssued,
        PoaRevoked,
        ActionRequested,
        BrokerDecisionV1,
        BrokerDecision,
        AuditEvent,
        SigningKeyPublished,
        DeadLetterV1,
        DeadLetter,
        ApprovalStateChanged,
    )
}
"""Every publishable event type, by its CloudEvents `type`."""
