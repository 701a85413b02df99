"""Approvals application service: decode → verify → ask policy → decide → events.

One batch of records in, the records to publish out; the processor commits them
with the input offsets in one Kafka transaction. Bad records become dead letters
(and audit events); they never stop the batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from approvals.adapters.policy import PolicyRequirements
from approvals.domain import decide_intake
from approvals.settings import ApprovalsSettings
from atb_identity import IdentityError, TrustBundle, verify_origin
from atb_runtime import Incoming, Outgoing, audit, dead_letter, each_record, outgoing, request_id_hint
from contracts import EventDecodeError, IssuanceRequested, decode_envelope, payload_of

__all__ = ["ApprovalsService"]


class ApprovalsService:
    CONSUMER = "approvals"

    def __init__(self, settings: ApprovalsSettings, policy: PolicyRequirements, bundle: TrustBundle) -> None:
        self._settings = settings
        self._bundle = bundle
        self._attesters = frozenset(settings.request_attesters)
        self._policy = policy
        self._ticket = re.compile(settings.ticket_pattern)
        self._source = settings.service_id
        self._ns = settings.topic_namespace

    async def handle(self, records: Sequence[Incoming]) -> list[Outgoing]:
        return await each_record(records, self._handle_one, self._failed)

    def _failed(self, record: Incoming, exc: Exception) -> list[Outgoing]:
        return self._dead(record, "internal_error", f"{type(exc).__name__}: {exc}")

    async def _handle_one(self, record: Incoming) -> list[Outgoing]:
        try:
            envelope = decode_envelope(record.value)
            payload = payload_of(envelope)
        except EventDecodeError as exc:
            return self._dead(record, exc.code, exc.reason)
        if not isinstance(payload, IssuanceRequested):
            return self._dead(record, "unexpected_type", f"{envelope.type} does not belong on {record.topic}")
        try:
            origin = verify_origin(
                envelope, payload.agent_id, self._bundle, attesters=self._attesters, at=datetime.now(UTC)
            )
        except IdentityError as exc:
            return self._identity_refused(record, envelope.source, exc, payload)
        requirements = await self._policy.for_request(payload)
        result = decide_intake(
            payload,
            record.value.decode() if record.value else "",
            requirements,
            now=datetime.now(UTC),
            decided_by=self._source,
            ticket_pattern=self._ticket,
        )
        events = [outgoing(event, source=self._source, namespace=self._ns) for event in result.events]
        events.append(
            audit(
                result.audit_type,
                source=self._source,
                namespace=self._ns,
                outcome=result.outcome,
                request_id=payload.request_id,
                reason=result.reason,
                details={
                    "requester": origin.claimed,
                    "proven_by": origin.proven_by,
                    "tier": requirements.tier.value,
                    "required_approvals": requirements.approvals,
                    "action": payload.action,
                    "policy_version": requirements.policy_version,
                },
            )
        )
        return events

    def _identity_refused(
        self, record: Incoming, presented: str, exc: IdentityError, payload: IssuanceRequested
    ) -> list[Outgoing]:
        """Dead-letter the request, and audit which identity rule failed for whom (a spike shows up)."""
        refused = audit(
            "identity_proof_rejected",
            source=self._source,
            namespace=self._ns,
            outcome="denied",
            request_id=payload.request_id,
            reason=str(exc)[:1024],
            details={"rule": exc.code, "presented": presented, "claimed": payload.agent_id, "consumer": self.CONSUMER},
        )
        return [*self._dead(record, exc.code, str(exc), payload), refused]

    def _dead(
        self, record: Incoming, code: str, reason: str, payload: IssuanceRequested | None = None
    ) -> list[Outgoing]:
        return dead_letter(
            record,
            consumer=self.CONSUMER,
            error_code=code,
            reason=reason,
            source=self._source,
            namespace=self._ns,
            request_id=payload.request_id if payload else request_id_hint(record),
        )
