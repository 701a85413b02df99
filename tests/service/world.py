"""Everything the service tier's scenarios share: identities, the services as the runtime sees them, events.

Identities are real: one dev CA per test (`atb_identity.ensure_svid`, as tests/e2e
mint them), or a SPIRE-like CA (`World.spire`, tests/spire_support.py: EC P-256
SVIDs as SPIRE issues them), an X.509-SVID per service, agent and approver, and
every event an agent or approver publishes carries a real proof by its SVID. The services are
built as their `main.py` builds them, from the same classes, with three
differences, each a stand-in for something outside the process:

- OPA is `TableOpa` (tests/service/policy.py), behind the services' own policy adapters;
- Kafka is the bus (tests/service/bus.py), including the state read-back;
- the broker's verification keys and revocations are handed to its key ring and
  revocation list (`trust_issuer_key`, `World.revoke`) instead of arriving
  through their followers, which only run against a real broker;
- Slack is `RecordingSlack` (`chat.ports.SlackApi`), and chat publishes through
  `BusPublisher` (`RecordPublisher`); its card follower is the bus's, and so is
  the gateway's view follower (the gateway's HTTP edge is not here: its calls
  are made on `GatewayService` directly);
- the audit sink's tracking loop is the bus's (`MemoryBus.track`).

The spent store, the chat store and the audit store are the real ones, on
SQLite in the test's directory, migrated by their alembic histories.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from approvals.adapters.policy import PolicyRequirements
from approvals.adapters.state import StateStore
from approvals.service import ApprovalsService
from approvals.settings import ApprovalsSettings
from atb_identity import Svid, TrustBundle, bundle_path, cert_thumbprint, ensure_svid, sign_envelope
from atb_runtime import DeadLetters, Incoming, Outgoing, outgoing_envelope
from atb_runtime.agents import load_agent_registry
from atb_runtime.follow import follower_consumer
from atb_runtime.passkeys import PasskeyRegistry
from atb_runtime.policy import RequirementsClient
from atb_runtime.proofs import ProofCheck, outcome_rules
from audit_sink.adapters.db import AuditStore, make_engine, migrate
from audit_sink.adapters.signing import NoteSigner, load_or_create_signer
from audit_sink.service import AuditIngest
from audit_sink.settings import AuditSinkSettings
from broker.adapters.connectors import load_registry
from broker.adapters.keys import KeyRing
from broker.adapters.policy import PolicyGate, load_directory
from broker.adapters.revocations import RevocationList
from broker.adapters.spent import SpentStore
from broker.adapters.verify import PoaVerifier
from broker.service import Authorizer, BrokerService
from broker.settings import BrokerSettings
from chat.adapters.follower import FOLLOWED, OutcomeProofCheck
from chat.adapters.store import ChatStore
from chat.domain import Card
from chat.service import ChatService
from chat.settings import ChatSettings
from contracts import (
    AccountableParty,
    ActionRequested,
    ApprovalRequired,
    EventPayload,
    IssuanceRequested,
    LegitimateInterest,
    PoaClaims,
    PoaIssued,
    PoaRevoked,
    Topic,
    VoteCast,
    VoteChoice,
    digest_of,
    make_envelope,
    topic_name,
)
from contracts.agents import AgentRegistry
from contracts.directory import Directory
from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from issuer.adapters.evidence import EvidenceVerifier
from issuer.adapters.keys import SigningKey, load_or_create_key
from issuer.callbacks import CallbackTeller
from issuer.ports import OutcomeNotifier
from issuer.service import IssuerService
from issuer.settings import IssuerSettings
from tests.service.bus import Bus, BusPublisher, MemoryBus, ServiceUnderTest
from tests.service.clock import Clock
from tests.service.policy import TableOpa
from tests.spire_support import SpireCa

__all__ = [
    "AGENT",
    "APPROVALS",
    "BROKER",
    "CHAT",
    "ISSUER",
    "OTHER_AGENT",
    "SLACK_SECRET",
    "ClockedVerifier",
    "RecordingSlack",
    "World",
    "approver_id",
]

ROOT = Path(__file__).resolve().parents[2]
APPROVALS = "spiffe://atb.local/svc/approvals"
ISSUER = "spiffe://atb.local/svc/issuer"
BROKER = "spiffe://atb.local/svc/broker"
AGENT = "spiffe://atb.local/agent/crm-bot"
OTHER_AGENT = "spiffe://atb.local/agent/other-bot"
CHAT = "spiffe://atb.local/svc/chat"
GATEWAY = "spiffe://atb.local/svc/gateway"
SLACK_SECRET = b"service-tier-slack-signing-secret"


@dataclass
class RecordingSlack:
    """`chat.ports.SlackApi` in memory: every call recorded; the channel `#atb-approvals` is CATBAPPROVA."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)
    """(method, channel, text) in call order."""
    cards: dict[tuple[str, str], Card] = field(default_factory=dict)
    """(channel, ts) → the card shown there now."""

    async def post(self, channel: str, card: Card) -> tuple[str, str]:
        where = "CATBAPPROVA" if channel == "#atb-approvals" else channel
        ts = f"{len(self.calls) + 1}.000001"
        self.calls.append(("post", where, card.text))
        self.cards[(where, ts)] = card
        return where, ts

    async def update(self, channel: str, ts: str, card: Card) -> None:
        self.calls.append(("update", channel, card.text))
        self.cards[(channel, ts)] = card

    async def ephemeral(self, channel: str, user: str, text: str) -> None:
        self.calls.append(("ephemeral", user, text))

    async def open_dm(self, user: str) -> str:
        return f"D{user}"


def approver_id(name: str) -> str:
    """The SVID identity of an approver of config/approvers.json (alice, bob, carol, dave, ...)."""
    return f"spiffe://atb.local/user/{name}"


class ClockedVerifier:
    """The broker's real verifier, judging `exp`/`nbf`/`iat` by the test's clock (a `TokenVerifier`)."""

    def __init__(self, inner: PoaVerifier, clock: Clock) -> None:
        self._inner = inner
        self._clock = clock

    def verify(self, token: str) -> PoaClaims:
        return self._inner.verify(token, now=self._clock.time())


@dataclass
class World:
    """One test's identities, stand-ins and services, over one bus namespace."""

    state: Path
    clock: Clock
    namespace: str
    bootstrap: str = "memory.invalid:9092"
    """Where the services' own Kafka clients would connect; only used on the real broker."""
    opa: TableOpa = field(default_factory=TableOpa)
    directory: Directory = field(
        default_factory=lambda: Directory.from_mapping(
            json.loads((ROOT / "config" / "approvers.json").read_text(encoding="utf-8"))
        )
    )
    agents: AgentRegistry = field(default_factory=load_agent_registry)
    _svids: dict[str, Svid] = field(default_factory=dict)
    signing_key: SigningKey | None = None
    keys: KeyRing | None = None
    revocations: RevocationList | None = None
    spent: SpentStore | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)
    spire: SpireCa | None = None
    """Issue every SVID from this SPIRE-like CA, and trust its bundle, instead of the dev CA."""

    # -- identities ------------------------------------------------------------------------

    def svid(self, spiffe_id: str) -> Svid:
        if spiffe_id not in self._svids:
            self._svids[spiffe_id] = (
                self.spire.issue(spiffe_id, now=self.clock.now(), hours=24)
                if self.spire is not None
                else ensure_svid(self.state, spiffe_id)
            )
        return self._svids[spiffe_id]

    @property
    def bundle(self) -> TrustBundle:
        if self.spire is not None:
            return self.spire.bundle
        self.svid(APPROVALS)  # the CA exists once any SVID does
        return TrustBundle.load(bundle_path(self.state), "atb.local")

    def topic(self, topic: Topic) -> str:
        return topic_name(topic, self.namespace)

    # -- services, as main.py builds them --------------------------------------------------

    def approvals(
        self, *, passkeys: PasskeyRegistry | None = None, **overrides: Any
    ) -> tuple[ApprovalsService, ServiceUnderTest]:
        settings = ApprovalsSettings(
            topic_namespace=self.namespace, kafka_bootstrap_servers=self.bootstrap, state_dir=self.state, **overrides
        )
        service = ApprovalsService(
            settings,
            PolicyRequirements(self.opa, 0.0, agents=self.agents),
            self.bundle,
            self.directory,
            StateStore(self.bootstrap, self.namespace, settings.service_id),
            self.svid(APPROVALS),
            self.agents,
            passkeys=passkeys,
        )
        sut = ServiceUnderTest(
            name="approvals",
            inputs=(Topic.POA_REQUESTS, Topic.VOTES),
            handle=service.handle,
            poison=service.set_aside,
            on_assigned=service.on_assigned,
            on_rewind=service.on_rewind,
            tick=service.tick,
        )
        return service, sut

    def issuer_key(self) -> SigningKey:
        if self.signing_key is None:
            self.signing_key = load_or_create_key(self.state / "issuer" / "signing.key")
        return self.signing_key

    def issuer(self, *, passkeys: PasskeyRegistry | None = None) -> tuple[IssuerService, ServiceUnderTest]:
        settings = IssuerSettings(
            topic_namespace=self.namespace, kafka_bootstrap_servers=self.bootstrap, state_dir=self.state
        )
        key = self.issuer_key()
        evidence = EvidenceVerifier(
            bundle=self.bundle,
            directory=self.directory,
            policy=RequirementsClient(self.opa, 0.0, agents=self.agents),
            agents=self.agents,
            request_attesters=settings.request_attesters,
            vote_attesters=settings.vote_attesters,
            vote_attester_tiers=settings.vote_attester_tiers,
            passkeys=passkeys,
            passkey_announcers=settings.passkey_announcers,
            max_pending_seconds=settings.max_pending_seconds,
        )
        service = IssuerService(settings, lambda _now: key, evidence, self.bundle, self.svid(ISSUER))
        sut = ServiceUnderTest(
            name="issuer",
            inputs=(Topic.OUTCOMES,),
            handle=service.handle,
            poison=service.set_aside,
            on_assigned=service.on_assigned,
            on_rewind=service.on_rewind,
        )
        return service, sut

    def callbacks(self, notifier: OutcomeNotifier) -> ServiceUnderTest:
        """The issuer's callback teller on the bus, as issuer/main.py wires it (its `AckingConsumer`'s part, a
        record's delivery awaited before the next: at least once across a crash is for Kafka to show,
        tests/e2e/test_notices.py)."""
        settings = IssuerSettings(topic_namespace=self.namespace, kafka_bootstrap_servers=self.bootstrap)
        teller = CallbackTeller(
            notifier,
            self.bundle,
            issuer=settings.service_id,
            approvals=frozenset(settings.quorum_producers),
            max_age=timedelta(seconds=settings.callback_max_age_seconds),
            now=self.clock.now,
        )

        async def handle(records: Sequence[Incoming]) -> list[Outgoing]:
            for record in records:
                if (delivery := await teller.tell(record)) is not None:
                    await delivery
            return []

        return ServiceUnderTest(
            name="issuer-callbacks",
            inputs=(Topic.OUTCOMES, Topic.POA_ISSUED),
            handle=handle,
            poison=DeadLetters("issuer-callbacks", settings.service_id, self.namespace),
        )

    def broker(self) -> tuple[BrokerService, ServiceUnderTest]:
        settings = BrokerSettings(
            topic_namespace=self.namespace, kafka_bootstrap_servers=self.bootstrap, state_dir=self.state
        )
        if self.keys is None:
            self.keys = KeyRing(self.bootstrap, self.namespace)  # never started: keys are handed to it
            self.trust_issuer_key()
        if self.revocations is None:
            self.revocations = RevocationList(
                self.bootstrap, self.namespace, leeway_s=settings.leeway_seconds, clock=self.clock.time
            )
        if self.spent is None:
            self.spent = SpentStore(f"sqlite:///{self.state / 'spent.db'}")
        verifier = PoaVerifier(
            self.keys, audience=settings.service_id, issuer=settings.poa_issuer, leeway_s=settings.leeway_seconds
        )
        authorizer = Authorizer(
            verifier=ClockedVerifier(verifier, self.clock),
            keys=self.keys,
            revocations=self.revocations,
            policy=PolicyGate(
                self.opa,
                agents=self.agents,
                allow_unmandated_low_risk=False,
                cache_seconds=0.0,
                directory=load_directory(),
            ),
            spent=self.spent,
            registry=load_registry(ROOT / "config" / "connectors.json"),
            agents=self.agents,
        )
        service = BrokerService(authorizer, self.bundle, source=settings.service_id, namespace=self.namespace)
        sut = ServiceUnderTest(
            name="broker",
            inputs=(Topic.BROKER_ACTIONS,),
            handle=service.handle,
            # The broker has no `set_aside`: its runner letters set-aside records with the runtime's default.
            poison=DeadLetters(BrokerService.CONSUMER, settings.service_id, self.namespace),
        )
        return service, sut

    def chat(self, bus: MemoryBus, slack: RecordingSlack, console_url: str = "") -> ChatService:
        """The chat service as chat/main.py wires it: its card follower on the bus, clicks by `handle_interaction`."""
        settings = ChatSettings(
            topic_namespace=self.namespace,
            kafka_bootstrap_servers=self.bootstrap,
            state_dir=self.state,
            console_url=console_url,
        )
        store = ChatStore(settings.db_url())
        self._closers.append(store.close)
        service = ChatService(settings, self.directory, store, slack, BusPublisher(bus), self.svid(CHAT), SLACK_SECRET)
        consumer = follower_consumer("chat", "cards", settings.instance)
        bus.follow(
            consumer,
            FOLLOWED,
            service.on_events,
            check=OutcomeProofCheck(
                self.bundle, settings.outcome_producers, source=CHAT, namespace=self.namespace, consumer=consumer
            ),
            dead=DeadLetters(consumer, CHAT, self.namespace),
        )
        return service

    def gateway(self, bus: MemoryBus) -> GatewayService:
        """The gateway as gateway/main.py wires it: its view follower on the bus, the HTTP edge's calls direct."""
        settings = GatewaySettings(
            topic_namespace=self.namespace, kafka_bootstrap_servers=self.bootstrap, state_dir=self.state
        )
        service = GatewayService(
            svid=self.svid(GATEWAY), publisher=BusPublisher(bus), agents=self.agents, namespace=self.namespace
        )
        consumer = follower_consumer("gateway", "views", settings.instance)
        rules = outcome_rules(
            settings.outcome_producers, settings.issuers, request_attesters=settings.request_attesters
        )
        bus.follow(
            consumer,
            (Topic.POA_REQUESTS, Topic.OUTCOMES, Topic.POA_ISSUED),
            service.apply,
            check=ProofCheck(self.bundle, rules, source=GATEWAY, namespace=self.namespace, consumer=consumer),
            dead=DeadLetters(consumer, GATEWAY, self.namespace),
        )
        return service

    def audit_sink(self, bus: Bus, **overrides: Any) -> tuple[AuditIngest, AuditStore, NoteSigner]:
        """The audit sink as audit_sink/main.py wires it, on SQLite; the caller tracks it on the bus."""
        settings = AuditSinkSettings(
            topic_namespace=self.namespace, kafka_bootstrap_servers=self.bootstrap, state_dir=self.state, **overrides
        )
        url = settings.db_url()
        migrate(url, settings.audit_migrations_dir)
        store = AuditStore(make_engine(url), f"{settings.group_id}.{self.namespace.rstrip('.')}")
        self._closers.append(store.engine.dispose)
        signer = load_or_create_signer(settings.key_path(), settings.checkpoint_origin)
        return AuditIngest(settings, store, signer, BusPublisher(bus)), store, signer

    def trust_issuer_key(self) -> None:
        """What the broker's key follower does with the issuer's SigningKeyPublished."""
        assert self.keys is not None
        key = self.issuer_key()
        self.keys.add(key.kid, key.jwk)

    def close(self) -> None:
        if self.spent is not None:
            self.spent.close()
        for close in self._closers:
            close()

    # -- what agents and approvers publish -------------------------------------------------

    def signed(self, payload: EventPayload, by: str) -> Outgoing:
        envelope = sign_envelope(make_envelope(payload, source=by), self.svid(by))
        return outgoing_envelope(envelope, self.topic(payload.topic))

    def request(
        self,
        request_id: str,
        action: str,
        *,
        agent: str = AGENT,
        resource: str = "crm:contact/42",
        accountable: str = "emp-900",
        requested_at: datetime | None = None,
        thumbprint_of: str | None = None,
        ticket: str | None = None,
        callback_url: str | None = None,
    ) -> tuple[IssuanceRequested, Outgoing]:
        """An IssuanceRequested the agent signs itself, bound to its certificate (`cnf`)."""
        request = IssuanceRequested(
            request_id=request_id,
            agent_id=agent,
            tenant="acme",
            action=action,
            resource=resource,
            callback_url=callback_url,
            params={"reason": "service tier"},
            leg=LegitimateInterest(
                ref="LI-2024-001",
                jurisdiction="US",
                accountable_party=AccountableParty(type="employee", id=accountable),
                ticket_ref=ticket,
            ),
            requested_at=requested_at or self.clock.now(),
            agent_cert_thumbprint=cert_thumbprint(self.svid(thumbprint_of or agent).leaf),
        )
        return request, self.signed(request, agent)

    def vote(
        self,
        target: ApprovalRequired | IssuanceRequested,
        name: str,
        choice: VoteChoice = VoteChoice.APPROVE,
        *,
        vote_id: str | None = None,
        digest: str | None = None,
        via_chat: str | None = None,
    ) -> tuple[VoteCast, Outgoing]:
        """A VoteCast an approver signs with their own SVID (as `atb vote` does), for the digest they were shown.

        For an IssuanceRequested (a vote that arrives before its request's card), the digest is the request's own.
        With `via_chat` (a Slack user id), the chat service attests the vote instead, as after a click on a card.
        """
        identity = f"slack:{via_chat}" if via_chat else approver_id(name)
        shown = target.request_digest if isinstance(target, ApprovalRequired) else digest_of(target)
        vote = VoteCast(
            request_id=target.request_id,
            vote_id=vote_id or f"vote-{name}-{uuid.uuid4().hex[:8]}",
            approver_id=identity,
            choice=choice,
            request_digest=digest or shown,
            channel="slack" if via_chat else "cli",
            cast_at=self.clock.now(),
        )
        return vote, self.signed(vote, CHAT if via_chat else identity)

    def action(
        self,
        poa: PoaIssued | None,
        request: IssuanceRequested,
        *,
        action_id: str | None = None,
        action: str | None = None,
        resource: str | None = None,
        agent: str | None = None,
        token: str | None = None,
    ) -> tuple[ActionRequested, Outgoing]:
        """An ActionRequested the agent signs: the Kafka way into the broker."""
        by = agent or request.agent_id
        presented = ActionRequested(
            request_id=request.request_id,
            action_id=action_id or f"act-{uuid.uuid4().hex[:12]}",
            agent_id=by,
            tenant=request.tenant,
            action=action or request.action,
            resource=resource or request.resource,
            params=request.params,
            poa=token if token is not None else (poa.token if poa is not None else None),
            requested_at=self.clock.now(),
        )
        return presented, self.signed(presented, by)

    def revoke(self, poa: PoaIssued, reason: str = "incident INC-1") -> PoaRevoked:
        """What `atb poa revoke` publishes, as the broker's revocation follower hands it over."""
        assert self.revocations is not None
        revoked = PoaRevoked(
            request_id=poa.request_id,
            jti=poa.jti,
            reason=reason,
            revoked_by="spiffe://atb.local/user/carol",
            revoked_at=self.clock.now(),
            expires_at=poa.expires_at,
        )
        self.revocations.add(revoked)
        return revoked
