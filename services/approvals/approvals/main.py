"""Wiring only: `faststream run approvals.main:app`."""

from __future__ import annotations

import json

from approvals.adapters.delegations import DelegationFollower, DelegationGate
from approvals.adapters.policy import PolicyRequirements
from approvals.adapters.state import StateStore
from approvals.domain.directory import Directory
from approvals.service import ApprovalsService
from approvals.settings import ApprovalsSettings
from atb_runtime import OpaClient, Publisher
from atb_runtime.agents import load_agent_registry
from atb_runtime.app import Channel, service_app
from atb_runtime.follow import follower_consumer, follower_dead_letters
from atb_runtime.identity import load_bundle, service_svid
from atb_runtime.passkeys import PasskeyFollower, PasskeyRegistry
from atb_runtime.runner import ServiceRunner
from contracts import (
    ApprovalRequired,
    ApprovalStateChanged,
    AuditEvent,
    DeadLetter,
    IssuanceRequested,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    Topic,
    VoteCast,
    topic_name,
)
from contracts.approval_events import DelegationRevoked, VoteOnBehalf
from contracts.console_events import PasskeyEnrolled, PasskeyRevoked, VoteCastV2

settings = ApprovalsSettings()


async def build() -> ServiceRunner:
    opa = OpaClient(settings.opa_url)
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    agents = load_agent_registry(settings.agent_registry_path)
    store = StateStore(settings.kafka_bootstrap_servers, settings.topic_namespace, settings.service_id)
    policy = PolicyRequirements(opa, settings.policy_cache_seconds, agents=agents)
    svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
    ns = settings.topic_namespace
    # The console's passkeys, from the keys topic: only the console's own proof makes an announcement count.
    passkeys = PasskeyRegistry()
    # Revocations of delegations, from the keys topic; each on-behalf vote carries its own grant (one made in
    # the console with the delegator's passkey assertion, verified against these passkeys).
    gate = DelegationGate(bundle, passkeys=passkeys, directory=directory, announcers=settings.passkey_announcers)
    delegations = DelegationFollower(gate, settings.kafka_bootstrap_servers, ns)
    letters = Publisher(settings.kafka_bootstrap_servers, f"atb-approvals-letters-{settings.instance}", linger_ms=0)
    passkey_follower = PasskeyFollower(
        passkeys,
        bundle,
        settings.kafka_bootstrap_servers,
        ns,
        source=settings.service_id,
        consumer=follower_consumer("approvals", "passkeys", settings.instance),
        directory=directory,
        enroller_groups=settings.passkey_enroller_groups,
        consoles=settings.passkey_announcers,
        dead_letters=follower_dead_letters(
            "approvals",
            "passkeys",
            settings.instance,
            source=settings.service_id,
            namespace=ns,
            publish=letters.send_and_wait,
        ),
    )
    service = ApprovalsService(
        settings, policy, bundle, directory, store, svid, agents, delegations=gate, passkeys=passkeys
    )
    return ServiceRunner(
        settings,
        name="approvals",
        group_id=settings.group_id,
        topics=(topic_name(Topic.POA_REQUESTS, ns), topic_name(Topic.VOTES, ns)),
        handler=service.handle,
        on_rewind=service.on_rewind,
        on_assigned=service.on_assigned,
        tick=service.tick,
        poison=service.set_aside,
        # The publisher starts before and stops after the passkey follower: it publishes its dead letters.
        components=(delegations, letters, passkey_follower),
        closers=(opa.close,),
    )


app = service_app(
    title="ATB approvals",
    description="Asks the policy what each request needs, tallies distinct eligible approvers, "
    "and emits exactly one outcome per request.",
    group=settings.group_id,
    channels=(
        Channel("consumes", IssuanceRequested),
        Channel("consumes", VoteCast),
        Channel("consumes", VoteOnBehalf),
        Channel("consumes", VoteCastV2),
        Channel("consumes", DelegationRevoked),
        Channel("consumes", PasskeyEnrolled),
        Channel("consumes", PasskeyRevoked),
        Channel("produces", ApprovalRequired),
        Channel("produces", QuorumReached),
        Channel("produces", RequestDenied),
        Channel("produces", RequestExpired),
        Channel("produces", ApprovalStateChanged),
        Channel("produces", AuditEvent),
        Channel("produces", DeadLetter),
    ),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
