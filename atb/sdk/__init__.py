"""The agent SDK: ask for a PoA, wait for it, invoke an action through the broker.

Two ways in, the same identity: the agent's X.509-SVID.

- `GatewayClient` calls the AgentAuth gateway over mutual TLS (`POST /issue`,
  `GET /requests/{id}`); the gateway attests the agent's identity.
- `AgentClient` publishes to Kafka directly, signing each event with the SVID's
  key (proof of origin); consumers take the agent's identity only from the proof.

What the waiters read from Kafka (`await_poa`, `invoke`, `approval_required`)
counts only with a proof by the party allowed to state it
(`atb_runtime.proofs`: outcomes by the approvals service, PoAs and the issuer's
denials by the issuer), verified against the trust bundle (`bundle_path`; by
default the dev PKI's bundle beside a dev SVID). Anything else on the topics (a
forged QuorumReached, RequestDenied or PoaIssued) is ignored and logged, and a
wait that times out says how many such events it ignored and why.

    svid = ensure_svid(state_dir, "spiffe://atb.local/agent/crm-bot")      # dev PKI
    async with AgentClient(svid=svid, tenant="acme") as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/42", leg=leg)
        issued = await agent.await_poa(request_id, timeout=30)
        decision = await agent.invoke("crm.contact.read", "crm:contact/42", poa=issued.token,
                                      request_id=request_id)

Every error the SDK raises is an `SdkError`, and still what it was before (catch
either):

    SdkError                  base of the SDK's errors
    ├── PoaTimeoutError       no answer in time (also a TimeoutError); `ignored` lists forgeries seen
    ├── PoaDeniedError        the request was denied or expired (also a RuntimeError); `outcome`
    └── GatewayError          the gateway or the broker refused a call (also a RuntimeError); `status`, `body`
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable, Collection
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Self, TypeVar

import aiohttp
import orjson

from atb_identity import IdentityError, Svid, TrustBundle, bundle_path, sign_envelope, svid_paths
from atb_identity.tls import client_context
from atb_runtime import Publisher, outgoing_envelope
from atb_runtime.proofs import APPROVALS, ISSUER, ProofRules, outcome_rules
from atb_runtime.readback import decode, iter_records
from atb_runtime.tracing import current_carrier
from contracts import (
    ActionRequested,
    ApprovalRequired,
    BrokerDecision,
    BrokerDecisionV1,
    EventPayload,
    IssuanceRequested,
    JsonObject,
    Leg,
    PoaIssued,
    RequestDenied,
    RequestExpired,
    Topic,
    VoteCast,
    VoteChoice,
    make_envelope,
    topic_name,
)
from contracts.http import AuthorizeRequest, AuthorizeResponse, HttpError, IssueAccepted, IssueRequest, RequestStatus

__all__ = [
    "AgentClient",
    "ApproverClient",
    "GatewayClient",
    "GatewayError",
    "PoaDeniedError",
    "PoaTimeoutError",
    "SdkError",
]

T = TypeVar("T", bound=EventPayload)

log = logging.getLogger(__name__)


class SdkError(Exception):
    """Base of every error the SDK raises."""


class PoaTimeoutError(SdkError, TimeoutError):
    """No answer arrived in time; `ignored` lists the matching events refused for their proof, and why."""

    def __init__(self, message: str, ignored: tuple[str, ...] = ()) -> None:
        if ignored:
            message += f"; ignored {len(ignored)} whose proof did not hold: {'; '.join(ignored[:3])}"
        super().__init__(message)
        self.ignored = ignored


def _trust(svid: Svid, path: Path | None) -> TrustBundle:
    """The trust bundle at `path`, or the dev PKI's bundle when the SVID is one of its files."""
    if path is None and svid.cert_path is not None and len(svid.cert_path.parents) > 3:
        state_dir = svid.cert_path.parents[3]
        if svid_paths(state_dir, str(svid.spiffe_id))[0] == svid.cert_path and bundle_path(state_dir).exists():
            path = bundle_path(state_dir)
    if path is None:
        raise ValueError(
            "give bundle_path (the trust bundle, PEM): the SDK verifies the proof of every outcome and PoA it reads"
        )
    return TrustBundle.load(path, svid.spiffe_id.trust_domain)


class PoaDeniedError(SdkError, RuntimeError):
    """The request was denied or expired; `outcome` says how."""

    def __init__(self, outcome: RequestDenied | RequestExpired) -> None:
        reason = outcome.reason if isinstance(outcome, RequestDenied) else "deadline passed without quorum"
        super().__init__(f"request {outcome.request_id}: {reason}")
        self.outcome = outcome


class AgentClient:
    def __init__(
        self,
        *,
        svid: Svid,
        tenant: str,
        bootstrap: str = "127.0.0.1:19092",
        namespace: str = "",
        bundle_path: Path | None = None,
        outcome_producers: Collection[str] = (APPROVALS,),
        issuers: Collection[str] = (ISSUER,),
    ) -> None:
        self.svid = svid
        self.agent_id = str(svid.spiffe_id)
        self.tenant = tenant
        self._bootstrap = bootstrap
        self._ns = namespace
        self._bundle = _trust(svid, bundle_path)
        self._rules = outcome_rules(outcome_producers, issuers)
        self._publisher = Publisher(bootstrap, client_id="atb-agent-sdk")

    async def __aenter__(self) -> AgentClient:
        await self._publisher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._publisher.stop()

    async def request_poa(
        self,
        action: str,
        resource: str,
        *,
        leg: Leg,
        params: JsonObject | None = None,
        target_tenant: str | None = None,
        request_id: str | None = None,
        callback_url: str | None = None,
    ) -> str:
        """Publish an IssuanceRequested; returns its request id. `callback_url`: where the issuer POSTs the outcome."""
        request = IssuanceRequested(
            request_id=request_id or f"req-{uuid.uuid4().hex}",
            agent_id=self.agent_id,
            tenant=self.tenant,
            target_tenant=target_tenant,
            action=action,
            resource=resource,
            params=params or {},
            leg=leg,
            requested_at=datetime.now(UTC),
            agent_cert_thumbprint=self.svid.thumbprint(),
            callback_url=callback_url,
        )
        await self._publish_signed(request)
        return request.request_id

    async def _publish_signed(self, payload: EventPayload) -> None:
        envelope = sign_envelope(make_envelope(payload, source=self.agent_id), self.svid)
        await self._publisher.publish([outgoing_envelope(envelope, topic_name(payload.topic, self._ns))])
        await self._publisher.flush()

    async def await_poa(self, request_id: str, *, timeout: float = 30.0) -> PoaIssued:
        """Wait for the PoA of a request; raise PoaDeniedError if it is denied or expires."""
        topics = (topic_name(Topic.POA_ISSUED, self._ns), topic_name(Topic.OUTCOMES, self._ns))
        found = await _await_first(
            self._bootstrap,
            topics,
            lambda p: (
                isinstance(p, PoaIssued | RequestDenied | RequestExpired)
                and getattr(p, "request_id", None) == request_id
            ),
            timeout,
            self._bundle,
            self._rules,
        )
        if isinstance(found, RequestDenied | RequestExpired):
            raise PoaDeniedError(found)
        assert isinstance(found, PoaIssued)
        return found

    async def invoke(
        self,
        action: str,
        resource: str,
        *,
        poa: str | None,
        request_id: str,
        params: JsonObject | None = None,
        target_tenant: str | None = None,
        timeout: float = 30.0,
    ) -> BrokerDecision:
        """Ask the broker to run an action with a PoA; returns its decision."""
        requested = ActionRequested(
            request_id=request_id,
            action_id=f"act-{uuid.uuid4().hex}",
            agent_id=self.agent_id,
            tenant=self.tenant,
            target_tenant=target_tenant,
            action=action,
            resource=resource,
            params=params or {},
            poa=poa,
            requested_at=datetime.now(UTC),
        )
        waiter = asyncio.create_task(
            _await_first(
                self._bootstrap,
                (topic_name(Topic.BROKER_DECISIONS, self._ns),),
                # A broker not yet upgraded answers with v1 during a rolling upgrade.
                lambda p: isinstance(p, BrokerDecision | BrokerDecisionV1) and p.action_id == requested.action_id,
                timeout,
                self._bundle,
                self._rules,
            )
        )
        await asyncio.sleep(0)
        await self._publish_signed(requested)
        found = await waiter
        if isinstance(found, BrokerDecisionV1):
            return found.upcast()
        assert isinstance(found, BrokerDecision)
        return found


async def _await_first(
    bootstrap: str,
    topics: tuple[str, ...],
    match: Callable[[EventPayload], bool],
    timeout: float,
    bundle: TrustBundle,
    rules: ProofRules,
) -> EventPayload:
    """The first event on `topics` that matches and whose proof `rules` accept, from the start of their records."""
    ignored: list[str] = []

    async def first() -> EventPayload:
        # From the beginning, so an answer that arrived before we started listening is not missed.
        async with aclosing(iter_records(bootstrap, topics, follow_s=math.inf, poll_ms=200)) as records:
            async for record in records:
                event = decode(record)
                if event is None or not match(event.payload):
                    continue
                try:
                    rules.verify(event.envelope, event.payload, bundle, at=datetime.now(UTC))
                except IdentityError as exc:
                    why = f"{event.envelope.type} from {event.envelope.source[:200]} ({exc.code}: {exc})"
                    log.warning("ignoring %s@%d:%d: %s", record.topic, record.partition, record.offset, why)
                    ignored.append(why)
                    continue
                return event.payload
        raise PoaTimeoutError(f"no answer on {', '.join(topics)}: no such topic", tuple(ignored))

    try:
        return await asyncio.wait_for(first(), timeout)
    except TimeoutError as exc:
        if isinstance(exc, PoaTimeoutError):
            raise
        raise PoaTimeoutError(f"no answer on {', '.join(topics)} within {timeout:.0f}s", tuple(ignored)) from exc


class GatewayError(SdkError, RuntimeError):
    """The gateway refused a call; `status` and `body` say why."""

    def __init__(self, status: int, body: HttpError) -> None:
        super().__init__(f"gateway answered {status} {body.error}: {body.message}")
        self.status = status
        self.body = body


class _MtlsClient:
    """An HTTPS client that presents the agent's SVID and checks the server's SPIFFE ID on every connection."""

    SERVICE = "server"
    BASE_URL = ""
    EXPECT_SERVER = ""

    def __init__(
        self, *, svid: Svid, bundle_path: Path, base_url: str | None = None, expect_server: str | None = None
    ) -> None:
        base_url = base_url or self.BASE_URL
        expect_server = expect_server or self.EXPECT_SERVER
        if svid.cert_path is None or svid.key_path is None:
            raise ValueError("the SVID must be on disk (cert_path, key_path) to be used for TLS")
        self.svid = svid
        self._base = base_url.rstrip("/")
        self._bundle = TrustBundle.load(bundle_path, svid.spiffe_id.trust_domain)
        self._expect = expect_server
        self._ssl = client_context(svid.cert_path, svid.key_path, bundle_path, expect_server=expect_server)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        assert self._session is not None, f"use `async with {type(self).__name__}(...)`"
        headers = {"content-type": "application/json"} if body is not None else {}
        headers.update(current_carrier() or {})  # the caller's W3C trace context, if it is in a span
        try:
            async with self._session.request(
                method, self._base + path, data=body, headers=headers, ssl=self._ssl
            ) as response:
                return response.status, await response.read()
        except aiohttp.ClientSSLError as exc:
            why = getattr(exc, "os_error", None) or exc
            refused = HttpError(
                error="server_identity_refused", message=f"{self.SERVICE}'s TLS identity refused: {why}"
            )
            raise GatewayError(0, refused) from exc


class GatewayClient(_MtlsClient):
    """Ask for PoAs through the AgentAuth gateway over mutual TLS.

    The gateway's own SPIFFE ID is checked after the handshake (`expect_server`).
    """

    SERVICE = "gateway"
    BASE_URL = "https://127.0.0.1:18443"
    EXPECT_SERVER = "spiffe://atb.local/svc/gateway"

    async def request_poa(
        self,
        action: str,
        resource: str,
        *,
        tenant: str,
        leg: Leg,
        params: JsonObject | None = None,
        target_tenant: str | None = None,
        request_id: str | None = None,
        callback_url: str | None = None,
    ) -> str:
        """POST /issue; returns the request id. `callback_url`: where the issuer POSTs the outcome."""
        body = IssueRequest(
            request_id=request_id,
            tenant=tenant,
            target_tenant=target_tenant,
            action=action,
            resource=resource,
            params=params or {},
            leg=leg,
            callback_url=callback_url,
        ).model_dump_json(exclude_none=True)
        status, raw = await self._call("POST", "/issue", body.encode())
        if status != 202:
            raise GatewayError(status, HttpError.model_validate_json(raw))
        return IssueAccepted.model_validate_json(raw).request_id

    async def status(self, request_id: str) -> RequestStatus:
        status, raw = await self._call("GET", f"/requests/{request_id}")
        if status != 200:
            raise GatewayError(status, HttpError.model_validate_json(raw))
        return RequestStatus.model_validate_json(raw)

    async def await_poa(self, request_id: str, *, timeout: float = 30.0, poll: float = 0.1) -> RequestStatus:
        """Poll until the request is issued (returned), or denied/expired (PoaDeniedError-like GatewayError)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                current = await self.status(request_id)
            except GatewayError as exc:
                if exc.status != 404:  # not yet seen by the gateway's follower
                    raise
            else:
                if current.status == "issued":
                    return current
                if current.status in ("denied", "expired"):
                    raise GatewayError(
                        200, HttpError(error=f"request_{current.status}", message=current.reason or current.status)
                    )
            if asyncio.get_running_loop().time() > deadline:
                raise PoaTimeoutError(f"request {request_id} not issued within {timeout:.0f}s")
            await asyncio.sleep(poll)


class BrokerClient(_MtlsClient):
    """Run actions through the broker (`POST /v1/authorize`) over mutual TLS.

    The PoA is bound to this agent's certificate (`cnf`): it works only over a
    connection that presents the same SVID it was requested with.
    """

    SERVICE = "broker"
    BASE_URL = "https://127.0.0.1:18445"
    EXPECT_SERVER = "spiffe://atb.local/svc/broker"

    async def authorize(
        self,
        action: str,
        resource: str,
        *,
        request_id: str,
        tenant: str,
        poa: str | None,
        params: JsonObject | None = None,
        target_tenant: str | None = None,
        connector: str | None = None,
        execute: bool = True,
    ) -> AuthorizeResponse:
        """The broker's decision (allow or deny, with reasons) and, on allow, the connector's result."""
        body = AuthorizeRequest(
            request_id=request_id,
            tenant=tenant,
            target_tenant=target_tenant,
            action=action,
            resource=resource,
            params=params or {},
            poa=poa,
            connector=connector,
            execute=execute,
        ).model_dump_json(exclude_none=True)
        status, raw = await self._call("POST", "/v1/authorize", body.encode())
        # 200 allow, 403 deny, 502 allowed but the connector failed: each carries a decision.
        # A 403 with an `error` instead is an identity refusal, as is any other status.
        if status in (200, 403, 502) and "decision" in orjson.loads(raw):
            return AuthorizeResponse.model_validate_json(raw)
        raise GatewayError(status, HttpError.model_validate_json(raw))


class ApproverClient:
    """An approver votes with their own SVID (the `atb vote` CLI uses this).

    The vote binds to the digest of the exact request, taken from the request's
    ApprovalRequired event; the approvals service counts it only for that digest.
    """

    def __init__(
        self,
        *,
        svid: Svid,
        bootstrap: str = "127.0.0.1:19092",
        namespace: str = "",
        bundle_path: Path | None = None,
        outcome_producers: Collection[str] = (APPROVALS,),
    ) -> None:
        self.svid = svid
        self.approver_id = str(svid.spiffe_id)
        self._bootstrap = bootstrap
        self._ns = namespace
        self._bundle = _trust(svid, bundle_path)
        self._rules = outcome_rules(outcome_producers)
        self._publisher = Publisher(bootstrap, client_id="atb-approver")

    async def __aenter__(self) -> ApproverClient:
        await self._publisher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._publisher.stop()

    async def approval_required(self, request_id: str, *, timeout: float = 30.0) -> ApprovalRequired:
        """The ApprovalRequired of a request: tier, digest, deadline."""
        found = await _await_first(
            self._bootstrap,
            (topic_name(Topic.OUTCOMES, self._ns),),
            lambda p: isinstance(p, ApprovalRequired) and p.request_id == request_id,
            timeout,
            self._bundle,
            self._rules,
        )
        assert isinstance(found, ApprovalRequired)
        return found

    async def vote(
        self, required: ApprovalRequired, choice: VoteChoice, *, reason: str = "", vote_id: str | None = None
    ) -> VoteCast:
        """Publish a signed VoteCast for the request's exact digest."""
        vote = VoteCast(
            request_id=required.request_id,
            vote_id=vote_id or f"vote-{uuid.uuid4().hex}",
            approver_id=self.approver_id,
            choice=choice,
            request_digest=required.request_digest,
            channel="cli",
            cast_at=datetime.now(UTC),
            reason=reason,
        )
        envelope = sign_envelope(make_envelope(vote, source=self.approver_id), self.svid)
        await self._publisher.publish([outgoing_envelope(envelope, topic_name(vote.topic, self._ns))])
        await self._publisher.flush()
        return vote
