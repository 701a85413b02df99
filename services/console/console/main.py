"""Wiring only: `faststream run console.main:app`."""

from __future__ import annotations

import json
import ssl
from collections.abc import Sequence
from pathlib import Path

from atb_runtime import DeadLetters, Publisher
from atb_runtime.app import Channel, service_app
from atb_runtime.follow import FollowerDeadLetters, TopicFollower, follower_consumer
from atb_runtime.identity import load_bundle, service_svid
from atb_runtime.ops import HttpSite
from atb_runtime.proofs import ProofCheck, ProofRules, outcome_rules
from atb_runtime.runner import ServiceRunner
from console.adapters.audit import AuditReader
from console.adapters.evidence import EvidenceDesk
from console.adapters.http import build_app
from console.adapters.store import ConsoleStore
from console.service import ConsoleService
from console.settings import ConsoleSettings
from contracts import (
    ApprovalRequired,
    ApprovalStateChanged,
    AuditEvent,
    EventPayload,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    Topic,
)
from contracts.approval_events import ApprovalEscalated, ReminderDue
from contracts.console_events import PasskeyEnrolled, PasskeyRevoked, VoteCastV2
from contracts.directory import Directory

settings = ConsoleSettings()

FOLLOWED = (Topic.OUTCOMES, Topic.APPROVALS_STATE, Topic.POA_ISSUED)


async def build() -> ServiceRunner:
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    store = ConsoleStore(settings.db_url(), migrations=settings.console_migrations_dir)
    publisher = Publisher(settings.kafka_bootstrap_servers, client_id="atb-console")
    svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    service = ConsoleService(settings, directory, store, publisher, svid, bundle)
    consumer = follower_consumer("console", "views", settings.instance)
    ns = settings.topic_namespace
    # Outcomes and PoAs only with their producer's proof. Approvals writes its changelog
    # (ApprovalStateChanged) unsigned, as its own state: the console shows a changelog's request details
    # only when they hash to the digest of the proven ApprovalRequired, and its ballots as information.
    # Reminders and escalations (the inbox's badges; an escalation widens who may approve) only from approvals.
    outcomes = outcome_rules(frozenset(settings.outcome_producers))
    approvals = frozenset(settings.outcome_producers)
    rules = ProofRules(
        {**outcomes.producers, ReminderDue: approvals, ApprovalEscalated: approvals}, outcomes.request_attesters
    )
    follower = TopicFollower(
        settings.kafka_bootstrap_servers,
        ns,
        FOLLOWED,
        service.on_events,
        name="atb-console",
        max_records=500,
        dead_letters=FollowerDeadLetters(DeadLetters(consumer, settings.service_id, ns), publisher.send_and_wait),
        check=ProofCheck(bundle, rules, source=settings.service_id, namespace=ns, consumer=consumer),
    )
    delegations = delegations_follower(settings, service, publisher)
    tls = None
    if settings.console_tls:
        if svid.cert_path is None or svid.key_path is None:
            raise ValueError("ATB_CONSOLE_TLS needs the console's SVID as files")
        cert, key = svid.cert_path, svid.key_path
        tls = lambda: _browser_tls(cert, key)  # noqa: E731
    audit = AuditReader(settings.console_audit_db_url) if settings.console_audit_db_url else None
    evidence = (
        EvidenceDesk(
            settings.console_audit_db_url,
            settings.audit_key_path(),
            archive_url=settings.console_audit_archive_url,
            archive_endpoint=settings.console_audit_archive_endpoint,
            interval_s=settings.console_verify_interval_s,
        )
        if settings.console_audit_db_url
        else None
    )
    app = build_app(
        service,
        store,
        audit=audit,
        evidence=evidence,
        compliance_group=settings.compliance_group,
        idle_s=settings.console_session_idle_s,
        tls=settings.console_tls,
        trust_forwarded_proto=settings.console_trust_forwarded_proto,
    )
    site = HttpSite("console", app, settings.console_host, settings.console_port, ssl_context=tls)
    return ServiceRunner(
        settings,
        name="console",
        loop=_Loop(follower),
        components=(publisher, service, delegations, *((evidence,) if evidence is not None else ())),
        sites=(site,),
        closers=(
            store.aclose,
            *((audit.aclose,) if audit is not None else ()),
            *((evidence.aclose,) if evidence is not None else ()),
        ),
    )


def _browser_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """HTTPS for browsers with the console's SVID: no client certificate is asked for."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def delegations_follower(settings: ConsoleSettings, service: ConsoleService, publisher: Publisher) -> TopicFollower:
    """Delegations granted or revoked elsewhere (`atb delegate`, another replica), kept for /delegations once
    proven by their delegator (`ConsoleService.delegation_seen`, which dead-letters the rest); the other events
    of the keys topic pass by."""
    ns = settings.topic_namespace
    return TopicFollower(
        settings.kafka_bootstrap_servers,
        ns,
        (Topic.KEYS,),
        _kept_in_check,
        name="atb-console-delegations",
        max_records=500,
        dead_letters=FollowerDeadLetters(
            DeadLetters(follower_consumer("console", "delegations", settings.instance), settings.service_id, ns),
            publisher.send_and_wait,
        ),
        check=service.delegation_seen,
    )


async def _kept_in_check(events: Sequence[EventPayload]) -> None:
    """The delegations follower's sink: `ConsoleService.delegation_seen` kept what it proved."""


class _Loop:
    """The follower in the foreground: the console's views follow the topics."""

    def __init__(self, follower: TopicFollower) -> None:
        self._follower = follower

    async def start(self) -> None:
        await self._follower.start(background=False)

    async def stop(self) -> None:
        await self._follower.stop()

    async def run(self) -> None:
        await self._follower.run()


app = service_app(
    title="ATB console",
    description="Web console for approvers: passkey sign-in, the inbox of requests they may approve, and votes "
    "(device-bound for high and critical) published as VoteCastV2 attested by the console's SVID.",
    group="atb-console",
    channels=(
        Channel("consumes", ApprovalRequired),
        Channel("consumes", QuorumReached),
        Channel("consumes", RequestDenied),
        Channel("consumes", RequestExpired),
        Channel("consumes", ApprovalStateChanged),
        Channel("consumes", PoaIssued),
        Channel("produces", VoteCastV2),
        Channel("produces", PasskeyEnrolled),
        Channel("produces", PasskeyRevoked),
        Channel("produces", AuditEvent),
    ),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
