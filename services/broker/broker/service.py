"""Broker application service: ActionRequested → verify PoA → decide → BrokerDecision.

Every request gets exactly one decision and one audit event; a missing, forged,
expired or mismatched PoA is a deny with its reason, never an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from atb_runtime import DeadLetters, Incoming, Outgoing, audit, each_record, outgoing
from broker.adapters.verify import PoaRejectedError, PoaVerifier
from broker.domain import Verdict, decide
from broker.settings import BrokerSettings
from contracts import ActionRequested, BrokerDecision, Decision, EventDecodeError, decode_envelope, payload_of

__all__ = ["BrokerService"]

POLICY_VERSION = "broker-skeleton-1"


class BrokerService:
    CONSUMER = "broker"

    def __init__(self, settings: BrokerSettings, verifier: PoaVerifier) -> None:
        self._verifier = verifier
        self._source = settings.service_id
        self._ns = settings.topic_namespace
        self._dead = DeadLetters(self.CONSUMER, self._source, self._ns)

    async def handle(self, records: Sequence[Incoming]) -> list[Outgoing]:
        return await each_record(records, self._handle_one, self._dead.crashed)

    async def _handle_one(self, record: Incoming) -> list[Outgoing]:
        try:
            payload = payload_of(decode_envelope(record.value))
        except EventDecodeError as exc:
            return self._dead(record, exc.code, exc.reason)
        if not isinstance(payload, ActionRequested):
            return self._dead(record, "unexpected_type", f"{type(payload).__name__} does not belong on {record.topic}")
        verdict, jti = self._evaluate(payload)
        decision = BrokerDecision(
            request_id=payload.request_id,
            action_id=payload.action_id,
            agent_id=payload.agent_id,
            action=payload.action,
            decision=verdict.decision,
            reasons=verdict.reasons,
            policy_version=POLICY_VERSION,
            jti=jti,
            decided_at=datetime.now(UTC),
        )
        allowed = verdict.decision is Decision.ALLOW
        return [
            outgoing(decision, source=self._source, namespace=self._ns),
            audit(
                "broker_action_allowed" if allowed else "broker_action_denied",
                source=self._source,
                namespace=self._ns,
                outcome="success" if allowed else "denied",
                request_id=payload.request_id,
                reason="; ".join(verdict.reasons),
                details={"action": payload.action, "agent_id": payload.agent_id, "jti": jti},
            ),
        ]

    def _evaluate(self, action: ActionRequested) -> tuple[Verdict, str | None]:
        if not action.poa:
            return Verdict(Decision.DENY, ("poa_missing: every action needs a PoA",)), None
        try:
            claims = self._verifier.verify(action.poa)
        except PoaRejectedError as exc:
            return Verdict(Decision.DENY, (f"{exc.code}: {exc.reason}",)), None
        return decide(action, claims), claims.jti
