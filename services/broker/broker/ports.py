"""What the broker's services depend on, as `Protocol`s.

`adapters.keys.KeyRing`, `adapters.revocations.RevocationList`,
`adapters.spent.SpentStore` and `adapters.outbox.OutboxRelay` implement them;
a test may hand `Authorizer` and `DecisionQueue` in-memory ones. The policy
port is `service.Policy`, the token verifier `adapters.verify.TokenVerifier`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from atb_runtime import Outgoing
from broker.adapters.spent import Spend, SpendVerdict

__all__ = ["DecisionRelay", "KeyRefresh", "Revocations", "SpentLedger"]


class KeyRefresh(Protocol):
    """The verification keys: fetched again when a token names a key not known yet."""

    async def refresh(self) -> bool:
        """Fetch the keys once (unless fetched very recently); True when fetched."""
        ...


class Revocations(Protocol):
    def revoked(self, jti: str, request_id: str) -> str | None:
        """The revocation reason when either the PoA or its whole request is revoked."""
        ...


class SpentLedger(Protocol):
    """Single use: each PoA and each request is spent by one presentation only."""

    async def spend_many(self, spends: Sequence[Spend]) -> list[SpendVerdict]: ...

    async def commit(
        self,
        spends: Sequence[Spend],
        outbox: Callable[[list[SpendVerdict]], bytes] | None = None,
        instance: str = "",
    ) -> list[SpendVerdict]:
        """Spend, and (with `outbox`) store the batch's events in the same transaction."""
        ...


class DecisionRelay(Protocol):
    """Publishes the decisions the spending transaction stored in the outbox."""

    def notify(self) -> None: ...

    async def send_now(self, events: Sequence[Outgoing]) -> None: ...
