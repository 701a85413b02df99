"""Chat convenience with the console's assurance: high and critical are approved with a passkey.

A Slack click or a Teams action proves who clicked, not that a person was present with their device.
For the tiers of `StepUp.tiers`, the card's Approve button opens the request's page in the console, where
the vote carries a WebAuthn assertion over the request's digest that approvals and the issuer verify; an
approve click on such a card (a stale card, a forged action) is refused (`step_up_required`). Deny stays
in chat: one deny fails the request closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from contracts import Tier

__all__ = ["StepUp"]


@dataclass(frozen=True)
class StepUp:
    console_url: str
    """The console's public origin, e.g. https://console.example."""
    tiers: frozenset[Tier]

    def applies(self, tier: Tier) -> bool:
        return tier in self.tiers

    def link(self, request_id: str) -> str:
        """The console's page of the request, where the approver signs in and approves with their passkey."""
        return f"{self.console_url.rstrip('/')}/requests/{quote(request_id, safe='')}"
