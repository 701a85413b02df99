"""Reasons as data: a stable code from one enum, and a detail for humans.

Every refusal ATB records (an intake or evidence refusal, a vote that does not
count, a broker deny, a policy deny) has a `ReasonCode`; readers compare codes,
never the wording. `ReasonCode` also holds every audit name of
docs/architecture.md §2.9 (`AuditEvent.audit_type`), so one enum names every
fact ATB reports; `AUDIT_NAMES` is that subset.

`Reason(code, detail)` is the value, and also the wire form: pydantic models
carry it as `{"code": ..., "detail": ...}` (BrokerDecision v2, the broker's HTTP
answer), with a code outside the enum or an unknown field refused. The policy
answers the same shape (opa/policy/poa.rego, `reason(code, detail)`; every code
it can give is checked to be here by tests/unit/test_policy_reason_codes.py).
`str(reason)` is the `code: detail` text for humans (logs, `AuditEvent.reason`,
tables). That text is written from the value, never read back into one:
`Reason.legacy` is the one exception, for records published before the code
was a field (BrokerDecision v1, decoded by `BrokerDecisionV1.upcast`).

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["AUDIT_NAMES", "MAX_DETAIL", "Reason", "ReasonCode", "codes_of"]

MAX_DETAIL = 1000
"""A detail is cut to this many characters (events hold 1024 per reason text, code included)."""


class ReasonCode(StrEnum):
    """Every reason code and audit name, snake_case and stable: a published value is never renamed."""

    # -- intake and outcomes (RequestDenied.code) ------------------------------------------
    TENANT_NOT_ALLOWED = "tenant_not_allowed"
    APPROVAL_EVIDENCE_IN_REQUEST = "approval_evidence_in_request"
    TICKET_REQUIRED = "ticket_required"
    DENIED_BY_APPROVER = "denied_by_approver"
    VOTE_UNVERIFIABLE = "vote_unverifiable"
    AFTER_OUTCOME = "after_outcome"
    TOO_MANY_VOTES = "too_many_votes"

    # -- eligibility of one approver, and counting (contracts/eligibility.py) --------------
    AFTER_DEADLINE = "after_deadline"
    UNKNOWN_APPROVER = "unknown_approver"
    SELF_APPROVAL = "self_approval"
    TIER_NOT_ALLOWED = "tier_not_allowed"
    NOT_ELIGIBLE = "not_eligible"
    DIGEST_MISMATCH = "digest_mismatch"
    DUPLICATE_DENY = "duplicate_deny"
    DUPLICATE = "duplicate"
    REASON_REQUIRED = "reason_required"  # contracts/justification.py: the tier needs a written reason for this vote
    TIER_REQUIRES_CLI = "tier_requires_cli"
    STEP_UP_REQUIRED = "step_up_required"  # chat: this tier is approved in the console, with a passkey
    COMPOSITION_NOT_MET = "composition_not_met"  # contracts/quorum.py; also a policy deny
    DELEGATION_NOT_IN_FORCE = "delegation_not_in_force"  # contracts/delegation.py
    DELEGATION_INVALID = "delegation_invalid"
    ASSERTION_INVALID = "assertion_invalid"  # a console vote's passkey assertion (atb_identity.passkey)

    # -- a passkey announcement without a valid enrollment grant (contracts/passkey_grants.py) --
    PASSKEY_GRANT_MISSING = "passkey_grant_missing"
    PASSKEY_GRANT_INVALID = "passkey_grant_invalid"
    PASSKEY_GRANT_NOT_IN_FORCE = "passkey_grant_not_in_force"
    PASSKEY_ENROLLER_NOT_ALLOWED = "passkey_enroller_not_allowed"
    PASSKEY_GRANT_USED = "passkey_grant_used"

    # -- a chat click that casts no vote (chat/domain/click.py) -----------------------------
    WRONG_WORKSPACE = "wrong_workspace"
    UNKNOWN_REQUEST = "unknown_request"
    REQUEST_CLOSED = "request_closed"
    UNKNOWN_USER = "unknown_user"

    # -- the issuer's re-check of a quorum (docs/architecture.md §6.1) ---------------------
    REQUEST_MISMATCH = "request_mismatch"
    TOO_FEW_REQUIRED = "too_few_required"
    DUPLICATE_APPROVER = "duplicate_approver"
    QUORUM_SHORT = "quorum_short"
    TICKET_MISSING = "ticket_missing"
    TIER_MISMATCH = "tier_mismatch"
    TTL_TOO_LONG = "ttl_too_long"
    VOTE_FOR_ANOTHER_REQUEST = "vote_for_another_request"
    VOTE_NOT_APPROVE = "vote_not_approve"
    EVIDENCE_MISMATCH = "evidence_mismatch"
    QUORUM_FROM_THE_FUTURE = "quorum_from_the_future"
    STALE_QUORUM = "stale_quorum"
    REQUEST_EVENT_INVALID = "request_event_invalid"
    REQUEST_EVENT_MISMATCH = "request_event_mismatch"
    REQUEST_NOT_PROVEN = "request_not_proven"
    VOTE_EVENT_INVALID = "vote_event_invalid"
    VOTE_FROM_THE_FUTURE = "vote_from_the_future"
    VOTE_NOT_PROVEN = "vote_not_proven"
    ATTESTER_TIER = "attester_tier"

    # -- the broker: routing, the token, its bindings, revocation, single use --------------
    CONNECTOR_UNKNOWN = "connector_unknown"
    CONNECTOR_MISMATCH = "connector_mismatch"
    EGRESS_DENIED = "egress_denied"
    MALFORMED = "malformed"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    WRONG_TYP = "wrong_typ"
    FORBIDDEN_HEADER = "forbidden_header"
    UNKNOWN_KID = "unknown_kid"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - a reason code, not a secret
    INVALID_CLAIMS = "invalid_claims"
    SUB_MISMATCH = "sub_mismatch"
    AGENT_MISMATCH = "agent_mismatch"
    CNF_MISSING = "cnf_missing"
    CNF_UNPROVEN = "cnf_unproven"
    CNF_MISMATCH = "cnf_mismatch"
    ACTION_MISMATCH = "action_mismatch"
    RESOURCE_MISMATCH = "resource_mismatch"
    POA_REVOKED = "poa_revoked"
    POLICY_UNAVAILABLE = "policy_unavailable"
    SPENT_STORE_UNAVAILABLE = "spent_store_unavailable"
    IDENTITY_UNPROVEN = "identity_unproven"
    POA_VALID = "poa_valid"
    UNMANDATED_LOW_RISK = "unmandated_low_risk"

    # -- the policy's denies (opa/policy/poa.rego, `decisions`) -----------------------------
    POA_REQUIRED = "poa_required"
    TIER_TOO_LOW = "tier_too_low"
    APPROVAL_MISSING = "approval_missing"
    DUAL_CONTROL_MISSING = "dual_control_missing"
    DUAL_CONTROL_NOT_DISTINCT = "dual_control_not_distinct"
    PRINCIPALS_MISSING = "principals_missing"
    APPROVER_GROUP_MISMATCH = "approver_group_mismatch"

    # -- audit names (docs/architecture.md §2.9) --------------------------------------------
    POA_ISSUED = "poa_issued"
    POA_ISSUED_DUAL_CONTROL = "poa_issued_dual_control"
    POA_ISSUANCE_REFUSED = "poa_issuance_refused"
    POA_DUPLICATE_QUORUM_IGNORED = "poa_duplicate_quorum_ignored"
    IDENTITY_PROOF_REJECTED = "identity_proof_rejected"
    APPROVAL_REQUIRED = "approval_required"
    APPROVAL_QUORUM_REACHED = "approval_quorum_reached"
    APPROVAL_REQUEST_DENIED = "approval_request_denied"
    APPROVAL_REQUEST_EXPIRED = "approval_request_expired"
    APPROVAL_VOTE_COUNTED = "approval_vote_counted"
    APPROVAL_SELF_VOTE_REFUSED = "approval_self_vote_refused"
    APPROVAL_VOTE_REFUSED = "approval_vote_refused"
    APPROVAL_VOTE_HELD = "approval_vote_held"
    APPROVAL_VOTE_ORPHANED = "approval_vote_orphaned"
    APPROVAL_DUPLICATE_REQUEST = "approval_duplicate_request"
    IDENTITY_REJECTED = "identity_rejected"
    REQUEST_STATUS_REFUSED = "request_status_refused"
    REQUEST_TENANT_REFUSED = "request_tenant_refused"
    BROKER_ACTION_ALLOWED = "broker_action_allowed"
    BROKER_ACTION_DENIED = "broker_action_denied"
    POA_SINGLE_USE_REPLAY_BLOCKED = "poa_single_use_replay_blocked"
    POA_REQUEST_ALREADY_SPENT = "poa_request_already_spent"
    POA_REVOKED_PRESENTED = "poa_revoked_presented"
    BROKER_POLICY_UNAVAILABLE = "broker_policy_unavailable"
    BROKER_REQUEST_REJECTED = "broker_request_rejected"
    CHAT_VOTE_CAST = "chat_vote_cast"
    CHAT_VOTE_REFUSED = "chat_vote_refused"
    CHAT_INTERACTION_REJECTED = "chat_interaction_rejected"
    CHAT_NOTICE_SENT = "chat_notice_sent"
    CHAT_NOTICE_FAILED = "chat_notice_failed"
    AUDIT_CHECKPOINT_SIGNED = "audit_checkpoint_signed"
    AUDIT_CHECKPOINT_COSIGNED = "audit_checkpoint_cosigned"
    AUDIT_CHECKPOINT_WITNESS_REFUSED = "audit_checkpoint_witness_refused"
    APPROVAL_REMINDER_SENT = "approval_reminder_sent"
    APPROVAL_ESCALATED = "approval_escalated"
    OUTCOME_NOTIFICATION_DELIVERED = "outcome_notification_delivered"
    OUTCOME_NOTIFICATION_FAILED = "outcome_notification_failed"
    OUTCOME_NOTIFICATION_REFUSED = "outcome_notification_refused"
    CONSOLE_ENROLLMENT_LINK_CREATED = "console_enrollment_link_created"
    CONSOLE_PASSKEY_ENROLLED = "console_passkey_enrolled"
    CONSOLE_PASSKEY_ENROLL_REFUSED = "console_passkey_enroll_refused"
    CONSOLE_PASSKEY_REVOKED = "console_passkey_revoked"
    PASSKEY_ANNOUNCEMENT_REFUSED = "passkey_announcement_refused"
    CONSOLE_DELEGATION_GRANTED = "console_delegation_granted"
    CONSOLE_DELEGATION_REVOKED = "console_delegation_revoked"
    CONSOLE_DELEGATION_REFUSED = "console_delegation_refused"
    CONSOLE_SIGNIN = "console_signin"
    CONSOLE_SIGNIN_REFUSED = "console_signin_refused"
    CONSOLE_VOTE_CAST = "console_vote_cast"
    CONSOLE_VOTE_REFUSED = "console_vote_refused"
    CONSOLE_EVIDENCE_EXPORTED = "console_evidence_exported"
    POLICY_DECISION_LOGGED = "policy_decision_logged"
    AUDIT_LEGAL_HOLD_PLACED = "audit_legal_hold_placed"
    AUDIT_LEGAL_HOLD_RELEASED = "audit_legal_hold_released"
    AUDIT_PURGED = "audit_purged"
    EVENT_DEAD_LETTERED = "event_dead_lettered"
    DLQ_REDRIVEN = "dlq_redriven"


AUDIT_NAMES: frozenset[ReasonCode] = frozenset(
    ReasonCode(name)
    for name in (
        "poa_issued",
        "poa_issued_dual_control",
        "poa_issuance_refused",
        "poa_duplicate_quorum_ignored",
        "identity_proof_rejected",
        "approval_required",
        "approval_quorum_reached",
        "approval_request_denied",
        "approval_request_expired",
        "approval_vote_counted",
        "approval_self_vote_refused",
        "approval_vote_refused",
        "approval_vote_held",
        "approval_vote_orphaned",
        "approval_duplicate_request",
        "identity_rejected",
        "request_status_refused",
        "request_tenant_refused",
        "broker_action_allowed",
        "broker_action_denied",
        "poa_single_use_replay_blocked",
        "poa_request_already_spent",
        "poa_revoked_presented",
        "broker_policy_unavailable",
        "broker_request_rejected",
        "chat_vote_cast",
        "chat_vote_refused",
        "chat_interaction_rejected",
        "chat_notice_sent",
        "chat_notice_failed",
        "audit_checkpoint_signed",
        "audit_checkpoint_cosigned",
        "audit_checkpoint_witness_refused",
        "audit_legal_hold_placed",
        "audit_legal_hold_released",
        "audit_purged",
        "event_dead_lettered",
        "dlq_redriven",
        "approval_reminder_sent",
        "approval_escalated",
        "outcome_notification_delivered",
        "outcome_notification_failed",
        "outcome_notification_refused",
        "console_enrollment_link_created",
        "console_passkey_enrolled",
        "console_passkey_enroll_refused",
        "console_passkey_revoked",
        "passkey_announcement_refused",
        "console_delegation_granted",
        "console_delegation_revoked",
        "console_delegation_refused",
        "console_signin",
        "console_signin_refused",
        "console_vote_cast",
        "console_vote_refused",
        "console_evidence_exported",
        "policy_decision_logged",
    )
)
"""The names `AuditEvent.audit_type` takes (docs/architecture.md §2.9)."""


@dataclass(frozen=True)
class Reason:
    """One reason: a `ReasonCode` and a human-readable detail (may be empty).

    The constructor refuses a code outside the enum (a typo must not become a new
    code) and cuts the detail to `MAX_DETAIL` characters.
    """

    code: ReasonCode
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", ReasonCode(self.code))
        if not isinstance(self.detail, str):
            raise TypeError(f"reason detail must be a string, not {type(self.detail).__name__}")
        if len(self.detail) > MAX_DETAIL:
            object.__setattr__(self, "detail", self.detail[: MAX_DETAIL - 3] + "...")

    def __str__(self) -> str:
        """`code: detail`, or the bare code: the text form events carried before codes were fields."""
        return f"{self.code.value}: {self.detail}" if self.detail else self.code.value

    @classmethod
    def legacy(cls, text: str) -> Reason:
        """A reason from the `code: detail` text of a record published before codes were fields.

        Only for decoding such records (`BrokerDecisionV1.upcast`), in this one place.
        A code outside the enum raises ValueError; the caller decides what that means.
        """
        code, _, detail = text.partition(":")
        return cls(ReasonCode(code.strip()), detail.strip())


def codes_of(reasons: tuple[Reason, ...]) -> tuple[ReasonCode, ...]:
    return tuple(r.code for r in reasons)
