"""Wiring only: `faststream run chat.main:app`."""

from __future__ import annotations

import json

from atb_runtime import Publisher
from atb_runtime.app import Channel, service_app
from atb_runtime.follow import follower_consumer, follower_dead_letters
from atb_runtime.identity import load_bundle, service_svid
from atb_runtime.ops import HttpSite
from atb_runtime.runner import ServiceRunner
from chat.adapters.follower import EventFollower, OutcomeProofCheck
from chat.adapters.http import build_app
from chat.adapters.secret import signing_secret
from chat.adapters.slack import SlackClient
from chat.adapters.store import ChatStore
from chat.adapters.teams_auth import TokenValidator
from chat.adapters.teams_connector import TeamsConnector
from chat.service import ChatService
from chat.settings import ChatSettings
from chat.teams_service import TeamsService
from contracts import (
    ApprovalRequired,
    ApprovalStateChanged,
    AuditEvent,
    PoaIssued,
    QuorumReached,
    RequestDenied,
    RequestExpired,
    VoteCast,
)
from contracts.approval_events import ApprovalEscalated, ReminderDue
from contracts.directory import Directory

settings = ChatSettings()


async def build() -> ServiceRunner:
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    slack = SlackClient(token, settings.slack_api_url) if token else None
    store = ChatStore(settings.db_url(), migrations=settings.chat_migrations_dir)
    publisher = Publisher(settings.kafka_bootstrap_servers, client_id="atb-chat")
    svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
    inline = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    secret = signing_secret(inline, settings.slack_signing_secret_file, settings.state_dir)
    teams, connector = None, None
    if settings.teams_app_id:
        validator = TokenValidator(
            settings.teams_app_id,
            settings.teams_openid_metadata_url,
            issuer=settings.teams_issuer,
            leeway_seconds=settings.teams_token_leeway_seconds,
        )
        password = settings.teams_password()
        connector = TeamsConnector(settings.teams_app_id, password, settings.teams_token_url) if password else None
        teams = TeamsService(settings, directory, store, connector, publisher, svid, validator)
    service = ChatService(settings, directory, store, slack, publisher, svid, secret, teams=teams)
    consumer = follower_consumer("chat", "cards", settings.instance)
    ns, source = settings.topic_namespace, settings.service_id
    bundle = load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain)
    follower = EventFollower(
        settings.kafka_bootstrap_servers,
        ns,
        service.on_events,
        dead_letters=follower_dead_letters(
            "chat", "cards", settings.instance, source=source, namespace=ns, publish=publisher.send_and_wait
        ),
        check=OutcomeProofCheck(
            bundle, settings.outcome_producers, source=settings.service_id, namespace=ns, consumer=consumer
        ),
    )
    app = build_app(service.handle_interaction, service.handle_activity if teams is not None else None)
    site = HttpSite("chat", app, settings.chat_host, settings.chat_port)
    return ServiceRunner(
        settings,
        name="chat",
        loop=follower,  # the cards follow the topics in the foreground: the follower is the service's loop
        components=(publisher, service),
        sites=(site,),
        closers=(
            *((slack.close,) if slack is not None else ()),
            *((connector.close,) if connector is not None else ()),
            store.aclose,
        ),
    )


app = service_app(
    title="ATB chat",
    description="Posts an approval card to Slack (and Teams) for each ApprovalRequired, keeps it up to date, and "
    "turns signed Slack button clicks (POST /slack/interactions) and Teams Action.Execute invokes with a verified "
    "Bot Framework token (POST /api/messages) into VoteCast events it attests with its SVID.",
    group="atb-chat",
    channels=(
        Channel("consumes", ApprovalRequired),
        Channel("consumes", QuorumReached),
        Channel("consumes", RequestDenied),
        Channel("consumes", RequestExpired),
        Channel("consumes", ReminderDue),
        Channel("consumes", ApprovalEscalated),
        Channel("consumes", ApprovalStateChanged),
        Channel("consumes", PoaIssued),
        Channel("produces", VoteCast),
        Channel("produces", AuditEvent),
    ),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
