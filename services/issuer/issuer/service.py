"""Issuer application service: QuorumReached → re-check → sign → PoaIssued.

Outcome notifications are not told from here: PoaIssued and RequestDenied carry the
request's callback (`callback_url`), and `issuer.callbacks` tells it once it reads the
record back committed, at least once, even across a crash.

Other outcomes on the topic (ApprovalRequired, ...) are not the
issuer's business and pass by; an event that is no outcome at all (a VoteCast
published on the outcomes topic) is dead-lettered as `unexpected_type`. Evidence that does not hold yields no PoA but a
RequestDenied and an audit event with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from atb_identity import ClaimNotProvenError, IdentityError, Svid, TrustBundle, sign_envelope, verify_origin
from atb_runtime import DeadLetters, Incoming, Outgoing, audit, each_record, outgoing_envelope
from atb_runtime.identity import service_svid
from atb_runtime.publisher import RecordPublisher
from atb_runtime.readback import read_records
from contracts import (
    EventDecodeError,
    EventPayload,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    Tier,
    Topic,
    decode_envelope,
    make_envelope,
    payload_of,
    topic_name,
)
from issuer.adapters.announce import key_records
from issuer.adapters.keyring import KeyEntry
from issuer.adapters.keys import SigningKey
from issuer.adapters.metrics import REFUSED, count_issued
from issuer.adapters.signer import PoaSigner
from issuer.domain import QuorumEvidenceError, build_claims, check_evidence
from issuer.domain.evidence import DEADLINE_SLACK, MAX_QUORUM_AGE, check_fresh
from issuer.ports import KeySource, QuorumEvidence
from issuer.settings import IssuerSettings

__all__ = ["ISSUED_MEMORY", "IssuerService"]

log = logging.getLogger(__name__)

ISSUED_MEMORY = MAX_QUORUM_AGE + 2 * DEADLINE_SLACK + timedelta(minutes=1)
"""How long the issuer remembers that a request got its PoA. A QuorumReached older than
MAX_QUORUM_AGE can never produce a PoA (`check_fresh`), so a duplicate of one that did is
refused as stale even when forgotten: memory and restore are bounded by time, not history."""


class IssuerService:
    CONSUMER = "issuer"

    def __init__(
        self,
        settings: IssuerSettings,
        keys: KeySource | Callable[[datetime], SigningKey],
        evidence: QuorumEvidence,
        bundle: TrustBundle,
        svid: Svid | None = None,
        *,
        publisher: RecordPublisher | None = None,
    ) -> None:
        """`keys`: the key source; a bare function giving the current key signs but publishes no key.
        `publisher`: where the keys are announced on start (none: not announced)."""
        self._settings = settings
        self._bundle = bundle
        self._svid = svid
        """Signs what the issuer states (PoaIssued, RequestDenied); None: the SVID of the settings, on first use."""
        self._quorum_producers = frozenset(settings.quorum_producers)
        self._partitions: set[int] = set()
        self._issued: dict[str, tuple[int, datetime]] = {}
        """Request id → (partition, when) of the PoAs issued within ISSUED_MEMORY."""
        self._pruned_at = datetime.now(UTC)
        self._evidence = evidence
        self._keys: KeySource = keys if not callable(keys) else _Signing(keys)
        self._publisher = publisher
        self._source = settings.service_id
        self._ns = settings.topic_namespace
        self._dead = DeadLetters(self.CONSUMER, self._source, self._ns)

    # -- keys --------------------------------------------------------------------------

    async def start(self) -> None:
        """Announce every published key on `atb.keys` before anything is signed (docs/architecture.md §5.5)."""
        if self._publisher is None:
            return
        published = self._keys.published(datetime.now(UTC))
        await self._publisher.publish(
            key_records(published, namespace=self._ns, issuer=self._source, svid=self._identity())
        )
        await self._publisher.flush()

    async def stop(self) -> None:
        return None

    def jwks(self) -> list[dict[str, str]]:
        """The public keys published now, as JWKs (`GET /.well-known/jwks.json`)."""
        return [entry.key.jwk for entry in self._keys.published(datetime.now(UTC))]

    # -- outcomes ------------------------------------------------------------------------

    async def handle(self, records: Sequence[Incoming]) -> list[Outgoing]:
        return await each_record(records, self._handle_one, self._dead.crashed)

    async def on_assigned(self, partitions: set[int]) -> None:
        """Learn which requests got their PoA recently on the partitions we now own (after they were fenced)."""
        self._partitions = set(partitions)
        self._issued = {}
        await self._load(self._partitions)

    async def on_rewind(self, partitions: set[int]) -> None:
        """A transaction failed: forget what was noted in memory for these partitions, reload what was committed."""
        self._issued = {r: v for r, v in self._issued.items() if v[0] not in partitions}
        await self._load(partitions & self._partitions)

    async def _load(self, partitions: set[int]) -> None:
        topic = topic_name(Topic.POA_ISSUED, self._ns)
        since = datetime.now(UTC) - ISSUED_MEMORY
        for record in await read_records(self._settings.kafka_bootstrap_servers, topic, partitions, since=since):
            try:
                payload = payload_of(decode_envelope(record.value))
            except EventDecodeError:
                continue
            if isinstance(payload, PoaIssued):
                self._issued[payload.request_id] = (record.partition, payload.issued_at)

    @property
    def remembered(self) -> int:
        """Requests whose PoA the issuer remembers (bounded by ISSUED_MEMORY)."""
        return len(self._issued)

    def _prune(self, now: datetime) -> None:
        if now - self._pruned_at < timedelta(seconds=30):
            return
        self._pruned_at = now
        cutoff = now - ISSUED_MEMORY
        self._issued = {r: v for r, v in self._issued.items() if v[1] >= cutoff}

    def set_aside(self, record: Incoming, code: str, reason: str) -> list[Outgoing]:
        """A record the processor could not get through (a poison record, a misplaced one): dead-lettered."""
        return self._dead(record, code, reason)

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
            return []  # an approvals outcome's callback is told by issuer.callbacks
        try:
            # Only the approvals service may say a quorum was reached (docs/architecture.md §6.1).
            verify_origin(envelope, envelope.source, self._bundle, attesters=(), at=datetime.now(UTC))
            if envelope.source not in self._quorum_producers:
                raise ClaimNotProvenError(f"{envelope.source} may not announce quorums")
        except IdentityError as exc:
            return [*self._dead(record, exc.code, str(exc)), self._proof_refused(payload, envelope.source, exc)]
        self._prune(datetime.now(UTC))
        if payload.request_id in self._issued:
            return [self._duplicate(payload)]
        try:
            check_evidence(payload)
            check_fresh(payload, datetime.now(UTC))
            await self._evidence.verify(payload)
        except QuorumEvidenceError as exc:
            return self._refuse(payload, exc)
        self._issued[payload.request_id] = (record.partition, datetime.now(UTC))
        return self._issue(payload)

    def _signed(self, event: EventPayload) -> Outgoing:
        """PoaIssued and RequestDenied carry the issuer's proof: views and waiters use only proven ones."""
        envelope = sign_envelope(make_envelope(event, source=self._source), self._identity())
        return outgoing_envelope(envelope, topic_name(event.topic, self._ns))

    def _identity(self) -> Svid:
        if self._svid is None:
            s = self._settings
            self._svid = service_svid(s.state_dir, s.service_id, s.svid_cert_path, s.svid_key_path)
        return self._svid

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
        """Exactly one PoA per request: a second quorum for it gets none (docs/architecture.md §6.2)."""
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
        signer = PoaSigner(self._keys.current(datetime.now(UTC)))
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
            callback_url=quorum.request.callback_url,
        )
        dual = quorum.tier in (Tier.HIGH, Tier.CRITICAL)
        count_issued(quorum, issued, datetime.now(UTC))
        return [
            self._signed(issued),
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

    def _refuse(self, quorum: QuorumReached, exc: QuorumEvidenceError) -> list[Outgoing]:
        REFUSED.labels(exc.code.value).inc()
        denied = RequestDenied(
            request_id=quorum.request_id,
            code=exc.code,
            reason=f"issuer re-check failed: {exc.reason}",
            denied_by=self._source,
            decided_at=datetime.now(UTC),
            callback_url=quorum.request.callback_url,
        )
        return [
            self._signed(denied),
            audit(
                "poa_issuance_refused",
                source=self._source,
                namespace=self._ns,
                outcome="denied",
                request_id=quorum.request_id,
                reason=exc.reason,
                details={"code": exc.code.value},
            ),
        ]


class _Signing:
    """A key source from a function giving the current key: it publishes no key."""

    def __init__(self, current: Callable[[datetime], SigningKey]) -> None:
        self.current = current

    def published(self, now: datetime) -> list[KeyEntry]:
        return []
