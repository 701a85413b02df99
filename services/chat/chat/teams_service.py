"""The Teams side of the chat service: Adaptive Cards out, `Action.Execute` invokes in → signed votes.

Cards: `ChatService` folds the events into the request views and hands each
touched view to `sync`: the card (`domain.render_adaptive_card`) is posted to
the configured conversation while the request is open, and updated in place
(Bot Connector `PUT .../activities/{id}` at the card's serviceUrl) whenever
what it shows changes: a vote arrives, the request closes. The store keeps the
activity id and the hash shown, so a restart neither reposts nor rewrites.

Invokes (`POST /api/messages`): parse → the Bot Framework token
(adapters.teams_auth: RS256, issuer, audience, endorsed key, serviceUrl, expiry)
→ replay check (the activity id, in the store) → `domain.decide_teams_action`
→ claim the approver's one chat vote (shared with Slack) → VoteCast signed by
this service's SVID, attesting `teams:<aadObjectId>` (the immutable Microsoft
Entra object id; never the display name or the UPN). Every refusal is audited,
with the rule that refused it; none becomes a vote.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Counter

from atb_identity import Svid, sign_envelope
from atb_runtime import Outgoing, audit, outgoing_envelope
from atb_runtime.publisher import RecordPublisher
from chat.adapters.store import TeamsCard
from chat.adapters.teams_auth import TokenValidator
from chat.domain import ClickRefused, RequestView, explain
from chat.domain.click import CastVote
from chat.domain.teams import (
    CARD_CONTENT_TYPE,
    MAX_REASON,
    REASON_INPUT,
    REFRESH_VERB,
    TeamsAction,
    decide_teams_action,
    render_adaptive_card,
)
from chat.errors import InteractionRejectedError, InteractionReplayError, MalformedInteractionError, TeamsCallError
from chat.ports import TeamsApi, TeamsStorage
from chat.service import Answer
from chat.settings import ChatSettings
from contracts import JsonObject, Tier, VoteCast, make_envelope, topic_name
from contracts.directory import Directory

__all__ = ["TeamsService", "invoke_answer"]

log = logging.getLogger(__name__)

ACTIVITIES = Counter("atb_chat_teams_activities_total", "Teams activities by result", ["result"])
TEAMS_FAILURES = Counter("atb_chat_teams_call_failures_total", "Bot Connector calls that failed")

_MAX_ID = 128
_MESSAGE = "application/vnd.microsoft.activity.message"

ViewOf = Callable[[str], RequestView | None]


def invoke_answer(text: str, *, ok: bool, card: JsonObject | None = None, **atb: str) -> JsonObject:
    """The invoke response Teams expects (a message, or the refreshed card), with ATB's own result beside it."""
    result: JsonObject = {"ok": ok, **atb}
    if card is not None:
        return {"statusCode": 200, "type": CARD_CONTENT_TYPE, "value": card, "atb": result}
    return {"statusCode": 200, "type": _MESSAGE, "value": text, "atb": result}


class TeamsService:
    def __init__(
        self,
        settings: ChatSettings,
        directory: Directory,
        store: TeamsStorage,
        connector: TeamsApi | None,
        publisher: RecordPublisher,
        svid: Svid,
        validator: TokenValidator,
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._store = store
        self._connector = connector
        self._publisher = publisher
        self._svid = svid
        self._validator = validator
        self._source = settings.service_id
        self._ns = settings.topic_namespace
        self._tiers: frozenset[Tier] = frozenset(settings.chat_tiers)
        self._step_up = settings.step_up()

    # -- cards ---------------------------------------------------------------------------

    async def sync(self, view: RequestView, is_open: bool) -> None:
        """Post the card of an open request once; afterwards update it whenever what it shows changes."""
        if self._connector is None or not view.shown:
            return
        card = render_adaptive_card(view, self._directory, self._tiers, self._step_up)
        card_hash = hashlib.sha256(json.dumps(card, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        try:
            posted = self._store.teams_cards(view.request_id)
            for shown in posted:
                if shown.card_hash != card_hash:
                    await self._connector.update(shown.service_url, shown.conversation_id, shown.activity_id, card)
                    self._store.save_teams_card(view.request_id, _rehash(shown, card_hash))
            conversation, service_url = self._settings.teams_conversation_id, self._settings.teams_service_url
            if not posted and is_open and conversation and service_url:
                activity_id = await self._connector.post(service_url, conversation, card)
                self._store.save_teams_card(
                    view.request_id, TeamsCard(conversation, activity_id, service_url, card_hash)
                )
        except TeamsCallError as exc:
            TEAMS_FAILURES.inc()
            log.warning("request %s: Bot Connector call failed: %s (retried on its next event)", view.request_id, exc)

    async def tell(self, user_id: str, text: str) -> bool:
        """A direct message to a Teams user (their Entra object id); False when Teams cannot send it.

        Raises `TeamsCallError` when the Bot Connector refuses it or is unreachable.
        """
        service_url, tenant = self._settings.teams_service_url, self._settings.teams_tenant_id
        if self._connector is None or not service_url:
            return False
        await self._connector.direct(service_url, tenant, user_id, text)
        return True

    # -- invokes -------------------------------------------------------------------------

    async def handle_activity(
        self, headers: Mapping[str, str], body: bytes, view_of: ViewOf, remote: str = ""
    ) -> Answer:
        now = time.time()
        try:
            activity = _json_object(body)
            await self._validator.validate(headers, activity)
            if activity.get("type") != "invoke" or activity.get("name") != "adaptiveCard/action":
                ACTIVITIES.labels("ignored").inc()
                return Answer(200, {})  # messages, installs, ...: nothing to do for an approval bot
            action = parse_action(activity)
            if not self._store.first_activity(action.activity_id, now):
                raise InteractionReplayError("replay", f"activity {action.activity_id} was already received")
        except InteractionRejectedError as exc:
            ACTIVITIES.labels(exc.code).inc()
            details: JsonObject = {"status": exc.status, "remote": remote, "channel": "teams"}
            await self._audit("chat_activity_rejected", "denied", None, f"{exc.code}: {exc}", details)
            return Answer(exc.status, {"ok": False, "error": exc.code, "reason": str(exc)})
        self._follow_service_url(action)
        view = view_of(action.request_id)
        if action.verb == REFRESH_VERB:
            ACTIVITIES.labels("refresh").inc()
            tenant = self._settings.teams_tenant_id
            if tenant and action.tenant_id != tenant:  # another tenant sees no card, not even a refreshed one
                return await self._refuse(action, ClickRefused("wrong_tenant"))
            if view is None or not view.shown:
                return Answer(200, invoke_answer("This request is not known (yet).", ok=False, error="unknown_request"))
            card = render_adaptive_card(view, self._directory, self._tiers, self._step_up)
            return Answer(200, invoke_answer("", ok=True, card=card))
        approver = self._directory.resolve(f"teams:{action.aad_object_id}") if action.aad_object_id else None
        voted = approver is not None and self._store.has_voted(action.request_id, approver.principal)
        decision = decide_teams_action(
            action,
            view,
            self._directory,
            chat_tiers=self._tiers,
            already_voted=voted,
            now=datetime.now(UTC),
            tenant_id=self._settings.teams_tenant_id,
            step_up=self._step_up,
        )
        if isinstance(decision, ClickRefused):
            return await self._refuse(action, decision)
        return await self._cast(action, decision)

    def _follow_service_url(self, action: TeamsAction) -> None:
        """Teams may move a conversation to another serviceUrl: later updates go where the last action came from."""
        for shown in self._store.teams_cards(action.request_id):
            if (
                shown.activity_id == action.reply_to_id
                and shown.conversation_id == action.conversation_id
                and shown.service_url != action.service_url
            ):
                self._store.save_teams_card(
                    action.request_id,
                    TeamsCard(shown.conversation_id, shown.activity_id, action.service_url, shown.card_hash),
                )

    async def _refuse(self, action: TeamsAction, refused: ClickRefused) -> Answer:
        ACTIVITIES.labels(refused.code).inc()
        details: JsonObject = {
            "channel": "teams",
            "aad_object_id": action.aad_object_id,
            "principal": refused.principal,
            "verb": action.verb,
        }
        await self._audit("chat_vote_refused", "denied", action.request_id, refused.code, details)
        text = _explain(refused.code)
        return Answer(200, invoke_answer(text, ok=False, error=refused.code, reason=text))

    async def _cast(self, action: TeamsAction, vote: CastVote) -> Answer:
        vote_id = f"teams-{action.activity_id}"[:_MAX_ID]
        if not self._store.claim_vote(vote.request_id, vote.principal, vote.choice.value, vote_id):
            return await self._refuse(action, ClickRefused("duplicate", vote.principal))
        event = VoteCast(
            request_id=vote.request_id,
            vote_id=vote_id,
            approver_id=vote.approver_identity,
            choice=vote.choice,
            request_digest=vote.request_digest,
            channel="teams",
            cast_at=datetime.now(UTC),
            reason=action.reason.strip()[:MAX_REASON],
        )
        envelope = sign_envelope(make_envelope(event, source=self._source), self._svid)
        try:
            # Teams waits for an invoke's answer (about 5 s then shows an error): publish well within that.
            await asyncio.wait_for(self._publish([outgoing_envelope(envelope, topic_name(event.topic, self._ns))]), 3.0)
        except Exception as exc:
            self._store.release_vote(vote.request_id, vote.principal)
            log.error("vote %s not published: %r", vote_id, exc)
            ACTIVITIES.labels("publish_failed").inc()
            return Answer(503, {"ok": False, "error": "publish_failed", "reason": "the vote could not be recorded"})
        ACTIVITIES.labels("vote_cast").inc()
        details: JsonObject = {
            "channel": "teams",
            "aad_object_id": action.aad_object_id,
            "principal": vote.principal,
            "vote_id": vote_id,
        }
        await self._audit("chat_vote_cast", "success", vote.request_id, vote.choice.value, details)
        text = f"Your {vote.choice.value} vote on {vote.request_id} was recorded as {vote.principal}."
        return Answer(
            200, invoke_answer(text, ok=True, vote_id=vote_id, principal=vote.principal, choice=vote.choice.value)
        )

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


def _rehash(card: TeamsCard, card_hash: str) -> TeamsCard:
    return TeamsCard(card.conversation_id, card.activity_id, card.service_url, card_hash)


def _explain(code: str) -> str:
    return explain("unknown_teams_user" if code == "unknown_user" else code)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        # orjson bounds nesting (1024 levels) and raises a ValueError.
        activity = orjson.loads(body)
    except ValueError as exc:
        raise MalformedInteractionError("bad_body", f"the activity is not JSON: {exc}") from exc
    if not isinstance(activity, dict):
        raise MalformedInteractionError("bad_body", "the activity is not a JSON object")
    return activity


def parse_action(activity: Mapping[str, Any]) -> TeamsAction:
    """An authenticated `adaptiveCard/action` invoke → `TeamsAction`; `MalformedInteractionError` otherwise."""
    value = activity.get("value")
    action = value.get("action") if isinstance(value, dict) else None
    if not isinstance(action, dict) or action.get("type") != "Action.Execute":
        raise MalformedInteractionError("bad_action", "expected value.action of type Action.Execute")
    data = action.get("data")
    if not isinstance(data, dict):
        raise MalformedInteractionError("bad_action", "value.action.data must be an object")
    reason = data.get(REASON_INPUT, "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise MalformedInteractionError("bad_reason", f"the reason must be text of at most {MAX_REASON} characters")
    sender = activity.get("from")
    aad = sender.get("aadObjectId") if isinstance(sender, dict) else None
    conversation = activity.get("conversation")
    channel_data = activity.get("channelData")
    tenant = conversation.get("tenantId") if isinstance(conversation, dict) else None
    if tenant is None and isinstance(channel_data, dict) and isinstance(channel_data.get("tenant"), dict):
        tenant = channel_data["tenant"].get("id")
    reply_to = activity.get("replyToId")
    return TeamsAction(
        activity_id=_text(activity.get("id"), "id"),
        aad_object_id=aad if isinstance(aad, str) and 0 < len(aad) <= _MAX_ID else "",
        tenant_id=tenant if isinstance(tenant, str) else "",
        request_id=_text(data.get("request_id"), "value.action.data.request_id"),
        verb=_text(action.get("verb"), "value.action.verb"),
        reason=reason,
        conversation_id=_text(conversation.get("id") if isinstance(conversation, dict) else None, "conversation.id"),
        service_url=_text(activity.get("serviceUrl"), "serviceUrl", 512),
        reply_to_id=reply_to if isinstance(reply_to, str) and len(reply_to) <= _MAX_ID else "",
    )


def _text(value: object, where: str, limit: int = _MAX_ID) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MalformedInteractionError("missing_field", f"{where}: expected a string of 1 to {limit} characters")
    return value
