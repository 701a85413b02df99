"""Broker application service: presentations → verify → bind → policy → spend → decisions.

Two ways in share one decision path (`Authorizer.decide_many`):

- Kafka: ActionRequested on `atb.broker.actions`, proven by the agent's event
  proof, decided inside the Kafka transaction that consumed it (`BrokerService`);
- HTTP: `POST /v1/authorize` over mTLS, batched by `DecisionQueue` (adapters/http.py).

Every presentation gets exactly one decision and one audit event; a missing,
forged, expired, revoked, spent or mismatched PoA is a deny with its reason,
never an exception. The order is fixed: cheap local checks first, then one OPA
round trip for the whole batch, and the spent store last, so that a PoA is
spent only by a presentation that is otherwise allowed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from atb_identity import IdentityError, TrustBundle, verify_envelope
from atb_runtime import DeadLetters, Incoming, Outgoing, audit, outgoing
from atb_runtime.opa import PolicyUnavailableError
from atb_runtime.tracing import TraceCarrier, current_carrier, producing_for
from broker.adapters.metrics import (
    DECISION_SECONDS,
    DECISIONS,
    POLICY_ERRORS,
    POLICY_SECONDS,
    REPLAYS_BLOCKED,
    VERIFY_SECONDS,
)
from broker.adapters.outbox import encode_outbox
from broker.adapters.spent import Spend, SpendVerdict
from broker.adapters.verify import PoaRejectedError, TokenVerifier
from broker.domain import (
    ALLOWED,
    Connector,
    ConnectorRegistry,
    Outcome,
    PolicyDecision,
    Presentation,
    RouteRefused,
    Verdict,
    check_bindings,
    policy_verdict,
)
from broker.ports import DecisionRelay, KeyRefresh, Revocations, SpentLedger
from contracts import (
    ActionRequested,
    BrokerDecision,
    Envelope,
    EventDecodeError,
    PoaClaims,
    Tier,
    decode_envelope,
    payload_of,
)
from contracts.agents import AgentRegistry
from contracts.poa import x5t_s256
from contracts.reasons import Reason, ReasonCode

__all__ = ["Authorizer", "BrokerService", "DecisionQueue", "outcome_events", "presentation_from_envelope"]

log = logging.getLogger(__name__)

REPLAY = "poa_single_use_replay_blocked"


class Policy(Protocol):
    """One decision per (presentation, verified claims or None); raises PolicyUnavailableError."""

    async def decide(self, items: Sequence[tuple[Presentation, PoaClaims | None]]) -> list[PolicyDecision]: ...


Outbox = Callable[[Outcome], list[Outgoing]]
"""The events of one outcome, for the outbox kept in the spending transaction."""


@dataclass(frozen=True)
class Decided:
    outcomes: list[Outcome]
    recorded: bool
    """True when the batch's events are durable in the outbox (HTTP way in)."""


@dataclass
class _Pending:
    index: int
    presentation: Presentation
    claims: PoaClaims | None
    connector: Connector
    policy_version: str = ""
    """The revision of the policy that answered for this presentation (its batch's answer, not a shared field)."""
    action_tier: Tier | None = None
    """The tier that policy gave the action."""


class Authorizer:
    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        keys: KeyRefresh,
        revocations: Revocations,
        policy: Policy,
        spent: SpentLedger,
        registry: ConnectorRegistry,
        agents: AgentRegistry,
    ) -> None:
        self._verifier = verifier
        self._keys = keys
        self._revocations = revocations
        self._policy = policy
        self._spent = spent
        self._registry = registry
        self._agents = agents
        self.policy_version = "unknown"
        """The revision of the latest policy answer: recorded only with denies decided before the policy was
        asked (no answer of their own). A presentation the policy answered records its own (`_Pending`)."""

    async def decide_many(
        self, presentations: Sequence[Presentation], outbox: Outbox | None = None, instance: str = ""
    ) -> Decided:
        """Decide a batch. With `outbox`, its events are stored in the spending transaction (`recorded`)."""
        started = time.perf_counter()
        outcomes: list[Outcome | None] = [None] * len(presentations)
        pending: list[_Pending] = []
        for i, p in enumerate(presentations):
            checked = await self._local_checks(p)
            if isinstance(checked, Outcome):
                outcomes[i] = checked
            else:
                pending.append(_Pending(i, p, checked[0], checked[1]))
        pending = await self._ask_policy(pending, outcomes)
        recorded = await self._spend(pending, outcomes, outbox, instance)
        DECISION_SECONDS.observe(time.perf_counter() - started)
        done = _complete(outcomes)
        for o in done:
            first = o.verdict.reasons[0].code.value if o.verdict.reasons else ""
            DECISIONS.labels(o.verdict.decision.value, first, o.presentation.channel).inc()
        return Decided(done, recorded)

    def _deny(
        self,
        p: Presentation,
        *reasons: Reason,
        claims: PoaClaims | None = None,
        audit_type: str = "",
        policy_version: str = "",
        action_tier: Tier | None = None,
    ) -> Outcome:
        return Outcome(
            p,
            Verdict.deny(*reasons),
            policy_version or self.policy_version,
            jti=claims.jti if claims else None,
            tier=claims.tier if claims else None,
            audit_type=audit_type or "broker_action_denied",
            action_tier=action_tier,
        )

    async def _local_checks(self, p: Presentation) -> tuple[PoaClaims | None, Connector] | Outcome:
        # The presented tenant must be one the proven agent is registered for (docs/tenants.md).
        refusal = self._agents.refusal_reason(p.agent_id, p.action.tenant)
        if refusal is not None:
            return self._deny(p, refusal)
        route = self._registry.route(p.action.action, p.action.resource, p.connector)
        if isinstance(route, RouteRefused):
            return self._deny(p, route.reason)
        if p.action.poa is None:  # absent; an empty string is a malformed token, not "no PoA"
            return None, route.connector
        t0 = time.perf_counter()
        try:
            claims = await self._verify(p.action.poa)
        except PoaRejectedError as exc:
            return self._deny(p, Reason(ReasonCode(exc.code), exc.reason))
        finally:
            VERIFY_SECONDS.observe(time.perf_counter() - t0)
        mismatches = check_bindings(p, claims)
        if mismatches:
            return self._deny(p, *mismatches, claims=claims)
        revoked = self._revocations.revoked(claims.jti, claims.req_id)
        if revoked is not None:
            return self._deny(
                p, Reason(ReasonCode.POA_REVOKED, revoked), claims=claims, audit_type="poa_revoked_presented"
            )
        return claims, route.connector

    async def _verify(self, token: str) -> PoaClaims:
        try:
            return self._verifier.verify(token)
        except PoaRejectedError as exc:
            # An unknown kid may be a key published a moment ago: one rate-limited JWKS refresh.
            if exc.code == "unknown_kid" and await self._keys.refresh():
                return self._verifier.verify(token)
            raise

    async def _ask_policy(self, pending: list[_Pending], outcomes: list[Outcome | None]) -> list[_Pending]:
        if not pending:
            return []
        t0 = time.perf_counter()
        try:
            answers = await self._policy.decide([(q.presentation, q.claims) for q in pending])
        except PolicyUnavailableError as exc:
            POLICY_ERRORS.inc()
            for q in pending:
                outcomes[q.index] = self._deny(
                    q.presentation,
                    Reason(ReasonCode.POLICY_UNAVAILABLE, str(exc)),
                    claims=q.claims,
                    audit_type="broker_policy_unavailable",
                )
            return []
        finally:
            POLICY_SECONDS.observe(time.perf_counter() - t0)
        still: list[_Pending] = []
        for q, answer in zip(pending, answers, strict=True):
            # Batches run concurrently: each presentation keeps the version that answered it.
            q.policy_version = answer.policy_version
            q.action_tier = answer.tier
            self.policy_version = answer.policy_version
            settled = policy_verdict(answer, with_poa=q.claims is not None)
            if settled is None:
                still.append(q)
                continue
            outcomes[q.index] = Outcome(
                q.presentation,
                settled,
                answer.policy_version,
                jti=q.claims.jti if q.claims else None,
                tier=answer.tier,
                connector=q.connector if settled.allowed else None,
                audit_type="broker_action_allowed" if settled.allowed else "broker_action_denied",
                action_tier=answer.tier,
            )
        return still

    async def _spend(
        self, pending: list[_Pending], outcomes: list[Outcome | None], outbox: Outbox | None, instance: str
    ) -> bool:
        spends = []
        for q in pending:
            assert q.claims is not None
            spends.append(
                Spend(
                    q.claims.jti, q.presentation.presentation_id, q.claims.req_id, q.presentation.agent_id, q.claims.exp
                )
            )
        try:
            if outbox is None:
                if spends:
                    self._settle(pending, await self._spent.spend_many(spends), outcomes)
                return False
            # Events are built before the transaction, assuming every spend succeeds (the
            # usual case); inside it only the few replays are rebuilt. The write lock is
            # held for the inserts, not for encoding.
            events: list[list[Outgoing]] = [[] for _ in outcomes]
            for i, o in enumerate(outcomes):
                if o is not None:
                    events[i] = outbox(o)
            for q in pending:
                events[q.index] = outbox(self._allow(q))

            def finish(owned: list[SpendVerdict]) -> bytes:
                self._settle(pending, owned, outcomes)
                for q, mine in zip(pending, owned, strict=True):
                    if mine is not SpendVerdict.OWNED:
                        replay = outcomes[q.index]
                        assert replay is not None
                        events[q.index] = outbox(replay)
                return encode_outbox([e for per in events for e in per])

            await self._spent.commit(spends, finish, instance)
            return True
        except Exception as exc:  # any store failure: fail closed
            log.exception("spent store failed")
            for q in pending:
                outcomes[q.index] = self._deny(
                    q.presentation,
                    Reason(ReasonCode.SPENT_STORE_UNAVAILABLE, type(exc).__name__),
                    claims=q.claims,
                    policy_version=q.policy_version,
                    action_tier=q.action_tier,
                )
            return False

    def _allow(self, q: _Pending) -> Outcome:
        assert q.claims is not None
        return Outcome(
            q.presentation,
            ALLOWED,
            q.policy_version,
            jti=q.claims.jti,
            tier=q.claims.tier,
            connector=q.connector,
            audit_type="broker_action_allowed",
            action_tier=q.action_tier,
        )

    def _settle(self, pending: list[_Pending], owned: list[SpendVerdict], outcomes: list[Outcome | None]) -> None:
        for q, verdict in zip(pending, owned, strict=True):
            assert q.claims is not None
            if verdict is SpendVerdict.OWNED:
                outcomes[q.index] = self._allow(q)
                continue
            REPLAYS_BLOCKED.labels(verdict.value).inc()
            why = (
                "this PoA was already spent"
                if verdict is SpendVerdict.REPLAYED
                else "another PoA of this request was already spent"
            )
            outcomes[q.index] = self._deny(
                q.presentation,
                Reason(ReasonCode(verdict.value), why),
                claims=q.claims,
                audit_type=verdict.value,
                policy_version=q.policy_version,
                action_tier=q.action_tier,
            )


def _complete(outcomes: list[Outcome | None]) -> list[Outcome]:
    done = [o for o in outcomes if o is not None]
    assert len(done) == len(outcomes), "every presentation gets an outcome"
    return done


def outcome_events(outcome: Outcome, *, source: str, namespace: str) -> list[Outgoing]:
    """The BrokerDecision and the audit event of one outcome."""
    p = outcome.presentation
    action = p.action
    decision = BrokerDecision(
        request_id=action.request_id,
        action_id=action.action_id,
        agent_id=p.agent_id,
        action=action.action,
        decision=outcome.verdict.decision,
        reasons=outcome.verdict.reasons,
        action_tier=outcome.action_tier,
        policy_version=outcome.policy_version,
        jti=outcome.jti,
        decided_at=datetime.now(UTC),
    )
    return [
        outgoing(decision, source=source, namespace=namespace),
        audit(
            outcome.audit_type or ("broker_action_allowed" if outcome.allowed else "broker_action_denied"),
            source=source,
            namespace=namespace,
            outcome="success" if outcome.allowed else "denied",
            request_id=action.request_id,
            reason="; ".join(str(r) for r in outcome.verdict.reasons)[:1024],
            details={
                "reason_codes": [r.code.value for r in outcome.verdict.reasons],
                "action": action.action,
                "resource": action.resource[:512],
                "agent_id": p.agent_id,
                "jti": outcome.jti,
                "tier": outcome.tier.value if outcome.tier else None,
                "channel": p.channel,
                "action_id": action.action_id,
                "connector": outcome.connector.name if outcome.connector else None,
                "policy_version": outcome.policy_version,
            },
        ),
    ]


def _thumbprint_of_leaf(envelope: Envelope) -> str | None:
    if envelope.proof is None:
        return None
    return x5t_s256(base64.b64decode(envelope.proof.x5c[0]))


def presentation_from_envelope(
    envelope: Envelope, action: ActionRequested, bundle: TrustBundle, presentation_id: str, *, at: datetime
) -> Presentation:
    """The agent and certificate that provably published this ActionRequested (IdentityError if none)."""
    agent = verify_envelope(envelope, bundle, at=at)
    return Presentation(action, str(agent), _thumbprint_of_leaf(envelope), presentation_id, "kafka")


class BrokerService:
    """The Kafka way in: a batch of ActionRequested records, decided in the consuming transaction."""

    CONSUMER = "broker"

    def __init__(self, authorizer: Authorizer, bundle: TrustBundle, *, source: str, namespace: str) -> None:
        self._authorizer = authorizer
        self._bundle = bundle
        self._source = source
        self._ns = namespace
        self._dead = DeadLetters(self.CONSUMER, self._source, self._ns)

    async def handle(self, records: Sequence[Incoming]) -> list[Outgoing]:
        presentations: list[Presentation] = []
        out: list[Outgoing] = []
        for record in records:
            try:
                parsed = self._parse(record)
            except Exception as exc:  # a bad record is dead-lettered, never a crash
                out.extend(self._dead.crashed(record, exc))
                continue
            if isinstance(parsed, Presentation):
                presentations.append(parsed)
            else:
                out.extend(parsed)
        for outcome in (await self._authorizer.decide_many(presentations)).outcomes:
            out.extend(outcome_events(outcome, source=self._source, namespace=self._ns))
        return out

    def _parse(self, record: Incoming) -> Presentation | list[Outgoing]:
        try:
            envelope = decode_envelope(record.value)
            payload = payload_of(envelope)
        except EventDecodeError as exc:
            return self._dead(record, exc.code, exc.reason)
        if not isinstance(payload, ActionRequested):
            return self._dead(record, "unexpected_type", f"{type(payload).__name__} does not belong on {record.topic}")
        # A redelivered record is the same presentation; a copy published again is a new one.
        presentation_id = f"kafka:{record.topic}:{record.partition}:{record.offset}"
        try:
            return presentation_from_envelope(envelope, payload, self._bundle, presentation_id, at=datetime.now(UTC))
        except IdentityError as exc:
            unproven = Presentation(payload, "unproven", None, presentation_id, "kafka")
            outcome = Outcome(
                unproven,
                Verdict.deny(Reason(ReasonCode.IDENTITY_UNPROVEN, f"{exc.code}: {exc}")),
                self._authorizer.policy_version,
                audit_type="identity_proof_rejected",
            )
            # The deny answers the agent; the dead letter keeps the record for an operator (docs/hostile-input.md).
            letter = self._dead(record, exc.code, str(exc))
            return [*letter, *outcome_events(outcome, source=self._source, namespace=self._ns)]


class DecisionQueue:
    """Micro-batching for the HTTP way in: whatever arrives while batches are decided forms the next one.

    A caller hears the decision once the batch's BrokerDecision and audit events are
    durable in the outbox, written in the transaction that spent the PoAs: no
    action runs without its record, and Kafka's round trip is off the critical
    path (the relay publishes right after).
    """

    def __init__(
        self,
        authorizer: Authorizer,
        relay: DecisionRelay,
        *,
        source: str,
        namespace: str,
        instance: str,
        max_batch: int = 256,
        concurrent_batches: int = 3,
    ) -> None:
        self._authorizer = authorizer
        self._relay = relay
        self._source = source
        self._ns = namespace
        self._instance = instance
        self._max_batch = max_batch
        self._traces: dict[str, TraceCarrier] = {}
        """Presentation id → the W3C context of the HTTP call that made it (docs/observability.md)."""
        # Several batches in flight: one verifies on the CPU while another waits for OPA
        # or the spent store. The spent store serialises the spending itself.
        self._slots = asyncio.Semaphore(concurrent_batches)
        self._queue: asyncio.Queue[tuple[Presentation, asyncio.Future[Outcome]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="decision-queue")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def submit(self, presentation: Presentation) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        carrier = current_carrier()  # the caller's trace (its HTTP server span), for the records decided for it
        if carrier is not None:
            self._traces[presentation.presentation_id] = carrier
        try:
            await self._queue.put((presentation, future))
            return await future
        finally:
            self._traces.pop(presentation.presentation_id, None)

    def _events(self, outcome: Outcome) -> list[Outgoing]:
        return outcome_events(outcome, source=self._source, namespace=self._ns)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await self._slots.acquire()
            # Whatever arrived while every slot was busy joins this batch.
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            task = asyncio.create_task(self._decide(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _decide(self, batch: list[tuple[Presentation, asyncio.Future[Outcome]]]) -> None:
        futures = [f for _, f in batch]
        try:
            traced = {
                p.action.request_id.encode(): self._traces[p.presentation_id]
                for p, _ in batch
                if p.presentation_id in self._traces
            }
            with producing_for(traced):
                decided = await self._authorizer.decide_many([p for p, _ in batch], self._events, self._instance)
                if not decided.recorded:
                    # The store failed: every outcome is a deny; publish them straight away.
                    events = [e for o in decided.outcomes for e in self._events(o)]
                    await self._relay.send_now(events)
        except Exception as exc:  # a bug or Kafka down too: callers get an error, nothing runs
            log.exception("decision batch failed")
            for fut in futures:
                if not fut.done():
                    fut.set_exception(exc)
            return
        finally:
            self._slots.release()
        self._relay.notify()
        for outcome, fut in zip(decided.outcomes, futures, strict=True):
            if not fut.done():
                fut.set_result(outcome)


def http_presentation_id() -> str:
    return f"http:{uuid.uuid4().hex}"
