"""Wiring only: `faststream run issuer.main:app`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from atb_runtime import OpaClient, Publisher, outgoing
from atb_runtime.app import Channel, service_app
from atb_runtime.identity import load_bundle
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
from issuer.adapters.evidence import EvidenceVerifier
from issuer.adapters.keys import SigningKey, load_or_create_key
from issuer.adapters.signer import PoaSigner
from issuer.service import IssuerService
from issuer.settings import IssuerSettings

settings = IssuerSettings()


async def publish_key(key: SigningKey) -> None:
    """Publish the verification key on `atb.keys` before the key signs anything (DESIGN.md §5)."""
    event = SigningKeyPublished(
        kid=key.kid, alg="EdDSA", jwk=key.jwk, issuer=settings.service_id, not_before=datetime.now(UTC)
    )
    async with Publisher(settings.kafka_bootstrap_servers, "atb-issuer-keys") as publisher:
        await publisher.publish([outgoing(event, source=settings.service_id, namespace=settings.topic_namespace)])


async def build() -> ServiceRunner:
    key = load_or_create_key(settings.key_path())
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    opa = OpaClient(settings.opa_url)
    evidence = EvidenceVerifier(
        bundle=bundle,
        directory=Directory.from_mapping(json.loads(settings.approver_directory_path.read_text(encoding="utf-8"))),
        policy=RequirementsClient(opa),
        request_attesters=settings.request_attesters,
        vote_attesters=settings.vote_attesters,
    )
    service = IssuerService(settings, PoaSigner(key), evidence)

    async def announce() -> None:
        await publish_key(key)

    return ServiceRunner(
        settings,
        name="issuer",
        group_id=settings.group_id,
        topics=(topic_name(Topic.OUTCOMES, settings.topic_namespace),),
        handler=service.handle,
        before_start=(announce,),
        closers=(opa.close,),
    )


app = service_app(
    title="ATB issuer",
    description="Re-checks each QuorumReached and signs one EdDSA PoA for it.",
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
