"""`atb replay policy`: re-evaluate recorded requests and broker decisions against a candidate policy.

The candidate runs in a throw-away OPA (`opa run --server` from the project's
cached binary, on a free loopback port, its own pidfile under the run's state);
the running OPA is only asked, read-only, for requests whose requirements were
never recorded. Each broker decision's policy input is rebuilt exactly as the
broker builds it (`broker.adapters.policy.PolicyGate`): the action from its
ActionRequested (else the decision and its request), the claims from the PoA
that was presented. The PoA is decoded without verifying its signature: the
broker verified it when it decided, and nothing here acts on it. The agents'
registered tenants come from the agent registry as it is now
(`ATB_AGENT_REGISTRY_PATH`, default config/agents.json; docs/tenants.md).

What it does not do: judge decisions the policy never made (replays, bad tokens,
revocations; see `whatif.compare_decision`), or write anything to Kafka.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import socket
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
from pydantic import ValidationError

from atb.dev.config import DevConfig
from atb.dev.errors import DevError
from atb.dev.opa import opa_ready
from atb.dev.procs import ManagedProcess
from atb.dev.toolchain import build_opa
from atb.replay.errors import ReplayInfraError, ReplayUsageError
from atb.replay.runs import RunStore, SpooledRecord
from atb.replay.whatif import (
    Change,
    Evaluated,
    RecordedDecision,
    Requirement,
    Skipped,
    WhatIfReport,
    compare_decision,
    compare_requirement,
    recorded_action_tier,
)
from atb_runtime import Incoming, OpaClient, PolicyUnavailableError
from atb_runtime.agents import load_agent_registry
from atb_runtime.policy import RequirementsClient
from atb_runtime.readback import read_committed
from broker.adapters.policy import PolicyGate, load_directory
from broker.domain import Presentation
from contracts import (
    ActionRequested,
    ApprovalRequired,
    BrokerDecision,
    BrokerDecisionV1,
    EventDecodeError,
    EventPayload,
    IssuanceRequested,
    PoaClaims,
    PoaIssued,
    QuorumReached,
    Topic,
    decode_envelope,
    payload_of,
    topic_name,
)
from contracts.agents import AgentRegistry
from contracts.quorum import Member
from contracts.reasons import ReasonCode
from contracts.requirements import composition_of

__all__ = [
    "POLICY_TOPICS",
    "CandidateOpa",
    "History",
    "Spooler",
    "build_history",
    "fill_context",
    "report_json",
    "what_if",
]

POLICY_TOPICS = (Topic.POA_REQUESTS, Topic.OUTCOMES, Topic.POA_ISSUED, Topic.BROKER_ACTIONS, Topic.BROKER_DECISIONS)


@dataclass(frozen=True)
class Spooler:
    """Scan handler: keeps every record's value in the run's spool (analysed once the range is read)."""

    store: RunStore
    run_id: str

    async def __call__(self, batch: Sequence[Incoming]) -> None:
        records = [
            SpooledRecord(r.topic, r.partition, r.offset, r.timestamp_ms, (r.value or b"").decode("utf-8", "replace"))
            for r in batch
        ]
        await asyncio.to_thread(self.store.spool, self.run_id, records)


# -- the candidate OPA ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CandidateOpa:
    """`opa run --server` over the candidate policy folder, stopped on exit; never the running OPA."""

    def __init__(self, policy_dir: Path, work_dir: Path) -> None:
        if not policy_dir.is_dir() or not any(policy_dir.glob("*.rego")):
            raise ReplayUsageError(f"--policy {policy_dir}: not a folder with .rego files")
        self._policy_dir = policy_dir.resolve()
        self._work_dir = work_dir
        self.url = ""
        self._proc: ManagedProcess | None = None

    async def __aenter__(self) -> CandidateOpa:
        try:
            opa = await build_opa(DevConfig.from_env())
        except DevError as exc:
            raise ReplayInfraError(f"no OPA binary: {exc}") from exc
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = [str(opa), "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error"]
        argv += ["--disable-telemetry", str(self._policy_dir)]
        self._work_dir.mkdir(parents=True, exist_ok=True)
        url = self.url

        async def ready() -> bool:
            return await opa_ready(url)

        log = self._work_dir / "opa.log"
        self._proc = ManagedProcess("candidate-opa", argv, None, log, self._work_dir / "opa.pid", ready)
        try:
            await self._proc.start(30)
        except DevError as exc:
            raise ReplayUsageError(f"the candidate policy does not load in OPA: {exc} (see {log})") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None:
            await self._proc.stop(5)


# -- history ----------------------------------------------------------------------------------


@dataclass
class History:
    """What the range recorded, by request and action; `requests`/`decisions` are the ones in range."""

    requests: dict[str, IssuanceRequested] = field(default_factory=dict)
    requirements: dict[str, Requirement] = field(default_factory=dict)
    poas: dict[str, PoaIssued] = field(default_factory=dict)
    """By jti."""
    actions: dict[str, ActionRequested] = field(default_factory=dict)
    decisions: list[BrokerDecision] = field(default_factory=list)
    """v2 decisions, and v1 ones upcast (`BrokerDecisionV1.upcast`: reasons as data)."""
    unreadable: list[Skipped] = field(default_factory=list)
    """v1 decisions with a reason code outside `ReasonCode`: reported, not compared."""
    context: dict[str, IssuanceRequested] = field(default_factory=dict)
    """Requests from before the range, looked up for decisions in it."""
    quorums: dict[str, tuple[Member, ...]] = field(default_factory=dict)
    """A recorded quorum's counted approvers with their groups, by request."""
    _ranks: dict[str, int] = field(default_factory=dict)

    def add(self, payload: EventPayload) -> None:
        if isinstance(payload, IssuanceRequested):
            self.requests.setdefault(payload.request_id, payload)
        elif isinstance(payload, ApprovalRequired):
            composition = composition_of(payload.composition)
            req = Requirement(payload.tier.value, payload.required_approvals, payload.ticket_required, composition)
            self._recorded(payload.request_id, 3, req)
        elif isinstance(payload, QuorumReached):
            self._recorded(payload.request_id, 2, Requirement(payload.tier.value, payload.required_approvals))
            # Votes counted before approvals recorded the groups cannot be re-judged by group.
            if payload.votes and all(v.approver_groups for v in payload.votes):
                members = tuple(Member(v.approver_id, frozenset(v.approver_groups)) for v in payload.votes)
                self.quorums[payload.request_id] = members
        elif isinstance(payload, PoaIssued):
            self.poas[payload.jti] = payload
            self._recorded(payload.request_id, 1, Requirement(payload.tier.value))
        elif isinstance(payload, ActionRequested):
            self.actions[payload.action_id] = payload
        elif isinstance(payload, BrokerDecision):
            self.decisions.append(payload)
        elif isinstance(payload, BrokerDecisionV1):
            try:
                self.decisions.append(payload.upcast())
            except ValueError as exc:  # a code this version's ReasonCode does not hold
                why = f"a v1 decision whose reasons this version cannot read: {exc}"
                self.unreadable.append(Skipped("decision", payload.request_id, payload.action, why, payload.action_id))

    def _recorded(self, request_id: str, rank: int, requirement: Requirement) -> None:
        """Keep the most complete record (ApprovalRequired > QuorumReached > PoaIssued), in whatever order read."""
        if rank > self._ranks.get(request_id, 0):
            self._ranks[request_id] = rank
            self.requirements[request_id] = requirement

    def request(self, request_id: str) -> IssuanceRequested | None:
        return self.requests.get(request_id) or self.context.get(request_id)


def _payloads(values: Iterable[str]) -> Iterable[EventPayload]:
    for value in values:
        try:
            yield payload_of(decode_envelope(value.encode()))
        except EventDecodeError:
            continue  # its consumer dead-lettered it; nothing was decided on it


def build_history(records: Iterable[SpooledRecord]) -> History:
    history = History()
    for payload in _payloads(r.value for r in records):
        history.add(payload)
    return history


async def fill_context(history: History, bootstrap: str, namespace: str) -> None:
    """Look up, outside the range, the requests and PoAs that decisions in the range refer to."""
    jtis = {d.jti for d in history.decisions if d.jti and d.jti not in history.poas}
    jtis -= {_jti_of(a.poa) for a in history.actions.values() if a.poa}
    if jtis:
        for payload in await _read_all(bootstrap, namespace, Topic.POA_ISSUED):
            if isinstance(payload, PoaIssued) and payload.jti in jtis:
                history.poas[payload.jti] = payload
    missing = {d.request_id for d in history.decisions if history.request(d.request_id) is None}
    missing -= {d.request_id for d in history.decisions if d.action_id in history.actions}
    if missing:
        for payload in await _read_all(bootstrap, namespace, Topic.POA_REQUESTS):
            if isinstance(payload, IssuanceRequested) and payload.request_id in missing:
                history.context.setdefault(payload.request_id, payload)


async def _read_all(bootstrap: str, namespace: str, topic: Topic) -> list[EventPayload]:
    return await read_committed(bootstrap, topic_name(topic, namespace))


def _unverified_claims(token: str) -> PoaClaims | None:
    """The claims of a PoA, NOT verified (see the module docstring): input to a what-if, never to a decision."""
    try:
        body = token.split(".")[1]
        return PoaClaims.model_validate_json(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError, binascii.Error, ValidationError):
        return None


def _jti_of(token: str) -> str | None:
    claims = _unverified_claims(token)
    return claims.jti if claims else None


# -- evaluation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    recorded: RecordedDecision
    presentation: Presentation
    claims: PoaClaims | None
    unmandated: bool


def _rebuild(history: History, decision: BrokerDecision) -> _Input | Skipped:
    """The broker's policy input for a recorded decision, or why it cannot be rebuilt."""

    def skipped(why: str) -> Skipped:
        return Skipped("decision", decision.request_id, decision.action, why, decision.action_id)

    action = history.actions.get(decision.action_id)
    if action is None:
        request = history.request(decision.request_id)
        if request is None:
            return skipped("neither its ActionRequested nor its IssuanceRequested is on Kafka any more")
        # An HTTP presentation: its action is the one the PoA's request was for (the digest binds them).
        action = ActionRequested(
            request_id=decision.request_id,
            action_id=decision.action_id,
            agent_id=request.agent_id,
            tenant=request.tenant,
            target_tenant=request.target_tenant,
            action=decision.action,
            resource=request.resource,
            params=request.params,
            requested_at=decision.decided_at,
        )
    claims = None
    if decision.jti is not None:
        token = (
            action.poa if action.poa else (history.poas[decision.jti].token if decision.jti in history.poas else None)
        )
        claims = _unverified_claims(token) if token else None
        if claims is None:
            return skipped(f"the PoA {decision.jti} is not on Kafka any more")
    recorded = RecordedDecision(
        decision.request_id,
        decision.action_id,
        decision.action,
        decision.decision,
        decision.reasons,
        recorded_action_tier(
            decision.action_tier.value if decision.action_tier else None,
            decision.reasons,
            claims.tier.value if claims else None,
        ),
    )
    presentation = Presentation(
        action=action,
        agent_id=decision.agent_id,
        cert_thumbprint=None,
        presentation_id=decision.action_id,
        channel="kafka",
    )
    unmandated = ReasonCode.UNMANDATED_LOW_RISK in decision.codes
    return _Input(recorded, presentation, claims, unmandated)


async def _evaluate(
    opa: OpaClient, inputs: list[_Input], default_unmandated: bool, agents: AgentRegistry
) -> list[Evaluated]:
    """The candidate's answers, in order; one OPA round trip per batch of 200 with the same broker setting."""
    gates = {
        flag: PolicyGate(
            opa, agents=agents, allow_unmandated_low_risk=flag, cache_seconds=0, directory=load_directory()
        )
        for flag in (False, True)
    }
    answers: dict[int, Evaluated] = {}
    for flag, gate in gates.items():
        mine = [i for i, item in enumerate(inputs) if (item.unmandated or default_unmandated) is flag]
        for start in range(0, len(mine), 200):
            chunk = mine[start : start + 200]
            decided = await gate.decide([(inputs[i].presentation, inputs[i].claims) for i in chunk])
            for i, d in zip(chunk, decided, strict=True):
                answers[i] = Evaluated(d.allow, d.reasons, d.tier.value, d.policy_version)
    return [answers[i] for i in range(len(inputs))]


async def _requirement(client: RequirementsClient, request: IssuanceRequested) -> Requirement:
    answer = await client.for_request(request)
    return Requirement(answer.tier.value, answer.approvals, answer.ticket_required, answer.composition)


async def _request_changes(
    history: History, candidate: RequirementsClient, live: RequirementsClient | None
) -> tuple[list[Change], list[Skipped]]:
    changes: list[Change] = []
    skipped: list[Skipped] = []
    for request in history.requests.values():
        recorded = history.requirements.get(request.request_id)
        if recorded is None and live is not None:
            try:
                recorded = await _requirement(live, request)
            except PolicyUnavailableError as exc:
                skipped.append(Skipped("request", request.request_id, request.action, f"not recorded, live OPA: {exc}"))
                continue
        if recorded is None:
            skipped.append(Skipped("request", request.request_id, request.action, "its requirements were not recorded"))
            continue
        recorded = replace(recorded, approvers=history.quorums.get(request.request_id))
        change = compare_requirement(
            request.request_id, request.action, recorded, await _requirement(candidate, request)
        )
        if change is not None:
            changes.append(change)
    return changes, skipped


async def what_if(
    history: History,
    candidate_url: str,
    live_url: str | None,
    *,
    allow_unmandated_low_risk: bool = False,
    agents: AgentRegistry | None = None,
) -> WhatIfReport:
    """Compare the history with the candidate policy at `candidate_url` (`agents`: default the configured registry)."""
    if agents is None:
        configured = os.environ.get("ATB_AGENT_REGISTRY_PATH")
        try:
            agents = load_agent_registry(Path(configured) if configured else None)
        except (OSError, ValueError) as exc:
            raise ReplayUsageError(f"agent registry (ATB_AGENT_REGISTRY_PATH): {exc}") from exc
    async with AsyncExitStack() as stack:
        candidate = OpaClient(candidate_url, timeout_s=10)
        stack.push_async_callback(candidate.close)
        live = OpaClient(live_url, timeout_s=5) if live_url else None
        if live is not None:
            stack.push_async_callback(live.close)
        try:
            changes, skipped = await _request_changes(
                history,
                RequirementsClient(candidate, 0, agents=agents),
                RequirementsClient(live, 0, agents=agents) if live else None,
            )
            rebuilt = [_rebuild(history, d) for d in history.decisions]
            inputs = [r for r in rebuilt if isinstance(r, _Input)]
            skipped += [r for r in rebuilt if isinstance(r, Skipped)]
            skipped += history.unreadable
            answers = await _evaluate(candidate, inputs, allow_unmandated_low_risk, agents)
            version = await _version(candidate)
        except PolicyUnavailableError as exc:
            raise ReplayInfraError(f"the candidate policy gave no answer: {exc}") from exc
    for item, answer in zip(inputs, answers, strict=True):
        outcome = compare_decision(item.recorded, answer)
        if isinstance(outcome, Change):
            changes.append(outcome)
        elif isinstance(outcome, Skipped):
            skipped.append(outcome)
    decisions = len(history.decisions) + len(history.unreadable)
    return WhatIfReport(len(history.requests), decisions, tuple(changes), tuple(skipped), version)


async def _version(opa: OpaClient) -> str:
    try:
        result = await opa.evaluate("atb_policy/version", {})
    except PolicyUnavailableError:
        return "unknown"
    return str(result)


def report_json(report: WhatIfReport, run_id: str) -> bytes:
    return orjson.dumps(
        {
            "run_id": run_id,
            "candidate_policy_version": report.candidate_version,
            "requests": report.requests,
            "decisions": report.decisions,
            "changed": report.changed,
            "changes": [c.__dict__ for c in report.changes],
            "skipped": [s.__dict__ for s in report.skipped],
        },
        option=orjson.OPT_INDENT_2,
    )
