"""Pure issuer rules: which evidence is enough, and which claims a PoA carries."""

from issuer.domain.claims import build_claims, check_evidence
from issuer.errors import QuorumEvidenceError

__all__ = ["QuorumEvidenceError", "build_claims", "check_evidence"]
