"""Wiring only: `faststream run issuer.main:app`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from atb_runtime import OpaClient
from atb_runtime.agents import load_agent_registry
from atb_runtime.app import Channel, service_app
from atb_runtime.identity import load_bundle, service_svid
from atb_runtime.policy import RequirementsClient
from atb_runtime.runner import ServiceRunner
from contracts import (
    AuditEvent,
    DeadLetter,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    SigningKeyPublished,
    Topic,
    topic_name,
)
from contracts.directory import Directory
from issuer.adapters.announce import publish_keys
from issuer.adapters.evidence import EvidenceVerifier
from issuer.adapters.http import JWKS_PATH, jwks_handler
from issuer.adapters.keyring import KeyEntry, SigningKeyRing
from issuer.adapters.keys import SigningKey, load_or_create_key
from issuer.service import IssuerService
from issuer.settings import IssuerSettings

settings = IssuerSettings()


def key_source() -> tuple[Callable[[datetime], SigningKey], Callable[[datetime], list[KeyEntry]]]:
    """A mounted key (production) is used alone; otherwise the rotating keyring in the state folder."""
    if settings.signing_key_path is not None:
        single = load_or_create_key(settings.signing_key_path)
        entry = KeyEntry(single, datetime(1970, 1, 1, tzinfo=UTC), None)
        return (lambda _now: single), (lambda _now: [entry])
    ring = SigningKeyRing.ensure(settings.keyring_dir())
    return ring.current, ring.published


async def build() -> ServiceRunner:
    current, published = key_source()
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    opa = OpaClient(settings.opa_url)
    agents = load_agent_registry(settings.agent_registry_path)
    evidence = EvidenceVerifier(
        bundle=bundle,
        directory=Directory.from_mapping(json.loads(settings.approver_directory_path.read_text(encoding="utf-8"))),
        policy=RequirementsClient(opa, agents=agents),
        agents=agents,
        request_attesters=settings.request_attesters,
        vote_attesters=settings.vote_attesters,
        vote_attester_tiers=settings.vote_attester_tiers,
    )
    svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
    service = IssuerService(settings, current, evidence, bundle, svid)

    async def announce() -> None:
        await publish_keys(
            published(datetime.now(UTC)),
            bootstrap=settings.kafka_bootstrap_servers,
            namespace=settings.topic_namespace,
            issuer=settings.service_id,
            svid=svid,
        )

    jwks = jwks_handler(lambda: [e.key.jwk for e in published(datetime.now(UTC))])

    return ServiceRunner(
        settings,
        name="issuer",
        group_id=settings.group_id,
        topics=(topic_name(Topic.OUTCOMES, settings.topic_namespace),),
        handler=service.handle,
        on_assigned=service.on_assigned,
        on_rewind=service.on_rewind,
        poison=service.set_aside,
        before_start=(announce,),
        closers=(opa.close,),
        routes=((JWKS_PATH, jwks),),
    )


app = service_app(
    title="ATB issuer",
    description="Re-checks each QuorumReached and signs one EdDSA PoA for it; serves /.well-known/jwks.json.",
    group=settings.group_id,
    channels=(
        Channel("consumes", QuorumReached),
        Channel("produces", PoaIssued),
        Channel("produces", RequestDenied),
        Channel("produces", SigningKeyPublished),
        Channel("produces", AuditEvent),
        Channel("produces", DeadLetter),
    ),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
