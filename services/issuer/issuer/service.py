"""Issuer application service: QuorumReached → re-check → sign → PoaIssued.

Other outcomes on the topic (ApprovalRequired, RequestDenied, ...) are not the
issuer's business and pass by. Evidence that does not hold yields no PoA but a
RequestDenied and an audit event with the reason.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from atb_runtime import Incoming, Outgoing, audit, dead_letter, each_record, outgoing, request_id_hint
from contracts import (
    EventDecodeError,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    Tier,
    decode_envelope,
    payload_of,
)
from issuer.adapters.evidence import EvidenceVerifier
from issuer.adapters.keys import SigningKey
from issuer.adapters.signer import PoaSigner
from issuer.domain import EvidenceError, build_claims, check_evidence
from issuer.settings import IssuerSettings

__all__ = ["IssuerService"]


class IssuerService:
    CONSUMER = "issuer"

    def __init__(
        self, settings: IssuerSettings, keys: Callable[[datetime], SigningKey], evidence: EvidenceVerifier
    ) -> None:
        self._settings = settings
        self._evidence = evidence
        self._keys = keys
        self._source = settings.service_id
        self._ns = settings.topic_namespace

    async def handle(self, records: Sequence[Incoming]) -> list[Outgoing]:
        return await each_record(records, self._handle_one, self._failed)

    def _failed(self, record: Incoming, exc: Exception) -> list[Outgoing]:
        return self._dead(record, "internal_error", f"{type(exc).__name__}: {exc}")

    def _dead(self, record: Incoming, code: str, reason: str) -> list[Outgoing]:
        return dead_letter(
            record,
            consumer=self.CONSUMER,
            error_code=code,
            reason=reason,
            source=self._source,
            namespace=self._ns,
            request_id=request_id_hint(record),
        )

    async def _handle_one(self, record: Incoming) -> list[Outgoing]:
        try:
            payload = payload_of(decode_envelope(record.value))
        except EventDecodeError as exc:
            return self._dead(record, exc.code, exc.reason)
        if not isinstance(payload, QuorumReached):
            return []
        try:
            check_evidence(payload)
            await self._evidence.verify(payload)
        except EvidenceError as exc:
            return self._refuse(payload, exc)
        return self._issue(payload)

    def _issue(self, quorum: QuorumReached) -> list[Outgoing]:
        now = datetime.now(UTC).replace(microsecond=0)
        claims = build_claims(
            quorum,
            issuer=self._source,
            audience=self._settings.audience,
            now=int(now.timestamp()),
            jti=uuid.uuid4().hex,
            cnf_thumbprint=quorum.request.agent_cert_thumbprint,
        )
        signer = PoaSigner(self._keys(datetime.now(UTC)))
        token = signer.sign(claims)
        issued = PoaIssued(
            request_id=quorum.request_id,
            jti=claims.jti,
            kid=signer.kid,
            agent_id=claims.sub,
            action=claims.act,
            tier=quorum.tier,
            issued_at=now,
            expires_at=datetime.fromtimestamp(claims.exp, UTC),
            token=token,
            token_sha256="sha256:" + hashlib.sha256(token.encode()).hexdigest(),
        )
        dual = quorum.tier in (Tier.HIGH, Tier.CRITICAL)
        return [
            outgoing(issued, source=self._source, namespace=self._ns),
            audit(
                "poa_issued_dual_control" if dual else "poa_issued",
                source=self._source,
                namespace=self._ns,
                outcome="success",
                request_id=quorum.request_id,
                details={
                    "jti": claims.jti,
                    "kid": signer.kid,
                    "tier": quorum.tier.value,
                    "action": claims.act,
                    "agent_id": claims.sub,
                    "approver_ids": [vote.approver_id for vote in quorum.votes],
                    "expires_at": issued.expires_at.isoformat(),
                },
            ),
        ]

    def _refuse(self, quorum: QuorumReached, exc: EvidenceError) -> list[Outgoing]:
        denied = RequestDenied(
            request_id=quorum.request_id,
            code=exc.code,
            reason=f"issuer re-check failed: {exc.reason}",
            denied_by=self._source,
            decided_at=datetime.now(UTC),
        )
        return [
            outgoing(denied, source=self._source, namespace=self._ns),
            audit(
                "poa_issuance_refused",
                source=self._source,
                namespace=self._ns,
                outcome="denied",
                request_id=quorum.request_id,
                reason=exc.reason,
                details={"code": exc.code},
            ),
        ]
