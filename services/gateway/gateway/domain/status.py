"""The status of each request, folded from the events on the outcome and PoA topics.

`evolve(view, event) -> view` is pure. A view remembers the requesting agent, so
`GET /requests/{id}` can answer only to it (and hand the PoA only to it). Once a
request is final (issued, denied, expired) later events do not change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from contracts import (
    ApprovalRequired,
    EventPayload,
    IssuanceRequested,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    Tier,
)
from contracts.http import IssuedPoa, RequestStatus

__all__ = ["FINAL", "RequestView", "Views", "evolve", "visible_to"]

FINAL = frozenset({"issued", "denied", "expired"})


@dataclass(frozen=True)
class RequestView:
    request_id: str
    agent_id: str | None = None
    status: str = "pending"
    tier: Tier | None = None
    reason: str = ""
    poa: IssuedPoa | None = None

    def as_status(self) -> RequestStatus:
        return RequestStatus.model_validate(
            {
                "request_id": self.request_id,
                "status": self.status,
                "tier": self.tier,
                "reason": self.reason,
                "poa": self.poa,
            }
        )


def evolve(view: RequestView, event: EventPayload) -> RequestView:
    """The view after one event of its request."""
    if isinstance(event, IssuanceRequested):
        return replace(view, agent_id=view.agent_id or event.agent_id)
    if view.status in FINAL:
        return view
    if isinstance(event, ApprovalRequired):
        return replace(view, status="approval_required", tier=event.tier, agent_id=view.agent_id or event.agent_id)
    if isinstance(event, QuorumReached):
        return replace(view, status="approved", tier=event.tier, agent_id=view.agent_id or event.request.agent_id)
    if isinstance(event, RequestDenied):
        return replace(view, status="denied", reason=event.reason)
    if isinstance(event, RequestExpired):
        return replace(view, status="expired", reason="deadline passed without quorum")
    if isinstance(event, PoaIssued):
        poa = IssuedPoa(token=event.token, jti=event.jti, expires_at=event.expires_at)
        return replace(view, status="issued", tier=event.tier, agent_id=view.agent_id or event.agent_id, poa=poa)
    return view


def visible_to(view: RequestView, agent_id: str) -> bool:
    """Only the agent that asked may see a request (and its PoA)."""
    return view.agent_id is not None and view.agent_id == agent_id


@dataclass
class Views:
    """Every request's view, bounded: the oldest final views are forgotten first."""

    limit: int = 100_000
    _views: dict[str, RequestView] = field(default_factory=dict)

    def apply(self, event: EventPayload) -> None:
        request_id = getattr(event, "request_id", None)
        if not isinstance(request_id, str):
            return
        current = self._views.get(request_id) or RequestView(request_id)
        self._views[request_id] = evolve(current, event)
        if len(self._views) > self.limit:
            self._forget_one()

    def get(self, request_id: str) -> RequestView | None:
        return self._views.get(request_id)

    def _forget_one(self) -> None:
        for key, view in self._views.items():
            if view.status in FINAL:
                del self._views[key]
                return
        del self._views[next(iter(self._views))]
