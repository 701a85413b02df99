"""Wiring only: `faststream run broker.main:app`."""

from __future__ import annotations

from atb_identity import TrustBundle
from atb_runtime import OpaClient, Publisher
from atb_runtime.agents import load_agent_registry
from atb_runtime.app import Channel, service_app
from atb_runtime.follow import FollowerDeadLetters, follower_consumer, follower_dead_letters
from atb_runtime.identity import load_bundle, server_tls, service_svid
from atb_runtime.ops import HttpSite
from atb_runtime.proofs import ProofCheck, ProofRules
from atb_runtime.publisher import AuditTrail
from atb_runtime.runner import ServiceRunner, Steps
from broker.adapters.connectors import HttpConnector, load_registry
from broker.adapters.http import AuthorizeApp, build_app
from broker.adapters.keys import KeyRing
from broker.adapters.outbox import OutboxRelay
from broker.adapters.policy import PolicyGate, load_directory
from broker.adapters.revocations import RevocationList
from broker.adapters.spent import SpentStore
from broker.adapters.verify import PoaVerifier
from broker.service import Authorizer, BrokerService, DecisionQueue, http_presentation_id
from broker.settings import BrokerSettings
from contracts import (
    ActionRequested,
    AuditEvent,
    BrokerDecision,
    DeadLetter,
    PoaRevoked,
    SigningKeyPublished,
    Topic,
    topic_name,
)

settings = BrokerSettings()


async def build() -> ServiceRunner:
    ns, source = settings.topic_namespace, settings.service_id
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    publisher = Publisher(settings.kafka_bootstrap_servers, f"atb-broker-http-{settings.instance}", linger_ms=0)
    keys, revocations = _followers(bundle, publisher)
    opa = OpaClient(settings.opa_url)
    spent = SpentStore(
        settings.spent_url(), synchronous=settings.spent_sqlite_synchronous, migrations=settings.spent_migrations_dir
    )
    authorizer = _authorizer(keys, revocations, opa, spent)
    relay = OutboxRelay(spent, publisher.send_and_wait, settings.instance)
    queue = DecisionQueue(
        authorizer, relay, source=source, namespace=ns, instance=settings.instance, max_batch=settings.max_batch
    )
    invoker = HttpConnector()
    sites = _https(bundle, queue, invoker, AuditTrail(publisher, source=source, namespace=ns))
    service = BrokerService(authorizer, bundle, source=source, namespace=ns)
    return ServiceRunner(
        settings,
        name="broker",
        group_id=settings.group_id,
        topics=(topic_name(Topic.BROKER_ACTIONS, ns),) if settings.consume_actions else (),
        handler=service.handle,
        # The publisher starts before and stops after the key and revocation followers: they publish dead letters.
        components=(publisher, spent, keys, revocations, relay, *([Steps(queue.start, queue.stop)] if sites else [])),
        sites=sites,
        closers=(invoker.close, opa.close),
        freeze_gc=True,
    )


def _followers(bundle: TrustBundle, publisher: Publisher) -> tuple[KeyRing, RevocationList]:
    """The key ring and the revocation list: followers of `atb.keys` and `atb.poa.revoked`."""
    ns, source, instance = settings.topic_namespace, settings.service_id, settings.instance

    def letters(role: str) -> FollowerDeadLetters:
        return follower_dead_letters(
            "broker", role, instance, source=source, namespace=ns, publish=publisher.send_and_wait
        )

    # Only the issuer may add a key the broker trusts (issuer/adapters/announce.py).
    issuer_only = ProofRules({SigningKeyPublished: frozenset({settings.poa_issuer})})
    keys = KeyRing(
        settings.kafka_bootstrap_servers,
        ns,
        jwks_url=settings.jwks_url,
        refresh_interval_s=settings.jwks_refresh_seconds,
        dead_letters=letters("keys"),
        check=ProofCheck(
            bundle, issuer_only, source=source, namespace=ns, consumer=follower_consumer("broker", "keys", instance)
        ),
    )
    revocations = RevocationList(
        settings.kafka_bootstrap_servers, ns, dead_letters=letters("revocations"), leeway_s=settings.leeway_seconds
    )
    return keys, revocations


def _authorizer(keys: KeyRing, revocations: RevocationList, opa: OpaClient, spent: SpentStore) -> Authorizer:
    agents = load_agent_registry(settings.agent_registry_path)
    source = settings.service_id
    return Authorizer(
        verifier=PoaVerifier(keys, audience=source, issuer=settings.poa_issuer, leeway_s=settings.leeway_seconds),
        keys=keys,
        revocations=revocations,
        policy=PolicyGate(
            opa,
            agents=agents,
            allow_unmandated_low_risk=settings.allow_unmandated_low_risk,
            cache_seconds=settings.policy_cache_seconds,
            directory=load_directory(settings.approver_directory_path),
        ),
        spent=spent,
        registry=load_registry(settings.registry_path()),
        agents=agents,
    )


def _https(bundle: TrustBundle, queue: DecisionQueue, invoker: HttpConnector, trail: AuditTrail) -> list[HttpSite]:
    """`POST /v1/authorize` on its mTLS port; none with `ATB_BROKER_PORT=0` (a Kafka-only broker)."""
    if not settings.broker_port:
        return []
    svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
    api = AuthorizeApp(
        bundle=bundle, decide=queue.submit, invoker=invoker, audit=trail, new_presentation_id=http_presentation_id
    )
    tls = server_tls(svid, settings.trust_bundle_path, settings.state_dir)
    return [
        HttpSite("broker", build_app(api), settings.broker_host, settings.broker_port, ssl_context=tls, backlog=1024)
    ]


app = service_app(
    title="ATB broker",
    description="Decides every agent action: verifies the PoA (RFC 8725, cnf), asks OPA, spends the jti once; "
    "ActionRequested on Kafka or POST /v1/authorize over mTLS, one BrokerDecision each.",
    group=settings.group_id,
    channels=(
        Channel("consumes", ActionRequested),
        Channel("consumes", SigningKeyPublished),
        Channel("consumes", PoaRevoked),
        Channel("produces", BrokerDecision),
        Channel("produces", AuditEvent),
        Channel("produces", DeadLetter),
    ),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
