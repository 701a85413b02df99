"""The `leg` (legal basis) claim, typed after the mandate templates (docs/architecture.md §2.6).

A request names its legal basis with one of the four mandate templates (LI,
CONTRACT, CONSENT, LEGAL), the jurisdiction and the accountable party. The issuer
adds the approval evidence: `approval` for medium risk, `dual_control` for high
and critical, and the external ticket reference for critical.

Models only: no I/O, no policy decisions.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "AccountableParty",
    "Approval",
    "Consent",
    "ContractualNecessity",
    "DualControl",
    "DualControlApprover",
    "Leg",
    "LegalObligation",
    "LegitimateInterest",
]

_Ref = Annotated[str, Field(min_length=1, max_length=128)]
_Text = Annotated[str, Field(max_length=512)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AccountableParty(_Frozen):
    """The human (or team) the agent acts for. Never allowed to approve its own request.

    The id is plain ASCII: an invisible or look-alike character (a zero-width space,
    a Cyrillic e) could otherwise make the accountable party look like someone
    else to the self-approval check.
    """

    type: Annotated[str, Field(min_length=1, max_length=64)]
    id: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:+/-]*$")]


class Approval(_Frozen):
    """Medium risk: the one approver, who differs from the requester (docs/architecture.md §2.5)."""

    approver_id: Annotated[str, Field(min_length=1, max_length=256)]
    approved_at: AwareDatetime
    delegate: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """Set when the approval was cast on behalf of `approver_id` by this delegate (contracts/delegation.py)."""


class DualControlApprover(_Frozen):
    """One of the distinct approvers of a high or critical request."""

    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Annotated[str, Field(min_length=1, max_length=64)]
    vote_digest: str | None = None
    delegate: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """Set when the approval was cast on behalf of `id` by this delegate (contracts/delegation.py)."""
    channel: Literal["console"] | None = None
    """Set for a vote cast in the web console (VoteCastV2); absent for the other channels."""
    device_bound: Literal[True] | None = None
    """Set when the vote carried the approver's passkey assertion, verified by approvals and the issuer."""


class DualControl(_Frozen):
    """High and critical risk: at least two distinct approvers (docs/architecture.md §2.2, §2.5)."""

    required: Literal[True] = True
    approvers: tuple[DualControlApprover, ...]


class _LegCommon(_Frozen):
    jurisdiction: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    accountable_party: AccountableParty
    approval: Approval | None = None
    dual_control: DualControl | None = None
    ticket_ref: Annotated[str, Field(max_length=128)] | None = None


class LegitimateInterest(_LegCommon):
    """Legitimate interest (docs/architecture.md §2.6)."""

    basis: Literal["LI"] = "LI"
    ref: _Ref
    description: _Text = ""


class ContractualNecessity(_LegCommon):
    """Contractual necessity (docs/architecture.md §2.6)."""

    basis: Literal["CONTRACT"] = "CONTRACT"
    ref: _Ref
    description: _Text = ""


class Consent(_LegCommon):
    """Consent (docs/architecture.md §2.6)."""

    basis: Literal["CONSENT"] = "CONSENT"
    ref: _Ref
    data_subject: Annotated[str, Field(min_length=1, max_length=256)]
    purpose: Annotated[str, Field(min_length=1, max_length=512)]


class LegalObligation(_LegCommon):
    """Legal obligation (docs/architecture.md §2.6)."""

    basis: Literal["LEGAL"] = "LEGAL"
    ref: _Ref
    description: _Text = ""


Leg = Annotated[
    LegitimateInterest | ContractualNecessity | Consent | LegalObligation,
    Field(discriminator="basis"),
]
"""A `leg` claim: one of the four templates, flattened (docs/architecture.md §2.6)."""
