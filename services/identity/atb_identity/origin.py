"""Who really produced an event: its proof, or an attester's proof vouching for a claim.

A request or a vote names an identity (`agent_id`, `approver_id`). That claim
counts only if the event's proof of origin proves it directly, or if the proof
is by a configured attester (the mTLS gateway for requests, the chat service for
Slack votes) that vouches for it. Anything else is refused: consumers take
identities only from here (docs/architecture.md §4.5).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from atb_identity.errors import ClaimNotProvenError
from atb_identity.proof import verify_envelope
from atb_identity.svid import TrustBundle
from contracts import Envelope

__all__ = ["Origin", "verify_origin"]


@dataclass(frozen=True)
class Origin:
    claimed: str
    proven_by: str

    @property
    def attested(self) -> bool:
        return self.claimed != self.proven_by


def verify_origin(
    envelope: Envelope, claimed: str, bundle: TrustBundle, *, attesters: Collection[str], at: datetime
) -> Origin:
    """Verify the proof, then that it proves `claimed` directly or through an attester."""
    proven = str(verify_envelope(envelope, bundle, at=at))
    if proven == claimed or proven in attesters:
        return Origin(claimed=claimed, proven_by=proven)
    raise ClaimNotProvenError(f"proof is by {proven}, which is not {claimed} and not a configured attester")
