"""Wiring only: `faststream run chat.main:app`."""

from __future__ import annotations

import asyncio
import json

from atb_runtime import DeadLetters, Publisher
from atb_runtime.app import Channel, service_app
from atb_runtime.follow import FollowerDeadLetters, follower_consumer
from atb_runtime.identity import load_bundle, service_svid
from atb_runtime.ops import OpsServer
from chat.adapters.follower import EventFollower, OutcomeProofCheck
from chat.adapters.http import InteractionsServer
from chat.adapters.secret import dev_secret_path, ensure_signing_secret, read_secret
from chat.adapters.slack import SlackClient
from chat.adapters.store import ChatStore
from chat.service import ChatService
from chat.settings import ChatSettings
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
from contracts.directory import Directory

settings = ChatSettings()


def signing_secret() -> bytes:
    if settings.slack_signing_secret is not None:
        return settings.slack_signing_secret.get_secret_value().encode()
    if settings.slack_signing_secret_file is not None:
        return read_secret(settings.slack_signing_secret_file)
    return ensure_signing_secret(dev_secret_path(settings.state_dir))


class ChatRunner:
    def __init__(self) -> None:
        directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
        token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
        self.slack = SlackClient(token, settings.slack_api_url) if token else None
        self.store = ChatStore(settings.db_url(), migrations=settings.chat_migrations_dir)
        self.publisher = Publisher(settings.kafka_bootstrap_servers, client_id="atb-chat")
        svid = service_svid(settings.state_dir, settings.service_id, settings.svid_cert_path, settings.svid_key_path)
        self.service = ChatService(settings, directory, self.store, self.slack, self.publisher, svid, signing_secret())
        consumer = follower_consumer("chat", "cards", settings.instance)
        ns = settings.topic_namespace
        self.follower = EventFollower(
            settings.kafka_bootstrap_servers,
            ns,
            self.service.on_events,
            dead_letters=FollowerDeadLetters(
                DeadLetters(consumer, settings.service_id, ns), self.publisher.send_and_wait
            ),
            check=OutcomeProofCheck(
                load_bundle(settings.trust_bundle_path, settings.state_dir, settings.trust_domain),
                settings.outcome_producers,
                source=settings.service_id,
                namespace=ns,
                consumer=consumer,
            ),
        )
        self.http = InteractionsServer(settings.chat_host, settings.chat_port, self.service.handle_interaction)
        self._running = False
        self.ops = OpsServer(
            settings.ops_port, lambda: self._running, settings.ops_host, service="chat", instance=settings.instance
        )

    async def start(self) -> None:
        await self.publisher.start()
        await self.follower.start()
        await self.http.start()
        await self.ops.start()

    async def run(self) -> None:
        self._running = True
        try:
            await self.follower.run()
        finally:
            self._running = False

    async def stop(self) -> None:
        await self.http.stop()
        await self.service.close()
        await self.follower.stop()
        await self.publisher.stop()
        await self.ops.stop()
        if self.slack is not None:
            await self.slack.close()
        await asyncio.to_thread(self.store.close)


async def build() -> ChatRunner:
    return ChatRunner()


app = service_app(
    title="ATB chat",
    description="Posts an approval card to Slack for each ApprovalRequired, keeps it up to date, and turns "
    "signed Slack button clicks (POST /slack/interactions) into VoteCast events it attests with its SVID.",
    group="atb-chat",
    channels=(
        Channel("consumes", ApprovalRequired),
        Channel("consumes", QuorumReached),
        Channel("consumes", RequestDenied),
        Channel("consumes", RequestExpired),
        Channel("consumes", ApprovalStateChanged),
        Channel("consumes", PoaIssued),
        Channel("produces", VoteCast),
        Channel("produces", AuditEvent),
    ),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
