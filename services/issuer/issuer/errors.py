"""The issuer's errors.

    IssuerError                   base of every issuer error
    └── QuorumEvidenceError       a quorum's evidence does not hold (a ValueError): no PoA,
                                  a RequestDenied with its `code` and `poa_issuance_refused`

`code` is a `contracts.reasons.ReasonCode`, `reason` the detail for humans; the
service publishes both as fields, never one string to split.
"""

from __future__ import annotations

from contracts.reasons import Reason, ReasonCode

__all__ = ["IssuerError", "QuorumEvidenceError"]


class IssuerError(Exception):
    """Base of every issuer error."""


class QuorumEvidenceError(IssuerError, ValueError):
    """The quorum's evidence does not hold. `code` is stable, `reason` human-readable."""

    def __init__(self, code: ReasonCode | str, reason: str) -> None:
        self.code = ReasonCode(code)
        self.reason = reason
        super().__init__(f"{self.code.value}: {reason}")

    @property
    def as_reason(self) -> Reason:
        return Reason(self.code, self.reason)
