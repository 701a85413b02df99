"""Wiring only: `faststream run broker.main:app`."""

from __future__ import annotations

import gc
import time

from atb_identity import bundle_path
from atb_identity.tls import server_context
from atb_runtime import DeadLetters, OpaClient, Publisher, audit
from atb_runtime.agents import load_agent_registry
from atb_runtime.app import Channel, service_app
from atb_runtime.follow import FollowerDeadLetters, follower_consumer
from atb_runtime.identity import load_bundle, service_svid
from atb_runtime.proofs import ProofCheck, ProofRules
from atb_runtime.runner import ServiceRunner
from broker.adapters.connectors import HttpConnector, load_registry
from broker.adapters.http import AuthorizeApp, HttpsServer, build_app
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
    JsonObject,
    PoaRevoked,
    SigningKeyPublished,
    Topic,
    topic_name,
)

settings = BrokerSettings()


async def build() -> ServiceRunner:
    ns = settings.topic_namespace
    source = settings.service_id
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    publisher = Publisher(settings.kafka_bootstrap_servers, f"atb-broker-http-{settings.instance}", linger_ms=0)

    def dead_letters(role: str) -> FollowerDeadLetters:
        consumer = follower_consumer("broker", role, settings.instance)
        return FollowerDeadLetters(DeadLetters(consumer, source, ns), publisher.send_and_wait)

    keys = KeyRing(
        settings.kafka_bootstrap_servers,
        ns,
        jwks_url=settings.jwks_url,
        refresh_interval_s=settings.jwks_refresh_seconds,
        dead_letters=dead_letters("keys"),
        # Only the issuer may add a key the broker trusts (issuer/adapters/announce.py).
        check=ProofCheck(
            bundle,
            ProofRules({SigningKeyPublished: frozenset({settings.poa_issuer})}),
            source=source,
            namespace=ns,
            consumer=follower_consumer("broker", "keys", settings.instance),
        ),
    )
    revocations = RevocationList(
        settings.kafka_bootstrap_servers,
        ns,
        dead_letters=dead_letters("revocations"),
        leeway_s=settings.leeway_seconds,
    )
    opa = OpaClient(settings.opa_url)
    spent = SpentStore(
        settings.spent_url(), synchronous=settings.spent_sqlite_synchronous, migrations=settings.spent_migrations_dir
    )
    agents = load_agent_registry(settings.agent_registry_path)
    await spent.forget_expired(int(time.time()) - 3600)
    authorizer = Authorizer(
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
    relay = OutboxRelay(spent, publisher.send_and_wait, settings.instance)

    async def audit_http(kind: str, reason: str, details: JsonObject, request_id: str | None) -> None:
        await publisher.send_and_wait(
            [
                audit(
                    kind,
                    source=source,
                    namespace=ns,
                    outcome="denied",
                    reason=reason[:1024],
                    request_id=request_id,
                    details=details,
                )
            ]
        )

    queue = DecisionQueue(
        authorizer, relay, source=source, namespace=ns, instance=settings.instance, max_batch=settings.max_batch
    )
    invoker = HttpConnector()
    # The publisher starts before and stops after the key and revocation followers: they publish dead letters.
    starters = [publisher.start, keys.start, revocations.start, relay.start]
    closers = [queue.stop, relay.stop, keys.stop, revocations.stop, publisher.stop, invoker.close, opa.close]
    if settings.broker_port:
        svid = service_svid(settings.state_dir, source, settings.svid_cert_path, settings.svid_key_path)
        assert svid.cert_path is not None
        assert svid.key_path is not None
        context = server_context(
            svid.cert_path, svid.key_path, settings.trust_bundle_path or bundle_path(settings.state_dir)
        )
        api = AuthorizeApp(
            bundle=bundle,
            decide=queue.submit,
            invoker=invoker,
            audit=audit_http,
            new_presentation_id=http_presentation_id,
        )
        server = HttpsServer(build_app(api), settings.broker_host, settings.broker_port, context)

        async def start_http() -> None:
            queue.start()
            await server.start()

        starters.append(start_http)
        closers.insert(0, server.stop)

    async def close_spent() -> None:
        spent.close()

    closers.append(close_spent)
    service = BrokerService(authorizer, bundle, source=source, namespace=ns)
    # Everything built so far lives as long as the process: out of the cyclic GC, whose
    # full collections over it would otherwise show in the decision latency's tail.
    gc.collect()
    gc.freeze()
    return ServiceRunner(
        settings,
        name="broker",
        group_id=settings.group_id,
        topics=(topic_name(Topic.BROKER_ACTIONS, ns),) if settings.consume_actions else (),
        handler=service.handle,
        before_start=starters,
        closers=closers,
    )


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
