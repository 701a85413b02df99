"""Issuer application service: QuorumReached → re-check → sign → PoaIssued.

Other outcomes on the topic (ApprovalRequired, RequestDenied, ...) are not the
issuer's business and pass by. Evidence that does not hold yields no PoA but a
RequestDenied and an audit event with the reason.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from atb_identity import IdentityError, TrustBundle, verify_origin
from atb_runtime import Incoming, Outgoing, audit, dead_letter, outgoing
from contracts import (
    EventDecodeError,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    Tier,
    decode_envelope,
    payload_of,
)
from issuer.adapters.signer import PoaSigner
from issuer.domain import EvidenceError, build_claims, check_evidence
from issuer.settings import IssuerSettings

__all__ = ["IssuerService"]


class IssuerService:
    CONSUMER = "issuer"

    def __init__(self, settings: IssuerSettings, signer: PoaSigner, bundle: TrustBundle) -> None:
        self._settings = settings
        self._bundle = bundle
        self._attesters = frozenset(settings.request_attesters)
        self._signer = signer
        self._source = settings.service_id
        self._ns = settings.topic_namespace

    async def handle(self, records: Sequence[Incoming]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for record in records:
            out.extend(self._handle_one(record))
        return out

    def _handle_one(self, record: Incoming) -> list[Outgoing]:
        try:
            payload = payload_of(decode_envelope(record.value))
        except EventDecodeError as exc:
            return dead_letter(
                record,
                consumer=self.CONSUMER,
                error_code=exc.code,
                reason=exc.reason,
                source=self._source,
                namespace=self._ns,
            )
        if not isinstance(payload, QuorumReached):
            return []
        try:
            check_evidence(payload)
            self._check_request_origin(payload)
        except EvidenceError as exc:
            return self._refuse(payload, exc)
        return self._issue(payload)

    def _check_request_origin(self, quorum: QuorumReached) -> None:
        """The embedded request must be the exact, proven request of its agent (DESIGN.md §6.1)."""
        try:
            envelope = decode_envelope(quorum.request_event.encode())
            embedded = payload_of(envelope)
        except EventDecodeError as exc:
            raise EvidenceError("request_event_invalid", exc.reason) from exc
        if embedded != quorum.request:
            raise EvidenceError("request_event_mismatch", "embedded request event differs from the request")
        try:
            verify_origin(
                envelope, quorum.request.agent_id, self._bundle, attesters=self._attesters, at=datetime.now(UTC)
            )
        except IdentityError as exc:
            raise EvidenceError("request_not_proven", f"{exc.code}: {exc}") from exc

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
        token = self._signer.sign(claims)
        issued = PoaIssued(
            request_id=quorum.request_id,
            jti=claims.jti,
            kid=self._signer.kid,
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
                    "kid": self._signer.kid,
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
