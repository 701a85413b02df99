"""Chat application service: events in → Slack (and Teams) cards; clicks in → signed votes.

Cards: every followed event is folded into the request's view
(`domain.evolve`); after each batch, the card of every touched request is
rendered (`domain.render_card`) and posted (first time, only while the request
is open) or updated (when what it shows changed). Message ids and the shown
card's hash live in the store, so a restart rebuilds the views from Kafka
without reposting or rewriting anything.

Direct messages: a `ReminderDue` or `ApprovalEscalated` (published exactly once
by the approvals service's timer) and an outcome (PoA issued, request denied or
expired) become direct messages (`domain.notices`) on every chat identity the
directory has for each person: a Slack DM, a Teams proactive message. Each is
claimed in the store by its notice id before it is sent, so a redelivery or a
restart (which reads the topics again) sends nothing twice; each is audited
(`chat_notice_sent`, `chat_notice_failed`). Only events of requests still open
(reminders, escalations) or outcomes decided in the last `NOTICE_MAX_AGE` are
told: a new store replaying old history sends nothing.

Clicks: signature (adapters.signature) → parse → replay check (trigger_id) →
`domain.decide_click` → claim the approver's one chat vote → VoteCast signed
by this service's SVID, attesting the Slack user (`approver_id` =
`slack:<user id>`) → answer. The user is told the result ephemerally, after
the answer (Slack wants one within 3 s). Every refusal is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from prometheus_client import Counter

from atb_identity import Svid, sign_envelope
from atb_runtime import Outgoing, audit, outgoing_envelope
from atb_runtime.publisher import RecordPublisher
from chat.adapters.interaction import parse_interaction
from chat.adapters.signature import verify_slack_request
from chat.adapters.slack import SlackCallError
from chat.adapters.store import PostedMessage
from chat.domain import (
    Card,
    CastVote,
    Click,
    ClickRefused,
    RequestView,
    decide_click,
    eligible_slack_users,
    evolve,
    explain,
    render_card,
    request_id_of,
)
from chat.domain.notices import Notice, escalation_notices, outcome_notices, reminder_notices
from chat.errors import InteractionRejectedError, InteractionReplayError, TeamsCallError
from chat.ports import ChatStorage, SlackApi
from chat.settings import ChatSettings
from contracts import (
    EventPayload,
    JsonObject,
    PoaIssued,
    RequestDenied,
    RequestExpired,
    VoteCast,
    make_envelope,
    topic_name,
)
from contracts.approval_events import ApprovalEscalated, ReminderDue
from contracts.directory import Directory

__all__ = ["Answer", "ChatService", "TeamsCards"]

log = logging.getLogger(__name__)

INTERACTIONS = Counter("atb_chat_interactions_total", "Slack interactions by result", ["result"])
SLACK_FAILURES = Counter("atb_chat_slack_call_failures_total", "Slack Web API calls that failed")
NOTICES = Counter("atb_chat_notices_total", "Direct messages (reminders, escalations, outcomes)", ["kind", "result"])

NOTICE_MAX_AGE = timedelta(minutes=15)
"""An outcome decided longer ago than this is history (a restart reading it again): nobody is told."""

_Told = ReminderDue | ApprovalEscalated | PoaIssued | RequestDenied | RequestExpired


class TeamsCards(Protocol):
    """The Teams side (chat.teams_service.TeamsService), fed the views this service folds."""

    async def sync(self, view: RequestView, is_open: bool) -> None: ...

    async def tell(self, user_id: str, text: str) -> bool: ...

    async def handle_activity(
        self, headers: Mapping[str, str], body: bytes, view_of: Callable[[str], RequestView | None], remote: str = ""
    ) -> Answer: ...


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to one interaction request."""

    status: int
    body: JsonObject


class ChatService:
    def __init__(
        self,
        settings: ChatSettings,
        directory: Directory,
        store: ChatStorage,
        slack: SlackApi | None,
        publisher: RecordPublisher,
        svid: Svid,
        signing_secret: bytes,
        teams: TeamsCards | None = None,
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._store = store
        self._slack = slack
        self._publisher = publisher
        self._svid = svid
        self._secret = signing_secret
        self._source = settings.service_id
        self._ns = settings.topic_namespace
        self._tiers = frozenset(settings.chat_tiers)
        self._step_up = settings.step_up()
        self._views: dict[str, RequestView] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._teams = teams

    # -- cards ---------------------------------------------------------------------------

    async def on_events(self, events: Iterable[EventPayload]) -> None:
        """Fold a batch of events into the views, then bring each touched card up to date."""
        touched: dict[str, None] = {}
        told: list[_Told] = []
        for event in events:
            if isinstance(event, _Told):
                told.append(event)
            request_id = request_id_of(event)
            if request_id is None:
                continue
            view = evolve(self._views.get(request_id), event)
            if view is not None:
                self._views[request_id] = view
                touched[request_id] = None
        for request_id in touched:
            view = self._views[request_id]
            await self._sync_card(view)
            if self._teams is not None:
                await self._teams.sync(view, self._open(view))
        for event in told:
            await self._tell_people(event)

    # -- direct messages -----------------------------------------------------------------

    async def _tell_people(self, event: _Told) -> None:
        view = self._views.get(event.request_id)
        if view is None:
            return
        now = datetime.now(UTC)
        match event:
            case ReminderDue():
                notices = reminder_notices(view, event, self._directory) if self._open(view) else ()
            case ApprovalEscalated():
                notices = escalation_notices(view, event, self._directory) if self._open(view) else ()
            case PoaIssued() | RequestDenied() | RequestExpired():
                decided = event.issued_at if isinstance(event, PoaIssued) else _decided_at(event)
                notices = outcome_notices(view, event, self._directory) if now - decided <= NOTICE_MAX_AGE else ()
        for notice in notices:
            await self._send_notice(notice)

    async def _send_notice(self, notice: Notice) -> None:
        if not self._store.claim_notice(notice.notice_id, notice.request_id, time.time()):
            return  # already sent (a redelivery, or a restart reading the topics again)
        try:
            sent = await self._deliver(notice)
        except (SlackCallError, TeamsCallError) as exc:
            self._store.release_notice(notice.notice_id)
            NOTICES.labels(notice.kind, "failed").inc()
            await self._audit("chat_notice_failed", "failure", notice.request_id, str(exc), _notice_details(notice))
            return
        if not sent:
            self._store.release_notice(notice.notice_id)
            return  # that channel is not configured here
        NOTICES.labels(notice.kind, "sent").inc()
        await self._audit("chat_notice_sent", "success", notice.request_id, notice.kind, _notice_details(notice))

    async def _deliver(self, notice: Notice) -> bool:
        if notice.channel == "slack":
            if self._slack is None:
                return False
            channel = await self._slack.open_dm(notice.user)
            await self._slack.post(channel, Card(notice.text, ()))
            return True
        if notice.channel == "teams" and self._teams is not None:
            return await self._teams.tell(notice.user, notice.text)
        return False

    async def handle_activity(self, headers: Mapping[str, str], body: bytes, remote: str = "") -> Answer:
        """`POST /api/messages`: a Teams activity (chat.teams_service); 404 when Teams is not configured."""
        if self._teams is None:
            return Answer(404, {"ok": False, "error": "teams_disabled", "reason": "Teams is not configured"})
        return await self._teams.handle_activity(headers, body, self._views.get, remote)

    async def _sync_card(self, view: RequestView) -> None:
        if self._slack is None or not view.shown:
            return
        card = render_card(view, self._directory, self._tiers, self._step_up)
        card_hash = _hash(card)
        posted = self._store.messages(view.request_id)
        try:
            if posted:
                await self._update(view.request_id, posted, card, card_hash)
            elif self._open(view):
                await self._post(view, card, card_hash)
        except SlackCallError as exc:
            SLACK_FAILURES.inc()
            log.warning("request %s: Slack call failed: %s (retried on its next event)", view.request_id, exc)

    def _open(self, view: RequestView) -> bool:
        """Post new cards only for requests still awaiting votes (not for history replayed on start)."""
        required = view.required
        return view.resolution is None and required is not None and required.deadline > datetime.now(UTC)

    async def _post(self, view: RequestView, card: Card, card_hash: str) -> None:
        assert self._slack is not None
        assert view.required is not None
        targets = [self._settings.slack_channel] if self._settings.slack_channel else []
        if self._settings.slack_direct_messages:
            for user in eligible_slack_users(view.required, self._directory):
                targets.append(await self._slack.open_dm(user))
        for target in targets:
            channel, ts = await self._slack.post(target, card)
            self._store.save_message(view.request_id, PostedMessage(channel, ts, card_hash))

    async def _update(self, request_id: str, posted: list[PostedMessage], card: Card, card_hash: str) -> None:
        assert self._slack is not None
        for message in posted:
            if message.card_hash != card_hash:
                await self._slack.update(message.channel, message.ts, card)
                self._store.save_message(request_id, PostedMessage(message.channel, message.ts, card_hash))

    # -- clicks --------------------------------------------------------------------------

    async def handle_interaction(self, headers: Mapping[str, str], body: bytes, remote: str = "") -> Answer:
        now = time.time()
        try:
            verify_slack_request(headers, body, self._secret, now=now)
            click = parse_interaction(body)
            if not self._store.first_interaction(click.trigger_id, now):
                raise InteractionReplayError("replay", f"interaction {click.trigger_id} was already received")
        except InteractionRejectedError as exc:
            INTERACTIONS.labels(exc.code).inc()
            await self._audit(
                "chat_interaction_rejected",
                "denied",
                None,
                f"{exc.code}: {exc}",
                {"status": exc.status, "remote": remote},
            )
            return Answer(exc.status, {"ok": False, "error": exc.code, "reason": str(exc)})
        return await self._on_click(click)

    async def _on_click(self, click: Click) -> Answer:
        view = self._views.get(click.request_id)
        approver = self._directory.resolve(f"slack:{click.user_id}")
        voted = approver is not None and self._store.has_voted(click.request_id, approver.principal)
        decision = decide_click(
            click,
            view,
            self._directory,
            chat_tiers=self._tiers,
            already_voted=voted,
            now=datetime.now(UTC),
            team_id=self._settings.slack_team_id,
            step_up=self._step_up,
        )
        if isinstance(decision, ClickRefused):
            return await self._refuse(click, decision)
        return await self._cast(click, decision)

    async def _refuse(self, click: Click, refused: ClickRefused) -> Answer:
        INTERACTIONS.labels(refused.code).inc()
        details: JsonObject = {"slack_user": click.user_id, "principal": refused.principal, "choice": click.choice}
        await self._audit("chat_vote_refused", "denied", click.request_id, refused.code, details)
        self._tell(click, explain(refused.code))
        return Answer(200, {"ok": False, "error": refused.code, "reason": explain(refused.code)})

    async def _cast(self, click: Click, vote: CastVote) -> Answer:
        vote_id = f"slack-{click.trigger_id}"
        if not self._store.claim_vote(vote.request_id, vote.principal, vote.choice.value, vote_id):
            return await self._refuse(click, ClickRefused("duplicate", vote.principal))
        event = VoteCast(
            request_id=vote.request_id,
            vote_id=vote_id,
            approver_id=vote.approver_identity,
            choice=vote.choice,
            request_digest=vote.request_digest,
            channel="slack",
            cast_at=datetime.now(UTC),
            # No reason: a click writes none (the policy may require one, contracts.justification; the
            # Slack user and team are in chat_vote_cast's audit event).
        )
        envelope = sign_envelope(make_envelope(event, source=self._source), self._svid)
        try:
            # Slack wants an answer within 3 s: the vote is on Kafka well before that, or we say so.
            await asyncio.wait_for(self._publish([outgoing_envelope(envelope, topic_name(event.topic, self._ns))]), 2.0)
        except Exception as exc:
            self._store.release_vote(vote.request_id, vote.principal)
            log.error("vote %s not published: %r", vote_id, exc)
            INTERACTIONS.labels("publish_failed").inc()
            return Answer(503, {"ok": False, "error": "publish_failed", "reason": "the vote could not be recorded"})
        INTERACTIONS.labels("vote_cast").inc()
        details: JsonObject = {
            "slack_user": click.user_id,
            "slack_team": click.team_id,
            "principal": vote.principal,
            "vote_id": vote_id,
        }
        await self._audit("chat_vote_cast", "success", vote.request_id, vote.choice.value, details)
        self._tell(click, f"Your {vote.choice.value} vote on {vote.request_id} was recorded as {vote.principal}.")
        return Answer(200, {"ok": True, "vote_id": vote_id, "principal": vote.principal, "choice": vote.choice.value})

    def _tell(self, click: Click, text: str) -> None:
        """An ephemeral message to the clicking user, sent after the HTTP answer."""
        if self._slack is None:
            return
        task = asyncio.create_task(self._ephemeral(click.channel_id, click.user_id, text))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _ephemeral(self, channel: str, user: str, text: str) -> None:
        assert self._slack is not None
        try:
            await self._slack.ephemeral(channel, user, text)
        except SlackCallError as exc:
            SLACK_FAILURES.inc()
            log.warning("ephemeral message to %s failed: %s", user, exc)

    async def _publish(self, records: list[Outgoing]) -> None:
        await self._publisher.publish(records)
        await self._publisher.flush()

    async def _audit(
        self, audit_type: str, outcome: str, request_id: str | None, reason: str, details: JsonObject
    ) -> None:
        record = audit(
            audit_type,
            source=self._source,
            namespace=self._ns,
            outcome=outcome,
            request_id=request_id,
            reason=reason[:1024],
            details=details,
        )
        try:
            await self._publish([record])
        except Exception as exc:
            log.error("audit event %s not published: %r", audit_type, exc)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """Let the ephemeral messages under way finish."""
        await self.close()

    async def close(self) -> None:
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task


def _decided_at(event: RequestDenied | RequestExpired) -> datetime:
    return event.decided_at if isinstance(event, RequestDenied) else event.deadline


def _notice_details(notice: Notice) -> JsonObject:
    return {
        "notice_id": notice.notice_id,
        "kind": notice.kind,
        "principal": notice.principal,
        "channel": notice.channel,
        "user": notice.user,
    }


def _hash(card: Card) -> str:
    shown = json.dumps({"text": card.text, "blocks": card.blocks}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(shown.encode()).hexdigest()
