"""Pure rules of the console: what it knows about each request, whom it shows it to, whose vote it publishes.

No I/O, no clock reads, no crypto, no frameworks (import-linter: domain/ stays pure).
"""

from console.domain.view import (
    ApprovalView,
    Closure,
    VoteDecision,
    VoteRefused,
    decide_on_behalf,
    decide_vote,
    eligible,
    evolve,
    explain,
    request_id_of,
)

__all__ = [
    "ApprovalView",
    "Closure",
    "VoteDecision",
    "VoteRefused",
    "decide_on_behalf",
    "decide_vote",
    "eligible",
    "evolve",
    "explain",
    "request_id_of",
]
