"""The agent SDK: ask for a PoA, wait for it, invoke an action through the broker.

    async with AgentClient(agent_id="spiffe://atb.local/agent/crm-bot", tenant="acme") as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/42", leg=leg)
        issued = await agent.await_poa(request_id, timeout=30)
        decision = await agent.invoke("crm.contact.read", "crm:contact/42", poa=issued.token,
                                      request_id=request_id)

This version publishes to Kafka directly; the identity of the agent is the event
source. (Signed proofs of origin and the mTLS gateway are the identity issue's.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from aiokafka import AIOKafkaConsumer

from atb_runtime import Publisher, outgoing
from contracts import (
    ActionRequested,
    BrokerDecision,
    EventDecodeError,
    EventPayload,
    IssuanceRequested,
    JsonObject,
    Leg,
    PoaIssued,
    RequestDenied,
    RequestExpired,
    Topic,
    decode_envelope,
    payload_of,
    topic_name,
)

__all__ = ["AgentClient", "PoaDeniedError", "PoaTimeoutError"]

T = TypeVar("T", bound=EventPayload)


class PoaTimeoutError(TimeoutError):
    """No answer arrived in time."""


class PoaDeniedError(RuntimeError):
    """The request was denied or expired; `outcome` says how."""

    def __init__(self, outcome: RequestDenied | RequestExpired) -> None:
        reason = outcome.reason if isinstance(outcome, RequestDenied) else "deadline passed without quorum"
        super().__init__(f"request {outcome.request_id}: {reason}")
        self.outcome = outcome


class AgentClient:
    def __init__(
        self,
        *,
        agent_id: str,
        tenant: str,
        bootstrap: str = "127.0.0.1:19092",
        namespace: str = "",
    ) -> None:
        self.agent_id = agent_id
        self.tenant = tenant
        self._bootstrap = bootstrap
        self._ns = namespace
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
    ) -> str:
        """Publish an IssuanceRequested; returns its request id."""
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
        )
        await self._publisher.publish([outgoing(request, source=self.agent_id, namespace=self._ns)])
        await self._publisher.flush()
        return request.request_id

    async def await_poa(self, request_id: str, *, timeout: float = 30.0) -> PoaIssued:
        """Wait for the PoA of a request; raise PoaDeniedError if it is denied or expires."""
        topics = (topic_name(Topic.POA_ISSUED, self._ns), topic_name(Topic.OUTCOMES, self._ns))
        found = await self._await_first(
            topics,
            lambda p: (
                isinstance(p, PoaIssued | RequestDenied | RequestExpired)
                and getattr(p, "request_id", None) == request_id
            ),
            timeout,
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
            self._await_first(
                (topic_name(Topic.BROKER_DECISIONS, self._ns),),
                lambda p: isinstance(p, BrokerDecision) and p.action_id == requested.action_id,
                timeout,
            )
        )
        await asyncio.sleep(0)
        await self._publisher.publish([outgoing(requested, source=self.agent_id, namespace=self._ns)])
        await self._publisher.flush()
        found = await waiter
        assert isinstance(found, BrokerDecision)
        return found

    async def _await_first(
        self, topics: tuple[str, ...], match: Callable[[EventPayload], bool], timeout: float
    ) -> EventPayload:
        # Reads from the beginning of the topics' retained records, so an answer that
        # arrived before we started listening is not missed.
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            return await asyncio.wait_for(self._scan(consumer, match), timeout)
        except TimeoutError as exc:
            raise PoaTimeoutError(f"no answer on {', '.join(topics)} within {timeout:.0f}s") from exc
        finally:
            await consumer.stop()

    @staticmethod
    async def _scan(consumer: AIOKafkaConsumer, match: Callable[[EventPayload], bool]) -> EventPayload:
        async for msg in consumer:
            try:
                payload = payload_of(decode_envelope(msg.value))
            except EventDecodeError:
                continue
            if match(payload):
                return payload
        raise PoaTimeoutError("consumer stopped")
