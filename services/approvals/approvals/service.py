"""Approvals application service: requests and votes in; outcomes, changelog and audit out.

decode → verify the proof of origin → load the request's state → domain step →
records to publish (outcomes, the new state on the changelog, audit events). The
processor commits those records with the input offsets in one Kafka transaction,
so state, outcomes and position move together: exactly one outcome per request,
across restarts (docs/architecture.md §6.2). Bad records become dead letters and audit
events; they never stop the batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from approvals.adapters.delegations import DelegationGate
from approvals.adapters.metrics import VOTES_REFUSED, count_outcomes, set_pending
from approvals.domain import decide_intake
from approvals.domain.directory import Directory
from approvals.domain.held import HeldStates
from approvals.domain.reminders import reminder_step
from approvals.domain.request_state import AuditNote, Step, on_bad_vote, on_ballot, on_request, on_tick
from approvals.domain.tally import Ballot
from approvals.ports import RequirementsSource, StateLog
from approvals.settings import ApprovalsSettings
from atb_identity import IdentityError, Svid, TrustBundle, sign_envelope, verify_origin
from atb_identity.passkey import PasskeyAssertionError, b64url_decode
from atb_runtime import (
    DeadLetters,
    Incoming,
    Outgoing,
    audit,
    each_record,
    outgoing_envelope,
    request_id_hint,
)
from atb_runtime.passkeys import PasskeyRegistry, console_vote_refusal
from contracts import (
    ApprovalStateChanged,
    Envelope,
    EventDecodeError,
    EventPayload,
    IssuanceRequested,
    Tier,
    Topic,
    VoteCast,
    decode_envelope,
    digest_of,
    make_envelope,
    payload_of,
    topic_name,
)
from contracts.agents import AgentRegistry
from contracts.approval_events import VoteOnBehalf
from contracts.console_events import VoteCastV2
from contracts.reasons import ReasonCode

__all__ = ["MAX_REQUEST_BYTES", "MAX_VOTE_BYTES", "ApprovalsService"]

MAX_REQUEST_BYTES = 64 * 1024
"""As the gateway's body limit: outcomes embed the request twice (parsed and as signed)."""
MAX_VOTE_BYTES = 16 * 1024
"""A vote is small; the changelog keeps at most MAX_BALLOTS of them per request."""
_V2_TYPE = VoteCastV2.event_type
_ON_BEHALF_TYPE = VoteOnBehalf.event_type

Vote = VoteCast | VoteOnBehalf | VoteCastV2


class ApprovalsService:
    CONSUMER = "approvals"

    def __init__(
        self,
        settings: ApprovalsSettings,
        policy: RequirementsSource,
        bundle: TrustBundle,
        directory: Directory,
        store: StateLog,
        svid: Svid,
        agents: AgentRegistry,
        delegations: DelegationGate | None = None,
        passkeys: PasskeyRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._passkeys = passkeys or PasskeyRegistry()
        """The console's passkeys in force (fed from the keys topic by a `PasskeyFollower`)."""
        self._announcers = frozenset(settings.passkey_announcers)
        self._counters: dict[str, int] = {}
        """Credential id → the highest signature counter among the console votes in the states held here.

        Derived from the ballots' vote events (the changelog), so it moves with the committed state:
        reloaded on assignment, rebuilt after a rewind."""
        self._agents = agents
        self._delegations = delegations or DelegationGate(
            bundle, passkeys=self._passkeys, directory=directory, announcers=self._announcers
        )
        """Grants of on-behalf votes verified (one made in the console by the delegator's passkey), revocations
        remembered (fed by `note_delegation`)."""
        self._svid = svid
        self._policy = policy
        self._bundle = bundle
        self._directory = directory
        self._store = store
        self._request_attesters = frozenset(settings.request_attesters)
        self._vote_attesters = frozenset(settings.vote_attesters)
        self._ticket = re.compile(settings.ticket_pattern)
        self._source = settings.service_id
        self._ns = settings.topic_namespace
        self._dead = DeadLetters(self.CONSUMER, self._source, self._ns)
        self._requests_topic = topic_name(Topic.POA_REQUESTS, self._ns)
        self._votes_topic = topic_name(Topic.VOTES, self._ns)
        self._partitions: set[int] = set()
        self._states = HeldStates()
        self._home: dict[str, int] = {}
        """The partition each known request lives on (its state is reloaded with that partition)."""
        self._partition = -1
        """The partition of the record being handled: where a new state lives."""

    # -- state ---------------------------------------------------------------------------

    async def on_assigned(self, partitions: set[int]) -> None:
        """Load the changelog for the partitions this instance now owns (after they were fenced)."""
        self._partitions = set(partitions)
        self._states.clear()
        self._home = {}
        await self._load(self._partitions)

    async def on_rewind(self, partitions: set[int]) -> None:
        """A transaction failed: drop what was decided in memory for these partitions, reload what was committed."""
        for request_id in [r for r, p in self._home.items() if p in partitions]:
            self._states.pop(request_id)
            self._home.pop(request_id, None)
        await self._load(partitions & self._partitions)
        self._counters = {}
        for state in self._states.values():
            self._note_counters(state)

    async def _load(self, partitions: set[int]) -> None:
        # Only states written inside the window can still matter: an open request was
        # written at most `max_pending_seconds` ago, a closed one is tombstoned after
        # `closed_retention_seconds` (docs/scaling.md).
        since = datetime.now(UTC) - timedelta(seconds=self._settings.restore_window_seconds())
        for partition, states in (await self._store.load(partitions, since=since)).items():
            for request_id, state in states.items():
                self._states.put(request_id, state)
                self._home[request_id] = partition
                self._note_counters(state)

    @property
    def open_requests(self) -> int:
        """Requests held in memory (open, held, or closed and not yet forgotten)."""
        return len(self._states)

    # -- inputs --------------------------------------------------------------------------

    async def handle(self, records: Sequence[Incoming]) -> list[Outgoing]:
        out = await each_record(records, self._handle_one, self._failed)
        set_pending(self._states.pending)
        return out

    async def _handle_one(self, record: Incoming) -> list[Outgoing]:
        self._partition = record.partition
        limit = MAX_REQUEST_BYTES if record.topic == self._requests_topic else MAX_VOTE_BYTES
        if record.value is not None and len(record.value) > limit:
            # Outcomes and the changelog embed requests and votes: bounding the inputs
            # keeps every output far below Kafka's record size limit.
            return self._bad_input(record, "oversize", f"{len(record.value)} bytes exceed {limit}")
        if record.key is None or request_id_hint(record) is None:
            return self._bad_input(record, "missing_key", "records must be keyed by their request id")
        try:
            envelope = decode_envelope(record.value)
            payload = payload_of(envelope)
        except EventDecodeError as exc:
            return self._bad_input(record, exc.code, exc.reason)
        request_id = getattr(payload, "request_id", None)
        if request_id != request_id_hint(record):
            # docs/architecture.md §4.4: a request's whole history lives on the partition of its
            # key; a record keyed otherwise would be judged without its request's state.
            return self._bad_input(record, "key_mismatch", f"record key is not the request id {request_id!r}")
        if record.topic == self._requests_topic and isinstance(payload, IssuanceRequested):
            return await self._on_request(record, envelope, payload)
        if record.topic == self._votes_topic and isinstance(payload, (VoteCast, VoteOnBehalf, VoteCastV2)):
            return self._on_vote(record, envelope, payload)
        return self._bad_input(record, "unexpected_type", f"{envelope.type} does not belong on {record.topic}")

    async def _on_request(self, record: Incoming, envelope: Envelope, request: IssuanceRequested) -> list[Outgoing]:
        now = datetime.now(UTC)
        if stale := self._staleness(request, now):
            # Its state may be forgotten already: judged again, a replay would get a second outcome.
            return self._bad_input(record, *stale)
        try:
            origin = verify_origin(envelope, request.agent_id, self._bundle, attesters=self._request_attesters, at=now)
        except IdentityError as exc:
            return self._identity_refused(record, envelope.source, exc, request.request_id, request.agent_id)
        requirements = await self._policy.for_request(request)
        if requirements.pending_seconds > self._settings.max_pending_seconds:
            requirements = replace(requirements, pending_seconds=self._settings.max_pending_seconds)
        request_event = record.value.decode() if record.value else ""
        intake = decide_intake(
            request,
            request_event,
            requirements,
            now=now,
            decided_by=self._source,
            ticket_pattern=self._ticket,
            # From the registry, for the identity the proof established: never the request's word.
            agent_tenants=self._agents.tenants_of(origin.claimed),
        )
        step = on_request(
            self._states.get(request.request_id),
            request,
            request_event,
            requirements,
            intake,
            digest_of(request),
            directory=self._directory,
            now=now,
            decided_by=self._source,
        )
        extra = {"requester": origin.claimed, "proven_by": origin.proven_by, "action": request.action}
        return self._apply(request.request_id, step, extra)

    def _on_vote(self, record: Incoming, envelope: Envelope, vote: Vote) -> list[Outgoing]:
        now = datetime.now(UTC)
        try:
            origin = verify_origin(envelope, vote.approver_id, self._bundle, attesters=self._vote_attesters, at=now)
        except IdentityError as exc:
            VOTES_REFUSED.labels(exc.code).inc()
            out = self._identity_refused(record, envelope.source, exc, vote.request_id, vote.approver_id)
            return out + self._apply(vote.request_id, on_bad_vote(self._states.get(vote.request_id), exc.code, now))
        if origin.attested and (refusal := self._attester_refusal(origin.proven_by, vote.request_id)):
            note = AuditNote(
                "approval_vote_refused",
                "denied",
                refusal,
                {"vote_id": vote.vote_id, "identity": vote.approver_id, "attested_by": origin.proven_by},
                code="attester_not_allowed",
            )
            VOTES_REFUSED.labels(note.code).inc()
            return [self._audit(vote.request_id, note, {"channel": vote.channel})]
        if (unverified := self._passkey_refusal(vote, origin.proven_by)) is not None:
            note = AuditNote(
                "approval_vote_refused",
                "denied",
                f"{ReasonCode.ASSERTION_INVALID.value}: {unverified}",
                {"vote_id": vote.vote_id, "identity": vote.approver_id, "proven_by": origin.proven_by},
                code=ReasonCode.ASSERTION_INVALID.value,
            )
            VOTES_REFUSED.labels(note.code).inc()
            return [self._audit(vote.request_id, note, {"channel": vote.channel})]
        if isinstance(vote, VoteOnBehalf) and (refused := self._delegations.refusal(vote, now, origin.proven_by)):
            # The rest of the delegation rule is the tally's (contracts.delegation), on the stored ballot.
            note = AuditNote(
                "approval_vote_refused",
                "denied",
                f"{refused.code.value}: {refused.reason}",
                {"vote_id": vote.vote_id, "identity": vote.approver_id, "on_behalf_of": vote.on_behalf_of},
                code=refused.code.value,
            )
            VOTES_REFUSED.labels(note.code).inc()
            return [self._audit(vote.request_id, note, {"channel": vote.channel})]
        ballot = Ballot(
            vote_id=vote.vote_id,
            identity=vote.approver_id,
            choice=vote.choice,
            digest=vote.request_digest,
            received_at=now,
            channel=vote.channel,
            vote_event=record.value.decode() if record.value else "",
        )
        step = on_ballot(
            self._states.get(vote.request_id),
            vote.request_id,
            ballot,
            directory=self._directory,
            now=now,
            hold_seconds=self._settings.vote_hold_seconds,
            decided_by=self._source,
        )
        return self._apply(vote.request_id, step, {"channel": vote.channel})

    def _staleness(self, request: IssuanceRequested, now: datetime) -> tuple[str, str] | None:
        """Why a request is too old or too new to be judged (its own clock is bounded by ours), or None."""
        age = (now - request.requested_at).total_seconds()
        if age > self._settings.max_request_age_seconds:
            return (
                "stale_request",
                f"requested {age:.0f}s ago; older than {self._settings.max_request_age_seconds}s is not judged",
            )
        if -age > self._settings.clock_skew_seconds:
            return "request_from_the_future", f"requested_at is {-age:.0f}s ahead of this service's clock"
        return None

    def _passkey_refusal(self, vote: Vote, proven_by: str) -> str | None:
        """Why a console vote's passkey assertion does not make it count, or None (`console_vote_refusal`).

        The counter an assertion must exceed is also above every counter of that credential
        among the console ballots of the states held here (a replayed or cloned assertion).
        """
        return console_vote_refusal(
            vote,
            proven_by=proven_by,
            tier=self._tier_of(vote.request_id),
            registry=self._passkeys,
            directory=self._directory,
            announcers=self._announcers,
            counters=self._counters,
        )

    def _tier_of(self, request_id: str) -> Tier | None:
        state = self._states.get(request_id)
        return state.requirements.tier if state is not None and state.requirements is not None else None

    def _note_counters(self, state: ApprovalStateChanged) -> None:
        """Remember the signature counter of every console vote among the state's ballots."""
        for ballot in state.ballots:
            if _V2_TYPE not in ballot.vote_event and _ON_BEHALF_TYPE not in ballot.vote_event:
                continue
            try:
                vote = payload_of(decode_envelope(ballot.vote_event.encode()))
            except EventDecodeError:
                continue
            if not isinstance(vote, (VoteCastV2, VoteOnBehalf)) or vote.assertion is None:
                continue
            try:
                auth_data = b64url_decode(vote.assertion.authenticator_data)
            except PasskeyAssertionError:
                continue
            counter = int.from_bytes(auth_data[33:37], "big")
            credential = vote.assertion.credential_id
            if counter > self._counters.get(credential, 0):
                self._counters[credential] = counter

    def _attester_refusal(self, attester: str, request_id: str) -> str | None:
        """Why `attester` may not vouch for a vote on this request (its tier is beyond its limit), or None."""
        allowed = self._settings.vote_attester_tiers.get(attester)
        if allowed is None:
            return None
        state = self._states.get(request_id)
        tier = state.requirements.tier if state is not None and state.requirements is not None else None
        if tier is None:
            return f"attester_tier: {attester} may vouch only for votes on known requests"
        if tier not in allowed:
            return f"attester_tier: {attester} may not vouch for {tier.value} votes; the approver votes with `atb vote`"
        return None

    def note_delegation(self, envelope: Envelope) -> None:
        """A delegation event from the keys topic (a follower's sink): revocations apply from their time on."""
        self._delegations.note(envelope, datetime.now(UTC))

    async def tick(self) -> list[Outgoing]:
        """Deadlines: expire open requests, drop votes held too long, remind and escalate (exactly once)."""
        now = datetime.now(UTC)
        out: list[Outgoing] = []
        forget_before = now - timedelta(seconds=self._settings.closed_retention_seconds)
        out.extend(self._forget(request_id) for request_id in self._states.closed_before(forget_before))
        for request_id, state in self._states.active():
            if state.status == "held" and not state.ballots and state.updated_at < forget_before:
                # Its held votes were dropped as orphaned, and its request never came: nothing is left to keep.
                out.append(self._forget(request_id))
                continue
            # The deadline first; then, for a request still open, its reminders and escalation.
            step = on_tick(state, directory=self._directory, now=now) or reminder_step(
                state, directory=self._directory, now=now
            )
            if step is not None:
                out.extend(self._apply(request_id, step))
        set_pending(self._states.pending)
        return out

    def _forget(self, request_id: str) -> Outgoing:
        """No later event can matter for this request any more (closed, or emptied of held votes): tombstone it."""
        self._states.pop(request_id)
        self._home.pop(request_id, None)
        return self._store.tombstone(request_id)

    # -- outputs -------------------------------------------------------------------------

    def _apply(self, request_id: str, step: Step, extra: dict[str, str] | None = None) -> list[Outgoing]:
        out = [self._signed(event) for event in step.events]
        if step.changed and step.state is not None:
            self._states.put(request_id, step.state)
            self._note_counters(step.state)
            self._home.setdefault(request_id, self._partition)
            out.append(self._store.record(step.state))
        out.extend(self._audit(request_id, note, extra) for note in step.audits)
        count_outcomes(step.events)
        for note in step.audits:
            if note.code and note.audit_type.endswith("vote_refused"):
                VOTES_REFUSED.labels(note.code).inc()
        return out

    def _signed(self, event: EventPayload) -> Outgoing:
        """Outcomes carry the approvals service's proof: the issuer acts only on proven quorums."""
        envelope = sign_envelope(make_envelope(event, source=self._source), self._svid)
        return outgoing_envelope(envelope, topic_name(event.topic, self._ns))

    def _audit(self, request_id: str, note: AuditNote, extra: dict[str, str] | None) -> Outgoing:
        return audit(
            note.audit_type,
            source=self._source,
            namespace=self._ns,
            outcome=note.outcome,
            request_id=request_id,
            reason=note.reason[:1024],
            details={**note.details, **(extra or {})},
        )

    def set_aside(self, record: Incoming, code: str, reason: str) -> list[Outgoing]:
        """A record the processor could not get through (a poison record, a misplaced one): dead-lettered."""
        return self._bad_input(record, code, reason)

    def _failed(self, record: Incoming, exc: Exception) -> list[Outgoing]:
        return self._bad_input(record, "internal_error", f"{type(exc).__name__}: {exc}")

    def _bad_input(self, record: Incoming, code: str, reason: str) -> list[Outgoing]:
        request_id = request_id_hint(record)
        out = self._dead(record, code, reason, request_id)
        if record.topic == self._votes_topic and request_id:
            # docs/architecture.md §6.5: a request with a dead-lettered vote fails closed.
            out += self._apply(request_id, on_bad_vote(self._states.get(request_id), code, datetime.now(UTC)))
        return out

    def _identity_refused(
        self, record: Incoming, presented: str, exc: IdentityError, request_id: str, claimed: str
    ) -> list[Outgoing]:
        """Dead-letter the event, and audit which identity rule failed for whom (a spike shows up)."""
        refused = audit(
            "identity_proof_rejected",
            source=self._source,
            namespace=self._ns,
            outcome="denied",
            request_id=request_id,
            reason=str(exc)[:1024],
            details={"rule": exc.code, "presented": presented, "claimed": claimed, "consumer": self.CONSUMER},
        )
        return [*self._dead(record, exc.code, str(exc), request_id), refused]
