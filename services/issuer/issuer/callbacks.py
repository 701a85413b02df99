"""Outcome callbacks, told at least once: from committed records, even across a crash.

An agent may register a callback URL with its request (`IssuanceRequested.callback_url`);
the outcome records carry it on: the issuer's PoaIssued and RequestDenied, the approvals
service's RequestDenied and RequestExpired. `CallbackTeller` reads those records back
once committed (`read_committed`), through `atb_runtime.acking.AckingConsumer` in a
consumer group of its own (`<issuer group>.callbacks`): a record's offset is committed
only once its delivery is done (delivered, failed for good, or refused). So:

- a PoA or denial whose transaction aborted, or a thawed zombie's that was fenced,
  is never told (it is never read);
- an issuer killed (SIGKILL) after the commit, or in the middle of its retries,
  tells the outcome after its restart, or another instance does once the partition
  moves: at least once. The delivery id (`dlv-<request>-<outcome>`) is the same on
  every delivery, so a receiver drops a repeat.

Told only when the record's proof is its producer's: PoaIssued from the issuer
(`service_id`), RequestDenied from the issuer or the approvals service
(`quorum_producers`), RequestExpired from the approvals service. Anything else on
the topics passes by here (the topics' consumers dead-letter what is malformed or
forged), and so does an outcome older than `callback_max_age_seconds` or a PoA
already expired: a new consumer group reads the topics from their beginning, and an
old outcome is no news to anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from atb_identity import ClaimNotProvenError, IdentityError, TrustBundle, verify_origin
from atb_runtime import Incoming
from contracts import EventDecodeError, PoaIssued, RequestDenied, RequestExpired, decode_envelope, payload_of
from issuer.domain.outcome import outcome_notice
from issuer.ports import OutcomeNotifier

__all__ = ["CallbackTeller"]

log = logging.getLogger(__name__)

_MARK = b'"callback_url"'
"""Only records naming a callback are decoded (most outcomes have none)."""


class CallbackTeller:
    """`tell` is the `start` of an `AckingConsumer` over the outcomes and PoA topics."""

    def __init__(
        self,
        notifier: OutcomeNotifier,
        bundle: TrustBundle,
        *,
        issuer: str,
        approvals: frozenset[str],
        max_age: timedelta,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._notifier = notifier
        self._bundle = bundle
        self._issuer = issuer
        self._approvals = approvals
        self._max_age = max_age
        self._now = now

    def _producers(self, outcome: PoaIssued | RequestDenied | RequestExpired) -> frozenset[str]:
        match outcome:
            case PoaIssued():
                return frozenset({self._issuer})
            case RequestDenied():
                return self._approvals | {self._issuer}
            case RequestExpired():
                return self._approvals

    async def tell(self, record: Incoming) -> Awaitable[str] | None:
        """The delivery of the record's outcome to its callback, if it is one to tell (see the module doc)."""
        if record.value is None or _MARK not in record.value:
            return None
        try:
            envelope = decode_envelope(record.value)
            outcome = payload_of(envelope)
        except EventDecodeError:
            return None
        if not isinstance(outcome, PoaIssued | RequestDenied | RequestExpired) or outcome.callback_url is None:
            return None
        now = self._now()
        if envelope.time < now - self._max_age or (isinstance(outcome, PoaIssued) and outcome.expires_at <= now):
            return None
        try:
            if envelope.source not in self._producers(outcome):
                raise ClaimNotProvenError(f"{envelope.source} may not state {envelope.type}")
            verify_origin(envelope, envelope.source, self._bundle, attesters=(), at=now)
        except IdentityError as exc:
            log.warning("%s of %s is told to nobody: %s", envelope.type, outcome.request_id, exc)
            return None
        notice = outcome_notice(outcome)
        return self._notifier.deliver(notice.request_id, outcome.callback_url, notice.body, notice.delivery_id)
