"""Pure issuer rules: which evidence is enough, and which claims a PoA carries."""

from issuer.domain.claims import EvidenceError, build_claims, check_evidence

__all__ = ["EvidenceError", "build_claims", "check_evidence"]
