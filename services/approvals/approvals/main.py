"""Wiring only: `faststream run approvals.main:app`."""

from __future__ import annotations

from approvals.adapters.policy import PolicyRequirements
from approvals.service import ApprovalsService
from approvals.settings import ApprovalsSettings
from atb_runtime import OpaClient
from atb_runtime.app import Channel, service_app
from atb_runtime.identity import load_bundle
from atb_runtime.runner import ServiceRunner
from contracts import (
    ApprovalRequired,
    AuditEvent,
    DeadLetter,
    IssuanceRequested,
    QuorumReached,
    RequestDenied,
    Topic,
    topic_name,
)

settings = ApprovalsSettings()


async def build() -> ServiceRunner:
    opa = OpaClient(settings.opa_url)
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    service = ApprovalsService(settings, PolicyRequirements(opa, settings.policy_cache_seconds), bundle)
    return ServiceRunner(
        settings,
        name="approvals",
        group_id=settings.group_id,
        topics=(topic_name(Topic.POA_REQUESTS, settings.topic_namespace),),
        handler=service.handle,
        closers=(opa.close,),
    )


app = service_app(
    title="ATB approvals",
    description="Asks the policy what each IssuanceRequested needs; emits ApprovalRequired or an outcome.",
    group=settings.group_id,
    channels=(
        Channel("consumes", IssuanceRequested),
        Channel("produces", ApprovalRequired),
        Channel("produces", QuorumReached),
        Channel("produces", RequestDenied),
        Channel("produces", AuditEvent),
        Channel("produces", DeadLetter),
    ),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
