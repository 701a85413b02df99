"""Wiring only: `faststream run issuer.main:app`."""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime, timedelta

from atb_runtime import OpaClient, Publisher
from atb_runtime.acking import AckingConfig, AckingConsumer
from atb_runtime.agents import load_agent_registry
from atb_runtime.app import Channel, service_app
from atb_runtime.follow import follower_consumer, follower_dead_letters
from atb_runtime.identity import load_bundle, service_svid
from atb_runtime.passkeys import PasskeyFollower, PasskeyRegistry
from atb_runtime.policy import RequirementsClient
from atb_runtime.runner import ServiceRunner
from contracts import (
    AuditEvent,
    DeadLetter,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    SigningKeyPublished,
    Topic,
    topic_name,
)
from contracts.console_events import PasskeyEnrolled, PasskeyRevoked
from contracts.directory import Directory
from issuer.adapters.evidence import EvidenceVerifier
from issuer.adapters.http import JWKS_PATH, jwks_handler
from issuer.adapters.keyring import open_keys
from issuer.adapters.webhook import CallbackAllowlist, WebhookNotifier
from issuer.callbacks import CallbackTeller
from issuer.service import IssuerService
from issuer.settings import IssuerSettings

settings = IssuerSettings()


async def build() -> ServiceRunner:
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    opa = OpaClient(settings.opa_url)
    agents = load_agent_registry(settings.agent_registry_path)
    directory = Directory.from_mapping(json.loads(settings.approver_directory_path.read_text(encoding="utf-8")))
    # The console's passkeys, from the keys topic: console votes are re-verified with them.
    passkeys = PasskeyRegistry()
    publisher = Publisher(settings.kafka_bootstrap_servers, "atb-issuer-keys")
    passkey_follower = PasskeyFollower(
        passkeys,
        bundle,
        settings.kafka_bootstrap_servers,
        settings.topic_namespace,
        source=settings.service_id,
        consumer=follower_consumer("issuer", "passkeys", settings.instance),
        directory=directory,
        enroller_groups=settings.passkey_enroller_groups,
        consoles=settings.passkey_announcers,
        dead_letters=follower_dead_letters(
            "issuer",
            "passkeys",
            settings.instance,
            source=settings.service_id,
            namespace=settings.topic_namespace,
            publish=publisher.send_and_wait,
        ),
    )
    evidence = EvidenceVerifier(
        bundle=bundle,
        directory=directory,
        policy=RequirementsClient(opa, agents=agents),
        agents=agents,
        request_attesters=settings.request_attesters,
        vote_attesters=settings.vote_attesters,
        vote_attester_tiers=settings.vote_attester_tiers,
        passkeys=passkeys,
        passkey_announcers=settings.passkey_announcers,
        max_pending_seconds=settings.max_pending_seconds,
    )
    svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
    keys = open_keys(settings.signing_key_path, settings.keyring_dir())
    notifier = WebhookNotifier(
        lambda: keys.current(datetime.now(UTC)),
        CallbackAllowlist.of(settings.callback_hosts),
        publisher.send_and_wait,
        source=settings.service_id,
        namespace=settings.topic_namespace,
        ssl_context=ssl.create_default_context(cafile=str(settings.callback_ca_path))
        if settings.callback_ca_path
        else None,
        max_attempts=settings.callback_max_attempts,
        backoff_seconds=settings.callback_backoff_seconds,
    )
    service = IssuerService(settings, keys, evidence, bundle, svid, publisher=publisher)
    # Outcome callbacks, from the outcomes read back committed, at least once (issuer/callbacks.py).
    ns = settings.topic_namespace.rstrip(".") or "default"  # as the runner names its group and members
    teller = CallbackTeller(
        notifier,
        bundle,
        issuer=settings.service_id,
        approvals=frozenset(settings.quorum_producers),
        max_age=timedelta(seconds=settings.callback_max_age_seconds),
    )
    callbacks = AckingConsumer(
        AckingConfig(
            bootstrap=settings.kafka_bootstrap_servers,
            group_id=f"{settings.group_id}.callbacks.{ns}",
            member_id=f"atb-issuer-callbacks-{ns}-{settings.instance}",
            client_id=f"atb-issuer-callbacks-{settings.instance}",
            topics=tuple(topic_name(t, settings.topic_namespace) for t in (Topic.OUTCOMES, Topic.POA_ISSUED)),
            max_pending=settings.callback_max_pending,
            fetch_min_bytes=settings.callback_fetch_min_bytes,
            fetch_max_wait_ms=settings.callback_fetch_max_wait_ms,
        ),
        teller.tell,
    )
    return ServiceRunner(
        settings,
        name="issuer",
        group_id=settings.group_id,
        topics=(topic_name(Topic.OUTCOMES, settings.topic_namespace),),
        handler=service.handle,
        on_assigned=service.on_assigned,
        on_rewind=service.on_rewind,
        poison=service.set_aside,
        # The service announces its keys on start, before it signs; callbacks are delivered off the pipeline.
        components=(publisher, passkey_follower, service, notifier, callbacks),
        closers=(opa.close,),
        routes=((JWKS_PATH, jwks_handler(service.jwks)),),
    )


app = service_app(
    title="ATB issuer",
    description="Re-checks each QuorumReached and signs one EdDSA PoA for it; serves /.well-known/jwks.json.",
    group=settings.group_id,
    channels=(
        Channel("consumes", QuorumReached),
        # For outcome callbacks it also reads back RequestDenied and PoaIssued (channels it produces on,
        # listed once) and RequestExpired.
        Channel("consumes", RequestExpired),
        Channel("consumes", PasskeyEnrolled),
        Channel("consumes", PasskeyRevoked),
        Channel("produces", PoaIssued),
        Channel("produces", RequestDenied),
        Channel("produces", SigningKeyPublished),
        Channel("produces", AuditEvent),
        Channel("produces", DeadLetter),
    ),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
