"""What the issuer's service depends on, as `Protocol`s: its keys and the evidence check.

`adapters.keyring` (`SigningKeyRing`, `MountedKey`) and `adapters.evidence.EvidenceVerifier`
implement them; a test may hand the service its own. The policy is asked through
`atb_runtime.policy.RequirementsSource`, keys are announced through
`atb_runtime.publisher.RecordPublisher`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from contracts import QuorumReached
from issuer.adapters.keyring import KeyEntry
from issuer.adapters.keys import SigningKey

__all__ = ["KeySource", "QuorumEvidence"]


class KeySource(Protocol):
    """The issuer's signing keys over time."""

    def current(self, now: datetime) -> SigningKey:
        """The key that signs at `now`."""
        ...

    def published(self, now: datetime) -> list[KeyEntry]:
        """The keys whose public part must be published at `now` (not yet retired)."""
        ...


class QuorumEvidence(Protocol):
    """Re-checks a QuorumReached: raises `QuorumEvidenceError` unless its request and votes hold."""

    async def verify(self, quorum: QuorumReached) -> None: ...


class OutcomeNotifier(Protocol):
    """Delivers outcome notifications to agents' callbacks (adapters.webhook.WebhookNotifier)."""

    async def deliver(self, request_id: str, url: str, body: bytes, delivery_id: str | None = None) -> str:
        """Deliver one notification, retrying, and audit its fate: `delivered`, `failed` or `refused`."""
        ...
