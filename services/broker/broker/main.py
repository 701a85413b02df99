"""Wiring only: `faststream run broker.main:app`."""

from __future__ import annotations

from atb_runtime.app import Channel, service_app
from atb_runtime.runner import ServiceRunner
from broker.adapters.keys import KeyRing
from broker.adapters.verify import PoaVerifier
from broker.service import BrokerService
from broker.settings import BrokerSettings
from contracts import ActionRequested, AuditEvent, BrokerDecision, DeadLetter, SigningKeyPublished, Topic, topic_name

settings = BrokerSettings()


async def build() -> ServiceRunner:
    keys = KeyRing(settings.kafka_bootstrap_servers, settings.topic_namespace)
    verifier = PoaVerifier(
        keys, audience=settings.service_id, issuer=settings.poa_issuer, leeway_s=settings.leeway_seconds
    )
    service = BrokerService(settings, verifier)
    return ServiceRunner(
        settings,
        name="broker",
        group_id=settings.group_id,
        topics=(topic_name(Topic.BROKER_ACTIONS, settings.topic_namespace),),
        handler=service.handle,
        before_start=(keys.start,),
        closers=(keys.stop,),
    )


app = service_app(
    title="ATB broker",
    description="Verifies the PoA of every ActionRequested and publishes a BrokerDecision.",
    group=settings.group_id,
    channels=(
        Channel("consumes", ActionRequested),
        Channel("consumes", SigningKeyPublished),
        Channel("produces", BrokerDecision),
        Channel("produces", AuditEvent),
        Channel("produces", DeadLetter),
    ),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
