"""Who may state what: the proofs a reader checks before it believes an outcome, a PoA or a request.

A view or a waiter that believes what it reads on a topic believes anyone who can
write to that topic. So the readers of outcomes and PoAs (the gateway's request
views, the chat service's cards, the SDK's waiters) use an event only when its
proof (docs/architecture.md §4.5) verifies against the trust bundle and proves
a party allowed to state it:

- an outcome (ApprovalRequired, QuorumReached, RequestDenied, RequestExpired)
  by the approvals service; a RequestDenied also by the issuer (a failed
  re-check); verified as the issuer verifies a QuorumReached: the proof must be
  the producer's own, no attester vouches for it;
- a PoaIssued by the issuer, whose SVID signs the envelope. The envelope proof
  was chosen over verifying the token against the issuer's JWKS: it covers
  every field a view shows (request, agent, tier, expiry), not only the token's
  claims; the issuer's RequestDenied needs it anyway; and a reader needs only
  the trust bundle it already has for mTLS, not a key follower;
- an IssuanceRequested (for the gateway's views, which answer only the agent
  that asked) by its agent, or by a request attester (the gateway).

`ProofRules.verify` raises an `IdentityError` for an event it refuses;
`ProofCheck` is the follower check that dead-letters and audits the refusal
(`identity_proof_rejected`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from atb_identity import ClaimNotProvenError, IdentityError, TrustBundle, verify_origin
from atb_runtime.follow import Refused
from atb_runtime.records import audit
from contracts import (
    ApprovalRequired,
    Envelope,
    EventPayload,
    IssuanceRequested,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    RequestExpired,
)

__all__ = ["APPROVALS", "GATEWAY", "ISSUER", "ProofCheck", "ProofRules", "outcome_rules"]

APPROVALS = "spiffe://atb.local/svc/approvals"
ISSUER = "spiffe://atb.local/svc/issuer"
GATEWAY = "spiffe://atb.local/svc/gateway"


@dataclass(frozen=True)
class ProofRules:
    """Event type → who may publish it; and, if set, who may attest an IssuanceRequested's agent."""

    producers: Mapping[type[EventPayload], frozenset[str]]
    request_attesters: frozenset[str] | None = None
    """None: IssuanceRequested is not checked."""

    def verify(self, envelope: Envelope, payload: EventPayload, bundle: TrustBundle, *, at: datetime) -> None:
        """Raise an IdentityError unless the event's proof verifies and is by a party allowed to state it."""
        if isinstance(payload, IssuanceRequested) and self.request_attesters is not None:
            verify_origin(envelope, payload.agent_id, bundle, attesters=self.request_attesters, at=at)
            return
        allowed = self.producers.get(type(payload))
        if allowed is None:
            return
        # Only the producer itself may say this: no attester vouches for an outcome or a PoA.
        verify_origin(envelope, envelope.source, bundle, attesters=(), at=at)
        if envelope.source not in allowed:
            raise ClaimNotProvenError(f"{envelope.source} may not publish {envelope.type}")


def outcome_rules(
    outcome_producers: Collection[str] = (APPROVALS,),
    issuers: Collection[str] = (ISSUER,),
    *,
    request_attesters: Collection[str] | None = None,
) -> ProofRules:
    """The rules for outcomes and PoAs (see the module): approvals' outcomes, the issuer's PoAs and denials."""
    approvals, issuer = frozenset(outcome_producers), frozenset(issuers)
    return ProofRules(
        {
            ApprovalRequired: approvals,
            QuorumReached: approvals,
            RequestExpired: approvals,
            RequestDenied: approvals | issuer,
            PoaIssued: issuer,
        },
        None if request_attesters is None else frozenset(request_attesters),
    )


class ProofCheck:
    """A follower check (`TopicFollower(check=...)`): refuses what `rules` refuse, with an audit event."""

    def __init__(self, bundle: TrustBundle, rules: ProofRules, *, source: str, namespace: str, consumer: str) -> None:
        self._bundle = bundle
        self._rules = rules
        self._source = source
        self._namespace = namespace
        self._consumer = consumer

    def __call__(self, envelope: Envelope, payload: EventPayload) -> Refused | None:
        try:
            self._rules.verify(envelope, payload, self._bundle, at=datetime.now(UTC))
        except IdentityError as exc:
            rejected = audit(
                "identity_proof_rejected",
                source=self._source,
                namespace=self._namespace,
                outcome="denied",
                request_id=getattr(payload, "request_id", None),
                reason=str(exc)[:1024],
                details={"rule": exc.code, "presented": envelope.source[:2048], "consumer": self._consumer},
            )
            return Refused(exc.code, str(exc), (rejected,))
        return None
