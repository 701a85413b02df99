"""Issuer application service: QuorumReached → re-check → sign → PoaIssued.

Other outcomes on the topic (ApprovalRequired, RequestDenied, ...) are not the
issuer's business and pass by; an event that is no outcome at all (a VoteCast
published on the outcomes topic) is dead-lettered as `unexpected_type`. Evidence that does not hold yields no PoA but a
RequestDenied and an audit event with the reason.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aiokafka import TopicPartition

from atb_identity import ClaimNotProvenError, IdentityError, TrustBundle, verify_origin
from atb_runtime import DeadLetters, Incoming, Outgoing, audit, each_record, outgoing
from atb_runtime.readback import read_committed
from contracts import (
    EventDecodeError,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    Tier,
    Topic,
    decode_envelope,
    payload_of,
    topic_name,
)
from issuer.adapters.evidence import EvidenceVerifier
from issuer.adapters.keys import SigningKey
from issuer.adapters.signer import PoaSigner
from issuer.domain import EvidenceError, build_claims, check_evidence
from issuer.domain.evidence import check_fresh
from issuer.settings import IssuerSettings

__all__ = ["IssuerService"]


class IssuerService:
    CONSUMER = "issuer"

    def __init__(
        self,
        settings: IssuerSettings,
        keys: Callable[[datetime], SigningKey],
        evidence: EvidenceVerifier,
        bundle: TrustBundle,
    ) -> None:
        self._settings = settings
        self._bundle = bundle
        self._quorum_producers = frozenset(settings.quorum_producers)
        self._partitions: set[int] = set()
        self._issued: set[str] = set()
        self._evidence = evidence
        self._keys = keys
        self._source = settings.service_id
        self._ns = settings.topic_namespace
        self._dead = DeadLetters(self.CONSUMER, self._source, self._ns)

    async def handle(self, records: Sequence[Incoming]) -> list[Outgoing]:
        return await each_record(records, self._handle_one, self._dead.crashed)

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Learn which requests already got their PoA on the partitions we now own."""
        self._partitions = {tp.partition for tp in assigned}
        await self.on_rewind()

    async def on_rewind(self) -> None:
        topic = topic_name(Topic.POA_ISSUED, self._ns)
        issued = await read_committed(self._settings.kafka_bootstrap_servers, topic, self._partitions)
        self._issued = {p.request_id for p in issued if isinstance(p, PoaIssued)}

    async def _handle_one(self, record: Incoming) -> list[Outgoing]:
        try:
            envelope = decode_envelope(record.value)
            payload = payload_of(envelope)
        except EventDecodeError as exc:
            return self._dead(record, exc.code, exc.reason)
        if not isinstance(payload, QuorumReached):
            if payload.topic is not Topic.OUTCOMES:
                # Not an outcome at all: dead-lettered (legitimate outcomes the issuer does not handle pass by).
                return self._dead(record, "unexpected_type", f"{envelope.type} does not belong on {record.topic}")
            return []
        try:
            # Only the approvals service may say a quorum was reached (DESIGN.md §6.1).
            verify_origin(envelope, envelope.source, self._bundle, attesters=(), at=datetime.now(UTC))
            if envelope.source not in self._quorum_producers:
                raise ClaimNotProvenError(f"{envelope.source} may not announce quorums")
        except IdentityError as exc:
            return [*self._dead(record, exc.code, str(exc)), self._proof_refused(payload, envelope.source, exc)]
        if payload.request_id in self._issued:
            return [self._duplicate(payload)]
        try:
            check_evidence(payload)
            check_fresh(payload, datetime.now(UTC))
            await self._evidence.verify(payload)
        except EvidenceError as exc:
            return self._refuse(payload, exc)
        self._issued.add(payload.request_id)
        return self._issue(payload)

    def _proof_refused(self, quorum: QuorumReached, presented: str, exc: IdentityError) -> Outgoing:
        return audit(
            "identity_proof_rejected",
            source=self._source,
            namespace=self._ns,
            outcome="denied",
            request_id=quorum.request_id,
            reason=str(exc)[:1024],
            details={"rule": exc.code, "presented": presented, "consumer": self.CONSUMER},
        )

    def _duplicate(self, quorum: QuorumReached) -> Outgoing:
        """Exactly one PoA per request: a second quorum for it gets none (DESIGN.md §6.2)."""
        return audit(
            "poa_duplicate_quorum_ignored",
            source=self._source,
            namespace=self._ns,
            outcome="denied",
            request_id=quorum.request_id,
            reason="this request already has its PoA",
        )

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
